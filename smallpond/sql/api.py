"""Statements run against a session: SET/RESET, CREATE VIEW/TABLE, DROP, COPY and queries.

Used by `Session.sql` and `Session.register` and by SQL job files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlglot import exp

from smallpond.errors import PlanError, SmallpondError, SqlError
from smallpond.sql.catalog import Catalog, files_table, frame_table
from smallpond.sql.parse import Statement, bind_parameters, parse_statement, sql_error
from smallpond.sql.settings import SqlSettings

if TYPE_CHECKING:
    from smallpond.dataframe import DataFrame
    from smallpond.session import Session

__all__ = ["SqlState", "sql_state", "register", "run_statement", "StatementResult", "sql"]


@dataclass
class SqlState:
    """What a session's SQL has defined so far."""

    catalog: Catalog = field(default_factory=Catalog)
    settings: SqlSettings = field(default_factory=SqlSettings)


def sql_state(session: Session) -> SqlState:
    state = getattr(session, "_sql_state", None)
    if state is None:
        state = SqlState(settings=SqlSettings(partitions=session.config.partitions))
        session._sql_state = state
    return state


def register(session: Session, name: str, source) -> None:
    """Name a DataFrame, or Parquet files (a path, glob, folder or a list of them)."""
    from smallpond.dataframe import DataFrame

    if not isinstance(name, str) or not name.strip():
        raise PlanError("register needs a table name")
    state = sql_state(session)
    if isinstance(source, DataFrame):
        plan = getattr(source, "sql_plan", None)
        keys = plan.hash_keys if plan is not None and plan.node is source._node else ()
        entry = frame_table(name, source._node, keys)
    elif isinstance(source, (str, list, tuple)) and source:
        entry = files_table(name, list(source) if not isinstance(source, str) else source)
    else:
        raise PlanError("register takes a DataFrame or Parquet paths/globs, got "
                        f"{type(source).__name__}")
    state.catalog.register(name, entry)


@dataclass
class StatementResult:
    """What a statement produced: a query's DataFrame, or a write to run (COPY)."""

    kind: str  # "query", "write", "set", "define"
    frame: DataFrame | None = None
    path: str | None = None
    mode: str | None = None


def _setting(item: exp.Expression, statement: Statement) -> tuple[str, str]:
    if not isinstance(item, exp.SetItem) or not isinstance(item.this, exp.EQ):
        raise sql_error("expected SET name = value", statement)
    target, value = item.this.this, item.this.expression
    name = target.sql(dialect="duckdb").replace('"', "") if isinstance(
        target, (exp.Column, exp.Identifier, exp.Var, exp.Dot)) else None
    if not name:
        raise sql_error("expected SET name = value", statement)
    if not isinstance(value, (exp.Literal, exp.Boolean, exp.Neg, exp.Column, exp.Var,
                              exp.Identifier)):
        raise sql_error("a setting's value must be a literal", statement)
    text = value.sql(dialect="duckdb")
    if isinstance(value, (exp.Column, exp.Identifier, exp.Var)):
        text = "'" + value.name.replace("'", "''") + "'"
    return name, text


def plan_frame(session: Session, tree: exp.Expression, statement: Statement) -> DataFrame:
    """A query as a lazy DataFrame."""
    from smallpond.sql.frame import SqlDataFrame
    from smallpond.sql.plan import plan_statement

    state = sql_state(session)
    try:
        config = session.config
        plan = plan_statement(tree, statement.text, state.catalog, state.settings,
                              config.num_executors, statement.index, statement.line,
                              config.runner, config.memory_per_task)
    except SqlError as error:
        if error.statement is None or not str(error).startswith(statement.source):
            raise sql_error(str(error), statement, sql=statement.text) from error
        raise
    return SqlDataFrame(session, plan.node, plan)


def _copy(session: Session, tree: exp.Copy, statement: Statement) -> StatementResult:
    if tree.args.get("kind"):  # COPY ... FROM
        raise sql_error("COPY ... FROM is not supported; query the files with read_parquet",
                        statement)
    files = tree.args.get("files") or []
    if len(files) != 1 or not (isinstance(files[0], exp.Literal) and files[0].is_string):
        raise sql_error("COPY needs one output path as a string", statement)
    path = files[0].this
    mode = "error"
    for param in tree.args.get("params") or []:
        key = param.this.name.upper() if isinstance(param.this, exp.Expression) else \
            str(param.this).upper()
        value = param.args.get("expression")
        text = value.name.lower() if isinstance(value, exp.Expression) else ""
        if key == "FORMAT":
            if text != "parquet":
                raise sql_error(f"COPY writes Parquet only, got FORMAT {text}", statement)
        elif key in ("OVERWRITE", "OVERWRITE_OR_IGNORE"):
            if text not in ("", "true", "1"):
                continue
            mode = "overwrite"
        elif key == "APPEND":
            if text not in ("", "true", "1"):
                continue
            mode = "append"
        else:
            raise sql_error(f"COPY option {key} is not supported (FORMAT parquet, OVERWRITE "
                            "and APPEND are)", statement)
    source = tree.this
    if isinstance(source, exp.Table):
        query = exp.select("*").from_(source.copy())
    else:
        query = source.this if isinstance(source, exp.Subquery) else source
    frame = plan_frame(session, query, statement)
    return StatementResult("write", frame, path, mode)


def run_statement(session: Session, statement: Statement, params: dict | None = None
                  ) -> StatementResult:
    """Run one statement: settings and definitions take effect now; queries and COPY come
    back as lazy DataFrames."""
    state = sql_state(session)
    tree = parse_statement(statement)
    tree = bind_parameters(tree, params or {}, statement)
    try:
        if isinstance(tree, exp.Set):
            for item in tree.expressions:
                name, value = _setting(item, statement)
                state.settings = state.settings.with_setting(name, value)
            return StatementResult("set")
        if isinstance(tree, exp.Command) and str(tree.this).upper() == "RESET":
            name = tree.expression.name if isinstance(tree.expression, exp.Literal) else \
                str(tree.expression)
            name = name.strip().strip('"')
            state.settings = state.settings.with_setting(name, None)
            return StatementResult("set")
        if isinstance(tree, exp.Create):
            return _create(session, tree, statement)
        if isinstance(tree, exp.Drop):
            kind = (tree.args.get("kind") or "").upper()
            if kind not in ("VIEW", "TABLE"):
                raise sql_error(f"DROP {kind} is not supported", statement)
            for table in tree.args.get("tables") or ([tree.this] if tree.this else []):
                if not state.catalog.drop(table.name) and not tree.args.get("exists"):
                    raise sql_error(f"no table or view named {table.name}", statement)
            return StatementResult("define")
        if isinstance(tree, exp.Copy):
            return _copy(session, tree, statement)
        if isinstance(tree, (exp.Query, exp.Values)):
            return StatementResult("query", plan_frame(session, tree, statement))
        raise sql_error(f"{tree.key.upper()} statements are not supported (SELECT, WITH, "
                        "CREATE VIEW/TABLE ... AS, COPY ... TO, SET, RESET and DROP are)",
                        statement)
    except SqlError:
        raise
    except SmallpondError as error:
        raise type(error)(f"{statement.where()}: {error}") from error


def _create(session: Session, tree: exp.Create, statement: Statement) -> StatementResult:
    state = sql_state(session)
    kind = (tree.args.get("kind") or "").upper()
    query = tree.args.get("expression")
    if kind not in ("VIEW", "TABLE") or query is None:
        raise sql_error("only CREATE VIEW name AS ... and CREATE TABLE name AS ... are "
                        "supported", statement)
    table = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
    name = table.name
    if state.catalog.get(name) is not None and not tree.args.get("replace"):
        if tree.args.get("exists"):
            return StatementResult("define")
        raise sql_error(f"{name} already exists (use CREATE OR REPLACE)", statement)
    frame = plan_frame(session, query, statement)
    state.catalog.register(name, frame_table(name, frame._node, frame.sql_plan.hash_keys))
    return StatementResult("define", frame)


def sql(session: Session, text: str) -> DataFrame | None:
    """`Session.sql`: SET/RESET and definitions, then at most one query (its DataFrame)."""
    from smallpond.sql.parse import split_statements

    if not isinstance(text, str) or not text.strip():
        raise SqlError("session.sql needs a SQL string")
    statements = split_statements(text, "<session.sql>")
    result = None
    for position, statement in enumerate(statements):
        outcome = run_statement(session, statement)
        if outcome.kind == "query":
            if position != len(statements) - 1:
                raise sql_error("session.sql runs at most one query, as its last statement "
                                "(use a SQL job file for several)", statement)
            result = outcome.frame
        elif outcome.kind == "write":
            outcome.frame.write_parquet(outcome.path, outcome.mode)
    return result
