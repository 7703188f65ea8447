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
from smallpond.sql.catalog import Catalog, files_table
from smallpond.sql.parse import PARAM_PREFIX
from smallpond.sql.plan.context import PlanContext, PlannerBug, Unsupported
from smallpond.sql.plan.fallback import cte_names, single_stage
from smallpond.sql.plan.query import Env, plan_query
from smallpond.sql.settings import SqlSettings

__all__ = ["SqlPlan", "plan_statement"]

_RULE_NAMES = ("qualify", "pushdown_projections", "normalize", "pushdown_predicates",
               "eliminate_subqueries", "merge_subqueries", "eliminate_joins", "eliminate_ctes",
               "quote_identifiers")
OPTIMIZER_RULES = tuple(r for r in RULES if r.__name__ in _RULE_NAMES)
# settings that change how values compare or sort: the planner's own hashing and range
# boundaries would not follow them, so such statements run as one DuckDB stage
ORDERING_SETTINGS = ("default_collation", "default_null_order", "default_order")
FILE_FUNCTIONS = ("read_parquet", "parquet_scan")
OTHER_FILE_FUNCTIONS = ("read_csv", "read_csv_auto", "csv_scan", "read_json", "read_json_auto",
                        "read_ndjson", "read_ndjson_auto", "read_json_objects", "read_text",
                        "read_blob", "json_scan", "iceberg_scan", "delta_scan")


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


def _path_literals(node: exp.Expression) -> list[str] | None:
    """The file paths a read_parquet(...) call names: string literals, lists of them, or
    constant expressions of them (`${dir} || '/*.parquet'` in a job file)."""
    args = list(node.expressions) if node.expressions else []
    if node.args.get("this") is not None and not isinstance(node, exp.Anonymous):
        args.insert(0, node.this)
    paths: list[str] = []
    for arg in args:
        if isinstance(arg, exp.Literal) and arg.is_string:
            paths.append(arg.this)
            continue
        if arg.find(exp.Column, exp.Subquery, exp.Select) is not None or \
                isinstance(arg, (exp.EQ, exp.PropertyEQ)):
            return None
        try:
            value = duckdb.connect().execute(f"SELECT {arg.sql(dialect='duckdb')}").fetchone()[0]
        except duckdb.Error:
            return None
        if isinstance(value, str):
            paths.append(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            paths.extend(value)
        else:
            return None
    return paths or None


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return node.sql_name().lower() if isinstance(node, exp.Func) else ""


def attach_files(tree: exp.Expression, catalog: Catalog) -> tuple[exp.Expression, Catalog]:
    """`read_parquet('glob')` and `FROM 'file.parquet'` become catalog tables (so the planner
    sees their footers and task keys follow the files' versions)."""
    catalog = catalog.copy()
    tree = tree.copy()
    ctes = cte_names(tree)
    counter = 0
    for table in list(tree.find_all(exp.Table)):
        target = table.this
        paths = None
        if isinstance(target, exp.Func):
            name = _function_name(target)
            if name in FILE_FUNCTIONS or isinstance(target, exp.ReadParquet):
                paths = _path_literals(target)
                if paths is None:
                    raise SqlError(f"{target.sql(dialect='duckdb')}: only file paths are "
                                   "supported here; for options, read the files with "
                                   "session.read_parquet and register the DataFrame")
            elif name in OTHER_FILE_FUNCTIONS or isinstance(target, (exp.ReadCSV,)):
                raise SqlError(f"{target.sql(dialect='duckdb')}: read such files with "
                               "session.read_csv / read_json and register the DataFrame "
                               "(session.register), then query it by name")
        elif isinstance(target, exp.Identifier) and not table.args.get("db"):
            text = target.this
            if text.lower() not in ctes and catalog.get(text) is None and \
                    text.lower().endswith(".parquet"):
                paths = [text]
        if paths is None:
            continue
        generated = f"__file_{counter}"
        counter += 1
        shown = "/".join(paths[0].rstrip("/").split("/")[-2:]) + (
            f" and {len(paths) - 1} more" if len(paths) > 1 else "")
        catalog.register(generated, files_table(shown, paths))
        replacement = exp.Table(this=exp.to_identifier(generated))
        alias = table.args.get("alias")
        if alias is None:
            stem = paths[0].rsplit("/", 1)[-1].split(".", 1)[0] or "t"
            alias = exp.TableAlias(this=exp.to_identifier(stem, quoted=True))
        replacement.set("alias", alias.copy())
        table.replace(replacement)
    return tree, catalog


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
            size = _input_bytes(ctx, tree)
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


def _input_bytes(ctx: PlanContext, tree: exp.Expression) -> float | None:
    """In-memory bytes of every table the statement reads (all their columns); None when a
    table's partitions are more than one already (a partitioned DataFrame)."""
    ctes = cte_names(tree)
    total = 0.0
    seen = set()
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if name in ctes or name in seen or not isinstance(table.this, exp.Identifier):
            continue
        seen.add(name)
        entry = ctx.catalog.get(name)
        if entry is None:
            continue
        if entry.node.num_partitions > 1:
            return None
        total += entry.bytes_of([n for n, _ in entry.columns])
    return total


def parse_query(text: str) -> exp.Expression:
    return sqlglot.parse_one(text, read="duckdb")
