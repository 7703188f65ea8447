"""Row-group slices of Parquet files read by DuckDB itself.

A slice's row groups become ranges of DuckDB's `file_row_number`, which DuckDB prunes by row
group, so a task reads only its row groups, streaming, without copying them through pyarrow.
Files are read one after another (UNION ALL keeps their order), as the slices list them.
"""

from __future__ import annotations

from collections.abc import Sequence

from smallpond.io.files import FileSlice, duckdb_path
from smallpond.io.parquet import open_parquet

__all__ = ["row_group_query", "ROW_NUMBER"]

ROW_NUMBER = "file_row_number"


def _ranges(path: str, groups: Sequence[int]) -> tuple[list[tuple[int, int]], list[str]]:
    """Row ranges [first, last] of the listed row groups (adjacent ones merged); column names."""
    pf = open_parquet(path)
    meta = pf.metadata
    starts = [0]
    for i in range(meta.num_row_groups):
        starts.append(starts[-1] + meta.row_group(i).num_rows)
    ranges: list[tuple[int, int]] = []
    for g in groups:
        first, last = starts[g], starts[g + 1] - 1
        if last < first:
            continue
        if ranges and ranges[-1][1] + 1 == first:
            ranges[-1] = (ranges[-1][0], last)
        else:
            ranges.append((first, last))
    return ranges, list(pf.schema_arrow.names)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def row_group_query(slices: Sequence[FileSlice], columns: Sequence[str] | None) -> str | None:
    """DuckDB SQL that reads the slices in order, or None when this way does not apply (a
    column named like DuckDB's row number column)."""
    selects = []
    first_path = slices[0].path
    for piece in slices:
        pf_groups = piece.row_groups
        ranges, names = _ranges(piece.path, pf_groups if pf_groups is not None else
                                range(open_parquet(piece.path).metadata.num_row_groups))
        if ROW_NUMBER in names:
            return None
        if not ranges:
            continue
        projection = ", ".join(_quote(c) for c in columns) if columns else \
            f"* EXCLUDE ({ROW_NUMBER})"
        where = " OR ".join(f"{ROW_NUMBER} BETWEEN {a} AND {b}" for a, b in ranges)
        selects.append(f"SELECT {projection} FROM read_parquet({_literal(duckdb_path(piece.path))}, "
                       f"{ROW_NUMBER}=true) WHERE {where}")
    if not selects:
        projection = ", ".join(_quote(c) for c in columns) if columns else "*"
        return f"SELECT {projection} FROM read_parquet({_literal(duckdb_path(first_path))}) " \
            "LIMIT 0"
    return "\nUNION ALL\n".join(selects)
