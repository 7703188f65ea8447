"""DataFrame: a lazy, immutable handle on a logical plan (smallpond 0.15 compatible).

Transformations return new DataFrames; actions (count, take, to_arrow, write_parquet, ...)
optimize the plan, compile it into a task graph and run it on the session's runner.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from smallpond.compat import stage_options
from smallpond.errors import InputError, OutputError, PlanError
from smallpond.io.arrow import to_large
from smallpond.io.files import FileSlice
from smallpond.io.output import check_output, write_output
from smallpond.io.parquet import count_rows, read_slices
from smallpond.io.sessions import pinned_task_keys
from smallpond.logical.nodes import Limit, Node, Repartition, Scan, iter_nodes
from smallpond.logical.optimizer import optimize
from smallpond.logical.sqlcheck import check_fragment
from smallpond.operations import fragment_query, python_map, sql_query
from smallpond.planner.display import explain_text, plan_tree
from smallpond.planner.graph import TaskGraph, TaskSlice
from smallpond.planner.planner import Planner

if TYPE_CHECKING:
    from smallpond.session import Session

__all__ = ["DataFrame", "Session", "compute_many", "check_stage_options"]


def check_stage_options(kwargs: dict[str, Any], what: str = "operation") -> None:
    """Accept 0.15's per-stage keywords (used or logged); reject unknown ones clearly."""
    stage_options(kwargs, what)


def _sort_keys(by: str | Sequence[str]) -> list[str]:
    keys = [by] if isinstance(by, str) else list(by)
    if not keys or not all(isinstance(k, str) and k.strip() for k in keys):
        raise PlanError("partial_sort needs at least one column (or SQL expression)")
    return keys


class DataFrame:
    """A lazy distributed table. Nothing runs until an action is called."""

    def __init__(self, session: Session, node: Node, recompute: bool = False,
                 sink: tuple[str, str] | None = None):
        self.session = session
        self._node = node
        self._recompute = recompute
        self._sink = sink

    def _derive(self, node: Node) -> DataFrame:
        # as in 0.15, a DataFrame derived from one marked recompute() is recomputed too
        return DataFrame(self.session, node, recompute=self._recompute)

    @property
    def num_partitions(self) -> int:
        return self._node.num_partitions

    # -- partitioning -----------------------------------------------------------------------
    def repartition(self, npartitions: int, hash_by: str | Sequence[str] | None = None,
                    by: str | None = None, by_rows: bool = False, range_by: str | None = None,
                    **kwargs) -> DataFrame:
        """Split into `npartitions`: by files (default), rows, hash of columns, `by` expr, or
        sampled key ranges (`range_by`: partition i holds keys <= those of partition i+1).

        As in 0.15, `by_rows` is ignored when `hash_by` or `by` is given.
        """
        check_stage_options(kwargs, "repartition")
        if sum(bool(x) for x in (hash_by, by, range_by)) > 1:
            raise PlanError("pass only one of hash_by=, by= and range_by=")
        if range_by:
            _check_columns(self._node, (range_by,), "range_by")
            return self._derive(Repartition(self._node, npartitions, "range", by=range_by))
        if hash_by:
            if not isinstance(hash_by, (str, list, tuple)):
                raise PlanError(f"hash_by needs a column name or a list of them, got "
                                f"{type(hash_by).__name__}")
            columns = (hash_by,) if isinstance(hash_by, str) else tuple(hash_by)
            _check_columns(self._node, columns, "hash_by")
            return self._derive(Repartition(self._node, npartitions, "hash", hash_by=columns))
        if by:
            check_fragment(by, "repartition(by=...)")
            return self._derive(Repartition(self._node, npartitions, "expr", by=by))
        method = "rows" if by_rows else "files"
        return self._derive(Repartition(self._node, npartitions, method))

    def random_shuffle(self, seed: int = 0, **kwargs) -> DataFrame:
        """Shuffle rows across and within partitions, keeping the partition count."""
        shuffled = Repartition(self._node, self.num_partitions, "random", seed=seed)
        return self._derive(sql_query("SELECT * FROM {0} ORDER BY random()", (shuffled,),
                                      kwargs, "random_shuffle", ordered=True))

    def partial_sort(self, by: str | Sequence[str], **kwargs) -> DataFrame:
        """Sort rows within each partition by columns (or SQL expressions, 'a desc')."""
        keys = _sort_keys(by)
        for key in keys:
            check_fragment(key, "partial_sort")
        return self._derive(fragment_query("SELECT * FROM {0} ORDER BY {fragment}",
                                           ", ".join(keys), self._node, kwargs,
                                           "partial_sort", "order", ordered=True))

    # -- row operations ---------------------------------------------------------------------
    def filter(self, sql_or_func: str | Callable[[dict], bool], *, deterministic: bool = False,
               **kwargs) -> DataFrame:
        """Keep rows where the SQL predicate holds or the function returns True.

        `udfs=` makes Python functions callable from the predicate. `deterministic=True`
        says a function depends only on its row, so later sessions may reuse its result.
        """
        if isinstance(sql_or_func, str):
            return self._derive(fragment_query("SELECT * FROM {0} WHERE ({fragment})",
                                               sql_or_func, self._node, kwargs, "filter",
                                               "where"))
        return self._derive(python_map(self._node, "filter", sql_or_func, kwargs, "filter",
                                       deterministic=deterministic))

    def map(self, sql_or_func: str | Callable[[dict], dict], *, schema: pa.Schema | None = None,
            deterministic: bool = False, **kwargs) -> DataFrame:
        """`SELECT <sql> FROM partition`, or a function from row dict to row dict."""
        return self._row_op("map", sql_or_func, schema, deterministic, kwargs)

    def flat_map(self, sql_or_func: str | Callable[[dict], list[dict]], *,
                 schema: pa.Schema | None = None, deterministic: bool = False,
                 **kwargs) -> DataFrame:
        """Like map, but a row may give any number of rows (`unnest(...)` in SQL)."""
        return self._row_op("flat_map", sql_or_func, schema, deterministic, kwargs)

    def _row_op(self, kind, sql_or_func, schema, deterministic, kwargs) -> DataFrame:
        if isinstance(sql_or_func, str):
            return self._derive(fragment_query("SELECT {fragment} FROM {0}", sql_or_func,
                                               self._node, kwargs, kind, "select"))
        return self._derive(python_map(self._node, kind, sql_or_func, kwargs, kind, schema,
                                       deterministic=deterministic))

    def map_batches(self, func: Callable[[pa.Table], pa.Table], *, batch_size: int = 122880,
                    streaming: bool = False, deterministic: bool = False,
                    **kwargs) -> DataFrame:
        """Call `func(pyarrow.Table)` on batches of `batch_size` rows of each partition.

        With `streaming=True` (0.15), `func` takes an iterator of tables and yields tables.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise PlanError(f"batch_size must be a positive integer, got {batch_size!r}")
        kind = "stream" if streaming else "batches"
        return self._derive(python_map(self._node, kind, func, kwargs, "map_batches",
                                       batch_size=batch_size, deterministic=deterministic))

    def limit(self, limit: int) -> DataFrame:
        """The first `limit` rows (partitions in order), as one partition."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise PlanError(f"limit must be a non-negative integer, got {limit!r}")
        return self._derive(Limit(self._node, limit))

    def recompute(self) -> DataFrame:
        """Run this DataFrame again instead of reusing committed outputs (marks it, as in
        0.15, so `df.recompute()` as a statement works too); returns it."""
        self._recompute = True
        return self

    # -- actions ----------------------------------------------------------------------------
    def write_parquet(self, path: str, mode: str = "error") -> None:
        """Write partitions as part-NNNNN.parquet files (then _SUCCESS) under `path`.

        mode 'error' (default) refuses a folder holding files smallpond did not write (a
        previous smallpond output is replaced, as 0.15 does); 'overwrite' replaces
        smallpond's own files there and keeps the rest; 'append' adds parts.
        """
        self.write_parquet_lazy(path, mode)._compute()

    def write_parquet_lazy(self, path: str, mode: str = "error") -> DataFrame:
        """A DataFrame that writes `path` when computed (e.g. by session.wait)."""
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise PlanError("write_parquet needs an output path")
        path = check_output(path, mode, input_paths(self._node), self.session.config.data_root)
        return DataFrame(self.session, self._node, self._recompute, sink=(path, mode))

    def compute(self) -> None:
        """Run the plan (and write the output of a write_parquet_lazy DataFrame)."""
        self._compute()

    def is_computed(self) -> bool:
        """Whether every task of this plan has committed output that can be reused now."""
        from smallpond.runners.base import needed_tasks

        planner = Planner(self.session.scope)
        planner.add_output(optimize(self._node))
        force = frozenset(planner.graph.tasks) if self._recompute else frozenset()
        needed, _ = needed_tasks(planner.graph, self.session.config.data_root, force)
        return not needed

    def _compute(self) -> list[list[FileSlice]]:
        return compute_many(self.session, [self])[0]

    def count(self) -> int:
        """Number of rows."""
        return sum(count_rows(part) for part in self._compute())

    def to_arrow(self) -> pa.Table:
        """All partitions concatenated in index order.

        Data read as it is (from_arrow, from_pandas, a plain read_parquet) keeps the types
        it has; what DuckDB produced comes back with large_string/large_binary (0.15).
        """
        parts = self._compute()
        tables = [read_slices(part) for part in parts if part]
        if not tables:
            return pa.table({})
        table = pa.concat_tables(tables, promote_options="permissive")
        return table if _raw(self._node) else to_large(table)

    def to_pandas(self):
        """The result as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    def take(self, limit: int) -> list[dict[str, Any]]:
        """The first `limit` rows as dicts (computing only the partitions they need)."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise PlanError(f"take needs a non-negative integer, got {limit!r}")
        return self.head(limit).to_pylist()

    def take_all(self) -> list[dict[str, Any]]:
        """All rows as dicts."""
        return self.to_arrow().to_pylist()

    # -- inspection -------------------------------------------------------------------------
    def explain(self, stage: str = "all") -> str:
        """The logical, optimized and physical plans as text (stage: logical|optimized|
        physical|all); stages that ran in this session show their figures."""
        from smallpond.report.job import stage_stats

        optimized = optimize(self._node)
        graph = Planner(self.session.scope).plan(optimized)
        return explain_text(self._node, optimized, graph, stage, stage_stats(self.session))

    @property
    def schema(self) -> pa.Schema | None:
        """The output schema where it is known without running (None otherwise)."""
        from smallpond.logical.schema import infer_schema

        return infer_schema(self._node)

    def __repr__(self) -> str:
        schema, problem = self._schema_or_problem()
        head = ", ".join(f"{f.name}: {f.type}" for f in schema) if schema is not None \
            else problem
        return f"DataFrame[{head}] ({self.num_partitions} partitions)\n{plan_tree(self._node)}"

    def _schema_or_problem(self) -> tuple[pa.Schema | None, str]:
        """The schema, or why it is not known before running; never raises, never runs."""
        try:
            schema = self.schema
        except Exception as error:  # repr must never raise: say what is wrong instead
            text = str(error).strip()
            return None, f"schema unavailable: {text.splitlines()[0] if text else error!r}"
        return schema, "" if schema is not None else "schema known after running"

    # -- looking at data (smallpond/preview.py) ---------------------------------------------
    def head(self, n: int = 5) -> pa.Table:
        """The first `n` rows as a pyarrow Table, computing only the partitions they need."""
        from smallpond.preview import head

        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise PlanError(f"head needs a non-negative integer, got {n!r}")
        return head(self, n)

    def show(self, n: int = 20) -> None:
        """Print the first `n` rows (an HTML table in a notebook); computes only what they need."""
        from smallpond.preview import show

        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise PlanError(f"show needs a non-negative integer, got {n!r}")
        show(self, n)

    def graph(self):
        """The plan's stages as a graph (inline SVG in notebooks), annotated with each stage's
        time, rows, bytes and peak memory once it ran: a graphviz.Digraph when graphviz is
        installed, else a PlanGraph drawn without it."""
        from smallpond.report.graph import plan_graph
        from smallpond.report.job import stage_stats

        planner = Planner(self.session.scope)
        return plan_graph(planner.plan(optimize(self._node)), stage_stats(self.session))

    def _repr_html_(self) -> str:
        from smallpond.preview import dataframe_html

        return dataframe_html(self)


def compute_many(session: Session, dfs: Sequence[DataFrame]) -> list[list[list[FileSlice]]]:
    """Plan several DataFrames into one task graph, run it, commit sinks, return partitions."""
    planner = Planner(session.scope)
    parts_per_df = [planner.add_output(optimize(df._node),
                                       materialize=df._sink is not None or not _raw(df._node))
                    for df in dfs]
    graph = planner.graph
    force: set[str] = set()
    for df, parts in zip(dfs, parts_per_df):
        if df._recompute:
            force |= _reachable(graph, parts)
    outputs = session.run_graph(graph, frozenset(force), dfs)
    results = []
    for df, parts in zip(dfs, parts_per_df):
        for attempt in range(1, SINK_ATTEMPTS + 1):
            resolved = [_resolve(part, outputs) for part in parts]
            if df._sink is None:
                break
            path, mode = df._sink
            try:
                write_output(resolved, path, mode, session.config.data_root,
                             input_paths(df._node),
                             movable=_movable_outputs(graph, dfs, parts_per_df, outputs,
                                                      session.config.data_root),
                             job_id=session.job_id)
                break
            except (OutputError, InputError) as error:
                if attempt == SINK_ATTEMPTS or not _vanished_from_cache(error, session):
                    raise
                # another session moved or evicted a task output between the run and the
                # write: run again (it re-makes only what is gone), then write again
                outputs = session.run_graph(graph, frozenset(force), dfs)
        results.append(resolved)
    return results


SINK_ATTEMPTS = 3


def _resolve(part, outputs) -> list[FileSlice]:
    files: list[FileSlice] = []
    for source in part:
        files.extend(outputs[source.task].slices(source.bucket)
                     if isinstance(source, TaskSlice) else [source])
    return files


def _vanished_from_cache(error: Exception, session: Session) -> bool:
    """Whether a write failed because a committed task file it read is no longer there."""
    tasks_dir = session.config.tasks_dir + os.sep
    cause = error.__cause__
    path = getattr(error, "path", None) if isinstance(error, InputError) else (
        getattr(cause, "filename", None) if isinstance(cause, FileNotFoundError) else None)
    return isinstance(path, str) and path.startswith(tasks_dir)


def _movable_outputs(graph: TaskGraph, dfs, parts_per_df, outputs,
                     data_root: str) -> dict[str, str]:
    """Files that a sink may move out of the task cache instead of copying: whole outputs of
    tasks that one sink alone reads (no other task, sink or returned result needs them, and
    no running action of another session on this data_root).

    Moving keeps the cache and the user's output from sharing storage (a user who rewrites
    an output file cannot damage the cache) at no copying cost; the task runs again if a later
    job needs it.
    """
    readers: dict[str, int] = {}
    for task in graph:
        for dep in task.deps:
            readers[dep] = readers.get(dep, 0) + 2  # never movable
    for df, parts in zip(dfs, parts_per_df):
        weight = 1 if df._sink is not None else 2
        for part in parts:
            for source in part:
                if isinstance(source, TaskSlice):
                    extra = 0 if source.bucket is None else 2
                    readers[source.task] = readers.get(source.task, 0) + weight + extra
    others = pinned_task_keys(data_root)
    return {output.path(f): output.directory
            for key, count in readers.items()
            if count == 1 and key in outputs and key not in others
            for output in [outputs[key]] for f in output.files}


def input_paths(node: Node) -> list[str]:
    """Every file and named folder the plan reads: outputs must never overlap them."""
    found: list[str] = []
    for current in iter_nodes(node):
        if isinstance(current, Scan):
            found.extend(s.path for part in current.partitions for s in part)
            found.extend(current.roots)
    return found


def _reachable(graph: TaskGraph, parts) -> set[str]:
    stack = [s.task for part in parts for s in part if isinstance(s, TaskSlice)]
    seen: set[str] = set()
    while stack:
        key = stack.pop()
        if key not in seen:
            seen.add(key)
            stack.extend(graph.tasks[key].deps)
    return seen


def __getattr__(name: str):
    if name == "Session":  # `from smallpond.dataframe import Session` works as in 0.15
        from smallpond.session import Session

        return Session
    raise AttributeError(name)


def _check_columns(node: Node, columns: Sequence[str], what: str) -> None:
    """Columns that a repartition needs must exist, when the schema is known before running."""
    from smallpond.errors import SmallpondError
    from smallpond.logical.schema import infer_schema

    if not columns or not all(isinstance(c, str) and c for c in columns):
        raise PlanError(f"{what} needs column names, got {list(columns)!r}")
    try:
        schema = infer_schema(node)
    except SmallpondError:
        return  # the run reports it (e.g. an input that went away)
    if schema is None:
        return
    names = {f.name.lower() for f in schema}
    missing = [c for c in columns if c.lower() not in names]
    if missing:
        raise PlanError(f"{what}: column(s) {missing} not found; the input has columns "
                        f"{schema.names}")


def _raw(node: Node) -> bool:
    """Whether a plan is a plain Parquet scan whose files can be read as they are (no copy
    into data_root, no DuckDB between the user's data and the result)."""
    return (isinstance(node, Scan) and node.options.format == "parquet"
            and not node.options.columns and not node.options.union_by_name)
