"""The single-stage plan: the statement as DuckDB runs it, over every input gathered into one
partition. Used where the distributed planner has no answer; never a different result."""

from __future__ import annotations

from sqlglot import exp

from smallpond.logical.nodes import Broadcast, Node, SqlQuery
from smallpond.sql.plan.context import PlanContext

__all__ = ["single_stage", "cte_names"]


def cte_names(tree: exp.Expression) -> set[str]:
    return {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}


def single_stage(ctx: PlanContext, tree: exp.Expression) -> Node:
    """One task that runs `tree` with catalog tables read whole."""
    local = cte_names(tree)
    inputs: list[str] = []
    copy = tree.copy()
    for table in list(copy.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier) or table.args.get("db"):
            continue
        name = table.name.lower()
        if name in local or ctx.catalog.get(name) is None:
            continue
        if name not in inputs:
            inputs.append(name)
        marker = exp.Table(this=exp.to_identifier(f"{ctx.marker}{inputs.index(name)}"))
        alias = table.args.get("alias") or exp.TableAlias(this=exp.to_identifier(table.name,
                                                                                 quoted=True))
        marker.set("alias", alias.copy())
        table.replace(marker)
    text = ctx.placeholders(copy.sql(dialect="duckdb"))
    sources = tuple(Broadcast(ctx.catalog.get(n).node, 1) for n in inputs)
    ordered = isinstance(tree, (exp.Select, exp.SetOperation)) and \
        tree.args.get("order") is not None
    return SqlQuery(sources, text, name="single stage", ordered=ordered,
                    copartitioned=len(sources) > 1, settings=ctx.settings.duckdb)
