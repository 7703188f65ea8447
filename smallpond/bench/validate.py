"""Checks of a benchmark's result against an independent reference (DuckDB on the input).

Each check runs after the timed region and raises `ValidationError` with what differs, so a
benchmark never reports a time for a wrong answer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import duckdb

__all__ = ["ValidationError", "parquet_source", "compare_aggregates", "fingerprint",
           "check_same_rows", "check_sorted"]


class ValidationError(RuntimeError):
    """A benchmark's output differs from the reference."""


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def parquet_source(path: str) -> str:
    """`read_parquet(...)` of a file, or of the part files of an output folder."""
    if os.path.isdir(path):
        path = os.path.join(path, "*.parquet")
    return f"read_parquet({_quote(path)})"


def compare_aggregates(reference: str, output: str, key: str, exact: Sequence[str],
                       approximate: Sequence[str] = (), rel_tol: float = 1e-9) -> dict:
    """Compare two grouped results (Parquet file or folder) group by group.

    `exact` columns must be equal; `approximate` ones (floating-point sums, whose value
    depends on the order rows are added in) equal within `rel_tol`. Every group must be in
    both, once. Returns {"groups": n}; raises ValidationError otherwise.
    """
    differs = [f"ref.{c} IS DISTINCT FROM out.{c}" for c in exact]
    differs += [f"abs(ref.{c} - out.{c}) > {rel_tol} * greatest(1, abs(ref.{c}))"
                for c in approximate]
    con = duckdb.connect()
    try:
        groups_ref, dup_ref = con.execute(
            f"SELECT count(*), count(*) - count(DISTINCT {key}) FROM {parquet_source(reference)}"
        ).fetchone()
        groups_out, dup_out = con.execute(
            f"SELECT count(*), count(*) - count(DISTINCT {key}) FROM {parquet_source(output)}"
        ).fetchone()
        missing, wrong, example = con.execute(
            f"SELECT count(*) FILTER (WHERE ref.{key} IS NULL OR out.{key} IS NULL), "
            f"count(*) FILTER (WHERE {' OR '.join(differs) or 'false'}), "
            f"any_value(ref.{key}) FILTER (WHERE {' OR '.join(differs) or 'false'}) "
            f"FROM {parquet_source(reference)} ref FULL OUTER JOIN {parquet_source(output)} out "
            f"ON ref.{key} = out.{key}").fetchone()
    finally:
        con.close()
    if (groups_ref, dup_ref, dup_out, missing, wrong) != (groups_out, 0, 0, 0, 0):
        raise ValidationError(
            f"aggregate differs from the reference: {groups_out} groups ({dup_out} repeated) "
            f"vs {groups_ref}; {missing} groups in only one of them; {wrong} groups with other "
            f"values (e.g. {key} = {example})")
    return {"groups": groups_out}


def fingerprint(source: str, columns: Sequence[str]) -> tuple[int, int]:
    """(rows, sum of a hash of each row): equal for equal multisets of rows, in any order."""
    con = duckdb.connect()
    try:
        rows, total = con.execute(
            f"SELECT count(*), coalesce(sum(hash({', '.join(columns)})::HUGEINT), 0) "
            f"FROM {source}").fetchone()
    finally:
        con.close()
    return int(rows), int(total)


def check_same_rows(expected: tuple[int, int], output: str, columns: Sequence[str]) -> int:
    """The output folder holds the rows fingerprinted as `expected`; returns the row count."""
    got = fingerprint(parquet_source(output), columns)
    if got != expected:
        raise ValidationError(f"output rows differ from the input: {got[0]} rows "
                              f"(fingerprint {got[1]}) vs {expected[0]} ({expected[1]})")
    return got[0]


def check_sorted(output: str, keys: Sequence[str], across_parts: bool) -> int:
    """Each part file of `output` is sorted by `keys`; with `across_parts` the parts in name
    order form one sorted sequence. Returns the number of part files."""
    names = sorted(n for n in os.listdir(output) if n.endswith(".parquet"))
    if not names:
        raise ValidationError(f"no part files in {output}")
    files = "[" + ", ".join(_quote(os.path.join(output, n)) for n in names) + "]"
    row = f"({', '.join(keys)})" if len(keys) > 1 else keys[0]
    window = "ORDER BY filename, file_row_number" if across_parts else \
        "PARTITION BY filename ORDER BY file_row_number"
    con = duckdb.connect()
    try:
        unsorted, where = con.execute(
            f"SELECT count(*) FILTER (WHERE prev > cur), any_value(filename) FILTER "
            f"(WHERE prev > cur) FROM (SELECT filename, {row} AS cur, lag({row}) OVER "
            f"({window}) AS prev FROM read_parquet({files}, filename = true, "
            f"file_row_number = true))").fetchone()
    finally:
        con.close()
    if unsorted:
        raise ValidationError(f"output not sorted by {', '.join(keys)}"
                              f"{' across parts' if across_parts else ''}: {unsorted} rows "
                              f"follow a larger key (e.g. in {where})")
    return len(names)
