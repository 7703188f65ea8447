"""The SQL kernel: run one partition's DuckDB query over its inputs, write one Parquet file."""

from __future__ import annotations

import importlib.util
import os
import zlib
from collections.abc import Sequence
from typing import Any

import cloudpickle
import duckdb

from smallpond.errors import SqlError
from smallpond.io.files import FileSlice
from smallpond.kernels.context import TaskContext
from smallpond.kernels.duck import (
    classify_duckdb_error,
    connect,
    register_inputs,
    sql_literal,
)
from smallpond.kernels.placeholders import strip_terminator, substitute
from smallpond.kernels.settings import apply_settings

__all__ = ["run_sql", "OUTPUT_NAME", "clean_sql", "register_udfs", "placeholder_values",
           "query_error", "parquet_safe"]

OUTPUT_NAME = "part-00000.parquet"
ROW_GROUP_SIZE = 122880


def clean_sql(sql: str) -> str:
    """The statement without a trailing `;` (it is wrapped in COPY (...))."""
    return strip_terminator(sql)


def placeholder_values(params: dict[str, Any], ctx: TaskContext,
                       query_index: int = 0) -> dict[str, object]:
    """Values of 0.15's named placeholders for this task. `{rand_seed}` is fixed for a task of
    a job (a resumed job sees the same seed) and differs between partitions and jobs."""
    seed = zlib.crc32(f"{params.get('scope', '')}|{ctx.stage}|{ctx.partition}".encode())
    return {"__data_partition__": ctx.partition, "rand_seed": seed, "batch_index": 0,
            "query_index": query_index, "cpu_limit": ctx.threads,
            "memory_limit": ctx.memory_limit, "output_filename": OUTPUT_NAME.split(".")[0]}


def _is_extension(udf) -> bool:
    return isinstance(udf, str) and udf.endswith(".duckdb_extension")


def register_udfs(con: duckdb.DuckDBPyConnection, udfs: bytes | None) -> None:
    """Make UDFs callable from SQL: Python functions with type hints, (name, func, args,
    ret) tuples, 0.15 `@udf` functions, DuckDB extension files and 0.15 UDF modules (a .py
    file with `create_duckdb_udfs(conn)`)."""
    if not udfs:
        return
    for udf in cloudpickle.loads(udfs):
        if _is_extension(udf):
            con.load_extension(udf)
        elif isinstance(udf, str) and udf.endswith(".py"):
            name = os.path.splitext(os.path.basename(udf))[0]
            spec = importlib.util.spec_from_file_location(name, udf)
            if spec is None or spec.loader is None:
                raise SqlError(f"cannot load the UDF module {udf!r}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.create_duckdb_udfs(con)
        elif hasattr(udf, "bind"):
            udf.bind(con)
        elif callable(udf):
            con.create_function(udf.__name__, udf)
        else:
            con.create_function(*udf)


def query_error(error: Exception, sql: str, inputs: Sequence[Sequence[FileSlice]],
                ctx: TaskContext) -> Exception:
    """The typed error for a failed query: resources and input files first, else SqlError."""
    paths = [s.path for part in inputs for s in part]
    typed = classify_duckdb_error(error, paths, ctx)
    if typed is not None:
        return typed
    failed = SqlError(f"SQL failed in stage {ctx.stage} partition {ctx.partition}: "
                      f"{type(error).__name__}: {error}\nSQL: {sql}", sql=sql)
    failed.stage, failed.partition = ctx.stage, ctx.partition  # failed while running
    return failed


_WIDE_INTEGERS = ("HUGEINT", "UHUGEINT")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parquet_safe(con: duckdb.DuckDBPyConnection, query: str) -> str:
    """The query with HUGEINT/UHUGEINT columns (e.g. `sum` of a BIGINT) cast to DECIMAL(38,0):
    DuckDB writes those types to Parquet as DOUBLE, which silently loses digits above 2^53.
    A value that does not fit 38 digits fails the cast rather than being rounded."""
    try:
        relation = con.sql(query)
        names, types = relation.columns, [str(t) for t in relation.types]
    except duckdb.Error:
        return query  # not bindable here: running it reports the error with its context
    wide = [name for name, kind in zip(names, types) if kind in _WIDE_INTEGERS]
    if not wide or len(set(names)) != len(names):
        return query
    casts = ", ".join(f"CAST({_ident(n)} AS DECIMAL(38,0)) AS {_ident(n)}" for n in wide)
    return f"SELECT * REPLACE ({casts}) FROM (\n{query}\n)"


def run_sql(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
            ctx: TaskContext) -> list[dict]:
    sql = clean_sql(params["sql"])
    setup = [clean_sql(s) for s in params.get("setup", ())]
    display = params.get("display_sql", sql)
    # UDFs, set-up statements (SET, CREATE MACRO...) and settings can change the database for
    # every later task of this worker: such a task gets a database of its own
    con = connect(ctx, private=bool(params.get("udfs") or setup or params.get("settings")))
    reset_settings = apply_settings(con, params)
    try:
        try:
            register_udfs(con, params.get("udfs"))
        except (duckdb.Error, OSError, ImportError, AttributeError) as error:
            raise SqlError(f"loading UDFs failed in stage {ctx.stage}: {error}",
                           sql=display) from error
        names = register_inputs(con, inputs, params.get("read", ()))
        path = os.path.join(ctx.output_dir, OUTPUT_NAME)
        statement = display
        try:
            for index, text in enumerate(setup):
                statement = text
                values = placeholder_values(params, ctx, index)
                con.execute(substitute(text, lambda i: names[i], len(names), values))
            statement = display
            values = placeholder_values(params, ctx, len(setup))
            query = substitute(sql, lambda i: names[i], len(names), values)
            # the query on lines of its own: a trailing `-- comment` ends at its newline
            rows = con.execute(
                f"COPY (\n{parquet_safe(con, query)}\n) TO {sql_literal(path)} "
                f"(FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP_SIZE})").fetchall()[0][0]
        except duckdb.Error as error:
            raise query_error(error, statement, inputs, ctx) from error
        return [{"name": OUTPUT_NAME, "num_rows": int(rows)}]
    finally:
        reset_settings()
        con.close()
