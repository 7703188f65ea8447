"""A bounded DuckDB connection per task, and the task's inputs registered as views."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from smallpond.errors import DiskFullError, InputError, OutOfMemoryError, SchemaMismatchError
from smallpond.io.disk import is_disk_full, mount_point
from smallpond.io.files import FileSlice, duckdb_path, filesystem_for
from smallpond.io.parquet import check_same_schema, iter_slice_batches, open_parquet, slices_schema
from smallpond.kernels.context import TaskContext

__all__ = ["connect", "register_inputs", "input_name", "sql_literal", "classify_duckdb_error"]


def input_name(index: int) -> str:
    return f"__sp_input_{index}"


def sql_literal(text: str) -> str:
    """A SQL string literal, quotes doubled: safe for any path."""
    return "'" + text.replace("'", "''") + "'"


# One in-memory database per worker process, reused by the tasks it runs one after another:
# opening a database costs 20-30 ms, a new connection (cursor) to an open one well under 1 ms.
# Each task gets its own connection (its temp tables and views die with it) and its own limits.
_database: duckdb.DuckDBPyConnection | None = None

_LEFTOVER_OBJECTS = (  # what a task's SQL could leave behind in the shared catalog
    "SELECT (SELECT count(*) FROM duckdb_tables() WHERE NOT temporary)"
    " + (SELECT count(*) FROM duckdb_views() WHERE NOT internal AND NOT temporary)"
    " + (SELECT count(*) FROM duckdb_databases() WHERE NOT internal AND database_name <> 'memory')"
)


def connect(ctx: TaskContext, private: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection bounded by the task's memory limit, spill folder and threads.

    `private` gives the task a database of its own (closed with the connection) that may
    load extension files: for UDFs, whose registration is database-wide and would meet the
    next task's functions of the same name in the shared one.
    """
    global _database
    os.makedirs(ctx.spill_dir, exist_ok=True)
    if private:
        con = duckdb.connect(":memory:", config={"temp_directory": ctx.spill_dir,
                                                 "allow_unsigned_extensions": "true"})
        return _limit(con, ctx)
    if _database is not None and not _reusable(_database, ctx.spill_dir):
        _database.close()
        _database = None
    if _database is None:
        _database = duckdb.connect(":memory:", config={"temp_directory": ctx.spill_dir})
    return _limit(_database.cursor(), ctx)


def _limit(con: duckdb.DuckDBPyConnection, ctx: TaskContext) -> duckdb.DuckDBPyConnection:
    con.execute(f"SET memory_limit = '{max(64, ctx.memory_limit >> 20)}MB'")
    con.execute(f"SET threads = {max(1, ctx.threads)}")
    con.execute("SET preserve_insertion_order = true")
    con.execute("RESET arrow_large_buffer_size")
    con.execute("SET enable_progress_bar = false")  # workers have no terminal to draw on
    return con


def _reusable(database: duckdb.DuckDBPyConnection, spill_dir: str) -> bool:
    """Whether the open database can serve the next task: its catalog is as it was created,
    and it can switch to the task's spill folder (DuckDB refuses once one was used)."""
    try:
        if database.execute(_LEFTOVER_OBJECTS).fetchone()[0]:
            return False
        database.execute(f"SET temp_directory = {sql_literal(spill_dir)}")
    except duckdb.Error:
        return False
    return True


def _register_filesystems(con: duckdb.DuckDBPyConnection, paths: Sequence[str]) -> None:
    seen: dict[str, Any] = {}  # protocol -> the file system registered for it
    first: dict[str, str] = {}  # protocol -> the path it was registered for
    for path in paths:
        if "://" in path and not path.startswith("file://"):
            protocol = path.split("://", 1)[0]
            if protocol in seen:
                # DuckDB takes one file system per protocol: buckets with other storage
                # options cannot be read by the same query
                if filesystem_for(path)[0] is not seen[protocol]:
                    raise InputError(f"{path!r} needs other storage options than "
                                     f"{first[protocol]!r}; one query reads one set per "
                                     "protocol",
                                     path=path)
            else:
                fs, _ = filesystem_for(path)
                seen[protocol], first[protocol] = fs, path
                # registration is database-wide: replace what an earlier task registered
                # (it may carry other options) rather than fail on "already registered"
                for name in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
                    if con.filesystem_is_registered(name):
                        con.unregister_filesystem(name)
                con.register_filesystem(fs)


def register_inputs(con: duckdb.DuckDBPyConnection, inputs: Sequence[Sequence[FileSlice]],
                    read_options: Sequence[dict[str, Any]]) -> list[str]:
    """Make input k readable as view ``__sp_input_k``; return the view names."""
    names = []
    for index, slices in enumerate(inputs):
        options = read_options[index] if index < len(read_options) else {}
        name = input_name(index)
        _register_filesystems(con, [s.path for s in slices])
        relation = _relation(con, slices, options, name)
        # a temporary view dies with the task's connection (relation.create_view would
        # leave a view in the database that the worker's next task shares)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {relation.sql_query()}")
        names.append(name)
    return names


def _relation(con, slices: Sequence[FileSlice], options: dict[str, Any], name: str):
    fmt = options.get("format", "parquet")
    paths = [s.path for s in slices]
    if fmt == "csv":
        return _read_text(con, paths, options, "read_csv")
    if fmt == "json":
        return _read_text(con, paths, options, "read_json")
    columns = options.get("columns")
    union = bool(options.get("union_by_name"))
    if slices and all(s.is_whole for s in slices):
        if options.get("check_schema", True):  # (footers are cheap: one file too)
            check_same_schema(paths, union_by_name=union)
        try:
            relation = con.read_parquet([duckdb_path(p) for p in paths], union_by_name=union)
        except duckdb.Error as error:
            raise _input_error(error, paths) from error
        return relation.select(*[_quote_ident(c) for c in columns]) if columns else relation
    return _read_row_groups(con, slices, options, columns, name)


def _read_row_groups(con, slices, options, columns, name):
    """Row-group slices (shuffle buckets, split files) read by DuckDB by row number ranges."""
    from smallpond.kernels.row_groups import row_group_query

    paths = list(dict.fromkeys(s.path for s in slices))
    if options.get("check_schema", True) and len(paths) > 1:
        check_same_schema(paths, union_by_name=bool(options.get("union_by_name")))
    query = row_group_query(slices, columns) if slices and not options.get(
        "union_by_name") else None
    if query is None:
        return _materialize_slices(con, slices, columns, name)
    try:
        if _slices_bytes(slices) > _memory_limit(con) // 4:
            # a large input streamed from many row-group ranges in order runs out of memory
            # under a later ORDER BY (DuckDB keeps the scans' buffers); a temp table spills
            table = f"{name}_table"
            con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS {query}")
            return con.table(table)
        return con.sql(query)
    except duckdb.Error as error:
        raise _input_error(error, paths) from error


_UNITS = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def _memory_limit(con) -> int:
    """The connection's memory_limit in bytes (DuckDB shows it as text, e.g. '244.1 MiB')."""
    text = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    number, _, unit = str(text).strip().partition(" ")
    try:
        return int(float(number) * _UNITS.get(unit, 1))
    except ValueError:
        return 1 << 62


def _slices_bytes(slices) -> int:
    """Uncompressed bytes of the row groups the slices read (from their footers)."""
    total = 0
    for piece in slices:
        meta = open_parquet(piece.path).metadata
        groups = range(meta.num_row_groups) if piece.row_groups is None else piece.row_groups
        total += sum(meta.row_group(g).total_byte_size for g in groups)
    return total


def _materialize_slices(con, slices, columns, name):
    """Row-group slices (shuffle buckets) go through pyarrow into a spillable temp table."""
    if not slices:
        raise InputError("a partition has no input files to read its schema from")
    schema = slices_schema(slices)
    if columns:
        schema = pa.schema([schema.field(c) for c in columns])
    batches = iter_slice_batches(slices, schema=None)
    if columns:
        batches = (b.select(columns) for b in batches)
    reader = pa.RecordBatchReader.from_batches(schema, batches)
    source = f"{name}_reader"
    con.register(source, reader)
    table = f"{name}_table"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM {source}")
    con.unregister(source)
    return con.table(table)


def _read_text(con, paths, options, function):
    if not paths:
        raise InputError("no input files")
    schema = options.get("schema")
    args = [f"[{', '.join(sql_literal(duckdb_path(p)) for p in paths)}]"]
    if schema:
        columns = ", ".join(f"{sql_literal(k)}: {sql_literal(v)}" for k, v in schema.items())
        args.append(f"columns = {{{columns}}}")
    if function == "read_csv":
        if options.get("delim") is not None:
            args.append(f"delim = {sql_literal(options['delim'])}")
        header = options.get("header")
        if header is not None:
            args.append(f"header = {'true' if header else 'false'}")
    if options.get("union_by_name"):
        args.append("union_by_name = true")
    try:
        return con.sql(f"SELECT * FROM {function}({', '.join(args)})")
    except duckdb.Error as error:
        raise _input_error(error, paths) from error


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _input_error(error: Exception, paths: Sequence[str]) -> InputError:
    text = str(error)
    culprit = next((p for p in paths if p in text), None)
    if culprit is None and len(paths) == 1:
        culprit = paths[0]
    where = f" in {culprit!r}" if culprit else f" in one of {len(paths)} files"
    return InputError(f"failed reading input{where}: {text}", path=culprit)


def classify_duckdb_error(error: Exception, paths: Sequence[str],
                          ctx: TaskContext | None = None) -> Exception | None:
    """Turn a DuckDB error about resources or an input file into the typed error users
    catch: DiskFullError naming the mount, OutOfMemoryError naming the budget, InputError
    naming the file. None when it is the query's own fault (then it is a SqlError)."""
    text = str(error)
    spill_full = "max_temp_directory_size" in text  # DuckDB's "failed to offload" a block
    if spill_full or is_disk_full(error):
        where = ctx.spill_dir if ctx and (spill_full or ctx.spill_dir in text) else (
            ctx.output_dir if ctx else None)
        mount = mount_point(where) if where else None
        return DiskFullError(f"no space left on device (mount {mount}) in stage "
                             f"{ctx.stage if ctx else '?'}: {text}", mount=mount, path=where)
    if isinstance(error, duckdb.OutOfMemoryException) or text.startswith("Out of Memory"):
        budget = f"{ctx.memory_limit >> 20} MiB" if ctx else "its budget"
        return OutOfMemoryError(
            f"a task of stage {ctx.stage if ctx else '?'} ran out of memory ({budget} per "
            f"task): {text.splitlines()[0]}. Give tasks more memory (memory_per_task=...), use "
            "more partitions, or fewer workers per machine.")
    for path in paths:
        if path in text:
            if "schema" in text.lower() or "mismatch" in text.lower():
                return SchemaMismatchError(f"{text}", path=path)
            return InputError(f"failed reading {path!r}: {text}", path=path)
    if isinstance(error, duckdb.IOException) or "No magic bytes" in text:
        return _input_error(error, paths)
    return None
