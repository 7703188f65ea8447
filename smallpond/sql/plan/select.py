"""One SELECT block: FROM items scanned with their filters, joined, filtered by subqueries,
aggregated, windowed, projected, sorted and limited."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from smallpond.sql.plan.context import PlanContext, Unsupported
from smallpond.sql.plan.estimate import selectivity
from smallpond.sql.plan.exprs import (
    aggregates_in,
    and_all,
    col,
    conjuncts,
    factor_or,
    free_columns,
    has_subquery,
    implied_filter,
    render,
    windows_in,
)
from smallpond.sql.plan.joinorder import JoinOrdering, equi
from smallpond.sql.plan.joins import Joined, join_rels
from smallpond.sql.plan.query import Env, Output, plan_cte, plan_query
from smallpond.sql.plan.rel import quote
from smallpond.sql.plan.scan import Source, rename_source, scan_table

__all__ = ["plan_select", "Block"]


@dataclass
class FromItem:
    alias: str
    source: exp.Expression
    kind: str  # first, inner, cross, left, right, full, semi, anti
    on: exp.Expression | None


@dataclass
class Cond:
    """A WHERE or inner-join condition waiting to be applied."""

    expr: exp.Expression
    aliases: frozenset[str]
    min_step: int
    applied: bool = False

    @property
    def subquery(self) -> bool:
        return has_subquery(self.expr)


def _join_kind(join: exp.Join) -> str:
    side, kind = (join.side or "").upper(), (join.kind or "").upper()
    if join.args.get("using"):
        raise Unsupported("JOIN ... USING")
    if kind in ("SEMI", "ANTI"):
        if side not in ("", "LEFT"):
            raise Unsupported(f"{side} {kind} JOIN")
        return kind.lower()
    if kind in ("ASOF", "POSITIONAL", "LATERAL", "NATURAL") or join.args.get("method"):
        raise Unsupported(f"{kind or join.args.get('method')} JOIN")
    if side in ("LEFT", "RIGHT", "FULL"):
        return side.lower()
    if kind == "CROSS" or join.args.get("on") is None:
        return "cross"
    return "inner"


def _from_items(sel: exp.Select) -> list[FromItem]:
    items = []
    source = sel.args.get("from_")
    if source is None:
        return items
    items.append(FromItem(source.this.alias_or_name.lower(), source.this, "first", None))
    for join in sel.args.get("joins") or []:
        items.append(FromItem(join.this.alias_or_name.lower(), join.this, _join_kind(join),
                              join.args.get("on")))
    if len({i.alias for i in items}) != len(items):
        raise Unsupported("the same alias twice in one FROM")
    return items


def plan_select(ctx: PlanContext, sel: exp.Select, env: Env,
                final: list[tuple[str, str]] | None = None) -> Output:
    env = env.child(sel.args.get("with_"))
    distinct = sel.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        raise Unsupported("DISTINCT ON")
    if sel.args.get("kind") or sel.args.get("operation_modifiers"):
        raise Unsupported("SELECT modifiers")
    return Block(ctx, sel, env).plan(final)


class Block(JoinOrdering):
    """The planning state of one SELECT block."""

    def __init__(self, ctx: PlanContext, sel: exp.Select, env: Env):
        self.ctx, self.sel, self.env = ctx, sel, env
        self.items = _from_items(sel)
        self.aliases = {i.alias for i in self.items}
        self.nullers: dict[str, list[int]] = {}  # alias -> steps of outer joins that null it
        for step, item in enumerate(self.items):
            if item.kind in ("left", "full"):
                self.nullers.setdefault(item.alias, []).append(step)
            if item.kind in ("right", "full"):
                for before in self.items[:step]:
                    self.nullers.setdefault(before.alias, []).append(step)
        self.pool: list[Cond] = []
        self.outer_on: dict[int, list[exp.Expression]] = {}
        self._collect_conditions()
        self.joined: Joined | None = None
        self.side_inputs: list = []

    # -- conditions and column needs ---------------------------------------------------------
    def _aliases_of(self, expr: exp.Expression) -> frozenset[str]:
        found = set()
        for column in free_columns(expr):
            if not column.table:
                raise Unsupported(f"unqualified column {column.sql('duckdb')}")
            alias = column.table.lower()
            if alias not in self.aliases:
                raise Unsupported(f"reference to {alias} from outside the query block")
            found.add(alias)
        return frozenset(found)

    def _min_step(self, aliases, position: int) -> int:
        """The last outer join at or before `position` that may null one of `aliases`: a
        condition there must not be applied before it (-1: none)."""
        return max([s for a in aliases for s in self.nullers.get(a, []) if s <= position],
                   default=-1)

    def _add_cond(self, expr: exp.Expression, position: int) -> None:
        for part in conjuncts(expr):
            for piece in factor_or(part):
                aliases = self._aliases_of(piece)
                self.pool.append(Cond(piece, aliases, self._min_step(aliases, position)))

    def _collect_conditions(self) -> None:
        where = self.sel.args.get("where")
        if where is not None:
            self._add_cond(where.this, len(self.items))
        for step, item in enumerate(self.items):
            if item.on is None:
                continue
            if item.kind in ("inner", "cross"):
                self._add_cond(item.on, step)
            else:
                self.outer_on[step] = [p for part in conjuncts(item.on) for p in factor_or(part)]

    def _later_exprs(self) -> list[exp.Expression]:
        """Expressions evaluated after the joins (what decides which columns stay alive)."""
        sel = self.sel
        exprs = list(sel.expressions)
        for key in ("group", "having", "qualify", "order"):
            if sel.args.get(key) is not None:
                exprs.append(sel.args[key])
        return exprs

    def _live(self, extra: list[exp.Expression] = ()) -> set[tuple[str, str]]:
        """(alias, column) pairs still needed by conditions not applied yet and later steps."""
        exprs = [c.expr for c in self.pool if not c.applied] + self._later_exprs() + list(extra)
        for conds in self.outer_on.values():
            exprs.extend(conds)
        live = set()
        for e in exprs:
            for column in free_columns(e):
                if column.table:
                    live.add((column.table.lower(), column.name.lower()))
        return live

    def _needed(self, alias: str) -> list[str]:
        names = []
        exprs = [c.expr for c in self.pool if not c.applied] + self._later_exprs()
        for conds in self.outer_on.values():
            exprs.extend(conds)
        for e in exprs:
            for column in free_columns(e):
                if column.table and column.table.lower() == alias:
                    name = column.name.lower()
                    if name not in names:
                        names.append(name)
        return names

    def resolver(self, joined: Joined | None = None):
        joined = joined or self.joined

        def resolve(column: exp.Column) -> exp.Expression | None:
            if not column.table:  # a physical column put in place by a rewrite
                return column if column.name in joined.rel.columns else None
            physical = joined.columns.get((column.table.lower(), column.name.lower()))
            return col(physical) if physical else None

        return resolve

    # -- sources -----------------------------------------------------------------------------
    def _pushed(self, alias: str, step: int) -> list[exp.Expression]:
        """Conditions on this alias alone that may filter its scan: pool conditions that no
        outer join before them nulls, and a LEFT join's ON conditions on its right side."""
        pushed = []
        for cond in self.pool:
            if cond.subquery or alias not in cond.aliases or cond.min_step >= 0:
                continue
            if cond.aliases == {alias}:
                pushed.append(cond.expr)
                cond.applied = True
            else:
                implied = implied_filter(cond.expr, alias)
                if implied is not None:
                    pushed.append(implied)
        if self.items[step].kind == "left":
            own = [c for c in self.outer_on.get(step, [])
                   if not has_subquery(c) and self._aliases_of(c) == {alias}]
            pushed.extend(own)
            self.outer_on[step] = [c for c in self.outer_on.get(step, []) if
                                   not any(c is o for o in own)]
        return pushed

    def _source(self, step: int) -> Joined:
        item = self.items[step]
        alias = item.alias
        predicates = self._pushed(alias, step)
        needed = self._needed(alias)
        source = item.source
        if isinstance(source, exp.Table) and not source.args.get("db"):
            name = source.name.lower()
            planned = plan_cte(self.ctx, self.env, name)
            if planned is not None:
                src = rename_source(self.ctx, planned.rel, planned.names, alias, needed)
                src = self._filter_source(src, predicates)
            else:
                entry = self.ctx.catalog.get(name)
                if entry is None:
                    raise Unsupported(f"unknown table {source.name}")
                src = scan_table(self.ctx, entry, alias, needed, predicates)
        elif isinstance(source, exp.Subquery) and isinstance(source.this, exp.Query):
            planned = plan_query(self.ctx, source.this, self.env)
            names = planned.names
            columns = source.args.get("alias") and source.args["alias"].columns
            if columns:
                names = [c.name for c in columns] + names[len(columns):]
            src = rename_source(self.ctx, planned.rel, names, alias, needed)
            src = self._filter_source(src, predicates)
        else:
            raise Unsupported(f"{type(source).__name__} in FROM")
        return Joined(src.rel, {(alias, c): p for c, p in src.columns.items()}, {alias},
                      src.base_rows)

    def _filter_source(self, src: Source, predicates: list[exp.Expression]) -> Source:
        if not predicates:
            return src
        condition = and_all(predicates)

        def resolve(column: exp.Column) -> exp.Expression | None:
            physical = src.columns.get(column.name.lower())
            return col(physical) if physical and column.table.lower() == src.alias else None

        rel = self.ctx.stage(f"SELECT * FROM {{0}} WHERE {render(condition, resolve)}",
                             [src.rel], f"filter {src.alias}", src.rel.partitioning,
                             rows=src.rel.rows * selectivity(predicates))
        return Source(src.alias, rel, src.columns, src.base_rows)

    # -- joins -------------------------------------------------------------------------------
    def _keep(self, left: Joined, right: Joined, extra=()) -> list[str]:
        live = self._live(extra)
        columns = {**left.columns, **right.columns}
        return [p for key, p in columns.items() if key in live]

    def _join(self, left: Joined, right: Joined, kind: str, conds: list[exp.Expression],
              rows: float | None = None) -> Joined:
        columns = {**left.columns, **right.columns}
        both = Joined(left.rel, columns, left.aliases | right.aliases)
        keys, rest = [], []
        for cond in conds:
            pair = equi(cond, left.aliases, right.aliases, self._aliases_of)
            if pair is not None:
                keys.append(pair)
            else:
                rest.append(cond)
        resolve = self.resolver(both)

        def resolved(e: exp.Expression) -> exp.Expression:
            return e.transform(lambda n: resolve(n) if isinstance(n, exp.Column) and
                               resolve(n) is not None else n, copy=True)

        key_exprs = [(resolved(a), resolved(b)) for a, b in keys]
        residual = and_all(resolved(c) for c in rest)
        keep = self._keep(left, right)
        label = f"{'+'.join(sorted(left.aliases))} x {'+'.join(sorted(right.aliases))}"
        rel = join_rels(self.ctx, left.rel, right.rel, kind, key_exprs, residual, keep, label,
                        rows)
        if kind in ("semi", "anti"):
            columns = dict(left.columns)
            aliases = set(left.aliases)
        else:
            aliases = left.aliases | right.aliases
        kept = set(rel.columns)
        return Joined(rel, {k: v for k, v in columns.items() if v in kept}, aliases,
                      max(left.base_rows, right.base_rows))

    def _applicable(self, aliases: set[str], step: int) -> list[Cond]:
        return [c for c in self.pool if not c.applied and not c.subquery
                and c.aliases <= aliases and c.min_step <= step]

    def _filter(self, joined: Joined, conds: list[Cond]) -> Joined:
        if not conds:
            return joined
        for c in conds:
            c.applied = True
        condition = and_all(c.expr for c in conds)
        live = self._live()
        keep = [p for key, p in joined.columns.items() if key in live] or \
            [joined.rel.columns[0]]
        sql = (f"SELECT {', '.join(quote(c) for c in keep)} FROM {{0}} "
               f"WHERE {render(condition, self.resolver(joined))}")
        rel = self.ctx.stage(sql, [joined.rel], "filter", _kept(joined.rel, keep),
                             rows=joined.rel.rows * selectivity([c.expr for c in conds]),
                             columns=[(c, joined.rel.type_of(c)) for c in keep])
        return Joined(rel, {k: v for k, v in joined.columns.items() if v in keep},
                      joined.aliases, joined.base_rows)

    def _plan_joins(self) -> Joined:
        current: Joined | None = None
        group: list[Joined] = []
        last = 0
        for step, item in enumerate(self.items):
            if item.kind in ("first", "inner", "cross"):
                group.append(self._source(step))
                last = step
                continue
            current = self._resolve_group(current, group, last)
            group = []
            right = self._source(step)
            conds = self.outer_on.pop(step, [])
            if any(has_subquery(c) for c in conds):
                raise Unsupported("a subquery in an outer join's ON condition")
            current = self._join(current, right, item.kind, conds)
            last = step
            current = self._filter(current, self._applicable(current.aliases, step))
        current = self._resolve_group(current, group, last)
        return self._filter(current, self._applicable(current.aliases, len(self.items)))

    # -- the whole block ---------------------------------------------------------------------
    def plan(self, final: list[tuple[str, str]] | None = None) -> Output:
        from smallpond.sql.plan.finish import finish
        from smallpond.sql.plan.subquery import apply_subquery_conditions

        if not self.items:
            return finish(self, None, final)
        self.joined = self._plan_joins()
        leftover = [c for c in self.pool if not c.applied and not c.subquery]
        if leftover:
            raise Unsupported("a condition that could not be placed")
        subqueries = [c for c in self.pool if not c.applied and c.subquery]
        if subqueries:
            self.joined = apply_subquery_conditions(self, subqueries)
        return finish(self, self.joined, final)

    def has_aggregates(self) -> bool:
        sel = self.sel
        if sel.args.get("group") is not None:
            return True
        exprs = list(sel.expressions) + [sel.args[k] for k in ("having", "order", "qualify")
                                         if sel.args.get(k) is not None]
        return any(aggregates_in(e) for e in exprs)

    def column_ndv(self, column: exp.Column) -> float | None:
        """Distinct values of a base table column (None for CTEs and derived tables)."""
        from smallpond.sql.plan.ndv import column_ndv

        item = next((i for i in self.items if i.alias == column.table.lower()), None)
        if item is None or not isinstance(item.source, exp.Table):
            return None
        name = item.source.name.lower()
        if self.env.find(name) is not None:
            return None
        entry = self.ctx.catalog.get(name)
        return None if entry is None else column_ndv(entry, column.name)

    def has_windows(self) -> bool:
        exprs = list(self.sel.expressions) + [self.sel.args[k] for k in ("qualify", "order")
                                              if self.sel.args.get(k) is not None]
        return any(windows_in(e) for e in exprs)


def _kept(rel, keep):
    from smallpond.sql.plan.rel import ANY

    if rel.partitioning.kind == "hash" and set(rel.partitioning.keys) <= set(keep):
        return rel.partitioning
    return ANY
