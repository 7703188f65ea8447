"""Row-group pruning: predicates of the form `column op constant` checked against min/max."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import duckdb
from sqlglot import exp

from smallpond.sql.footers import RowGroupInfo
from smallpond.sql.plan.exprs import conjuncts

__all__ = ["RangeCheck", "range_checks"]

_CONSTANT_NODES = (exp.Literal, exp.Cast, exp.Neg, exp.Paren, exp.DataType, exp.Add, exp.Sub,
                   exp.Mul, exp.Div, exp.Interval, exp.Var, exp.Boolean, exp.TsOrDsToDate,
                   exp.Date, exp.Identifier)


def _constant(expr: exp.Expression, con: duckdb.DuckDBPyConnection) -> tuple[bool, Any]:
    if not all(isinstance(n, _CONSTANT_NODES) for n in expr.walk()):
        return False, None
    try:
        value = con.execute(f"SELECT {expr.sql(dialect='duckdb')}").fetchone()[0]
    except duckdb.Error:
        return False, None
    if value is None or isinstance(value, (datetime.timedelta, bool)):
        return False, None
    return True, value


_EXACT = (int, decimal.Decimal, datetime.date)


class RangeCheck:
    """`column` must lie in [low, high] (either end open) or be one of `values`."""

    def __init__(self, column: str, low=None, high=None, values=None, strict_low=False,
                 strict_high=False):
        self.column, self.low, self.high, self.values = column, low, high, values
        self.strict_low, self.strict_high = strict_low, strict_high

    def may_match(self, group: RowGroupInfo) -> bool:
        bounds = group.bounds_of(self.column)
        if bounds is None:
            return True
        lo, hi = bounds
        # strings may carry truncated bounds and floats exclude NaN (which DuckDB orders above
        # every number): only exact orderable kinds prune
        if not (isinstance(lo, _EXACT) and isinstance(hi, _EXACT)) or \
                isinstance(lo, bool) or isinstance(hi, bool):
            return True
        try:
            if self.values is not None:
                return any(lo <= v <= hi for v in self.values)
            if self.low is not None and (hi < self.low or (self.strict_low and hi == self.low)):
                return False
            if self.high is not None and (lo > self.high or
                                          (self.strict_high and lo == self.high)):
                return False
        except TypeError:  # values of kinds that do not compare: cannot prune
            return True
        return True


def _column_name(expr: exp.Expression, alias: str) -> str | None:
    if isinstance(expr, exp.Column) and expr.table.lower() == alias:
        return expr.name.lower()
    return None


def range_checks(predicates: list[exp.Expression], alias: str,
                 con: duckdb.DuckDBPyConnection) -> list[RangeCheck]:
    """The prunable parts of predicates on one table alias."""
    checks = []
    flips = {exp.LT: exp.GT, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.GTE: exp.LTE, exp.EQ: exp.EQ}
    for predicate in predicates:
        for part in conjuncts(predicate):
            if isinstance(part, exp.Between):
                name = _column_name(part.this, alias)
                ok_low, low = _constant(part.args["low"], con)
                ok_high, high = _constant(part.args["high"], con)
                if name and ok_low and ok_high:
                    checks.append(RangeCheck(name, low=low, high=high))
                continue
            if isinstance(part, exp.In) and not part.args.get("query"):
                name = _column_name(part.this, alias)
                values = [_constant(v, con) for v in part.expressions]
                if name and values and all(ok for ok, _ in values):
                    checks.append(RangeCheck(name, values=[v for _, v in values]))
                continue
            kind = type(part)
            if kind not in flips:
                continue
            left, right = part.this, part.expression
            name = _column_name(left, alias)
            if name is None:
                name, left, right, kind = _column_name(right, alias), right, left, flips[kind]
            if name is None:
                continue
            ok, value = _constant(right, con)
            if not ok:
                continue
            if kind is exp.EQ:
                checks.append(RangeCheck(name, low=value, high=value))
            elif kind is exp.GT:
                checks.append(RangeCheck(name, low=value, strict_low=True))
            elif kind is exp.GTE:
                checks.append(RangeCheck(name, low=value))
            elif kind is exp.LT:
                checks.append(RangeCheck(name, high=value, strict_high=True))
            elif kind is exp.LTE:
                checks.append(RangeCheck(name, high=value))
    return checks
