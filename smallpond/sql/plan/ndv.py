"""Estimated distinct values of GROUP BY keys: decides whether an aggregate's result is small
enough to finish in one partition (a gather) instead of a hash shuffle."""

from __future__ import annotations

import datetime
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from smallpond.io.parquet import open_parquet
from smallpond.sql.catalog import TableEntry

__all__ = ["column_ndv", "expression_ndv"]

PEEK_ROWS = 1 << 17


@lru_cache(maxsize=1024)
def _peek(path: str, identity: str, column: str) -> tuple[int, int]:
    """(distinct values, rows) in the first row group of a file's column."""
    del identity  # part of the cache key only
    pf = open_parquet(path)
    table = pf.read_row_group(0, columns=[column])
    values = table.column(0)
    if pa.types.is_string_view(values.type):
        values = values.cast(pa.large_string())
    elif pa.types.is_binary_view(values.type):
        values = values.cast(pa.large_binary())
    rows = min(len(values), PEEK_ROWS)
    return int(pc.count_distinct(values.slice(0, rows)).as_py()), rows


def column_ndv(entry: TableEntry, column: str) -> float:
    """Distinct values of a table column: at most its rows, at most max - min + 1 for whole
    numbers and dates, and extrapolated from the first row group: few distinct values there
    mean few overall, nearly all distinct mean a share of the rows (sorted keys)."""
    upper = float(entry.rows)
    if not entry.files:
        return upper
    real = entry.column(column)
    if real is None:
        return upper
    lowered = real.lower()
    low = high = None
    for info in entry.files:
        for group in info.groups:
            bounds = group.bounds_of(lowered)
            if bounds is None:
                low = high = None
                break
            a, b = bounds
            low = a if low is None else min(low, a)
            high = b if high is None else max(high, b)
        else:
            continue
        break
    if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
        upper = min(upper, float(high - low + 1))
    elif isinstance(low, datetime.date) and not isinstance(low, datetime.datetime):
        upper = min(upper, float((high - low).days + 1))
    try:
        first = entry.files[0]
        distinct, rows = _peek(first.path, first.identity, real)
    except Exception:  # a type pyarrow cannot count: the bounds alone
        return upper
    if rows == 0:
        return upper
    if distinct * 20 <= rows:  # few values repeat a lot: assume few overall
        return max(1.0, min(upper, float(distinct * 2)))
    return max(1.0, min(upper, distinct / rows * entry.rows))


def expression_ndv(expr: exp.Expression, lookup) -> float | None:
    """Distinct values of a GROUP BY expression; `lookup(column)` gives a column's estimate
    (None when unknown). None when it cannot be told."""
    if isinstance(expr, exp.Column):
        return lookup(expr)
    if isinstance(expr, (exp.Extract,)) and isinstance(expr.expression, exp.Column):
        unit = expr.this.name.lower() if isinstance(expr.this, (exp.Var, exp.Identifier)) \
            else ""
        base = lookup(expr.expression)
        if unit in ("year", "years"):
            return None if base is None else max(1.0, base / 365.0)
        if unit in ("month", "months"):
            return 12.0
        if unit in ("day", "days"):
            return 31.0
        return base
    if isinstance(expr, exp.Year) and isinstance(expr.this, exp.Column):
        base = lookup(expr.this)
        return None if base is None else max(1.0, base / 365.0)
    return None
