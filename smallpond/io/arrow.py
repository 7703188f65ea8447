"""Arrow type conventions shared by kernels and the DataFrame API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

__all__ = ["large_types", "to_large", "table_from_rows", "table_from_values"]


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


# pyarrow imports pandas the first time it converts Python objects (pa.array, from_pylist):
# about half a second of a cold start. Plain columns (all int, all float, all str or all bool,
# no None) are built from buffers instead, with the types pa.array would infer.
def _plain_array(values: Sequence[Any]) -> pa.Array | None:
    import numpy as np

    kinds = {type(v) for v in values}
    if len(kinds) != 1:
        return None
    kind, count = kinds.pop(), len(values)
    if kind is int:
        try:
            data = np.array(values, dtype=np.int64)
        except OverflowError:
            return None
        return pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(data)])
    if kind is float:
        data = np.array(values, dtype=np.float64)
        return pa.Array.from_buffers(pa.float64(), count, [None, pa.py_buffer(data)])
    if kind is bool:
        bits = np.packbits(np.array(values, dtype=np.bool_), bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), count, [None, pa.py_buffer(bits)])
    if kind is str:
        try:
            encoded = [v.encode() for v in values]
        except UnicodeEncodeError:  # lone surrogates: pa.array says what is wrong
            return None
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        if offsets[-1] >= 1 << 31:
            return None
        return pa.Array.from_buffers(pa.string(), count, [
            None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))])
    return None


def table_from_values(values: Sequence[Any], name: str = "item") -> pa.Table:
    """`pa.table({name: values})`, without importing pandas for plain columns."""
    array = _plain_array(values) if values else None
    return pa.table({name: values}) if array is None else pa.table([array], names=[name])


def table_from_rows(rows: Sequence[dict]) -> pa.Table:
    """`pa.Table.from_pylist(rows)` (columns named by the first row), without importing
    pandas for plain columns."""
    names = list(rows[0]) if rows else []
    if names and all(len(row) == len(names) for row in rows):
        try:
            columns = [[row[name] for row in rows] for name in names]
        except KeyError:
            columns = None
        arrays = [_plain_array(c) for c in columns] if columns else [None]
        if all(a is not None for a in arrays):
            return pa.table(arrays, names=names)
    return pa.Table.from_pylist(rows)
