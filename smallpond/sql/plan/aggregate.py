"""GROUP BY across partitions.

Decomposable aggregates (count, sum, min, max, avg, bool_and/or, with FILTER) run in two phases:
a partial aggregate in every partition (fused into the stage that produces the rows), then the
partial groups gathered into one partition (few groups) or hash-shuffled on the group keys,
and merged. Other aggregates (DISTINCT, median, string_agg, ...) shuffle the rows on the group
keys and aggregate once. Input already hash-partitioned on the keys aggregates in place.
"""

from __future__ import annotations

import math

from sqlglot import exp

from smallpond.logical.aggregates import decompose, split_filter
from smallpond.sql.plan.context import PlanContext, Unsupported
from smallpond.sql.plan.exprs import aggregates_in, col, render, windows_in
from smallpond.sql.plan.joins import gather, shuffle
from smallpond.sql.plan.ndv import expression_ndv
from smallpond.sql.plan.rel import ANY, Partitioning, Rel, quote

__all__ = ["plan_aggregate"]

def _collect_calls(sel: exp.Select) -> list[exp.Expression]:
    calls: list[exp.Expression] = []
    exprs = list(sel.expressions) + [sel.args[k] for k in ("having", "order", "qualify")
                                     if sel.args.get(k) is not None]
    for e in exprs:
        for call in aggregates_in(e):
            if not any(call == c for c in calls):
                calls.append(call)
    return calls


def _group_exprs(sel: exp.Select) -> list[exp.Expression]:
    group = sel.args.get("group")
    if group is None:
        return []
    if any(group.args.get(k) for k in ("grouping_sets", "cube", "rollup", "totals")):
        raise Unsupported("GROUPING SETS, CUBE or ROLLUP")
    if group.args.get("all"):
        return [e.unalias() for e in sel.expressions
                if not aggregates_in(e) and not windows_in(e)]
    return list(group.expressions)


def plan_aggregate(block, rel: Rel, resolve) -> tuple[Rel, list[tuple[exp.Expression,
                                                                      exp.Expression]]]:
    """Aggregate `rel` (the block's joined rows); return the result (group key columns, then
    aggregate columns) and the replacements that make later expressions read them."""
    ctx: PlanContext = block.ctx
    sel = block.sel
    groups = _group_exprs(sel)
    calls = _collect_calls(sel)
    if any(windows_in(c) for c in calls):
        raise Unsupported("a window function inside an aggregate")
    group_sql = [render(g, resolve) for g in groups]
    call_sql = [render(c, resolve) for c in calls]
    schema = [list(zip(rel.columns, rel.types))]
    probe = [f"{s} AS {quote(f'c{i}')}" for i, s in enumerate(group_sql + call_sql)] or ["1"]
    probe_group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(groups)))}" \
        if groups else ""
    types = [t for _, t in ctx.binder.bind(f"SELECT {', '.join(probe)} FROM {{0}}{probe_group}",
                                           schema)]
    call_types = types[len(groups):]
    arg_types = []
    for call in calls:
        agg, _ = split_filter(call)
        argument = agg.this if isinstance(agg, exp.Avg) else None
        if argument is None:
            arg_types.append(None)
            continue
        bound = ctx.binder.bind(f"SELECT {render(argument, resolve)} FROM {{0}}", schema)
        arg_types.append(bound[0][1])
    g_names = [ctx.temp("__g") for _ in groups]
    a_names = [ctx.temp("__a") for _ in calls]
    replacements = [(g, col(n)) for g, n in zip(groups, g_names)] + \
        [(c, col(n)) for c, n in zip(calls, a_names)]
    positions = ", ".join(str(i + 1) for i in range(len(groups)))
    group_by = f" GROUP BY {positions}" if groups else ""
    groups_est = _estimate_groups(block, groups, rel)
    width = 16.0 * (len(groups) + len(calls))

    plain = [(resolve_plain(g, resolve), n) for g, n in zip(groups, g_names)]
    plain_keys = [e.name for e, _ in plain if e is not None]
    plain_names = [n for e, n in plain if e is not None]
    in_place = rel.n == 1 or (groups and rel.hashed_on(tuple(plain_keys)))
    decomposed = [decompose(c, lambda e: render(e, resolve), t) for c, t in zip(calls, arg_types)]

    def final_over(source: Rel, items: list[str], partitioning, label, rows) -> Rel:
        select = [f"{g} AS {quote(n)}" for g, n in zip(group_sql, g_names)] + items
        sql = f"SELECT {', '.join(select)} FROM {{0}}{group_by}"
        return ctx.stage(sql, [source], label, partitioning, rows=rows, width=width)

    if in_place:
        items = [f"{s} AS {quote(n)}" for s, n in zip(call_sql, a_names)]
        part = rel.partitioning.renamed(dict(zip(plain_keys, plain_names))) \
            if rel.n > 1 else ANY
        if rel.n > 1:
            ctx.note("aggregate: input already hash-partitioned on group keys "
                     f"({rel.n} partitions), one phase, no shuffle")
        out = final_over(rel, items, part, "aggregate", groups_est)
        return _retype(ctx, out, a_names, call_types), replacements

    if all(d is not None for d in decomposed):
        partial_items, merges, p_names = [], [], []
        for d, name in zip(decomposed, a_names):
            cols = []
            for text in d.partials:
                p = ctx.temp("__p")
                partial_items.append(f"{text} AS {quote(p)}")
                cols.append(quote(p))
                p_names.append(p)
            merges.append(f"{d.merge.format(*cols)} AS {quote(name)}")
        select = [f"{g} AS {quote(n)}" for g, n in zip(group_sql, g_names)] + partial_items
        partial = ctx.stage(f"SELECT {', '.join(select)} FROM {{0}}{group_by}", [rel],
                            "partial aggregate", rows=groups_est * rel.n, width=width,
                            partial=True)
        merged_groups = ", ".join(str(i + 1) for i in range(len(groups)))
        final_group_by = f" GROUP BY {merged_groups}" if groups else ""
        if not groups or groups_est * width < ctx.settings.gather_limit:
            source, part, how = gather(partial), ANY, "gathered into one partition"
        else:
            n = ctx.partitions_for(groups_est * width * 4)
            source = shuffle(partial, tuple(g_names), n)
            part, how = source.partitioning, f"hash-shuffled on the group keys to {n}"
        ctx.note(f"aggregate: two phases (partial in each of {rel.n} partitions, then {how})")
        select = [quote(n) for n in g_names] + merges
        out = ctx.stage(f"SELECT {', '.join(select)} FROM {{0}}{final_group_by}", [source],
                        "final aggregate", part if source.n > 1 else ANY, rows=groups_est,
                        width=width)
        return _retype(ctx, out, a_names, call_types), replacements

    # not decomposable: move the rows to where their group is, aggregate once
    items = [f"{s} AS {quote(n)}" for s, n in zip(call_sql, a_names)]
    if not groups:
        ctx.note("aggregate: not decomposable and no GROUP BY: runs in one partition")
        out = final_over(gather(rel), items, ANY, "aggregate", 1.0)
        return _retype(ctx, out, a_names, call_types), replacements
    extra, hash_cols = [], []
    for g, text in zip(groups, group_sql):
        plain = resolve_plain(g, resolve)
        if plain is not None:
            hash_cols.append(plain.name)
        else:
            key = ctx.temp("__key")
            extra.append(f"{text} AS {quote(key)}")
            hash_cols.append(key)
    source = rel
    if extra:
        source = ctx.stage(f"SELECT *, {', '.join(extra)} FROM {{0}}", [rel], "group keys",
                           rel.partitioning)
    n = ctx.partitions_for(rel.est_bytes)
    source = shuffle(source, tuple(hash_cols), n)
    ctx.note(f"aggregate: not decomposable, rows hash-shuffled on the group keys to {n} "
             "partition(s), one phase")
    part = Partitioning.hashed(g_names) if source.n > 1 else ANY
    out = final_over(source, items, part, "aggregate", groups_est)
    return _retype(ctx, out, a_names, call_types), replacements


def resolve_plain(expr: exp.Expression, resolve) -> exp.Column | None:
    """The physical column a plain column reference resolves to, else None."""
    if isinstance(expr, exp.Column):
        resolved = resolve(expr)
        if isinstance(resolved, exp.Column):
            return resolved
    return None


def _retype(ctx: PlanContext, rel: Rel, names: list[str], types: list[str]) -> Rel:
    """Cast merged aggregate columns back to the type the one-phase aggregate has."""
    casts = {n: t for n, t in zip(names, types) if rel.type_of(n) != t}
    if not casts:
        return rel
    items = [f"CAST({quote(c)} AS {casts[c]}) AS {quote(c)}" if c in casts else quote(c)
             for c in rel.columns]
    return ctx.stage(f"SELECT {', '.join(items)} FROM {{0}}", [rel], "cast",
                     rel.partitioning, rows=rel.rows, width=rel.width)


def _estimate_groups(block, groups: list[exp.Expression], rel: Rel) -> float:
    if not groups:
        return 1.0
    total = 1.0
    for g in groups:
        estimate = expression_ndv(g, block.column_ndv)
        if estimate is None:
            return max(rel.rows, 1.0)
        total *= estimate
    return max(1.0, min(total, rel.rows if math.isfinite(rel.rows) else total))
