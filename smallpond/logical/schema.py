"""Output schemas known without running: footers, declared types, and DuckDB binding."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from smallpond.io.arrow import large_types
from smallpond.io.parquet import read_schema
from smallpond.kernels.duck import input_name
from smallpond.kernels.placeholders import PARSE_VALUES, substitute
from smallpond.logical.nodes import Limit, Node, PythonMap, Repartition, Scan, SqlQuery

__all__ = ["infer_schema"]


def _query_schema(sql: str, inputs: list[pa.Schema]) -> pa.Schema:
    con = duckdb.connect()
    try:
        for index, schema in enumerate(inputs):
            con.register(input_name(index), schema.empty_table())
        query = substitute(sql, input_name, len(inputs), PARSE_VALUES)
        return con.sql(f"SELECT * FROM (\n{query}\n) LIMIT 0").to_arrow_table().schema
    finally:
        con.close()


def infer_schema(node: Node) -> pa.Schema | None:
    """Best effort: None when the schema depends on running user code."""
    if isinstance(node, Scan):
        options = node.options
        if options.format == "parquet":
            schema = read_schema(node.partitions[0][0].path)
            if options.columns:
                schema = pa.schema([schema.field(c) for c in options.columns])
            return large_types(schema)
        if options.schema:
            columns = ", ".join(f"CAST(NULL AS {t}) AS \"{n}\"" for n, t in options.schema)
            return _query_schema(f"SELECT {columns}", [])
        return None
    if isinstance(node, (Repartition, Limit)):
        return infer_schema(node.source)
    if isinstance(node, PythonMap):
        if node.schema:
            return pa.ipc.read_schema(pa.py_buffer(node.schema))
        return infer_schema(node.source) if node.kind == "filter" else None
    if isinstance(node, SqlQuery):
        if node.udfs or node.setup:
            return None
        inputs = [infer_schema(s) for s in node.sources]
        if any(s is None for s in inputs):
            return None
        return large_types(_query_schema(node.sql, inputs))
    return None
