"""SQL job files: several DuckDB statements, one lazy plan.

`CREATE VIEW/TABLE name AS ...` define stages used later by name, `SET smallpond.* = ...` and
other settings configure what follows, `COPY (SELECT ...) TO 'path' (FORMAT parquet)` writes a
result (atomically, through `DataFrame.write_parquet`), and a final bare SELECT is the job's
result: its first rows are printed, or it is written with `--output`. Every write and the
result are computed together as one task graph, so shared stages run once. `${name}` is
filled from parameters, bound as a SQL literal by the parser (never pasted as text).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from smallpond.errors import InputError, SqlError
from smallpond.io.files import FileSlice
from smallpond.io.parquet import count_rows, iter_slice_batches
from smallpond.sql.api import StatementResult, run_statement
from smallpond.sql.parse import parse_statement, split_statements, sql_error

if TYPE_CHECKING:
    from smallpond.dataframe import DataFrame
    from smallpond.session import Session

__all__ = ["Job", "JobOutcome", "read_job", "parse_params", "plan_job", "run_job",
           "explain_job", "render_rows"]


@dataclass
class Job:
    """A planned job file: what it writes, and its result query (if it ends with one)."""

    source: str
    writes: list[tuple[str, str, DataFrame]] = field(default_factory=list)  # path, mode, df
    result: DataFrame | None = None
    result_where: str = ""


@dataclass
class JobOutcome:
    """What a job did: rows written per path, and the first rows of its result."""

    written: list[tuple[str, int]]
    head: pa.Table | None = None
    total_rows: int = 0
    output: str | None = None


def read_job(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise InputError(f"job file {path!r} does not exist", path=path) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read job file {path!r}: {error}", path=path) from error


def parse_params(items) -> dict[str, str]:
    """`name=value` strings -> {name: value}."""
    params: dict[str, str] = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        if not sep or not name.strip().isidentifier():
            raise SqlError(f"parameter {item!r} must look like name=value")
        params[name.strip()] = value
    return params


def plan_job(session: Session, text: str, source: str = "<job>",
             params: dict[str, str] | None = None) -> Job:
    """Run the job's statements up to planning: settings and views take effect, writes and
    the result come back as lazy DataFrames."""
    statements = split_statements(text, source)
    if not statements:
        raise SqlError(f"{source}: no SQL statements")
    for statement in statements:  # every syntax error before anything is planned
        parse_statement(statement)
    job = Job(source)
    for position, statement in enumerate(statements):
        outcome: StatementResult = run_statement(session, statement, params)
        if outcome.kind == "write":
            job.writes.append((outcome.path, outcome.mode, outcome.frame))
        elif outcome.kind == "query":
            if position != len(statements) - 1:
                raise sql_error("a bare SELECT must be the last statement (use CREATE VIEW "
                                "or COPY ... TO before it)", statement)
            job.result = outcome.frame
            job.result_where = statement.where()
    return job


def run_job(session: Session, job: Job, output: str | None = None, mode: str = "error",
            max_rows: int = 40) -> JobOutcome:
    """Compute every write and the result together; read the first rows of the result."""
    from smallpond.dataframe import compute_many

    frames: list[DataFrame] = [df.write_parquet_lazy(path, how) for path, how, df in job.writes]
    before = {path: _parts(path) if how == "append" else set() for path, how, _ in job.writes}
    result = job.result
    if result is not None and output is not None:
        frames.append(result.write_parquet_lazy(output, mode))
    elif result is not None:
        frames.append(result)
    elif output is not None:
        raise SqlError(f"{job.source}: --output needs a job that ends with a SELECT")
    parts = compute_many(session, frames) if frames else []
    # the writes may have moved task files into the outputs: count what the outputs hold
    written = [(path, _rows(path, before[path])) for path, _, _ in job.writes]
    outcome = JobOutcome(written)
    if result is not None:
        if output is not None:
            outcome.output = output
            outcome.total_rows = _rows(output, set() if mode != "append" else None)
            written.append((output, outcome.total_rows))
        else:
            files = parts[-1]
            outcome.total_rows = sum(count_rows(p) for p in files)
            outcome.head = _head(files, max_rows)
    return outcome


def _parts(path: str) -> set[str]:
    try:
        return {n for n in os.listdir(path) if n.startswith("part-") and n.endswith(".parquet")}
    except OSError:
        return set()


def _rows(path: str, before: set[str] | None) -> int:
    """Rows in an output folder's part files (those added after `before`, when given)."""
    names = sorted(_parts(path) - (before or set()))
    return sum(count_rows([FileSlice(os.path.join(path, n))]) for n in names)


def _head(parts, limit: int) -> pa.Table | None:
    batches, rows = [], 0
    schema = None
    for part in parts:
        if not part:
            continue
        for batch in iter_slice_batches(part):
            schema = schema or batch.schema
            batches.append(batch.slice(0, limit - rows))
            rows += batches[-1].num_rows
            if rows >= limit:
                return pa.Table.from_batches(batches)
    if schema is None:
        return None
    return pa.Table.from_batches(batches, schema=schema)


def render_rows(head: pa.Table | None, total: int, max_rows: int) -> str:
    """The result as the DuckDB CLI draws it, with the total row count."""
    if head is None:
        return f"({total} rows)"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        duckdb.from_arrow(head).show(max_rows=max(max_rows, 1))
    text = buffer.getvalue().rstrip("\n")
    if total > head.num_rows:
        text += f"\n{total} rows in all, the first {head.num_rows} shown (--output writes all)"
    return text


def explain_job(job: Job) -> str:
    """The distributed plan of every write and of the result."""
    sections = []
    for path, mode, df in job.writes:
        sections.append(f"-- COPY TO {path} (mode {mode})\n{_explain(df)}")
    if job.result is not None:
        sections.append(f"-- result ({job.result_where})\n{_explain(job.result)}")
    if not sections:
        return f"{job.source}: nothing to compute (settings and views only)"
    return "\n\n".join(sections)


def _explain(df) -> str:
    explain = df.explain
    try:
        return explain("distributed")
    except ValueError:
        return explain()
