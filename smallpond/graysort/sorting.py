"""Sorting and range-splitting 100-byte records by their 10-byte keys, with numpy."""

from __future__ import annotations

import numpy as np

from smallpond.graysort.buffers import array_buffer
from smallpond.graysort.radix import MIN_COUNT as RADIX_MIN_COUNT
from smallpond.graysort.radix import radix_sort
from smallpond.graysort.records import KEY_SIZE, RECORD_SIZE, key_prefix_u64, key_suffix_u16

__all__ = ["sort_order", "destinations", "keys_as_bytes", "prefixes"]


def keys_as_bytes(records: np.ndarray) -> np.ndarray:
    """The keys as numpy 'S10' values. For equal-length keys numpy's order is exactly memcmp
    order: it ignores trailing zero bytes, but two different 10-byte keys never become equal
    that way, and a stripped key sorts first exactly as memcmp's zero byte does."""
    return np.ascontiguousarray(records[:, :KEY_SIZE]).view(f"S{KEY_SIZE}").ravel()


def prefixes(records: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The first 8 key bytes of each record (rows RECORD_SIZE bytes apart) as big-endian
    uint64, read in place (strided) rather than through a copy of the keys."""
    if records.strides != (RECORD_SIZE, 1):
        records = np.ascontiguousarray(records)
    view = np.ndarray((len(records),), dtype=">u8", buffer=records, strides=(RECORD_SIZE,)) \
        if len(records) else np.empty(0, dtype=">u8")
    if out is None:
        return view.astype(np.uint64)
    np.copyto(out, view, casting="unsafe")
    return out


def sort_order(records: np.ndarray) -> np.ndarray:
    """Indices (int64) that order records by key; equal keys keep their input order.

    One sort of uint64 values that pack the key's 8-byte prefix (shifted to the partition's
    own range: keys of a range partition share their top bits) above the record's index:
    sorting values (radix.py, or numpy's sort in place) is several times faster than
    argsort. Records whose packed prefixes tie (equal or nearly equal keys, common only for
    skewed data) are then ordered exactly by all 10 key bytes.
    """
    n = len(records)
    if n < 2:
        return np.arange(n, dtype=np.int64)
    index_bits = max(1, int(n - 1).bit_length())
    key_bits = 64 - index_bits
    packed = prefixes(records, array_buffer("sort-packed", n, np.uint64))
    low = packed.min()
    np.subtract(packed, low, out=packed)
    spread = int(packed.max()).bit_length()
    shift = max(0, spread - key_bits)
    if shift:
        np.right_shift(packed, np.uint64(shift), out=packed)
    np.left_shift(packed, np.uint64(index_bits), out=packed)
    np.bitwise_or(packed, np.arange(n, dtype=np.uint64), out=packed)
    # by the key bits alone, stably (the index bits below are ascending already): the same
    # order as sorting the whole values; the compiled radix sort is ~3x numpy's sort here
    radixed = radix_sort(packed, array_buffer("sort-scratch", n, np.uint64), index_bits) \
        if n >= RADIX_MIN_COUNT else None
    if radixed is None:
        packed.sort()
    else:
        packed = radixed
    order = (packed & np.uint64((1 << index_bits) - 1)).astype(np.int64)
    top = packed >> np.uint64(index_bits)
    if (top[1:] == top[:-1]).any():
        _order_ties(records, order, top)
    return order


def _order_ties(records: np.ndarray, order: np.ndarray, top: np.ndarray) -> None:
    """Within each run of equal packed prefixes, order the records by their full key."""
    boundaries = np.flatnonzero(top[1:] != top[:-1]) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(top)]))
    runs = ends - starts > 1
    for start, end in zip(starts[runs], ends[runs]):
        members = order[start:end]
        keys = records[members, :KEY_SIZE]
        # equal keys keep their input order (members), as a stable argsort would
        ranked = np.lexsort((members, key_suffix_u16(keys), key_prefix_u64(keys)))
        order[start:end] = members[ranked]


def destinations(records: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Partition of each record: how many boundary keys ('S10', sorted) are <= its key.

    Compares 8-byte prefixes (uint64); only records whose prefix equals a boundary's prefix
    are compared on all 10 bytes.
    """
    if len(bounds) == 0:
        return np.zeros(len(records), dtype=np.int32)
    bound_keys = np.frombuffer(bounds.tobytes(), dtype=np.uint8).reshape(-1, KEY_SIZE)
    bound_prefix = np.ascontiguousarray(bound_keys[:, :8]).view(">u8").ravel()
    prefix = prefixes(records)
    dest = np.searchsorted(bound_prefix, prefix, side="right").astype(np.int32)
    # a record with the prefix of bound b-1 may still be below it (its last 2 bytes)
    near = np.flatnonzero((dest > 0) & (bound_prefix[np.maximum(dest - 1, 0)] == prefix))
    if len(near):
        keys = keys_as_bytes(records[near])
        dest[near] = np.searchsorted(bounds, keys, side="right")
    return dest
