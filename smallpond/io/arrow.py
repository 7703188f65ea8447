"""Arrow type conventions shared by kernels and the DataFrame API."""

from __future__ import annotations

import pyarrow as pa

__all__ = ["large_types", "to_large"]


def large_types(schema: pa.Schema) -> pa.Schema:
    """string -> large_string and binary -> large_binary, as smallpond 0.15 hands them out."""
    fields = []
    for field in schema:
        if pa.types.is_string(field.type) or pa.types.is_string_view(field.type):
            field = field.with_type(pa.large_string())
        elif pa.types.is_binary(field.type) or pa.types.is_binary_view(field.type):
            field = field.with_type(pa.large_binary())
        fields.append(field.with_nullable(True))
    return pa.schema(fields, metadata=schema.metadata)


def to_large(table: pa.Table) -> pa.Table:
    schema = large_types(table.schema)
    return table if schema.equals(table.schema) else table.cast(schema)
