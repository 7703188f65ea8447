"""GraySort kernels: write sorted partitions as binary records, summarize them like valsort."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from smallpond.io.files import FileSlice
from smallpond.io.parquet import iter_slice_batches
from smallpond.kernels import register_kernel
from smallpond.kernels.context import TaskContext

__all__ = ["table_to_records", "run_to_dat", "run_summarize"]

DAT_NAME = "part-00000.dat"


def _fixed_bytes(column: pa.Array | pa.ChunkedArray, width: int) -> np.ndarray:
    """(n, width) uint8 view of a binary column whose values are all `width` bytes."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_fixed_size_binary(column.type):
        column = column.cast(pa.binary(width))
    data = np.frombuffer(column.buffers()[1], dtype=np.uint8,
                         count=(column.offset + len(column)) * width)
    return data[column.offset * width:].reshape(-1, width)


def table_to_records(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """(n, 100) uint8 records from the `key` (10 bytes) and `value` (90 bytes) columns."""
    records = np.empty((table.num_rows, 100), dtype=np.uint8)
    records[:, :10] = _fixed_bytes(table.column("key"), 10)
    records[:, 10:] = _fixed_bytes(table.column("value"), 90)
    return records


def run_to_dat(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
               ctx: TaskContext) -> list[dict]:
    """Write one partition's records back to back, in their order, as a .dat file."""
    rows = 0
    with open(os.path.join(ctx.output_dir, DAT_NAME), "wb") as out:
        for batch in iter_slice_batches(inputs[0], batch_size=1 << 18):
            out.write(table_to_records(batch).tobytes())
            rows += batch.num_rows
    return [{"name": DAT_NAME, "num_rows": rows}]


SUMMARY_SCHEMA = pa.schema([
    ("first_key", pa.binary()), ("last_key", pa.binary()), ("records", pa.int64()),
    ("checksum", pa.string()), ("unordered", pa.int64()), ("duplicates", pa.int64()),
    ("first_unordered", pa.int64()),
])


def run_summarize(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
                  ctx: TaskContext) -> list[dict]:
    """valsort's per-file summary of each .dat file of the partition, one row per file."""
    from smallpond.graysort.valsort import summarize_file

    rows = []
    for piece in inputs[0]:
        summary = summarize_file(piece.path)
        rows.append({
            "first_key": summary.first_key, "last_key": summary.last_key,
            "records": summary.records, "checksum": format(summary.checksum, "x"),
            "unordered": summary.unordered, "duplicates": summary.duplicates,
            "first_unordered": summary.first_unordered,
        })
    pq.write_table(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA),
                   os.path.join(ctx.output_dir, "part-00000.parquet"))
    return [{"name": "part-00000.parquet", "num_rows": len(rows)}]


register_kernel("graysort.to_dat", run_to_dat)
register_kernel("graysort.summarize", run_summarize)

from smallpond.graysort import pipeline_kernels  # noqa: E402,F401  registers the pipeline
