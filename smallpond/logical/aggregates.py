"""Aggregates that split into a partial phase and a merge phase (two-phase aggregation).

count, sum, min, max, avg (of numbers), bool_and and bool_or, with FILTER clauses, are
decomposable; DISTINCT aggregates and the rest (median, string_agg, ...) are not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

__all__ = ["Decomposed", "decompose", "split_filter", "aggregate_calls", "NUMERIC_PREFIXES"]

NUMERIC_PREFIXES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                    "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE",
                    "DECIMAL")


@dataclass(frozen=True)
class Decomposed:
    """An aggregate call split in two: partial expressions (one or two), and how the final
    phase merges the partial columns (`{0}`, `{1}` stand for them)."""

    partials: tuple[str, ...]
    merge: str


def split_filter(call: exp.Expression) -> tuple[exp.Expression, exp.Expression | None]:
    """(aggregate, its FILTER condition or None)."""
    if isinstance(call, exp.Filter):
        return call.this, call.expression
    return call, None


def decompose(call: exp.Expression, render: Callable[[exp.Expression], str],
              arg_type: str | None) -> Decomposed | None:
    """How an aggregate call splits into partial + merge, or None when it does not.
    `render` writes an expression as the partial phase's SQL; `arg_type` is avg's argument
    type (avg decomposes for numbers only)."""
    agg, filter_ = split_filter(call)
    if any(isinstance(n, exp.Distinct) for n in agg.walk()):
        return None
    whole = render(call)
    for kind, merge in _MERGE_OF_ITSELF:
        if isinstance(agg, kind):
            return Decomposed((whole,), merge)
    if isinstance(agg, exp.Avg) and arg_type and arg_type.upper().startswith(NUMERIC_PREFIXES):
        argument = render(agg.this)
        where = f" FILTER (WHERE {render(filter_.this)})" if filter_ else ""
        return Decomposed((f"sum({argument}){where}", f"count({argument}){where}"),
                          "CAST(sum({0}) AS DOUBLE) / NULLIF(sum({1}), 0)")
    return None


# aggregates whose partial results merge with one aggregate of them (isinstance order matters
# only in that no class here subclasses another)
_MERGE_OF_ITSELF = (
    (exp.Count, "CAST(sum({0}) AS BIGINT)"), (exp.Sum, "sum({0})"), (exp.Min, "min({0})"),
    (exp.Max, "max({0})"), (exp.LogicalAnd, "bool_and({0})"), (exp.LogicalOr, "bool_or({0})"),
)


def aggregate_calls(expr: exp.Expression) -> list[exp.Expression]:
    """Distinct aggregate calls (with their FILTER clause) in an expression, outside
    subqueries; inside a window only the aggregates among its arguments and keys count."""
    found: list[exp.Expression] = []

    def walk(node: exp.Expression) -> None:
        if isinstance(node, (exp.Select, exp.SetOperation)):
            return
        if isinstance(node, exp.Window):
            inner = node.this
            for child in (inner.iter_expressions() if isinstance(inner, exp.AggFunc)
                          else [inner]):
                walk(child)
            for child in [*(node.args.get("partition_by") or []), node.args.get("order")]:
                if child is not None:
                    walk(child)
            return
        if isinstance(node, exp.AggFunc) or (isinstance(node, exp.Filter) and
                                             isinstance(node.this, exp.AggFunc)):
            if not any(node == f for f in found):
                found.append(node)
            return
        for child in node.iter_expressions():
            walk(child)

    walk(expr)
    return found
