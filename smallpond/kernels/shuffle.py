"""The shuffle writer: one Parquet file per map task, row groups grouped by destination.

Rows are streamed in chunks; each chunk is stably split by destination and each non-empty
destination becomes one row group. The returned bucket index maps a destination to its row
groups, so a reducer reads only its own row groups, in input order, and no M x N files appear.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from smallpond.errors import PartitionKeyError, SqlError
from smallpond.io.files import FileSlice
from smallpond.kernels.context import TaskContext
from smallpond.kernels.duck import classify_duckdb_error, connect, register_inputs
from smallpond.kernels.placeholders import substitute
from smallpond.kernels.sample import sortable
from smallpond.kernels.settings import apply_settings
from smallpond.kernels.sql import OUTPUT_NAME, clean_sql, placeholder_values

__all__ = ["run_shuffle", "DEST_COLUMN"]

DEST_COLUMN = "__sp_dest"
# shuffle files are read once, locally, by the reducers and never handed to users: encoding
# them plainly, without compression or statistics, writes them 3-4x faster
WRITER_OPTIONS = {"use_dictionary": False, "compression": "none", "write_statistics": False}
CHUNK_BYTES = 128 << 20


def _chunk_rows() -> int:
    return int(os.environ.get("SMALLPOND_SHUFFLE_CHUNK_ROWS", 1 << 20))


def _dest_expression(params: dict[str, Any]) -> str | None:
    method, n = params["method"], params["n"]
    if method == "hash":
        columns = ", ".join('"' + c.replace('"', '""') + '"' for c in params["hash_by"])
        return f"CAST(hash({columns}) % {n} AS BIGINT)"
    if method == "expr":
        return f"CAST(({params['by']}) AS BIGINT)"
    return None


def _dest_dtype(n: int):
    return np.uint8 if n <= 1 << 8 else np.uint16 if n <= 1 << 16 else np.int64


def chunk_bytes(memory_limit: int) -> int:
    """Bytes per chunk: a chunk is held twice (as read, and reordered by destination) next to
    the writer's buffers, so a sixth of the task's budget, at most CHUNK_BYTES."""
    return max(4 << 20, min(CHUNK_BYTES, memory_limit // 6))


def _chunks(reader: pa.RecordBatchReader, max_bytes: int = CHUNK_BYTES) -> Iterator[pa.Table]:
    """Batches gathered into chunks of about CHUNK_ROWS rows (or `max_bytes`)."""
    limit = _chunk_rows()
    pending, rows, size = [], 0, 0
    for batch in reader:
        pending.append(batch)
        rows += batch.num_rows
        size += batch.nbytes
        if rows >= limit or size >= max_bytes:
            yield pa.Table.from_batches(pending, schema=reader.schema)
            pending, rows, size = [], 0, 0
    if pending:
        yield pa.Table.from_batches(pending, schema=reader.schema)


def _check_range(dest: np.ndarray, valid: np.ndarray | None, n: int, ctx: TaskContext,
                 by: str) -> None:
    if valid is not None and not valid.all():
        raise PartitionKeyError(
            f"partition key NULL is out of range 0-{n - 1} (expression {by!r}, stage "
            f"{ctx.stage} partition {ctx.partition})", stage=ctx.stage, partition=ctx.partition)
    bad = (dest < 0) | (dest >= n)
    if bad.any():
        key = int(dest[np.argmax(bad)])
        raise PartitionKeyError(
            f"partition key {key} is out of range 0-{n - 1} (expression {by!r}, stage "
            f"{ctx.stage} partition {ctx.partition})", stage=ctx.stage, partition=ctx.partition)


def _range_dest(column: pa.ChunkedArray, bounds: np.ndarray, n: int, descending: bool = False,
                nulls_first: bool = False) -> np.ndarray:
    """Partition of each key: the number of boundaries <= key (counted from the other end when
    descending); NULLs go to the last partition, or the first with nulls_first."""
    keys = sortable(column)
    if column.null_count:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        dest = np.full(len(keys), 0 if nulls_first else n - 1, dtype=np.int64)
        found = np.searchsorted(bounds, keys[valid], side="right")
        dest[valid] = (n - 1 - found) if descending else found
        return dest
    found = np.searchsorted(bounds, keys, side="right").astype(np.int64)
    return (n - 1 - found) if descending else found


def _failed(error: Exception, select: str, inputs, ctx: TaskContext) -> Exception:
    typed = classify_duckdb_error(error, [s.path for part in inputs for s in part], ctx)
    if typed is not None:
        return typed
    return SqlError(f"partitioning failed in stage {ctx.stage}: {error}\nSQL: {select}",
                    sql=select)


def _bucket_index(path: str, writes: list[tuple[int, int]]) -> dict[int, list[int]]:
    """Row groups of each destination, read back from the footer.

    The writer may split one write into several row groups (row or byte limits), so the groups
    are matched to the writes by their row counts rather than counted.
    """
    metadata = pq.ParquetFile(path).metadata
    buckets: dict[int, list[int]] = {}
    group = 0
    for dest, rows in writes:
        while rows > 0:
            rows -= metadata.row_group(group).num_rows
            buckets.setdefault(dest, []).append(group)
            group += 1
        if rows < 0:
            raise RuntimeError(f"row groups of {path} do not line up with the writes")
    return buckets


def run_shuffle(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
                ctx: TaskContext) -> list[dict]:
    method, n = params["method"], int(params["n"])
    con = connect(ctx)
    reset_settings = apply_settings(con, params)
    try:
        names = register_inputs(con, inputs, params.get("read", ()))
        name = names[0]
        bounds = None
        if method == "range":
            bounds = sortable(con.sql(f"SELECT key FROM {names[-1]}").to_arrow_table()["key"])
        if params.get("sql"):  # a per-partition query fused into this mapper
            count = int(params.get("sql_inputs", 1))
            query = substitute(clean_sql(params["sql"]), lambda i: names[i], count,
                               placeholder_values(params, ctx))
            name = f"(\n{query}\n)"
        expression = _dest_expression(params)
        select = f"SELECT *, {expression} AS {DEST_COLUMN} FROM {name}" if expression \
            else f"SELECT * FROM {name}"
        try:
            total = con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0] \
                if method == "rows" else 0
            reader = con.sql(select).to_arrow_reader(min(65536, _chunk_rows()))
        except duckdb.Error as error:
            raise _failed(error, select, inputs, ctx) from error
        schema = reader.schema
        if expression:
            schema = schema.remove(schema.get_field_index(DEST_COLUMN))
        path = os.path.join(ctx.output_dir, OUTPUT_NAME)
        writes: list[tuple[int, int]] = []
        offset = 0
        rng = np.random.default_rng(int(params.get("seed", 0)) + ctx.partition)
        with pq.ParquetWriter(path, schema, **WRITER_OPTIONS) as writer:
            try:
                for chunk in _chunks(reader, chunk_bytes(ctx.memory_limit)):
                    if expression:
                        column = chunk.column(DEST_COLUMN)
                        valid = None if column.null_count == 0 else \
                            column.is_valid().to_numpy(zero_copy_only=False)
                        dest = column.fill_null(0).to_numpy()
                        if method == "expr":
                            _check_range(dest, valid, n, ctx, params["by"])
                        chunk = chunk.drop_columns([DEST_COLUMN])
                    elif method == "range":
                        dest = _range_dest(chunk.column(params["by"]), bounds, n,
                                           bool(params.get("descending")),
                                           bool(params.get("nulls_first")))
                    elif method == "rows":
                        index = np.arange(offset, offset + chunk.num_rows, dtype=np.int64)
                        dest = (index * n) // max(total, 1)
                    else:  # random
                        dest = rng.integers(0, n, chunk.num_rows)
                    offset += chunk.num_rows
                    # small unsigned keys make numpy's stable argsort a radix sort
                    order = np.argsort(dest.astype(_dest_dtype(n)), kind="stable")
                    sorted_dest = dest[order]
                    chunk = chunk.take(pa.array(order))
                    cuts = np.flatnonzero(np.diff(sorted_dest)) + 1
                    starts = np.concatenate([[0], cuts])
                    ends = np.concatenate([cuts, [len(sorted_dest)]])
                    for start, end in zip(starts, ends):
                        if end <= start:
                            continue
                        writer.write_table(chunk.slice(start, end - start),
                                           row_group_size=end - start)
                        writes.append((int(sorted_dest[start]), int(end - start)))
            except duckdb.Error as error:
                raise _failed(error, select, inputs, ctx) from error
        buckets = _bucket_index(path, writes)
        return [{"name": OUTPUT_NAME, "num_rows": offset,
                 "buckets": {k: tuple(v) for k, v in buckets.items()}}]
    finally:
        reset_settings()
        con.close()
