"""Subqueries: correlated EXISTS / IN become semi and anti joins, correlated scalar aggregates
become a LEFT JOIN with the subquery grouped by its correlation keys, and uncorrelated ones run
as stages of their own whose (small) result every partition reads."""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from smallpond.sql.plan.context import Unsupported
from smallpond.sql.plan.exprs import (
    QUERY_TYPES,
    aggregates_in,
    and_all,
    col,
    conjuncts,
    defined_aliases,
    free_columns,
    render,
    windows_in,
)
from smallpond.sql.plan.joins import Joined, broadcast, gather, join_rels
from smallpond.sql.plan.query import plan_query
from smallpond.sql.plan.rel import Rel, quote
from smallpond.sql.plan.scan import rename_source

__all__ = ["apply_subquery_conditions", "SideInputs"]


def _outer_aliases(block, query: exp.Expression) -> set[str]:
    """Block aliases the subquery refers to (its correlation)."""
    found = set()
    for column in free_columns(query):
        if not column.table:
            continue
        alias = column.table.lower()
        if alias in block.aliases:
            found.add(alias)
        else:
            raise Unsupported(f"subquery refers to {alias} outside its query block")
    return found


def _query_of(node: exp.Expression) -> exp.Expression:
    return node.this if isinstance(node, exp.Subquery) else node


@dataclass
class SideInputs:
    """Uncorrelated subqueries read whole by every partition of the stage that uses them."""

    rels: list[Rel]
    replacements: list[tuple[exp.Expression, exp.Expression]]

    def inputs(self, n: int) -> list[Rel]:
        return [broadcast(r, n) for r in self.rels]


def side_inputs(block, exprs: list[exp.Expression], first_index: int) -> SideInputs:
    """Plan every uncorrelated subquery in `exprs` as a one-partition input (numbered from
    `first_index`); correlated ones are not supported here."""
    rels: list[Rel] = []
    replacements: list[tuple[exp.Expression, exp.Expression]] = []
    seen: list[exp.Expression] = []
    for expr in exprs:
        for node in _subquery_nodes(expr):
            if any(node == s for s in seen):
                continue
            if _outer_aliases(block, node):
                raise Unsupported("a correlated subquery in this position")
            seen.append(node)
            planned = plan_query(block.ctx, _query_of(node), block.env)
            marker = f"{block.ctx.marker}{first_index + len(rels)}"
            rels.append(gather(planned.rel))
            if isinstance(node, exp.Exists):
                replacement = exp.Exists(this=sqlglot.parse_one(f"SELECT 1 FROM {marker}",
                                                                read="duckdb"))
            else:
                if len(planned.rel.columns) != 1:
                    raise Unsupported("a subquery with several columns in an expression")
                inner = sqlglot.parse_one(
                    f"SELECT {quote(planned.rel.columns[0])} FROM {marker}", read="duckdb")
                replacement = exp.Subquery(this=inner)
            replacements.append((node, replacement))
    return SideInputs(rels, replacements)


def _subquery_nodes(expr: exp.Expression) -> list[exp.Expression]:
    """Outermost subquery nodes (Subquery, EXISTS) in an expression."""
    found = []

    def walk(node: exp.Expression) -> None:
        if isinstance(node, (exp.Subquery, exp.Exists)) or isinstance(node, QUERY_TYPES):
            found.append(node if not isinstance(node, QUERY_TYPES) or not isinstance(
                node.parent, (exp.Subquery, exp.Exists)) else node.parent)
            return
        for child in node.iter_expressions():
            walk(child)

    walk(expr)
    return found


def _split_correlation(block, query: exp.Select) -> tuple[list, list, list]:
    """(equalities [(inner, outer)], other correlated conditions, uncorrelated conditions)
    of a subquery's WHERE."""
    where = query.args.get("where")
    inner_aliases = defined_aliases(query)
    equalities, others, plain = [], [], []
    for cond in conjuncts(where.this if where is not None else None):
        refs = {c.table.lower() for c in free_columns(cond) if c.table}
        outer = {a for a in refs if a not in inner_aliases}
        if not outer:
            plain.append(cond)
            continue
        if not outer <= block.aliases:
            raise Unsupported("a subquery correlated with an outer block further out")
        pair = None
        if isinstance(cond, exp.EQ):
            a, b = cond.this, cond.expression
            ra = {c.table.lower() for c in free_columns(a) if c.table}
            rb = {c.table.lower() for c in free_columns(b) if c.table}
            if ra and rb and ra <= inner_aliases and not (rb & inner_aliases):
                pair = (a, b)
            elif ra and rb and rb <= inner_aliases and not (ra & inner_aliases):
                pair = (b, a)
        if pair is not None:
            equalities.append(pair)
        else:
            others.append(cond)
    return equalities, others, plain


def _simple(query: exp.Expression) -> bool:
    return isinstance(query, exp.Select) and not any(
        query.args.get(k) for k in ("group", "having", "qualify", "order", "limit", "offset",
                                    "distinct", "with_"))


def _plan_inner(block, query: exp.Select, select: list[tuple[exp.Expression, str]],
                plain: list[exp.Expression], group: bool = False):
    """Plan the subquery without its correlated conditions, selecting `select`."""
    inner = query.copy()
    inner.set("expressions", [exp.alias_(e.copy(), name, quoted=True) for e, name in select])
    inner.set("where", exp.Where(this=and_all(c.copy() for c in plain)) if plain else None)
    if group:
        keys = [e.copy() for e, name in select if name.startswith("k")]
        inner.set("group", exp.Group(expressions=keys) if keys else None)
    return plan_query(block.ctx, inner, block.env)


def _inner_columns(exprs: list[exp.Expression], inner_aliases: set[str]) -> list[exp.Column]:
    found: list[exp.Column] = []
    for e in exprs:
        for c in free_columns(e):
            if c.table and c.table.lower() in inner_aliases and not any(c == f for f in found):
                found.append(c)
    return found


def _semi_join(block, joined: Joined, query: exp.Expression, anti: bool,
               probe: exp.Expression | None) -> Joined:
    """`[NOT] EXISTS (query)` or `probe IN (query)` as a semi (anti) join."""
    ctx = block.ctx
    query = _query_of(query)
    correlated = bool(_outer_aliases(block, query))
    if probe is not None and not correlated:
        planned = plan_query(ctx, query, block.env)
        if len(planned.rel.columns) != 1:
            raise Unsupported("IN with a subquery of several columns")
        alias = ctx.temp("__in")
        source = rename_source(ctx, planned.rel, ["v"], alias, ["v"])
        keys = [(probe, exp.column("v", table=alias))]
        others, mapping = [], {(alias, "v"): source.columns["v"]}
        rel = source.rel
    else:
        if not _simple(query) or aggregates_in(query) or windows_in(query):
            raise Unsupported("a correlated subquery with GROUP BY, aggregates or LIMIT")
        equalities, others, plain = _split_correlation(block, query)
        inner_aliases = defined_aliases(query)
        select: list[tuple[exp.Expression, str]] = []
        keys = []
        alias = ctx.temp("__sq")
        if probe is not None:
            select.append((query.expressions[0].unalias(), "k0"))
            keys.append((probe, exp.column("k0", table=alias)))
        for inner, outer in equalities:
            name = f"k{len(select)}"
            select.append((inner, name))
            keys.append((outer, exp.column(name, table=alias)))
        columns = _inner_columns(others, inner_aliases)
        rename = {}
        for c in columns:
            name = f"r{len(select)}"
            select.append((c, name))
            rename[(c.table.lower(), c.name.lower())] = name
        if not select:
            select.append((exp.true(), "k_true"))
        planned = _plan_inner(block, query, select, plain)
        names = [n for _, n in select]
        source = rename_source(ctx, planned.rel, names, alias, names)
        mapping = {(alias, n): source.columns[n] for n in names}
        others = [o.transform(lambda node: exp.column(rename[(node.table.lower(),
                                                              node.name.lower())], table=alias)
                              if isinstance(node, exp.Column) and node.table and
                              (node.table.lower(), node.name.lower()) in rename else node,
                              copy=True) for o in others]
        rel = source.rel
    both = {**joined.columns, **mapping}

    def resolve(column: exp.Column) -> exp.Expression | None:
        physical = both.get((column.table.lower(), column.name.lower()))
        return col(physical) if physical else None

    def resolved(e: exp.Expression) -> exp.Expression:
        return sqlglot.parse_one(render(e, resolve), read="duckdb")

    key_exprs = [(resolved(a), resolved(b)) for a, b in keys]
    residual = and_all(resolved(o) for o in others)
    keep = [p for key, p in joined.columns.items() if key in block._live()]
    kind = "anti" if anti else "semi"
    out = join_rels(ctx, joined.rel, rel, kind, key_exprs, residual, keep,
                    f"{'+'.join(sorted(joined.aliases))} {kind} subquery")
    kept = set(out.columns)
    return Joined(out, {k: v for k, v in joined.columns.items() if v in kept}, joined.aliases,
                  joined.base_rows)


def _scalar_join(block, joined: Joined, node: exp.Subquery
                 ) -> tuple[Joined, exp.Expression]:
    """A correlated scalar aggregate subquery as a LEFT JOIN; returns what replaces it."""
    ctx = block.ctx
    query = node.this
    if not _simple(query) or len(query.expressions) != 1 or windows_in(query):
        raise Unsupported("a correlated scalar subquery that is not one aggregate")
    value = query.expressions[0].unalias()
    if not aggregates_in(value):
        raise Unsupported("a correlated scalar subquery without an aggregate")
    equalities, others, plain = _split_correlation(block, query)
    if others or not equalities:
        raise Unsupported("a correlated scalar subquery correlated by more than equalities")
    if any(c.table and c.table.lower() not in defined_aliases(query)
           for c in free_columns(value)):
        raise Unsupported("outer columns in a correlated subquery's select list")
    alias = ctx.temp("__sc")
    select = [(value, "v")] + [(inner, f"k{i}") for i, (inner, _) in enumerate(equalities)] + \
        [(exp.true(), "m")]
    planned = _plan_inner(block, query, select, plain, group=True)
    names = [n for _, n in select]
    source = rename_source(ctx, planned.rel, names, alias, names)
    keys = [(outer, exp.column(f"k{i}", table=alias)) for i, (_, outer) in
            enumerate(equalities)]
    both = {**joined.columns, **{(alias, n): source.columns[n] for n in names}}

    def resolve(column: exp.Column) -> exp.Expression | None:
        physical = both.get((column.table.lower(), column.name.lower()))
        return col(physical) if physical else None

    key_exprs = [(sqlglot.parse_one(render(a, resolve), read="duckdb"),
                  sqlglot.parse_one(render(b, resolve), read="duckdb")) for a, b in keys]
    keep = [p for key, p in joined.columns.items() if key in block._live()] + \
        [source.columns["v"], source.columns["m"]]
    out = join_rels(ctx, joined.rel, source.rel, "left", key_exprs, None, keep,
                    f"{'+'.join(sorted(joined.aliases))} x correlated subquery")
    ctx.note("correlated scalar subquery decorrelated: aggregated by its correlation keys, "
             "then LEFT JOINed")
    columns = {**joined.columns, (alias, "v"): source.columns["v"],
               (alias, "m"): source.columns["m"]}
    kept = set(out.columns)
    result = Joined(out, {k: v for k, v in columns.items() if v in kept},
                    joined.aliases | {alias}, joined.base_rows)
    v, m = col(source.columns["v"]), col(source.columns["m"])
    if any(isinstance(_agg(a), exp.Count) for a in aggregates_in(value)):
        empty = value.transform(
            lambda n: exp.Literal.number(0) if isinstance(_agg(n), exp.Count) and
            isinstance(n, (exp.Count, exp.Filter)) else (exp.Null() if isinstance(
                n, exp.AggFunc) else n), copy=True)
        replacement = exp.Case(ifs=[exp.If(this=exp.Is(this=m, expression=exp.Null()),
                                           true=empty)], default=v)
    else:
        replacement = v
    return result, replacement


def _agg(node: exp.Expression) -> exp.Expression:
    return node.this if isinstance(node, exp.Filter) else node


def apply_subquery_conditions(block, conds) -> Joined:
    """Apply WHERE conditions that contain subqueries to the block's joined rows."""
    joined = block.joined
    remaining = []
    for cond in conds:
        expr = cond.expr
        negated = isinstance(expr, exp.Not)
        inner = expr.this if negated else expr
        if isinstance(inner, exp.Exists) and _outer_aliases(block, inner.this):
            cond.applied = True
            block.joined = joined = _semi_join(block, joined, inner.this, negated, None)
            continue
        if isinstance(inner, exp.In) and inner.args.get("query") is not None and not negated:
            cond.applied = True
            block.joined = joined = _semi_join(block, joined, inner.args["query"], False,
                                               inner.this)
            continue
        remaining.append(cond)
    if not remaining:
        return joined
    replacements = []
    for cond in remaining:
        for node in _subquery_nodes(cond.expr):
            if isinstance(node, exp.Subquery) and _outer_aliases(block, node) and \
                    not isinstance(node.parent, exp.In):
                block.joined = joined = _scalar_join_wrapped(block, joined, node, replacements)
    final = [c.expr.transform(_replace(replacements), copy=True) for c in remaining]
    for cond in remaining:
        cond.applied = True
    side = side_inputs(block, final, 1)
    condition = and_all(final)
    live = block._live()
    keep = [p for key, p in joined.columns.items() if key in live] or [joined.rel.columns[0]]
    text = render(condition, block.resolver(joined), side.replacements)
    sql = f"SELECT {', '.join(quote(c) for c in keep)} FROM {{0}} WHERE {text}"
    from smallpond.sql.plan.select import _kept

    rel = block.ctx.stage(sql, [joined.rel, *side.inputs(joined.rel.n)], "subquery filter",
                          _kept(joined.rel, keep), rows=joined.rel.rows * 0.5)
    return Joined(rel, {k: v for k, v in joined.columns.items() if v in keep}, joined.aliases,
                  joined.base_rows)


def _scalar_join_wrapped(block, joined, node, replacements):
    result, replacement = _scalar_join(block, joined, node)
    replacements.append((node, replacement))
    return result


def _replace(replacements):
    table = {a: b for a, b in replacements}

    def swap(node):
        hit = table.get(node)
        return hit.copy() if hit is not None else node

    return swap
