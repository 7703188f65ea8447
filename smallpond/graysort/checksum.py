"""valsort's checksum: the 128-bit sum of each record's zlib CRC-32, vectorized.

CRC-32 of a fixed-length message is affine in its bytes: crc(m) = crc(0...0) XOR the XOR over
positions k of T_k[m_k]. Pairs of bytes use 65536-entry tables, so a 100-byte record costs 50
table lookups, done column by column on chunks that stay in cache.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["checksum_records", "record_crcs"]

CHUNK = 1 << 15
_TABLES: dict[int, tuple[np.ndarray, int]] = {}


def _tables(length: int) -> tuple[np.ndarray, int]:
    if length not in _TABLES:
        zero = bytes(length)
        base = zlib.crc32(zero)
        single = np.empty((length, 256), dtype=np.uint32)
        for position in range(length):
            message = bytearray(length)
            for value in range(256):
                message[position] = value
                single[position, value] = zlib.crc32(message) ^ base
        pairs = length // 2
        values = np.arange(65536)
        table = np.empty((pairs, 65536), dtype=np.uint32)
        for pair in range(pairs):  # little-endian uint16: the first byte is the low 8 bits
            table[pair] = single[2 * pair, values & 0xFF] ^ single[2 * pair + 1, values >> 8]
        _TABLES[length] = (table, base)
    return _TABLES[length]


def record_crcs(records: np.ndarray) -> np.ndarray:
    """zlib.crc32 of each row of an (n, L) uint8 array with even L, as uint32."""
    n, length = records.shape
    if length % 2:
        raise ValueError("record length must be even")
    table, base = _tables(length)
    out = np.empty(n, dtype=np.uint32)
    for lo in range(0, n, CHUNK):
        chunk = np.ascontiguousarray(records[lo:lo + CHUNK]).view("<u2")
        crc = np.full(len(chunk), base, dtype=np.uint32)
        for pair in range(length // 2):
            crc ^= table[pair][chunk[:, pair]]
        out[lo:lo + CHUNK] = crc
    return out


def checksum_records(records: np.ndarray) -> int:
    """Sum of the records' CRC-32 values (an unsigned 128-bit quantity as a Python int)."""
    if len(records) == 0:
        return 0
    return int(record_crcs(records).astype(np.uint64).sum(dtype=np.uint64))
