"""Global SQL -> logical plan.

A statement is parsed with sqlglot (DuckDB dialect), bound by DuckDB against empty tables of
the catalog's types (the reference for errors, result names and types), optimized by sqlglot
(qualify, predicate pushdown, subquery merging) and planned into partitioned stages. What the
distributed planner cannot handle runs as one stage over the whole input, with a note.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer import RULES
from sqlglot.schema import ensure_schema

from smallpond.errors import SqlError
from smallpond.kernels.settings import apply_settings
from smallpond.logical.nodes import Node, iter_nodes
from smallpond.sql.catalog import Catalog
from smallpond.sql.parse import PARAM_PREFIX
from smallpond.sql.plan.context import PlanContext, PlannerBug, Unsupported
from smallpond.sql.plan.fallback import cte_names, single_stage
from smallpond.sql.plan.query import Env, plan_query
from smallpond.sql.plan.tables import attach_files, input_bytes
from smallpond.sql.settings import SqlSettings

__all__ = ["SqlPlan", "plan_statement"]

_RULE_NAMES = ("qualify", "pushdown_projections", "normalize", "pushdown_predicates",
               "eliminate_subqueries", "merge_subqueries", "eliminate_joins", "eliminate_ctes",
               "quote_identifiers")
OPTIMIZER_RULES = tuple(r for r in RULES if r.__name__ in _RULE_NAMES)
# settings that change how values compare or sort: the planner's own hashing and range
# boundaries would not follow them, so such statements run as one DuckDB stage
ORDERING_SETTINGS = ("default_collation", "default_null_order", "default_order")
@dataclass
class SqlPlan:
    """A planned statement: its logical node, result columns, and how it was planned."""

    node: Node
    names: list[str]
    types: list[str]
    notes: list[str] = field(default_factory=list)
    fallback: str | None = None
    sql: str = ""
    seconds: float = 0.0
    hash_keys: tuple[str, ...] = ()  # the result is hash-partitioned on these columns


def _dedupe(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, k = name, 0
        while candidate.lower() in seen:
            k += 1
            candidate = f"{name}_{k}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def _bind_reference(ctx: PlanContext, tree: exp.Expression, text: str,
                    statement: int | None, line: int | None,
                    original: bool = False) -> list[tuple[str, str]]:
    """DuckDB's own binding of the statement over empty tables: result names and types, and
    the user's error when the statement is wrong. With `original`, DuckDB binds the user's
    own text (its errors then point into it); else the text of the tree."""
    ctes = cte_names(tree)
    tables: dict[str, list[tuple[str, str]] | None] = {}
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier) or table.args.get("db"):
            continue
        name = table.name
        if name.lower() in ctes:
            continue
        entry = ctx.catalog.get(name)
        tables[name] = list(entry.columns) if entry is not None else None
    ctx.binder.define_views(tables)
    try:
        relation = ctx.binder.con.sql(text if original else tree.sql(dialect="duckdb"))
    except duckdb.Error as error:
        raise SqlError(f"{error}", sql=text, statement=statement, line=line) from error
    if relation is None:
        raise SqlError("expected a query (SELECT, WITH, VALUES, ...)", sql=text,
                       statement=statement, line=line)
    return list(zip(relation.columns, [str(t) for t in relation.types]))


def _optimize(tree: exp.Expression, catalog: Catalog) -> exp.Expression:
    """sqlglot's optimizer rules that help planning (not unnest_subqueries: correlated
    subqueries are planned here; not join reordering: joins are ordered here)."""
    schema = getattr(catalog, "_sqlglot_schema", None)
    if schema is None:
        schema = ensure_schema({name: dict(entry.columns)
                                for name, entry in catalog.tables.items()}, dialect="duckdb")
        catalog._sqlglot_schema = schema
    expression = tree.copy()
    for rule in OPTIMIZER_RULES:
        wanted = _RULE_ARGS.setdefault(rule, set(inspect.signature(rule).parameters))
        kwargs = {k: v for k, v in (("schema", schema), ("dialect", "duckdb")) if k in wanted}
        expression = rule(expression, **kwargs)
    return expression


_RULE_ARGS: dict = {}


def plan_statement(tree: exp.Expression, text: str, catalog: Catalog, settings: SqlSettings,
                   workers: int, statement: int | None = None,
                   line: int | None = None, runner: str = "local",
                   memory: int = 1 << 30) -> SqlPlan:
    """Plan one query statement (a parsed sqlglot tree of `text`) for `workers` workers of
    a runner, each task with `memory` bytes."""
    started = time.perf_counter()
    # DuckDB binds the user's own text (its errors then point into it) when that text is this
    # one SELECT and reads nothing but catalog tables; else the text sqlglot writes of the tree
    original = PARAM_PREFIX not in text
    attached, catalog = attach_files(tree, catalog)
    original = original and attached == tree and _one_select(text)
    tree = attached
    ctx = PlanContext(catalog, settings, workers, runner, memory)
    if ctx.marker in text:
        ctx.marker = "__sp_input_marker_"
    # bind as the tasks will run: with the statement's DuckDB settings
    reset_settings = apply_settings(ctx.binder.con, {"settings": settings.duckdb})
    try:
        reference = _bind_reference(ctx, tree, text, statement, line, original)
        names = _dedupe([n for n, _ in reference])
        types = [t for _, t in reference]
        final = list(zip(names, types))
        reason = None
        hash_keys: tuple[str, ...] = ()
        try:
            if any(name.lower() in ORDERING_SETTINGS for name, _ in settings.duckdb):
                raise Unsupported("a setting changes how values sort or compare")
            size = input_bytes(ctx.catalog, tree)
            if settings.partitions is None and size is not None and \
                    size < ctx.partition_bytes:
                ctx.note(f"small input ({size / 2**20:.0f} MB, under "
                         f"{ctx.partition_bytes / 2**20:.0f} MB): runs as one DuckDB stage "
                         "using every core of its task")
                return SqlPlan(single_stage(ctx, tree), names, types, list(ctx.notes), None,
                               text, time.perf_counter() - started)
            optimized = _optimize(tree, catalog)
            for table in optimized.find_all(exp.Table):
                key = table.name.lower()
                ctx.references[key] = ctx.references.get(key, 0) + 1
            out = plan_query(ctx, optimized, Env(), final)
            node = out.rel.node
            if out.rel.n > 1:
                hash_keys = out.rel.partitioning.matching(names) or ()
            if settings.partitions is None and all(
                    n.num_partitions == 1 for n in iter_nodes(node)):
                ctx.notes.clear()
                ctx.note("every stage has one partition: runs as one DuckDB stage using every "
                         "core of its task")
                node = single_stage(ctx, tree)
        except (Unsupported, PlannerBug, SqlglotError) as error:
            reason = f"{type(error).__name__}: {error}" if not isinstance(
                error, Unsupported) else str(error)
            ctx.notes.clear()
            ctx.note(f"runs as one DuckDB stage over the whole input ({reason.splitlines()[0]})")
            node = single_stage(ctx, tree)
            hash_keys = ()
        return SqlPlan(node, names, types, list(ctx.notes), reason, text,
                       time.perf_counter() - started, hash_keys)
    finally:
        reset_settings()
        ctx.close()


def _one_select(text: str) -> bool:
    """Whether DuckDB reads `text` as exactly one SELECT (binding it then runs nothing)."""
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error:
        return False
    return len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT


def parse_query(text: str) -> exp.Expression:
    return sqlglot.parse_one(text, read="duckdb")
