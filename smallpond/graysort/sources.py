"""Where a GraySort task's records come from: generated, read from .dat files, or mapped.

A range is ["gen", start, count] (gensort records) or ["dat", path, first, count] (records
first .. first+count-1 of a file). Mapping a .dat range shares the page cache's copy of the
file: no read into fresh memory, which on our VMs costs more than the read itself.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator, Sequence

import numpy as np

from smallpond.errors import InputError
from smallpond.graysort.buffers import records_buffer
from smallpond.graysort.gensort import generate_records
from smallpond.graysort.records import KEY_SIZE, RECORD_SIZE
from smallpond.graysort.sorting import keys_as_bytes

__all__ = ["CHUNK", "read_ranges", "file_records", "release_files", "sample_keys"]

CHUNK = 1 << 18  # records per chunk read or generated: bounds memory, stays cache friendly
SAMPLE_RUN = 16


def read_ranges(ranges: Sequence[Sequence], out: np.ndarray | None = None
                ) -> Iterator[np.ndarray]:
    """Records of a source split, in chunks of at most CHUNK records (reused buffers)."""
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
                        raise InputError(f"{path!r} is shorter than when the job started",
                                         path=path)
                    yield buffer


_FILES: dict[str, tuple[tuple[int, int, int], mmap.mmap, np.ndarray]] = {}


def file_records(path: str, first: int, count: int) -> np.ndarray:
    """Records first .. first+count-1 of a .dat file: a read-only (count, 100) array over the
    file's pages. The whole file is mapped once per worker, its page tables filled up front
    (MAP_POPULATE: one pass instead of a fault per 64 KiB as tasks touch it at random), and
    kept for the worker's next tasks until `release_files()`."""
    status = os.stat(path)
    identity = (status.st_ino, status.st_size, status.st_mtime_ns)
    held = _FILES.get(path)
    if held is None or held[0] != identity:
        _release(path)
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < RECORD_SIZE:
                view = np.empty((0, RECORD_SIZE), dtype=np.uint8)
                memory = None
            else:
                flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
                memory = mmap.mmap(handle.fileno(), size, flags=flags, prot=mmap.PROT_READ)
                view = np.frombuffer(memory, dtype=np.uint8,
                                     count=size // RECORD_SIZE * RECORD_SIZE)
                view = view.reshape(-1, RECORD_SIZE)
        held = (identity, memory, view)
        _FILES[path] = held
    view = held[2]
    if first + count > len(view):
        raise InputError(f"{path!r} holds {len(view)} records, fewer than when the job started "
                         f"({first + count} needed)", path=path)
    return view[first:first + count]


def _release(path: str) -> None:
    held = _FILES.pop(path, None)
    if held is not None and held[1] is not None:
        try:
            held[1].close()
        except BufferError:  # a view is still referenced: the mapping goes with it
            pass


def release_files() -> None:
    """Unmap the files `file_records` keeps (the job is over: a deleted input's disk space
    is freed only when no process maps it)."""
    for path in list(_FILES):
        _release(path)


def sample_keys(ranges: Sequence[Sequence], total: int, wanted: int, seed: int) -> np.ndarray:
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
