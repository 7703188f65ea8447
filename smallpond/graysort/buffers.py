"""Buffers kept warm inside a worker process.

Fresh memory costs 1-2 s per GiB of page faults on our machines, more than sorting it; a
long-lived worker that reuses its buffers across chunks and tasks pays that once. Buffers are
named by their use; a view is valid until the next request of the same name.
"""

from __future__ import annotations

import mmap

import numpy as np

from smallpond.graysort.records import RECORD_SIZE

__all__ = ["records_buffer", "array_buffer", "aligned_buffer", "PAGE"]

PAGE = mmap.PAGESIZE
_POOL: dict[str, np.ndarray] = {}
_ALIGNED: dict[str, tuple[mmap.mmap, np.ndarray]] = {}


def array_buffer(name: str, count: int, dtype=np.uint8) -> np.ndarray:
    """A 1-d array of `count` items of `dtype` in the worker's buffer `name` (grown when too
    small, never shrunk)."""
    dtype = np.dtype(dtype)
    needed = count * dtype.itemsize
    buffer = _POOL.get(name)
    if buffer is None or buffer.size < needed:
        buffer = np.empty(max(needed, 1), dtype=np.uint8)
        _POOL[name] = buffer
    return buffer[:needed].view(dtype)


def records_buffer(name: str, count: int) -> np.ndarray:
    """A (count, 100) uint8 view of the worker's buffer `name`."""
    return array_buffer(name, count * RECORD_SIZE).reshape(count, RECORD_SIZE)


def aligned_buffer(name: str, nbytes: int) -> np.ndarray:
    """A page-aligned uint8 array of `nbytes` (anonymous memory), as O_DIRECT writes need."""
    held = _ALIGNED.get(name)
    if held is None or held[1].size < nbytes:
        size = max(PAGE, -(-nbytes // PAGE) * PAGE)
        memory = mmap.mmap(-1, size)
        held = (memory, np.frombuffer(memory, dtype=np.uint8))
        _ALIGNED[name] = held
    return held[1][:nbytes]
