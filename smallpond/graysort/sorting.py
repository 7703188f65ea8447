"""Sorting and range-splitting 100-byte records by their 10-byte keys, with numpy."""

from __future__ import annotations

import numpy as np

from smallpond.graysort.records import KEY_SIZE, key_prefix_u64, key_suffix_u16

__all__ = ["sort_order", "destinations", "keys_as_bytes"]


def keys_as_bytes(records: np.ndarray) -> np.ndarray:
    """The keys as numpy 'S10' values. For equal-length keys numpy's order is exactly memcmp
    order: it ignores trailing zero bytes, but two different 10-byte keys never become equal
    that way, and a stripped key sorts first exactly as memcmp's zero byte does."""
    return np.ascontiguousarray(records[:, :KEY_SIZE]).view(f"S{KEY_SIZE}").ravel()


def sort_order(records: np.ndarray) -> np.ndarray:
    """Indices that order records by key: argsort of the 8-byte big-endian prefix, then ties
    (equal prefixes, rare for random keys, common for skewed ones) broken by the last 2 bytes."""
    keys = records[:, :KEY_SIZE]
    prefix = key_prefix_u64(keys)
    order = np.argsort(prefix)
    ranked = prefix[order]
    if len(ranked) > 1 and (ranked[1:] == ranked[:-1]).any():
        suffix = key_suffix_u16(keys)[order]
        order = order[np.lexsort((suffix, ranked))]
    return order


def destinations(records: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Partition of each record: how many boundary keys ('S10', sorted) are <= its key."""
    if len(bounds) == 0:
        return np.zeros(len(records), dtype=np.int32)
    return np.searchsorted(bounds, keys_as_bytes(records), side="right").astype(np.int32)
