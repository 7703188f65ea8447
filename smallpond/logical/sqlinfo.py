"""What a per-partition query does to its rows, read from its text with sqlglot (DuckDB dialect)."""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp

from smallpond.kernels.placeholders import substitute

__all__ = ["is_rowwise"]

_ROW_BREAKERS = (exp.AggFunc, exp.Window, exp.Distinct, exp.Group, exp.Having, exp.Order,
                 exp.Limit, exp.Offset, exp.SetOperation, exp.Join, exp.Qualify, exp.Unnest,
                 exp.Explode, exp.Subquery, exp.With)


@lru_cache(maxsize=1024)
def is_rowwise(sql: str) -> bool:
    """Whether the query maps each input row to at most one output row on its own (a filter or
    projection over `{0}`), so that running it on parts of a partition and concatenating the
    results in order equals running it on the whole partition. False when unsure."""
    try:
        text = substitute(sql, lambda i: f"__sp_input_{i}", 1 << 30)
        tree = sqlglot.parse_one(text, read="duckdb")
    except Exception:  # any parse problem: not provably row-wise
        return False
    if not isinstance(tree, exp.Select):
        return False
    source = tree.args.get("from_") or tree.args.get("from")
    if source is None or not isinstance(source.this, exp.Table) or source.this.name != \
            "__sp_input_0":
        return False
    for node in tree.walk():
        if isinstance(node, _ROW_BREAKERS):
            return False
        if isinstance(node, exp.Anonymous) and node.name.lower() in _TABLE_FUNCTIONS:
            return False
        if isinstance(node, exp.Func) and node.sql_name().lower() in _TABLE_FUNCTIONS:
            return False
    return True


# functions that produce several rows per input row or depend on the whole partition
_TABLE_FUNCTIONS = {"unnest", "generate_series", "range", "row_number", "random", "setseed"}
