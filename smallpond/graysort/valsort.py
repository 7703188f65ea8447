"""valsort 1.5 compatible validation: order, count, duplicates, checksum; mergeable summaries.

Summary file (`valsort -o`): one or more 96-byte entries, concatenated in file order::

    8s  magic b"SPVSUM01"      10s first key   10s last key   2x padding
    16s records (u128 LE)      16s checksum (u128 LE)
    8s  unordered (u64 LE)     8s  duplicates (u64 LE)     8s first unordered (i64 LE, -1: none)
    10x reserved
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from smallpond.graysort.checksum import checksum_records
from smallpond.graysort.jit import order_stats
from smallpond.graysort.records import KEY_SIZE, RECORD_SIZE, key_prefix_u64, key_suffix_u16

__all__ = [
    "Summary",
    "summarize_records",
    "summarize_file",
    "merge",
    "report_lines",
    "write_summaries",
    "read_summaries",
    "summary_to_json",
    "summary_from_json",
]

CHUNK_RECORDS = 1 << 20
MAGIC = b"SPVSUM01"
_ENTRY = struct.Struct("<8s10s10s2x16s16sQQq10x")


@dataclass(frozen=True)
class Summary:
    """What valsort knows about a run of records: enough to merge runs in order."""

    first_key: bytes | None
    last_key: bytes | None
    records: int
    checksum: int
    unordered: int
    duplicates: int
    first_unordered: int | None

    @property
    def ok(self) -> bool:
        return self.unordered == 0


EMPTY = Summary(None, None, 0, 0, 0, 0, None)


def summarize_records(records: np.ndarray) -> Summary:
    """The summary of an (n, 100) uint8 array of records in their given order."""
    n = len(records)
    if n == 0:
        return EMPTY
    keys = records[:, :KEY_SIZE]
    stats = order_stats(records)  # compiled; numpy where it is not
    if stats is None:
        stats = _order_stats_numpy(keys)
    unordered, equal, first = stats
    return Summary(keys[0].tobytes(), keys[-1].tobytes(), n, checksum_records(records),
                   unordered, equal, first)


def _order_stats_numpy(keys: np.ndarray) -> tuple[int, int, int | None]:
    prefix, suffix = key_prefix_u64(keys), key_suffix_u16(keys)
    same_prefix = prefix[1:] == prefix[:-1]
    less = (prefix[1:] < prefix[:-1]) | (same_prefix & (suffix[1:] < suffix[:-1]))
    equal = same_prefix & (suffix[1:] == suffix[:-1])
    unordered = int(less.sum())
    return unordered, int(equal.sum()), int(np.argmax(less)) + 1 if unordered else None


def _join(left: Summary, right: Summary) -> Summary:
    if left.records == 0:
        return right
    if right.records == 0:
        return left
    boundary_less = right.first_key < left.last_key
    boundary_equal = right.first_key == left.last_key
    first = left.first_unordered
    if first is None and boundary_less:
        first = left.records
    if first is None and right.first_unordered is not None:
        first = left.records + right.first_unordered
    return Summary(left.first_key, right.last_key, left.records + right.records,
                   left.checksum + right.checksum,
                   left.unordered + right.unordered + int(boundary_less),
                   left.duplicates + right.duplicates + int(boundary_equal), first)


def merge(summaries: Iterable[Summary]) -> Summary:
    """The summary of runs concatenated in the given order (file boundaries checked too)."""
    result = EMPTY
    for summary in summaries:
        result = _join(result, summary)
    return result


def summarize_file(path: str) -> Summary:
    """Stream a record file in chunks (bounded memory) and summarize it."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory")
    if size % RECORD_SIZE:
        raise ValueError(f"{path}: size {size} is not a multiple of {RECORD_SIZE}-byte records")
    result = EMPTY
    with open(path, "rb") as handle:
        while True:
            data = handle.read(CHUNK_RECORDS * RECORD_SIZE)
            if not data:
                break
            records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_SIZE)
            result = _join(result, summarize_records(records))
    return result


def report_lines(summary: Summary) -> list[str]:
    """valsort's lines for a summary."""
    lines = []
    if summary.unordered:
        lines.append(f"First unordered record is record {summary.first_unordered}")
    lines += [f"Records: {summary.records}", f"Checksum: {summary.checksum:x}"]
    if summary.unordered:
        lines.append(f"ERROR - there are {summary.unordered} unordered records")
    else:
        lines += [f"Duplicate keys: {summary.duplicates}", "SUCCESS - all records are in order"]
    return lines


def _u128(value: int) -> bytes:
    return value.to_bytes(16, "little")


def write_summaries(path: str, summaries: Iterable[Summary]) -> None:
    with open(path, "wb") as out:
        for s in summaries:
            out.write(_ENTRY.pack(MAGIC, s.first_key or b"", s.last_key or b"",
                                  _u128(s.records), _u128(s.checksum), s.unordered,
                                  s.duplicates, -1 if s.first_unordered is None
                                  else s.first_unordered))


def read_summaries(path: str) -> list[Summary]:
    with open(path, "rb") as handle:
        data = handle.read()
    if len(data) % _ENTRY.size:
        raise ValueError(f"{path}: not a summary file (size {len(data)})")
    result = []
    for offset in range(0, len(data), _ENTRY.size):
        magic, first, last, records, checksum, unordered, duplicates, first_bad = \
            _ENTRY.unpack_from(data, offset)
        if magic != MAGIC:
            raise ValueError(f"{path}: not a summary file (bad magic at byte {offset})")
        count = int.from_bytes(records, "little")
        result.append(Summary(first if count else None, last if count else None, count,
                              int.from_bytes(checksum, "little"), unordered, duplicates,
                              None if first_bad < 0 else first_bad))
    return result


def summary_to_json(summary: Summary) -> dict:
    return {"first_key": summary.first_key.hex() if summary.first_key is not None else None,
            "last_key": summary.last_key.hex() if summary.last_key is not None else None,
            "records": summary.records, "checksum": format(summary.checksum, "x"),
            "unordered": summary.unordered, "duplicates": summary.duplicates,
            "first_unordered": summary.first_unordered}


def summary_from_json(data: dict) -> Summary:
    return Summary(bytes.fromhex(data["first_key"]) if data["first_key"] else None,
                   bytes.fromhex(data["last_key"]) if data["last_key"] else None,
                   data["records"], int(data["checksum"], 16), data["unordered"],
                   data["duplicates"], data["first_unordered"])
