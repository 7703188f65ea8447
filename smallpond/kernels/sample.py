"""Kernels of sampled range partitioning: sample keys, then choose partition boundaries."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from smallpond.io.files import FileSlice
from smallpond.kernels.context import TaskContext
from smallpond.kernels.duck import connect, register_inputs
from smallpond.kernels.sql import OUTPUT_NAME

__all__ = ["run_sample", "run_boundaries", "sortable"]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run_sample(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
               ctx: TaskContext) -> list[dict]:
    """A uniform sample (reservoir, repeatable) of one column of a partition."""
    con = connect(ctx)
    try:
        name = register_inputs(con, inputs, params.get("read", ()))[0]
        column = _quote(params["column"])
        table = con.sql(
            f"SELECT {column} AS key FROM {name} WHERE {column} IS NOT NULL "
            f"USING SAMPLE reservoir({int(params['rows'])} ROWS) "
            f"REPEATABLE ({int(params.get('seed', 0)) + ctx.partition})").to_arrow_table()
    finally:
        con.close()
    pq.write_table(table, os.path.join(ctx.output_dir, OUTPUT_NAME))
    return [{"name": OUTPUT_NAME, "num_rows": table.num_rows}]


def run_boundaries(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
                   ctx: TaskContext) -> list[dict]:
    """n-1 keys that split the pooled samples into n equal ranges."""
    n = int(params["n"])
    table = pa.concat_tables(pq.read_table(s.path) for s in inputs[0])
    keys = table.column("key").combine_chunks()
    keys = keys.take(pc.sort_indices(keys))
    picks = [min(len(keys) - 1, round(j * len(keys) / n)) for j in range(1, n)] if len(keys) else []
    bounds = keys.take(pa.array(picks, pa.int64())) if picks else keys.slice(0, 0)
    pq.write_table(pa.table({"key": bounds}), os.path.join(ctx.output_dir, OUTPUT_NAME))
    return [{"name": OUTPUT_NAME, "num_rows": len(bounds)}]


def sortable(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numpy array ordered like the Arrow values, for searchsorted against boundaries.

    Binary values become numpy bytes ('S'), which compare like memcmp except that trailing zero
    bytes are ignored; keys that compare equal that way land in the same partition, and the
    partition's own sort orders them, so global order holds.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_fixed_size_binary(array.type):
        width = array.type.byte_width
        data = np.frombuffer(array.buffers()[1], dtype=f"S{width}",
                             count=array.offset + len(array))
        return data[array.offset:]
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type) or \
            pa.types.is_binary_view(array.type):
        array = array.cast(pa.large_binary())
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64,
                                count=array.offset + len(array) + 1)[array.offset:]
        lengths = np.diff(offsets)
        if len(lengths) and (lengths == lengths[0]).all() and lengths[0] > 0:
            width = int(lengths[0])
            data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
            return data.view(f"S{width}")
        return np.array(array.to_pylist(), dtype=bytes) if len(array) else \
            np.array([], dtype="S1")
    return array.to_numpy(zero_copy_only=False)
