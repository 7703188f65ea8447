"""Facts about local disks that errors need: the mount a path lives on, full-disk errors."""

from __future__ import annotations

import errno
import os

__all__ = ["mount_point", "is_disk_full", "same_filesystem", "folder_bytes"]

_FULL_MARKERS = ("no space left on device", "disk quota exceeded", "file too large")


def mount_point(path: str) -> str:
    """The mount point holding `path` (its nearest existing ancestor when it does not exist)."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    while not os.path.ismount(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def is_disk_full(error: BaseException) -> bool:
    """Whether an error (ours, the OS's, DuckDB's or Arrow's) means a disk filled up."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    text = str(error).lower()
    return any(marker in text for marker in _FULL_MARKERS)


def same_filesystem(a: str, b: str) -> bool:
    """Whether two existing paths (or their nearest existing ancestors) share a device."""
    def device(path: str) -> int:
        current = os.path.abspath(path)
        while not os.path.exists(current):
            current = os.path.dirname(current)
        return os.stat(current).st_dev

    return device(a) == device(b)


def folder_bytes(path: str) -> int:
    """Bytes of the files below `path` (links counted as themselves, vanished files as 0)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total
