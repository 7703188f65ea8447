"""Planning a query: CTE scopes, set operations, and the SELECT blocks they are made of."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from smallpond.sql.plan.context import PlanContext, Unsupported
from smallpond.sql.plan.rel import Rel

__all__ = ["Output", "Env", "plan_query"]


@dataclass
class Output:
    """A planned query: `rel` yields its columns in order, named `names` for the user;
    `ordered` when partitions concatenated in order give the rows in ORDER BY order."""

    rel: Rel
    names: list[str]
    ordered: bool = False


@dataclass
class Env:
    """CTEs visible where a query is planned (inner ones shadow outer ones), planned once."""

    ctes: dict[str, exp.Expression] = field(default_factory=dict)
    parent: Env | None = None
    planned: dict[str, Output] = field(default_factory=dict)
    planning: set[str] = field(default_factory=set)

    def child(self, with_: exp.With | None) -> Env:
        if with_ is None:
            return self
        if with_.args.get("recursive"):
            raise Unsupported("recursive CTEs")
        env = Env(parent=self)
        for cte in with_.expressions:
            env.ctes[cte.alias_or_name.lower()] = cte.this
        return env

    def find(self, name: str) -> tuple[Env, exp.Expression] | None:
        env: Env | None = self
        while env is not None:
            if name in env.ctes:
                return env, env.ctes[name]
            env = env.parent
        return None


def plan_query(ctx: PlanContext, query: exp.Expression, env: Env,
               final: list[tuple[str, str]] | None = None) -> Output:
    """Plan any query expression: SELECT, UNION/INTERSECT/EXCEPT, or one in parentheses.
    `final` casts the output columns (the statement's result types)."""
    from smallpond.sql.plan.select import plan_select
    from smallpond.sql.plan.setops import plan_setop

    if isinstance(query, exp.Subquery):
        inner = plan_query(ctx, query.this, env, final)
        if any(query.args.get(k) for k in ("order", "limit", "offset")):
            raise Unsupported("ORDER BY or LIMIT on a parenthesized query")
        return inner
    if isinstance(query, exp.Select):
        return plan_select(ctx, query, env, final)
    if isinstance(query, exp.SetOperation):
        return plan_setop(ctx, query, env.child(query.args.get("with_")), final)
    raise Unsupported(f"{type(query).__name__} as a query")


def plan_cte(ctx: PlanContext, env: Env, name: str) -> Output | None:
    """A CTE by name, planned once per statement."""
    found = env.find(name)
    if found is None:
        return None
    owner, query = found
    if name not in owner.planned:
        if name in owner.planning:
            raise Unsupported(f"CTE {name} refers to itself")
        owner.planning.add(name)
        planned = plan_query(ctx, query, owner)
        if ctx.references.get(name, 0) > 1:  # computed once, read by every reference
            from smallpond.sql.plan.joins import shared

            planned = Output(shared(planned.rel), planned.names, planned.ordered)
        owner.planned[name] = planned
    return owner.planned[name]
