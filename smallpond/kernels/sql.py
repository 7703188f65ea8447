"""The SQL kernel: run one partition's DuckDB query over its inputs, write one Parquet file."""

from __future__ import annotations

import os
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
from smallpond.kernels.placeholders import substitute

__all__ = ["run_sql", "OUTPUT_NAME", "clean_sql", "register_udfs"]

OUTPUT_NAME = "part-00000.parquet"
ROW_GROUP_SIZE = 122880


def clean_sql(sql: str) -> str:
    """Strip whitespace and trailing semicolons (the query is wrapped in COPY (...))."""
    text = sql.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def register_udfs(con: duckdb.DuckDBPyConnection, udfs: bytes | None) -> None:
    """Register DuckDB Python UDFs: callables with type hints, or (name, func, args, ret)."""
    if not udfs:
        return
    for udf in cloudpickle.loads(udfs):
        if callable(udf):
            con.create_function(udf.__name__, udf)
        else:
            con.create_function(*udf)


def run_sql(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
            ctx: TaskContext) -> list[dict]:
    sql = clean_sql(params["sql"])
    con = connect(ctx)
    try:
        register_udfs(con, params.get("udfs"))
        names = register_inputs(con, inputs, params.get("read", ()))
        query = substitute(sql, lambda i: names[i], len(names))
        path = os.path.join(ctx.output_dir, OUTPUT_NAME)
        try:
            rows = con.execute(
                f"COPY ({query}) TO {sql_literal(path)} "
                f"(FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP_SIZE})").fetchall()[0][0]
        except duckdb.Error as error:
            paths = [s.path for part in inputs for s in part]
            typed = classify_duckdb_error(error, paths)
            if typed is not None:
                raise typed from error
            raise SqlError(
                f"SQL failed in stage {ctx.stage} partition {ctx.partition}: "
                f"{type(error).__name__}: {error}\nSQL: {params.get('display_sql', sql)}",
                sql=params.get("display_sql", sql)) from error
        return [{"name": OUTPUT_NAME, "num_rows": int(rows)}]
    finally:
        con.close()
