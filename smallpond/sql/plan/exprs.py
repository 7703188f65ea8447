"""Expression helpers over qualified sqlglot trees: conjuncts, references, rendering."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlglot import exp

from smallpond.logical.aggregates import aggregate_calls
from smallpond.sql.plan.context import Unsupported
from smallpond.sql.plan.rel import quote

__all__ = [
    "conjuncts",
    "and_all",
    "defined_aliases",
    "free_columns",
    "free_aliases",
    "has_subquery",
    "is_subquery_predicate",
    "render",
    "col",
    "factor_or",
    "implied_filter",
    "aggregates_in",
    "windows_in",
]

QUERY_TYPES = (exp.Select, exp.SetOperation)


def col(name: str) -> exp.Column:
    """A reference to a physical column."""
    return exp.Column(this=exp.Identifier(this=name, quoted=True))


def conjuncts(expr: exp.Expression | None) -> list[exp.Expression]:
    """The AND-ed parts of a condition, without parentheses and TRUE."""
    if expr is None:
        return []
    while isinstance(expr, exp.Paren):
        expr = expr.this
    if isinstance(expr, exp.And):
        return conjuncts(expr.this) + conjuncts(expr.expression)
    if isinstance(expr, exp.Boolean) and expr.this is True:
        return []
    return [expr]


def and_all(parts: Iterable[exp.Expression]) -> exp.Expression | None:
    parts = list(parts)
    if not parts:
        return None
    result = parts[0]
    for part in parts[1:]:
        result = exp.And(this=_paren(result), expression=_paren(part))
    return result


def _paren(expr: exp.Expression) -> exp.Expression:
    return exp.Paren(this=expr) if isinstance(expr, (exp.Or, exp.And)) else expr


def defined_aliases(query: exp.Expression) -> set[str]:
    """Aliases a SELECT defines for its own columns (FROM, JOIN) and the CTE names it has."""
    names: set[str] = set()
    if isinstance(query, exp.Select):
        sources = []
        if query.args.get("from_") is not None:
            sources.append(query.args["from_"].this)
        sources.extend(j.this for j in query.args.get("joins") or [])
        for source in sources:
            alias = source.alias_or_name
            if alias:
                names.add(alias.lower())
    with_ = query.args.get("with_")
    if with_ is not None:
        names.update(c.alias_or_name.lower() for c in with_.expressions)
    return names


def free_columns(expr: exp.Expression, bound: frozenset[str] = frozenset()
                 ) -> list[exp.Column]:
    """Column references whose table alias is not defined inside `expr` (nor in `bound`)."""
    found: list[exp.Column] = []

    def walk(node: exp.Expression, inner: frozenset[str]) -> None:
        if isinstance(node, QUERY_TYPES):
            inner = inner | frozenset(defined_aliases(node))
        if isinstance(node, exp.Column):
            if node.table and node.table.lower() not in inner:
                found.append(node)
            elif not node.table:
                found.append(node)
            return
        for child in node.iter_expressions():
            walk(child, inner)

    walk(expr, bound)
    return found


def free_aliases(expr: exp.Expression) -> set[str]:
    return {c.table.lower() for c in free_columns(expr) if c.table}


def has_subquery(expr: exp.Expression) -> bool:
    return any(isinstance(n, QUERY_TYPES) for n in expr.walk() if n is not expr) or \
        isinstance(expr, QUERY_TYPES)


def is_subquery_predicate(expr: exp.Expression) -> bool:
    return has_subquery(expr)


def aggregates_in(expr: exp.Expression) -> list[exp.Expression]:
    """Aggregate calls (with their FILTER clause) outside window functions and subqueries."""
    return aggregate_calls(expr)


def windows_in(expr: exp.Expression) -> list[exp.Window]:
    found: list[exp.Window] = []

    def walk(node: exp.Expression) -> None:
        if isinstance(node, QUERY_TYPES):
            return
        if isinstance(node, exp.Window):
            found.append(node)
            return
        for child in node.iter_expressions():
            walk(child)

    walk(expr)
    return found


Resolver = Callable[[exp.Column], "exp.Expression | None"]


def render(expr: exp.Expression, resolve: Resolver,
           replacements: list[tuple[exp.Expression, exp.Expression]] = ()) -> str:
    """DuckDB SQL of `expr` with columns resolved to physical names and subtrees replaced.

    Replacements match structurally (an aggregate call, a GROUP BY expression, a subquery) and
    win over the columns inside them. A column that `resolve` does not know is an error.
    """
    table = {r[0]: r[1] for r in replacements}

    def swap(node: exp.Expression) -> exp.Expression:
        if table:
            hit = table.get(node)
            if hit is not None:
                return hit.copy()
        if isinstance(node, exp.Column):
            resolved = resolve(node)
            if resolved is None:
                raise Unsupported(f"column {node.sql('duckdb')} cannot be resolved here")
            return resolved.copy()
        return node

    return expr.transform(swap, copy=True).sql(dialect="duckdb")


def factor_or(expr: exp.Expression) -> list[exp.Expression]:
    """(A AND B) OR (A AND C) -> [A, B OR C]: conjuncts shared by every branch come out."""
    while isinstance(expr, exp.Paren):
        expr = expr.this
    if not isinstance(expr, exp.Or):
        return [expr]
    branches = _disjuncts(expr)
    parts = [conjuncts(b) for b in branches]
    common = [c for c in parts[0] if all(any(c == d for d in p) for p in parts[1:])]
    if not common:
        return [expr]
    rest = []
    for p in parts:
        remaining = [c for c in p if not any(c == d for d in common)]
        if not remaining:
            return common  # one branch is just the common part: the OR is implied by it
        rest.append(and_all(remaining))
    disjunction = rest[0]
    for r in rest[1:]:
        disjunction = exp.Or(this=_paren(disjunction), expression=_paren(r))
    return common + [disjunction]


def _disjuncts(expr: exp.Expression) -> list[exp.Expression]:
    while isinstance(expr, exp.Paren):
        expr = expr.this
    if isinstance(expr, exp.Or):
        return _disjuncts(expr.this) + _disjuncts(expr.expression)
    return [expr]


def implied_filter(expr: exp.Expression, alias: str) -> exp.Expression | None:
    """For an OR whose every branch constrains `alias` alone, the OR of those constraints: a
    weaker filter that can be applied to `alias` before any join."""
    while isinstance(expr, exp.Paren):
        expr = expr.this
    if not isinstance(expr, exp.Or):
        return None
    branches = []
    for branch in _disjuncts(expr):
        own = [c for c in conjuncts(branch)
               if not has_subquery(c) and free_aliases(c) == {alias}]
        if not own:
            return None
        branches.append(and_all(own))
    result = branches[0]
    for b in branches[1:]:
        result = exp.Or(this=_paren(result), expression=_paren(b))
    return result


def ident(name: str) -> str:
    return quote(name)
