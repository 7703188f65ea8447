"""Record buffers kept warm inside a worker process.

Fresh memory costs 1-2 s per GiB of page faults on our machines, more than sorting it; a
long-lived worker that reuses its buffers across chunks and tasks pays that once.
"""

from __future__ import annotations

import numpy as np

from smallpond.graysort.records import RECORD_SIZE

__all__ = ["records_buffer"]

_POOL: dict[str, np.ndarray] = {}


def records_buffer(name: str, count: int) -> np.ndarray:
    """A (count, 100) uint8 view of the worker's buffer `name`, grown when too small.

    The view is valid until the next call with the same name.
    """
    needed = count * RECORD_SIZE
    buffer = _POOL.get(name)
    if buffer is None or buffer.size < needed:
        buffer = np.empty(max(needed, 1), dtype=np.uint8)
        _POOL[name] = buffer
    return buffer[:needed].reshape(count, RECORD_SIZE)
