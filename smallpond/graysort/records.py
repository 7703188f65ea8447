"""The 100-byte record (10-byte key + 90-byte value) as numpy arrays and Arrow tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = [
    "RECORD_SIZE",
    "KEY_SIZE",
    "VALUE_SIZE",
    "RECORD_SCHEMA",
    "records_to_table",
    "key_prefix_u64",
    "key_suffix_u16",
]

RECORD_SIZE = 100
KEY_SIZE = 10
VALUE_SIZE = 90
RECORD_SCHEMA = pa.schema([("key", pa.binary(KEY_SIZE)), ("value", pa.binary(VALUE_SIZE))])


def _fixed(array: np.ndarray, width: int) -> pa.FixedSizeBinaryArray:
    data = np.ascontiguousarray(array)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(data),
                                                [None, pa.py_buffer(data)])


def records_to_table(records: np.ndarray) -> pa.Table:
    """An (n, 100) uint8 array as a table with RECORD_SCHEMA (two column copies, no loop)."""
    if records.ndim != 2 or records.shape[1] != RECORD_SIZE:
        raise ValueError(f"records must have shape (n, {RECORD_SIZE}), got {records.shape}")
    return pa.Table.from_arrays([_fixed(records[:, :KEY_SIZE], KEY_SIZE),
                                 _fixed(records[:, KEY_SIZE:], VALUE_SIZE)],
                                schema=RECORD_SCHEMA)


def key_prefix_u64(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each (n, >=8) uint8 key as big-endian uint64 (orders like memcmp)."""
    return np.ascontiguousarray(keys[:, :8]).view(">u8").ravel().astype(np.uint64)


def key_suffix_u16(keys: np.ndarray) -> np.ndarray:
    """Bytes 8-9 of each key as big-endian uint16: breaks ties of the prefix."""
    return np.ascontiguousarray(keys[:, 8:10]).view(">u2").ravel().astype(np.uint16)
