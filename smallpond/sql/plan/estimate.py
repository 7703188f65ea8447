"""Rough selectivity of predicates, for choosing broadcast vs shuffle and partition counts."""

from __future__ import annotations

from sqlglot import exp

from smallpond.sql.plan.exprs import conjuncts

__all__ = ["selectivity"]


def _one(expr: exp.Expression, ndv=None) -> float:
    while isinstance(expr, exp.Paren):
        expr = expr.this
    if isinstance(expr, exp.Not):
        return max(0.05, 1.0 - _one(expr.this, ndv))
    if isinstance(expr, exp.EQ):
        column = expr.this if isinstance(expr.this, exp.Column) else expr.expression
        if ndv is not None and isinstance(column, exp.Column) and \
                not isinstance(expr.this if column is expr.expression else expr.expression,
                               exp.Column):
            distinct = ndv(column)
            if distinct:
                return max(1.0 / distinct, 0.0001)
        return 0.1
    if isinstance(expr, exp.NEQ):
        return 0.9
    if isinstance(expr, exp.In):
        column = expr.this
        if ndv is not None and isinstance(column, exp.Column) and expr.expressions:
            distinct = ndv(column)
            if distinct:
                return min(1.0, len(expr.expressions) / distinct)
        return min(0.5, 0.05 * max(1, len(expr.expressions)))
    if isinstance(expr, (exp.LT, exp.LTE, exp.GT, exp.GTE)):
        return 0.4
    if isinstance(expr, exp.Between):
        return 0.25
    if isinstance(expr, (exp.Like, exp.ILike)):
        return 0.3
    if isinstance(expr, exp.Is):
        return 0.05
    if isinstance(expr, exp.Or):
        return min(1.0, _one(expr.this, ndv) + _one(expr.expression, ndv))
    if isinstance(expr, exp.And):
        return _one(expr.this, ndv) * _one(expr.expression, ndv)
    return 0.5


def selectivity(predicates: list[exp.Expression], ndv=None) -> float:
    """The estimated share of rows that pass all predicates; `ndv(column)` (distinct values
    of a column, or None) sharpens `column = value` and `column IN (...)`."""
    result = 1.0
    for predicate in predicates:
        for part in conjuncts(predicate):
            result *= _one(part, ndv)
    return max(result, 0.0001)
