"""Parquet footers as planning facts: rows, bytes per column and min/max per row group.

Read once per file version (path, size, mtime) and cached; nothing but footers is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyarrow as pa

from smallpond.io.parquet import open_parquet

__all__ = ["RowGroupInfo", "FileInfo", "file_info"]


@dataclass(frozen=True)
class RowGroupInfo:
    """One row group: its rows, uncompressed bytes per column and min/max where recorded."""

    rows: int
    column_bytes: tuple[tuple[str, int], ...]
    bounds: tuple[tuple[str, Any, Any], ...]

    def bounds_of(self, column: str) -> tuple[Any, Any] | None:
        for name, low, high in self.bounds:
            if name == column:
                return low, high
        return None


@dataclass(frozen=True)
class FileInfo:
    """A Parquet file's footer in the terms the planner uses."""

    path: str
    identity: str
    rows: int
    schema: pa.Schema
    groups: tuple[RowGroupInfo, ...]

    def column_bytes(self, column: str) -> int:
        return sum(b for g in self.groups for name, b in g.column_bytes if name == column)


@lru_cache(maxsize=4096)
def file_info(path: str, identity: str) -> FileInfo:
    """The footer facts of `path` as it is now (`identity` keys the cache: path|size|mtime)."""
    pf = open_parquet(path)
    meta = pf.metadata
    top = {i: meta.schema.column(i).path.split(".", 1)[0].lower()
           for i in range(meta.num_columns)}
    groups = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        sizes: dict[str, int] = {}
        bounds = []
        for c in range(group.num_columns):
            chunk = group.column(c)
            name = top[c]
            sizes[name] = sizes.get(name, 0) + int(chunk.total_uncompressed_size)
            stats = chunk.statistics
            if "." not in chunk.path_in_schema and stats is not None and stats.has_min_max:
                try:
                    bounds.append((name, stats.min, stats.max))
                except Exception:  # a logical type pyarrow cannot turn into Python values
                    pass
        groups.append(RowGroupInfo(group.num_rows, tuple(sizes.items()), tuple(bounds)))
    return FileInfo(path, identity, meta.num_rows, pf.schema_arrow, tuple(groups))
