"""UNION [ALL], INTERSECT [ALL] and EXCEPT [ALL] across partitions."""

from __future__ import annotations

from sqlglot import exp

from smallpond.logical.nodes import Concat
from smallpond.sql.plan.context import PlanContext, Unsupported
from smallpond.sql.plan.finish import SortKey, _limit_value, distinct, sort_and_limit
from smallpond.sql.plan.joins import gather, shuffle
from smallpond.sql.plan.query import Env, Output, plan_query
from smallpond.sql.plan.rel import ANY, Rel, quote

__all__ = ["plan_setop"]


def _aligned(ctx: PlanContext, left: Output, right: Output) -> tuple[Rel, Rel, list[str]]:
    """Both sides with the same physical names and common types, in order."""
    if len(left.rel.columns) != len(right.rel.columns):
        raise Unsupported("set operation sides of different widths")
    names = [ctx.fresh(n or "col") for n in left.names]
    types = [ctx.binder.common_type(a, b) for a, b in zip(left.rel.types, right.rel.types)]

    def project(side: Output) -> Rel:
        items = [quote(c) + f" AS {quote(n)}" if t == want else
                 f"CAST({quote(c)} AS {want}) AS {quote(n)}"
                 for c, t, n, want in zip(side.rel.columns, side.rel.types, names, types)]
        return ctx.stage(f"SELECT {', '.join(items)} FROM {{0}}", [side.rel], "set side",
                         ANY, rows=side.rel.rows)

    return project(left), project(right), names


def plan_setop(ctx: PlanContext, node: exp.SetOperation, env: Env,
               final: list[tuple[str, str]] | None = None) -> Output:
    if node.args.get("by_name") or node.args.get("side") or node.args.get("kind") or \
            node.args.get("on"):
        raise Unsupported("UNION BY NAME or set operation modifiers")
    left = plan_query(ctx, node.this, env)
    right = plan_query(ctx, node.expression, env)
    lrel, rrel, names = _aligned(ctx, left, right)
    is_distinct = bool(node.args.get("distinct"))
    if isinstance(node, exp.Union):
        rel = Rel(Concat((lrel.node, rrel.node)), lrel.columns, lrel.types, ANY,
                  lrel.rows + rrel.rows, lrel.width)
        if is_distinct:
            rel = distinct(ctx, rel)
    else:
        word = "INTERSECT" if isinstance(node, exp.Intersect) else "EXCEPT"
        word += "" if is_distinct else " ALL"
        if lrel.n == 1 and rrel.n == 1:
            pass
        elif ctx.small(lrel) and ctx.small(rrel):
            lrel, rrel = gather(lrel), gather(rrel)
        else:
            n = ctx.partitions_for(lrel.est_bytes + rrel.est_bytes)
            lrel = shuffle(lrel, tuple(lrel.columns), n)
            rrel = shuffle(rrel, tuple(rrel.columns), n)
            ctx.note(f"{word.lower()}: both sides hash-shuffled on every column to {n}")
        rel = ctx.stage(f"SELECT * FROM {{0}} {word} SELECT * FROM {{1}}", [lrel, rrel],
                        word.lower(), lrel.partitioning, rows=lrel.rows)
    order = node.args.get("order")
    keys = []
    lowered = {n.lower(): c for n, c in zip(left.names, names)}
    for o in (order.expressions if order is not None else []):
        target = o.this
        if not (isinstance(target, exp.Column) and not target.table and
                target.name.lower() in lowered):
            raise Unsupported("ORDER BY on a set operation by something but a column name")
        keys.append(SortKey(lowered[target.name.lower()], bool(o.args.get("desc")),
                            bool(o.args.get("nulls_first"))))
    done = sort_and_limit(ctx, rel, names, keys, _limit_value(node.args.get("limit")),
                          _limit_value(node.args.get("offset")), final)
    return Output(done.rel, list(left.names), done.ordered)
