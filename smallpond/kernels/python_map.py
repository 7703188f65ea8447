"""The Python kernel: user functions over rows or Arrow batches of one partition."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cloudpickle
import pyarrow as pa
import pyarrow.parquet as pq

from smallpond.errors import UserFunctionError, portable_error
from smallpond.io.arrow import large_types
from smallpond.io.files import FileSlice
from smallpond.kernels.context import TaskContext
from smallpond.kernels.duck import connect, register_inputs
from smallpond.kernels.sql import OUTPUT_NAME

__all__ = ["run_python"]

READ_BATCH = 65536


class _Writer:
    """Writes output batches to one Parquet file; the schema is given or taken from the first."""

    def __init__(self, path: str, schema: pa.Schema | None, describe: Callable[[], str]):
        self.path = path
        self.schema = schema
        self.describe = describe
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.schema is None:
            if table.num_rows == 0:
                return
            self.schema = table.schema
        if not table.schema.equals(self.schema, check_metadata=False):
            try:
                table = table.select(self.schema.names).cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError, ValueError) as error:
                raise UserFunctionError(
                    f"{self.describe()} returned rows that do not fit the output schema "
                    f"{self.schema}: {error}. Pass schema= to declare the output types.",
                ) from error
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(table, row_group_size=122880)
        self.rows += table.num_rows

    def close(self, fallback: pa.Schema) -> int:
        if self.writer is None:
            pq.write_table((self.schema or fallback).empty_table(), self.path)
        else:
            self.writer.close()
        return self.rows


def _batches(inputs, params, ctx) -> tuple[pa.Schema, Iterator[pa.RecordBatch], Any]:
    con = connect(ctx)
    con.execute("SET arrow_large_buffer_size = true")
    names = register_inputs(con, inputs, params.get("read", ()))
    reader = con.sql(f"SELECT * FROM {names[0]}").to_arrow_reader(READ_BATCH)
    return large_types(reader.schema), reader, con


def _rebatch(batches: Iterator[pa.RecordBatch], size: int, schema: pa.Schema) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(size - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == size:
                yield pa.Table.from_batches(pending, schema=schema)
                pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending, schema=schema)


def run_python(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
               ctx: TaskContext) -> list[dict]:
    func = cloudpickle.loads(params["func"])
    kind = params["kind"]
    name = params.get("func_name") or getattr(func, "__name__", repr(func))
    declared = pa.ipc.read_schema(pa.py_buffer(params["schema"])) if params.get("schema") else None

    def describe() -> str:
        return f"function {name!r} ({kind}) in stage {ctx.stage} partition {ctx.partition}"

    schema, batches, con = _batches(inputs, params, ctx)
    if kind == "filter" and declared is None:
        declared = schema
    writer = _Writer(os.path.join(ctx.output_dir, OUTPUT_NAME), declared, describe)
    try:
        size = params.get("batch_size") or READ_BATCH
        tables = (table.cast(schema) for table in _rebatch(batches, size, schema))
        if kind == "stream":  # 0.15's map_batches(streaming=True): iterator in, iterator out
            results = _guarded(lambda: func(tables), describe, name, ctx)
            while True:
                result = _guarded(lambda: next(results, None), describe, name, ctx)
                if result is None:
                    break
                writer.write(_as_table(result))
        else:
            for table in tables:
                writer.write(_guarded(lambda t=table: _apply(func, kind, t, declared),
                                      describe, name, ctx))
        rows = writer.close(schema if kind in ("filter",) else pa.schema([]))
    finally:
        con.close()
    return [{"name": OUTPUT_NAME, "num_rows": rows}]


def _guarded(call: Callable, describe: Callable[[], str], name: str, ctx: TaskContext):
    """Run user code; whatever it raises (SystemExit and KeyboardInterrupt too: the user's
    code raised them, the worker is fine) becomes a UserFunctionError, never retried, that
    carries the original's class and state so that the driver can raise an error that is
    also an instance of the user's class."""
    try:
        return call()
    except UserFunctionError:
        raise
    except GeneratorExit:
        raise
    except BaseException as error:
        raise UserFunctionError(
            f"{describe()} raised {type(error).__name__}: {error}", function=name,
            stage=ctx.stage, partition=ctx.partition, user_error=portable_error(error),
        ) from error


def _as_table(result) -> pa.Table:
    if isinstance(result, pa.Table):
        return result
    if isinstance(result, pa.RecordBatch):
        return pa.Table.from_batches([result])
    if hasattr(result, "to_arrow"):
        return result.to_arrow()
    return pa.Table.from_pandas(result, preserve_index=False)


def _apply(func, kind: str, table: pa.Table, declared: pa.Schema | None) -> pa.Table:
    if kind == "batches":
        return _as_table(func(table))
    rows = table.to_pylist()
    if kind == "filter":
        mask = pa.array([bool(func(row)) for row in rows], type=pa.bool_())
        return table.filter(mask)
    if kind == "map":
        out = [func(row) for row in rows]
    elif kind == "flat_map":
        out = [item for row in rows for item in func(row)]
    else:
        raise ValueError(f"unknown python map kind {kind!r}")
    if declared is not None:
        return pa.Table.from_pylist(out, schema=declared)
    return pa.Table.from_pylist(out)
