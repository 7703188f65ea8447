"""Kernels of the GraySort record pipeline: sample boundaries, split by range, sort.

Two shuffles, chosen by the planner (pipeline.py):

- "index" (.dat input whose pages every worker shares, i.e. on this machine): a map task maps
  its input range, checksums it and writes only `part.idx`, the uint32 positions of its
  records grouped by destination; a sort task gathers its records straight from the mapped
  input. 4 bytes move per record instead of 100 (no intermediate records in the page cache).
- "records" (generated input, or workers on other machines): a map task writes `part.dat`,
  its records grouped by destination; a sort task reads its ranges back.

Either way a map task's manifest indexes its buckets ((first, count) pairs in
FileSlice.row_groups), and its meta.json holds its record count and input checksum. A sort
task writes its partition with O_DIRECT and, while the records are in memory, valsort's
summary of exactly the bytes it wrote (checksum, order, duplicates, first and last key) into
its meta.json: the job validates by merging summaries, without reading the output again.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import xxhash

from smallpond.errors import InputError
from smallpond.graysort.buffers import records_buffer
from smallpond.graysort.checksum import checksum_records
from smallpond.graysort.direct_io import BlockWriter
from smallpond.graysort.jit import gather_rows
from smallpond.graysort.records import KEY_SIZE, RECORD_SIZE
from smallpond.graysort.sorting import destinations, sort_order
from smallpond.graysort.sources import file_records, read_ranges, sample_keys
from smallpond.graysort.valsort import EMPTY, Summary, merge, summarize_records, summary_to_json
from smallpond.io.files import FileSlice
from smallpond.kernels import register_kernel
from smallpond.kernels.context import TaskContext

__all__ = ["run_bounds", "run_map", "run_reduce", "WRITE_CHUNK"]

WRITE_CHUNK = 1 << 15  # records per output block: 3.2 MB, a multiple of the page size
META = "meta.json"


class _Clock:
    """Per phase of a task: wall seconds, CPU seconds, minor page faults, and the growth of the
    process's resident anonymous memory in bytes (fresh memory that stayed), written to its
    meta.json as [wall, cpu, faults, anon] for profiles."""

    def __init__(self):
        self.phases: dict[str, list[float]] = {}
        self._last = self._now()

    @staticmethod
    def _now() -> tuple[float, float, int, int]:
        usage = resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF))
        return (time.perf_counter(), usage.ru_utime + usage.ru_stime, usage.ru_minflt,
                _anonymous_bytes())

    def lap(self, phase: str) -> None:
        now = self._now()
        entry = self.phases.setdefault(phase, [0.0, 0.0, 0, 0])
        for i in range(4):
            entry[i] += now[i] - self._last[i]
        self._last = now


def _anonymous_bytes() -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_bounds(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
               ctx: TaskContext) -> list[dict]:
    """n-1 boundary keys that split a sample of all input keys into n equal ranges."""
    n = int(params["n"])
    ranges = params["ranges"]
    total = sum(spec[-1] for spec in ranges)
    keys = np.sort(sample_keys(ranges, total, int(params["samples"]) * n, int(params["seed"])))
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


def _buckets(dest: np.ndarray, n: int) -> dict[int, tuple[int, int]]:
    counts = np.bincount(dest, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return {int(d): (int(starts[d]), int(counts[d])) for d in np.flatnonzero(counts)}


def _write_meta(ctx: TaskContext, meta: dict) -> dict:
    with open(os.path.join(ctx.output_dir, META), "w") as handle:
        json.dump(meta, handle)
    return {"name": META, "num_rows": 0}


def run_map(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
            ctx: TaskContext) -> list[dict]:
    """Split a source range by destination (see the module docstring for the two shuffles)."""
    if params.get("shuffle", "records") == "index":
        return _map_index(params, _load_bounds(inputs[0]), ctx)
    return _map_records(params, _load_bounds(inputs[0]), ctx)


def _map_index(params: dict[str, Any], bounds: np.ndarray, ctx: TaskContext) -> list[dict]:
    clock = _Clock()
    group = params["ranges"]
    total = sum(spec[-1] for spec in group)
    if total >= 1 << 32:
        raise InputError(f"a map task of {total} records cannot index them in 32 bits; "
                         "use more partitions", path=group[0][1])
    dest = np.empty(total, dtype=np.int32)
    checksum, filled = 0, 0
    for _, path, first, count in group:
        records = file_records(path, first, count)
        clock.lap("map input")
        if params.get("checksum", True):
            checksum += checksum_records(records)
            clock.lap("checksum")
        dest[filled:filled + count] = destinations(records, bounds)
        filled += count
        clock.lap("partition")
    # a stable sort groups positions by destination, ascending within each (radix sort)
    order = np.argsort(dest.astype(np.int16 if int(params["n"]) < 1 << 15 else np.int32),
                       kind="stable")
    order.astype(np.uint32).tofile(os.path.join(ctx.output_dir, "part.idx"))
    clock.lap("write index")
    meta = {"records": total, "checksum": format(checksum, "x")
            if params.get("checksum", True) else None, "timings": clock.phases}
    return [{"name": "part.idx", "num_rows": total, "buckets": _buckets(dest, int(params["n"]))},
            _write_meta(ctx, meta)]


def _map_records(params: dict[str, Any], bounds: np.ndarray, ctx: TaskContext) -> list[dict]:
    clock = _Clock()
    n = int(params["n"])
    buckets: dict[int, list[int]] = {}
    written = checksum = 0
    with open(os.path.join(ctx.output_dir, "part.dat"), "wb") as out:
        for chunk in read_ranges(params["ranges"]):
            clock.lap("read input")
            if params.get("checksum", True):
                checksum += checksum_records(chunk)
                clock.lap("checksum")
            dest = destinations(chunk, bounds)
            order = np.argsort(dest.astype(np.int16 if n < 32768 else np.int32), kind="stable")
            counts = np.bincount(dest, minlength=n)
            grouped = records_buffer("grouped", len(chunk))
            np.take(chunk, order, axis=0, out=grouped)
            clock.lap("partition")
            grouped.tofile(out)
            clock.lap("write")
            start = written
            for d in np.flatnonzero(counts):
                buckets.setdefault(int(d), []).extend((start, int(counts[d])))
                start += int(counts[d])
            written += len(chunk)
    meta = {"records": written, "checksum": format(checksum, "x")
            if params.get("checksum", True) else None, "timings": clock.phases}
    return [{"name": "part.dat", "num_rows": written,
             "buckets": {d: tuple(v) for d, v in buckets.items()}},
            _write_meta(ctx, meta)]


def _gather_indexed(pieces: Sequence[FileSlice], sources: dict[str, list], total: int,
                    records: np.ndarray) -> None:
    """Copy this partition's records from the mapped input, mapper by mapper."""
    filled = 0
    for piece in pieces:
        group = sources[os.path.basename(os.path.dirname(piece.path))]
        pairs = piece.row_groups or ()
        for first, count in zip(pairs[0::2], pairs[1::2]):
            entries = np.fromfile(piece.path, dtype=np.uint32, count=count, offset=first * 4)
            if len(entries) != count:
                raise OSError(f"{piece.path}: shorter than its index says")
            start = 0
            for _, path, range_first, range_count in group:
                lo, hi = np.searchsorted(entries, [start, start + range_count])
                if hi > lo:
                    source = file_records(path, range_first, range_count)
                    gather_rows(source, entries[lo:hi].astype(np.int64) - start,
                                records[filled:filled + hi - lo])
                    filled += hi - lo
                start += range_count
    if filled != total:
        raise OSError(f"gathered {filled} records, the index lists {total}")


def _read_pieces(pieces: Sequence[FileSlice], records: np.ndarray) -> None:
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


def run_reduce(params: dict[str, Any], inputs: Sequence[Sequence[FileSlice]],
               ctx: TaskContext) -> list[dict]:
    """Collect this partition's records from every map output, sort by key, write
    part-00000.dat, and summarize what was written like valsort (unless told not to)."""
    clock = _Clock()
    indexed = params.get("shuffle", "records") == "index"
    pieces = [s for s in inputs[0] if s.path.endswith(".idx" if indexed else ".dat")]
    total = sum(sum(s.row_groups[1::2]) for s in pieces)
    records = records_buffer("unsorted", total)
    if indexed:
        _gather_indexed(pieces, params["sources"], total, records)
    else:
        _read_pieces(pieces, records)
    clock.lap("gather" if indexed else "read")
    order = sort_order(records)
    clock.lap("sort")
    digest = xxhash.xxh3_64()
    summary = _write_sorted(records, order, os.path.join(ctx.output_dir, "part-00000.dat"),
                            params.get("summary", True), clock, digest)
    meta = {"records": total, "summary": summary_to_json(summary) if summary else None,
            "timings": clock.phases}
    # the manifest's checksum of the file (execute.file_checksum's format) from the blocks as
    # they went out: reading the file back would read it from disk (O_DIRECT left no cache)
    return [{"name": "part-00000.dat", "num_rows": total,
             "checksum": f"xxh3_64:{digest.hexdigest()}"}, _write_meta(ctx, meta)]


def _write_sorted(records: np.ndarray, order: np.ndarray, path: str, summarize: bool,
                  clock: _Clock, digest) -> Summary | None:
    """Gather the records in `order` block by block into aligned buffers, summarize and
    digest each block, and write it (the previous block is written while this one is
    gathered)."""
    parts = []
    with BlockWriter(path, WRITE_CHUNK * RECORD_SIZE) as writer:
        for lo in range(0, len(order), WRITE_CHUNK):
            index = order[lo:lo + WRITE_CHUNK]
            block = writer.buffer()[:len(index) * RECORD_SIZE].reshape(-1, RECORD_SIZE)
            gather_rows(records, index, block)
            clock.lap("gather sorted")
            if summarize:
                parts.append(summarize_records(block))
                clock.lap("validate")
            digest.update(block)
            writer.submit(block.nbytes)
            clock.lap("write")
    clock.lap("write")
    if not summarize:
        return None
    return merge(parts) if parts else EMPTY


register_kernel("graysort.bounds", run_bounds)
register_kernel("graysort.map", run_map)
register_kernel("graysort.reduce", run_reduce)
