"""The GraySort peers, each run as its own fresh process by bench/graysort.py.

    python -m smallpond.bench.graysort_peers SYSTEM INPUT OUTPUT [--runs N] [--data-root DIR]

SYSTEM is `duckdb` or `polars` (a script such as a user would write: read the records, sort,
write them back) or `smallpond` (graysort.run in one session). With --runs N the process
sorts N times into OUTPUT/run-K and prints one line `seconds K S` per run: the warm table
reports the runs after the first. Without it, one sort into OUTPUT (the cold table times the
whole process from outside).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

__all__ = ["duckdb_sort", "polars_sort", "smallpond_sort", "main"]


def _arrow_records(path: str):
    """key (10 bytes) + the whole record (100 bytes) as fixed-size binary, no copies of data."""
    import numpy as np
    import pyarrow as pa

    data = np.fromfile(path, dtype=np.uint8)
    n = len(data) // 100
    records = data.reshape(n, 100)
    key = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(10), n, [None, pa.py_buffer(np.ascontiguousarray(records[:, :10]))])
    record = pa.FixedSizeBinaryArray.from_buffers(pa.binary(100), n, [None, pa.py_buffer(data)])
    return pa.table({"key": key, "record": record})


def _record_bytes(chunk) -> memoryview:
    import numpy as np
    import pyarrow as pa

    if pa.types.is_fixed_size_binary(chunk.type):
        return memoryview(chunk.buffers()[1])[chunk.offset * 100:
                                              (chunk.offset + len(chunk)) * 100]
    if pa.types.is_binary_view(chunk.type):
        chunk = chunk.cast(pa.large_binary())
    width = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
    offsets = np.frombuffer(chunk.buffers()[1], dtype=width)[
        chunk.offset:chunk.offset + len(chunk) + 1]
    return memoryview(chunk.buffers()[2])[int(offsets[0]):int(offsets[-1])]


def _write_record_column(column, path: str) -> None:
    """Write a column of 100-byte values as they lie in Arrow memory (no cast, no copy),
    chunk by chunk (one chunk of a >2 GiB binary column cannot hold 32-bit offsets)."""
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    with open(path, "wb") as out:
        for chunk in chunks:
            out.write(_record_bytes(chunk))


def duckdb_sort(source: str, output: str) -> None:
    """One DuckDB query: ORDER BY the key, with a memory limit and a spill folder."""
    import duckdb
    import psutil

    table = _arrow_records(source)
    spill = os.path.join(output, ".duckdb-spill")
    # a limit that leaves room for the Arrow input and result beside it (default: 80% of RAM)
    con = duckdb.connect(config={
        "memory_limit": f"{int(psutil.virtual_memory().total * 0.45) >> 20}MB",
        "temp_directory": spill})
    con.register("t", table)
    result = con.sql("SELECT record FROM t ORDER BY key").to_arrow_table()
    con.close()
    _write_record_column(result.column("record"), os.path.join(output, "part-00000.dat"))
    shutil.rmtree(spill, ignore_errors=True)


def polars_sort(source: str, output: str) -> None:
    import polars as pl

    frame = pl.from_arrow(_arrow_records(source)).sort("key")
    _write_record_column(frame.to_arrow().column("record"),
                         os.path.join(output, "part-00000.dat"))


def smallpond_sort(source: str, output: str, session, validate: bool = True) -> None:
    from smallpond.graysort.job import run

    result = run(output, input=source, session=session, validate=validate)
    if validate and not result.valid:
        raise RuntimeError("smallpond's own validation failed: " + " ".join(result.report))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m smallpond.bench.graysort_peers")
    parser.add_argument("system", choices=["duckdb", "polars", "smallpond"])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--runs", type=int, default=0)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args(argv)
    session = None
    if args.system == "smallpond":
        import smallpond

        session = smallpond.init(data_root=args.data_root)
    try:
        for run in range(max(1, args.runs)):
            target = os.path.join(args.output, f"run-{run}") if args.runs else args.output
            os.makedirs(target, exist_ok=True)
            start = time.perf_counter()
            if session is not None:
                smallpond_sort(args.input, target, session, validate=not args.no_validate)
            else:
                (duckdb_sort if args.system == "duckdb" else polars_sort)(args.input, target)
            print(f"seconds {run} {time.perf_counter() - start:.6f}", flush=True)
            if session is not None:  # the next run must sort again, not resume
                shutil.rmtree(session.config.tasks_dir, ignore_errors=True)
    finally:
        if session is not None:
            session.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
