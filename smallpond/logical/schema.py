"""Output schemas known without running: each stage replayed by DuckDB over empty inputs.

The optimized plan is walked inputs first. Every stage is replayed as its task would run it,
on zero rows: its inputs registered by the kernels' own code (so sources are read with their
real options and types), its query or writer applied, and its empty result written as Parquet
to a scratch folder, which the next stage reads like a committed task output. The
schema read back from the last one is what `to_arrow()` will return. No task runs, no user
function is called; the schema is unknown (None) only where it depends on a Python function
without a declared `schema=`, or on an extension kernel.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from smallpond.io.arrow import large_types
from smallpond.io.files import FileSlice
from smallpond.kernels.duck import register_inputs, sql_literal
from smallpond.kernels.placeholders import PARSE_VALUES, substitute
from smallpond.kernels.settings import apply_settings
from smallpond.kernels.sql import clean_sql, parquet_safe, register_udfs
from smallpond.logical.nodes import (
    Broadcast,
    Concat,
    Limit,
    Node,
    PartitionSlice,
    PythonMap,
    Repartition,
    Scan,
    SqlQuery,
    Stage,
)

__all__ = ["infer_schema", "bind_types"]

_PARQUET = {"format": "parquet"}
_CACHE: OrderedDict[str, pa.Schema | None] = OrderedDict()
_CACHE_SIZE = 256
_lock = threading.RLock()  # the optimizer asks for input schemas while it optimizes
_database: duckdb.DuckDBPyConnection | None = None


class _Unknown(Exception):
    """The schema depends on running user code."""


class _Replay:
    """Replays stages on empty inputs; each stage's output is an empty Parquet file."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.folder = tempfile.mkdtemp(prefix="smallpond-schema-")
        self.outputs: dict[str, tuple[list[FileSlice], dict]] = {}  # token -> files, options

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self) -> str:
        return os.path.join(self.folder, f"{uuid.uuid4().hex}.parquet")

    def source(self, node: Node) -> tuple[list[FileSlice], dict]:
        """What a task reading `node` gets: files and the options to read them."""
        if node.token not in self.outputs:
            self.outputs[node.token] = self._visit(node)
        return self.outputs[node.token]

    def _register(self, con, nodes) -> list[str]:
        sources = [self.source(n) for n in nodes]
        return register_inputs(con, [files for files, _ in sources],
                               [options for _, options in sources])

    def _visit(self, node: Node) -> tuple[list[FileSlice], dict]:
        if isinstance(node, Scan):
            options = node.options.as_params()
            # DuckDB takes the first file's schema, unless files are unified by name
            files = list(node.partitions[0]) if options.get("union_by_name") \
                else [node.partitions[0][0]]
            return [FileSlice(f.path, format=f.format) for f in files], options
        if isinstance(node, (PartitionSlice, Broadcast, Stage)):
            return self.source(node.source)
        if isinstance(node, Concat):  # every input has the first one's columns
            return self.source(node.sources[0])
        if isinstance(node, Limit):  # one SQL task over every partition
            return self._sql(f"SELECT * FROM {{0}} LIMIT {node.n}", (node.source,), None)
        if isinstance(node, SqlQuery):
            return self._sql(node.sql, node.sources, node.udfs, node.setup, node.settings)
        if isinstance(node, Repartition):
            return self._repartition(node)
        if isinstance(node, PythonMap):
            if node.schema:
                return self._write_arrow(pa.ipc.read_schema(pa.py_buffer(node.schema)))
            if node.kind == "filter":
                return self._arrow_writer([node.source], large=True)
        raise _Unknown(node.describe())

    def _repartition(self, node: Repartition) -> tuple[list[FileSlice], dict]:
        """Mirrors the planner: a split of Parquet files reads them as they are; a shuffle
        writes what DuckDB streams of its input (or of a query fused into it)."""
        inner = node.source
        if node.method == "files":
            from smallpond.planner.planner import Planner

            parts = Planner().visit(node).parts  # reads Parquet footers only
            if all(isinstance(s, FileSlice) for part in parts for s in part):
                return self.source(inner)
        if (node.method in ("hash", "expr", "random") and isinstance(inner, SqlQuery)
                and len(inner.sources) == 1 and not inner.ordered and not inner.udfs
                and not inner.setup):
            return self._arrow_writer(inner.sources, large=False, sql=inner.sql)
        return self._arrow_writer([inner], large=False)

    def _sql(self, sql: str, sources, udfs, setup=(), settings=()
             ) -> tuple[list[FileSlice], dict]:
        """The SQL kernel: setup statements, then the query's result copied to Parquet."""
        for node in sources:
            self.source(node)
        # functions and settings can be database-wide: such queries get a database of their own
        private = bool(udfs or setup or settings)
        config = {"allow_unsigned_extensions": "true"}
        con = duckdb.connect(":memory:", config=config) if private else self.con.cursor()
        con.execute("RESET arrow_large_buffer_size")
        try:
            register_udfs(con, udfs)
            apply_settings(con, {"settings": settings})
            names = self._register(con, sources)

            def fill(text: str) -> str:
                return substitute(clean_sql(text), lambda i: names[i], len(names), PARSE_VALUES)

            for statement in setup:
                con.execute(fill(statement))
            path = self._path()
            query = parquet_safe(con, f"SELECT * FROM (\n{fill(sql)}\n)")
            con.execute(f"COPY (SELECT * FROM (\n{query}\n) LIMIT 0) TO {sql_literal(path)} "
                        f"(FORMAT parquet)")
            return [FileSlice(path)], _PARQUET
        finally:
            con.close()

    def _arrow_writer(self, sources, large: bool, sql: str = "SELECT * FROM {0}",
                      ) -> tuple[list[FileSlice], dict]:
        """Kernels that stream DuckDB's result as Arrow into a pyarrow Parquet writer."""
        for node in sources:  # inputs first: their replay changes database-wide settings
            self.source(node)
        con = self.con.cursor()
        try:
            con.execute(f"SET arrow_large_buffer_size = {'true' if large else 'false'}")
            names = self._register(con, sources)
            query = substitute(clean_sql(sql), lambda i: names[i], len(names), PARSE_VALUES)
            schema = con.sql(f"SELECT * FROM (\n{query}\n)").to_arrow_reader(1024).schema
        finally:
            con.close()
        return self._write_arrow(large_types(schema) if large else schema)

    def _write_arrow(self, schema: pa.Schema) -> tuple[list[FileSlice], dict]:
        path = self._path()
        pq.write_table(schema.empty_table(), path)
        return [FileSlice(path)], _PARQUET

    def output_schema(self, node: Node) -> pa.Schema:
        """The schema of the action's result: raw sources are copied by a SQL task first."""
        files, options = self.source(node)
        if options is not _PARQUET:
            files, _ = self._sql("SELECT * FROM {0}", (node,), None)
        return large_types(pq.read_schema(files[0].path))


def _connection() -> duckdb.DuckDBPyConnection:
    global _database
    if _database is None:
        _database = duckdb.connect(":memory:")  # (no progress bar setting: in Jupyter,
        # DuckDB refuses to change it without ipywidgets; queries on empty inputs show none)
    return _database


def infer_schema(node: Node) -> pa.Schema | None:
    """The schema `to_arrow()` will return, or None when it depends on a Python function.

    Raises what the stage would raise when its SQL cannot bind (SqlError...) or an input
    cannot be read (InputError).
    """
    from smallpond.logical.optimizer import optimize

    with _lock:
        if node.token in _CACHE:
            _CACHE.move_to_end(node.token)
            return _CACHE[node.token]
        replay = _Replay(_connection())
        try:
            schema = replay.output_schema(optimize(node))
        except _Unknown:
            schema = None
        except duckdb.Error as error:
            from smallpond.errors import SqlError

            raise SqlError(f"the query cannot run: {type(error).__name__}: {error}") from error
        finally:
            replay.close()
        _CACHE[node.token] = schema
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return schema


def bind_types(sql: str, inputs: list[pa.Schema]) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a per-partition query's output over inputs of these schemas
    (bound over empty tables: nothing is read)."""
    with _lock:
        con = _connection().cursor()
        try:
            names = []
            for index, schema in enumerate(inputs):
                names.append(f"__sp_bind_input_{index}")
                con.register(names[-1], schema.empty_table())
            query = substitute(clean_sql(sql), lambda i: names[i], len(names), PARSE_VALUES)
            relation = con.sql(query)
            return [(n, str(t)) for n, t in zip(relation.columns, relation.types)]
        finally:
            con.close()
