"""The end of a SELECT block: aggregation, HAVING, windows, the select list, DISTINCT,
ORDER BY (top-N pushed into partitions, or sampled range partitioning) and LIMIT/OFFSET."""

from __future__ import annotations

from sqlglot import exp

from smallpond.logical.nodes import Repartition
from smallpond.sql.plan.context import PlanContext, Unsupported
from smallpond.sql.plan.exprs import render
from smallpond.sql.plan.joins import gather, shuffle
from smallpond.sql.plan.query import Output
from smallpond.sql.plan.rel import ANY, Rel, quote

__all__ = ["finish", "sort_and_limit", "distinct", "SortKey"]

RANGE_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
               "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "DATE", "TIMESTAMP",
               "VARCHAR")


class SortKey:
    """One ORDER BY key over a physical column."""

    def __init__(self, column: str, desc: bool, nulls_first: bool):
        self.column, self.desc, self.nulls_first = column, desc, nulls_first

    def sql(self) -> str:
        return (f"{quote(self.column)} {'DESC' if self.desc else 'ASC'} "
                f"NULLS {'FIRST' if self.nulls_first else 'LAST'}")


def _physical_only(rel: Rel):
    def resolve(column: exp.Column) -> exp.Expression | None:
        if not column.table and column.name in rel.columns:
            return column
        return None

    return resolve


def _limit_value(node: exp.Expression | None) -> int | None:
    if node is None:
        return None
    value = node.args.get("expression") if isinstance(node, (exp.Limit, exp.Offset)) else node
    if isinstance(node, exp.Limit) and (node.args.get("percent") or node.args.get("with_ties")):
        raise Unsupported("LIMIT PERCENT or WITH TIES")
    if not (isinstance(value, exp.Literal) and value.is_int):
        raise Unsupported("LIMIT or OFFSET that is not an integer literal")
    return int(value.this)


def filter_rel(block, rel: Rel, condition: exp.Expression, resolve, replacements,
               label: str) -> Rel:
    """Rows of `rel` where `condition` holds (its uncorrelated subqueries as side inputs)."""
    from smallpond.sql.plan.subquery import side_inputs

    side = side_inputs(block, [condition], 1)
    text = render(condition, resolve, list(replacements) + side.replacements)
    return block.ctx.stage(f"SELECT * FROM {{0}} WHERE {text}", [rel, *side.inputs(rel.n)],
                           label, rel.partitioning, rows=rel.rows * 0.5)


def finish(block, joined, final: list[tuple[str, str]] | None = None) -> Output:
    from smallpond.sql.plan.aggregate import plan_aggregate
    from smallpond.sql.plan.subquery import side_inputs
    from smallpond.sql.plan.window import plan_windows

    ctx: PlanContext = block.ctx
    sel: exp.Select = block.sel
    if joined is None:
        return _no_from(block, final)
    rel = joined.rel
    resolve = block.resolver(joined)
    replacements: list = []
    if block.has_aggregates():
        rel, replacements = plan_aggregate(block, rel, resolve)
        resolve = _physical_only(rel)
        having = sel.args.get("having")
        if having is not None:
            rel = filter_rel(block, rel, having.this, resolve, replacements, "having")
    if block.has_windows():
        rel, more = plan_windows(block, rel, resolve, replacements)
        replacements = replacements + more
        resolve = _physical_only(rel) if block.has_aggregates() else _extend(resolve, rel)

    names = [e.alias_or_name for e in sel.expressions]
    out_exprs = [e.unalias() if isinstance(e, exp.Alias) else e for e in sel.expressions]
    order = sel.args.get("order")
    ordered = order.expressions if order is not None else []
    qualify = sel.args.get("qualify")
    extra = [o.this for o in ordered] + ([qualify.this] if qualify is not None else [])
    side = side_inputs(block, out_exprs + extra, 1)
    reps = list(replacements) + side.replacements
    out_cols = [ctx.fresh(f"{n}" if n else "col") for n in names]
    items = [f"{render(e, resolve, reps)} AS {quote(c)}" for e, c in zip(out_exprs, out_cols)]
    keys: list[SortKey] = []
    lowered = {n.lower(): c for n, c in zip(names, out_cols)}
    for o in ordered:
        target = o.this
        if isinstance(target, exp.Column) and not target.table and \
                target.name.lower() in lowered:
            column = lowered[target.name.lower()]
        else:
            column = ctx.temp("__s")
            items.append(f"{render(target, resolve, reps)} AS {quote(column)}")
        keys.append(SortKey(column, bool(o.args.get("desc")), bool(o.args.get("nulls_first"))))
    sql = f"SELECT {', '.join(items)} FROM {{0}}"
    if qualify is not None:
        sql += f" WHERE {render(qualify.this, resolve, reps)}"
    projected = ctx.stage(sql, [rel, *side.inputs(rel.n)], "project", ANY, rows=rel.rows)
    if rel.partitioning.kind == "hash" and projected.n > 1:
        mapping = _passthrough(out_exprs, out_cols, resolve, rel, reps)
        projected = projected.with_(partitioning=rel.partitioning.renamed(mapping))
    if sel.args.get("distinct") is not None:
        projected = distinct(ctx, projected)
    limit = _limit_value(sel.args.get("limit"))
    offset = _limit_value(sel.args.get("offset"))
    done = sort_and_limit(ctx, projected, out_cols, keys, limit, offset, final)
    return Output(done.rel, names, done.ordered)


def _extend(resolve, rel: Rel):
    def both(column: exp.Column) -> exp.Expression | None:
        found = resolve(column)
        if found is not None:
            return found
        if not column.table and column.name in rel.columns:
            return column
        return None

    return both


def _passthrough(exprs, out_cols, resolve, rel, replacements=()) -> dict[str, str]:
    """Input columns that the select list passes through unchanged -> their output column."""
    mapping = {}
    table = {a: b for a, b in replacements}
    for e, c in zip(exprs, out_cols):
        swapped = table.get(e)
        if isinstance(swapped, exp.Column) and swapped.name in rel.columns:
            mapping.setdefault(swapped.name, c)
            continue
        if isinstance(e, exp.Column):
            try:
                found = resolve(e)
            except Unsupported:
                found = None
            if isinstance(found, exp.Column) and found.name in rel.columns:
                mapping.setdefault(found.name, c)
    return mapping


def distinct(ctx: PlanContext, rel: Rel) -> Rel:
    """DISTINCT in two phases: per partition, then gathered or hash-shuffled on all columns."""
    if rel.n == 1 or rel.hashed_on(rel.columns):
        return ctx.stage("SELECT DISTINCT * FROM {0}", [rel], "distinct", rel.partitioning,
                         rows=rel.rows)
    partial = ctx.stage("SELECT DISTINCT * FROM {0}", [rel], "partial distinct", ANY,
                        rows=rel.rows, partial=True)
    if ctx.small(partial):
        source = gather(partial)
        ctx.note("distinct: per partition, then gathered into one partition")
    else:
        n = ctx.partitions_for(partial.est_bytes)
        source = shuffle(partial, tuple(partial.columns), n)
        ctx.note(f"distinct: per partition, then hash-shuffled on every column to {n}")
    return ctx.stage("SELECT DISTINCT * FROM {0}", [source], "distinct", source.partitioning,
                     rows=rel.rows)


class Sorted:
    def __init__(self, rel: Rel, ordered: bool):
        self.rel, self.ordered = rel, ordered


def sort_and_limit(ctx: PlanContext, rel: Rel, visible: list[str], keys: list[SortKey],
                   limit: int | None, offset: int | None,
                   final: list[tuple[str, str]] | None = None) -> Sorted:
    """ORDER BY / LIMIT / OFFSET, keeping only the `visible` columns; `final` names and casts
    them as the statement's result ((name, type) each)."""
    if final is not None:
        select = ", ".join(
            (quote(c) if rel.type_of(c) == t else f"CAST({quote(c)} AS {t})") + f" AS {quote(n)}"
            for c, (n, t) in zip(visible, final))
    else:
        select = ", ".join(quote(c) for c in visible)
    order = ", ".join(k.sql() for k in keys)
    skip = offset or 0
    if limit is not None or skip:
        tail = (f" LIMIT {limit}" if limit is not None else "") + \
            (f" OFFSET {skip}" if skip else "")
        source = rel
        if rel.n > 1:
            if limit is not None:
                top = f" ORDER BY {order}" if keys else ""
                source = ctx.stage(f"SELECT * FROM {{0}}{top} LIMIT {limit + skip}", [rel],
                                   "top-n" if keys else "limit", ANY,
                                   rows=min(rel.rows, limit + skip))
                ctx.note(f"{'top-n' if keys else 'limit'}: {limit + skip} rows per partition "
                         f"in {rel.n} partitions, then the final {limit} in one")
            source = gather(source)
        by = f" ORDER BY {order}" if keys else ""
        result = ctx.stage(f"SELECT {select} FROM {{0}}{by}{tail}", [source], "limit",
                          ANY, rows=min(rel.rows, limit or rel.rows), ordered=bool(keys))
        return Sorted(result, bool(keys))
    if not keys:
        if final is None and list(rel.columns) == list(visible):
            return Sorted(rel, False)
        partitioning = rel.partitioning
        if final is not None:
            partitioning = partitioning.renamed(dict(zip(visible, [n for n, _ in final])))
        return Sorted(ctx.stage(f"SELECT {select} FROM {{0}}", [rel], "output",
                                partitioning, rows=rel.rows), False)
    first = keys[0]
    if rel.n == 1 or ctx.small(rel) or \
            not rel.type_of(first.column).upper().startswith(RANGE_TYPES):
        source = gather(rel)
        if rel.n > 1:
            ctx.note("order by: small result sorted in one partition")
        result = ctx.stage(f"SELECT {select} FROM {{0}} ORDER BY {order}", [source], "sort",
                          ANY, rows=rel.rows, ordered=True)
        return Sorted(result, True)
    n = rel.n
    ranged = Repartition(rel.node, n, "range", by=first.column, descending=first.desc,
                         nulls_first=first.nulls_first)
    ctx.note(f"order by: sampled range partitioning on {first.column} into {n} partitions, "
             "then a sort in each")
    source = rel.with_(node=ranged, partitioning=ANY)
    result = ctx.stage(f"SELECT {select} FROM {{0}} ORDER BY {order}", [source], "sort", ANY,
                      rows=rel.rows, ordered=True)
    return Sorted(result, True)


def _no_from(block, final) -> Output:
    """SELECT without FROM: one partition, its subqueries read as side inputs."""
    from smallpond.sql.plan.subquery import side_inputs

    sel = block.sel
    if block.has_aggregates() or block.has_windows():
        raise Unsupported("aggregates without FROM")
    side = side_inputs(block, list(sel.expressions), 0)
    names = [e.alias_or_name for e in sel.expressions]
    ctx = block.ctx
    cols = [ctx.fresh(n or "col") for n in names]
    items = [f"{render(e.unalias() if isinstance(e, exp.Alias) else e, lambda c: None, side.replacements)} AS {quote(c)}"  # noqa: E501
             for e, c in zip(sel.expressions, cols)]
    rel = ctx.stage(f"SELECT {', '.join(items)}", side.inputs(1), "values", ANY, rows=1.0)
    done = sort_and_limit(ctx, rel, cols, [], _limit_value(sel.args.get("limit")),
                          _limit_value(sel.args.get("offset")), final)
    return Output(done.rel, names, False)
