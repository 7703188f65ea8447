"""Kernels of the GraySort record pipeline: sample boundaries, split by range, sort.

Intermediates are raw records. A map task's `part.dat` holds its records grouped by destination;
the manifest's bucket index lists, per destination, (first record, record count) pairs, carried
in FileSlice.row_groups for a .dat file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from smallpond.graysort.buffers import records_buffer
from smallpond.graysort.gensort import generate_records
from smallpond.graysort.records import KEY_SIZE, RECORD_SIZE
from smallpond.graysort.sorting import destinations, keys_as_bytes, sort_order
from smallpond.io.files import FileSlice
from smallpond.kernels import register_kernel
from smallpond.kernels.context import TaskContext

__all__ = ["read_ranges", "run_bounds", "run_map", "run_reduce"]

CHUNK = 1 << 18  # records per map chunk: bounds a mapper's memory, stays cache friendly
SAMPLE_RUN = 16
WRITE_CHUNK = 1 << 15  # records gathered per write in a sort task (3.2 MB)


def read_ranges(ranges: Sequence[Sequence], out: np.ndarray | None = None
                ) -> Iterator[np.ndarray]:
    """Records of a source split, in chunks of at most CHUNK records.

    A range is ["gen", start, count] (gensort records) or ["dat", path, first, count].
    """
    for spec in ranges:
        if spec[0] == "gen":
            _, start, count = spec
            for lo in range(0, count, CHUNK):
                n = min(CHUNK, count - lo)
                yield generate_records(start + lo, n, out=records_buffer("gen", n))
        else:
            _, path, first, count = spec
            with open(path, "rb") as handle:
                handle.seek(first * RECORD_SIZE)
                for lo in range(0, count, CHUNK):
                    n = min(CHUNK, count - lo)
                    buffer = records_buffer("read", n) if out is None else out[:n]
                    if handle.readinto(memoryview(buffer).cast("B")) != n * RECORD_SIZE:
                        raise OSError(f"{path}: file shorter than expected")
                    yield buffer


def _sample(ranges: Sequence[Sequence], total: int, wanted: int, seed: int) -> np.ndarray:
    """Keys of runs of SAMPLE_RUN records at seeded random positions across all ranges."""
    runs = max(1, min(total // SAMPLE_RUN, -(-wanted // SAMPLE_RUN)))
    positions = np.sort(np.random.default_rng(seed).integers(0, max(1, total - SAMPLE_RUN + 1),
                                                            runs))
    keys, offset = [], 0
    for spec in ranges:
        count = spec[-1]
        inside = positions[(positions >= offset) & (positions < offset + count)] - offset
        for position in inside:
            n = int(min(SAMPLE_RUN, count - position))
            piece = ["gen", spec[1] + position, n] if spec[0] == "gen" else \
                ["dat", spec[1], spec[2] + position, n]
            for chunk in read_ranges([piece]):
                keys.append(keys_as_bytes(chunk))
        offset += count
    return np.concatenate(keys) if keys else np.array([], dtype=f"S{KEY_SIZE}")


def run_bounds(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
               ctx: TaskContext) -> list[dict]:
    """n-1 boundary keys that split a sample of all input keys into n equal ranges."""
    n = int(params["n"])
    ranges = params["ranges"]
    total = sum(spec[-1] for spec in ranges)
    keys = np.sort(_sample(ranges, total, int(params["samples"]) * n, int(params["seed"])))
    picks = [min(len(keys) - 1, round(j * len(keys) / n)) for j in range(1, n)] if len(keys) \
        else []
    bounds = keys[picks] if picks else keys[:0]
    with open(os.path.join(ctx.output_dir, "bounds.key"), "wb") as out:
        out.write(bounds.astype(f"S{KEY_SIZE}").tobytes())
    return [{"name": "bounds.key", "num_rows": len(bounds)}]


def _load_bounds(slices: Sequence[FileSlice]) -> np.ndarray:
    path = next(s.path for s in slices if s.path.endswith("bounds.key"))
    with open(path, "rb") as handle:
        return np.frombuffer(handle.read(), dtype=f"S{KEY_SIZE}")


def _checksum_function():
    # imported only when wanted: numba's import and cached-code load cost ~1.5 s per process
    from smallpond.graysort.checksum import checksum_records

    return checksum_records


def run_map(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
            ctx: TaskContext) -> list[dict]:
    """Split a source range by destination: one part.dat, records grouped by destination."""
    bounds = _load_bounds(inputs[0])
    n = int(params["n"])
    buckets: dict[int, list[int]] = {}
    written = checksum = 0
    checksum_records = _checksum_function() if params.get("checksum", True) else None
    with open(os.path.join(ctx.output_dir, "part.dat"), "wb") as out:
        for chunk in read_ranges(params["ranges"]):
            if checksum_records is not None:
                checksum += checksum_records(chunk)
            dest = destinations(chunk, bounds)
            order = np.argsort(dest.astype(np.int16 if n < 32768 else np.int32), kind="stable")
            counts = np.bincount(dest, minlength=n)
            grouped = records_buffer("grouped", len(chunk))
            np.take(chunk, order, axis=0, out=grouped)
            grouped.tofile(out)
            start = written
            for d in np.flatnonzero(counts):
                buckets.setdefault(int(d), []).extend((start, int(counts[d])))
                start += int(counts[d])
            written += len(chunk)
    with open(os.path.join(ctx.output_dir, "meta.json"), "w") as handle:
        json.dump({"records": written,
                   "checksum": format(checksum, "x") if checksum_records else None}, handle)
    return [{"name": "part.dat", "num_rows": written,
             "buckets": {d: tuple(v) for d, v in buckets.items()}},
            {"name": "meta.json", "num_rows": 0}]


def run_reduce(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
               ctx: TaskContext) -> list[dict]:
    """Read this partition's ranges from every map output, sort by key, write part-00000.dat."""
    pieces = [s for s in inputs[0] if s.path.endswith(".dat")]
    total = sum(sum(s.row_groups[1::2]) for s in pieces)
    records = records_buffer("unsorted", total)
    view = memoryview(records).cast("B")
    filled = 0
    for piece in pieces:
        with open(piece.path, "rb") as handle:
            pairs = piece.row_groups
            for first, count in zip(pairs[0::2], pairs[1::2]):
                handle.seek(first * RECORD_SIZE)
                end = (filled + count) * RECORD_SIZE
                if handle.readinto(view[filled * RECORD_SIZE:end]) != count * RECORD_SIZE:
                    raise OSError(f"{piece.path}: shorter than its index says")
                filled += count
    order = sort_order(records)
    with open(os.path.join(ctx.output_dir, "part-00000.dat"), "wb") as out:
        # gather through a small buffer that stays in cache, not a second partition-sized one
        for lo in range(0, total, WRITE_CHUNK):
            index = order[lo:lo + WRITE_CHUNK]
            block = records_buffer("sorted", len(index))
            np.take(records, index, axis=0, out=block)
            block.tofile(out)
    return [{"name": "part-00000.dat", "num_rows": total}]


register_kernel("graysort.bounds", run_bounds)
register_kernel("graysort.map", run_map)
register_kernel("graysort.reduce", run_reduce)
