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
    """Whether the query maps each input row to at most one output row on its own (filters
    and projections over `{0}`, possibly nested), so that running it on parts of a partition
    and concatenating the results in order equals running it on the whole partition. False
    when unsure."""
    try:
        text = substitute(sql, lambda i: f"__sp_input_{i}", 1 << 30)
        tree = sqlglot.parse_one(text, read="duckdb")
    except Exception:  # any parse problem: not provably row-wise
        return False
    return _rowwise(tree)


def _rowwise(tree: exp.Expression) -> bool:
    if not isinstance(tree, exp.Select):
        return False
    source = tree.args.get("from_") or tree.args.get("from")
    if source is None:
        return False
    inner = source.this
    if isinstance(inner, exp.Subquery):
        if not _rowwise(inner.this):
            return False
    elif not (isinstance(inner, exp.Table) and inner.name == "__sp_input_0"):
        return False
    for node in _own_nodes(tree):
        if isinstance(node, _ROW_BREAKERS) and node is not inner:
            return False
        if isinstance(node, exp.Anonymous) and node.name.lower() in _TABLE_FUNCTIONS:
            return False
        if isinstance(node, exp.Func) and node.sql_name().lower() in _TABLE_FUNCTIONS:
            return False
    return True


def _own_nodes(tree: exp.Select):
    """The nodes of a SELECT outside the subquery in its FROM (checked on its own)."""
    source = tree.args.get("from_") or tree.args.get("from")
    skip = source.this if source is not None and isinstance(source.this, exp.Subquery) \
        else None
    stack = list(tree.iter_expressions())
    while stack:
        node = stack.pop()
        if node is skip:
            continue
        yield node
        stack.extend(node.iter_expressions())


# functions that produce several rows per input row or depend on the whole partition
_TABLE_FUNCTIONS = {"unnest", "generate_series", "range", "row_number", "random", "setseed"}
