"""gensort 1.5 compatible record generation (binary and ASCII), vectorized."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from smallpond.graysort.lcg import stream
from smallpond.graysort.records import RECORD_SIZE, records_to_table

__all__ = ["generate_records", "iter_record_batches", "write_gensort_file"]

# masks of the value bytes, (high 64 bits, the top 16 of the low 64 bits)
_MASKS = [
    (0xF0E8E4E2E1D8D4D2, 0xD1CC), (0xCAC9C6C5C3B8B4B2, 0xB1AC), (0xAAA9A6A5A39C9A99, 0x9695),
    (0x938E8D8B87787472, 0x716C), (0x6A696665635C5A59, 0x5655), (0x534E4D4B473C3A39, 0x3635),
    (0x332E2D2B271E1D1B, 0x170F), (0xC8C4C2C198949291, 0x8CE0), (0x170F332E2D2B271E, 0x1D1B),
]
_HEX = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def _top10_table(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The high 80 bits of each value as 10 big-endian bytes: shape (n, 10)."""
    table = np.empty((len(hi), 10), dtype=np.uint8)
    table[:, :8] = hi.astype(">u8").view(np.uint8).reshape(-1, 8)
    table[:, 8:] = (lo >> np.uint64(48)).astype(">u2").view(np.uint8).reshape(-1, 2)
    return table


def _record_mask() -> np.ndarray:
    """XOR mask of a whole record: 10 zero key bytes, then the masks' top 80 bits."""
    raw = bytes(10) + b"".join(hi.to_bytes(8, "big") + lo.to_bytes(2, "big") for hi, lo in _MASKS)
    return np.frombuffer(raw, dtype=np.uint8)


_MASK = _record_mask()


def _binary(hi: np.ndarray, lo: np.ndarray, count: int, out: np.ndarray | None) -> np.ndarray:
    # top10(U XOR M) == top10(U) XOR top10(M), and record i is top10 of U(i) .. U(i+9): a
    # 100-byte window, stepping 10 bytes, over the table of top-10 bytes, XORed with one mask
    table = _top10_table(hi, lo).ravel()
    windows = np.lib.stride_tricks.as_strided(table, shape=(count, RECORD_SIZE),
                                              strides=(10, 1), writeable=False)
    records = np.empty((count, RECORD_SIZE), dtype=np.uint8) if out is None else out
    np.bitwise_xor(windows, _MASK, out=records)
    return records


def _ascii(hi: np.ndarray, lo: np.ndarray, start: int, count: int) -> np.ndarray:
    records = np.empty((count, RECORD_SIZE), dtype=np.uint8)
    hi, lo = hi[:count], lo[:count]
    base = np.uint64(95)
    value = hi.copy()
    for k in range(8):
        records[:, k] = (value % base).astype(np.uint8) + 32
        value //= base
    value = lo.copy()
    for k in range(8, 10):
        records[:, k] = (value % base).astype(np.uint8) + 32
        value //= base
    records[:, 10:12] = ord(" ")
    number_lo = np.uint64(start & (2**64 - 1)) + np.arange(count, dtype=np.uint64)
    number_hi = np.uint64(start >> 64) + (number_lo < np.uint64(start & (2**64 - 1)))
    for k in range(16):
        shift = np.uint64(60 - 4 * k)
        records[:, 12 + k] = _HEX[((number_hi >> shift) & np.uint64(15)).astype(np.intp)]
        records[:, 28 + k] = _HEX[((number_lo >> shift) & np.uint64(15)).astype(np.intp)]
    records[:, 44:46] = ord(" ")
    for g in range(13):
        nibble = _HEX[((lo >> np.uint64(48 - 4 * g)) & np.uint64(15)).astype(np.intp)]
        records[:, 46 + 4 * g:50 + 4 * g] = nibble[:, None]
    records[:, 98] = ord("\r")
    records[:, 99] = ord("\n")
    return records


def generate_records(start: int, count: int, ascii: bool = False,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Records start .. start+count-1, byte for byte as gensort 1.5 writes them: (count, 100).

    Binary records are written into `out` (a (count, 100) uint8 array) when given.
    """
    if start < 0 or count < 0:
        raise ValueError(f"start and count must be non-negative, got {start}, {count}")
    if count == 0:
        return np.empty((0, RECORD_SIZE), dtype=np.uint8)
    if ascii:
        hi, lo = stream(start + 1, count)
        return _ascii(hi, lo, start, count)
    hi, lo = stream(start + 1, count + 9)
    return _binary(hi, lo, count, out)


def iter_record_batches(start: int, count: int, batch_records: int = 1 << 20,
                        ascii: bool = False) -> Iterator[pa.RecordBatch]:
    """The same records as Arrow record batches (key, value) of at most batch_records rows."""
    for offset in range(0, count, batch_records):
        n = min(batch_records, count - offset)
        yield records_to_table(generate_records(start + offset, n, ascii)).to_batches()[0]


def write_gensort_file(path: str, count: int, start: int = 0, ascii: bool = False,
                       batch_records: int = 1 << 20) -> int:
    """Write a gensort file in bounded memory (temporary name, then rename); return checksum."""
    from smallpond.graysort.checksum import checksum_records  # compiles its loop on import

    temporary = f"{path}.tmp-{os.getpid()}"
    total = 0
    try:
        with open(temporary, "wb") as out:
            for offset in range(0, count, batch_records):
                records = generate_records(start + offset, min(batch_records, count - offset),
                                           ascii)
                total += checksum_records(records)
                out.write(records.tobytes())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return total
