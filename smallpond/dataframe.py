"""DataFrame: a lazy, immutable handle on a logical plan (smallpond 0.15 compatible).

Transformations return new DataFrames; actions (count, take, to_arrow, write_parquet, ...)
optimize the plan, compile it into a task graph and run it on the session's runner.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import cloudpickle
import pyarrow as pa

from smallpond.errors import PlanError
from smallpond.io.arrow import to_large
from smallpond.io.files import FileSlice
from smallpond.io.output import check_output, write_output
from smallpond.io.parquet import count_rows, read_slices
from smallpond.logical.nodes import Limit, Node, PythonMap, Repartition, Scan, SqlQuery
from smallpond.logical.optimizer import optimize
from smallpond.planner.display import explain_text, plan_tree
from smallpond.planner.graph import TaskGraph, TaskSlice
from smallpond.planner.planner import Planner

if TYPE_CHECKING:
    from smallpond.session import Session

__all__ = ["DataFrame", "Session", "compute_many", "check_stage_options"]

STAGE_OPTIONS = ("cpu_limit", "gpu_limit", "memory_limit")


def check_stage_options(kwargs: dict[str, Any]) -> None:
    """Accept the per-stage options of 0.15 that make sense here; reject the rest clearly."""
    unknown = set(kwargs) - set(STAGE_OPTIONS) - {"udfs"}
    if unknown:
        raise PlanError(f"unknown option(s) {sorted(unknown)}; accepted: {list(STAGE_OPTIONS)}")
    for name in STAGE_OPTIONS:
        value = kwargs.get(name)
        if value is not None and (not isinstance(value, (int, float)) or value <= 0):
            raise PlanError(f"{name} must be a positive number, got {value!r}")


def _pickle(func: Callable, what: str) -> bytes:
    if not callable(func):
        raise PlanError(f"{what} needs a SQL string or a callable, got {type(func).__name__}")
    try:
        return cloudpickle.dumps(func)
    except Exception as error:
        raise PlanError(f"{what}: function {_name(func)!r} cannot be pickled for the workers: "
                        f"{type(error).__name__}: {error}") from error


def _name(func: Callable) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def _schema_bytes(schema: pa.Schema | None) -> bytes | None:
    if schema is None:
        return None
    if not isinstance(schema, pa.Schema):
        raise PlanError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
    return schema.serialize().to_pybytes()


def _sql_text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PlanError(f"{what} needs a non-empty SQL string")
    return value


class DataFrame:
    """A lazy distributed table. Nothing runs until an action is called."""

    def __init__(self, session: Session, node: Node, recompute: bool = False,
                 sink: tuple[str, str] | None = None):
        self.session = session
        self._node = node
        self._recompute = recompute
        self._sink = sink

    def _derive(self, node: Node) -> DataFrame:
        return DataFrame(self.session, node)

    @property
    def num_partitions(self) -> int:
        return self._node.num_partitions

    # -- partitioning -----------------------------------------------------------------------
    def repartition(self, npartitions: int, hash_by: str | Sequence[str] | None = None,
                    by: str | None = None, by_rows: bool = False, range_by: str | None = None,
                    **kwargs) -> DataFrame:
        """Split into `npartitions`: by files (default), rows, hash of columns, `by` expr, or
        sampled key ranges (`range_by`: partition i holds keys <= those of partition i+1)."""
        check_stage_options(kwargs)
        if sum(bool(x) for x in (hash_by, by, by_rows, range_by)) > 1:
            raise PlanError("pass only one of hash_by=, by=, by_rows=True and range_by=")
        if range_by:
            return self._derive(Repartition(self._node, npartitions, "range", by=range_by))
        if hash_by:
            columns = (hash_by,) if isinstance(hash_by, str) else tuple(hash_by)
            return self._derive(Repartition(self._node, npartitions, "hash", hash_by=columns))
        if by:
            return self._derive(Repartition(self._node, npartitions, "expr", by=by))
        method = "rows" if by_rows else "files"
        return self._derive(Repartition(self._node, npartitions, method))

    def random_shuffle(self, seed: int = 0, **kwargs) -> DataFrame:
        """Shuffle rows across and within partitions, keeping the partition count."""
        check_stage_options(kwargs)
        shuffled = Repartition(self._node, self.num_partitions, "random", seed=seed)
        return self._derive(SqlQuery((shuffled,), "SELECT * FROM {0} ORDER BY random()",
                                     name="random_shuffle", ordered=True))

    def partial_sort(self, by: str | Sequence[str], **kwargs) -> DataFrame:
        """Sort rows within each partition by columns (or SQL expressions)."""
        check_stage_options(kwargs)
        keys = [by] if isinstance(by, str) else list(by)
        if not keys:
            raise PlanError("partial_sort needs at least one column")
        order = ", ".join(_sql_text(k, "partial_sort") for k in keys)
        return self._derive(SqlQuery((self._node,), f"SELECT * FROM {{0}} ORDER BY {order}",
                                     name="partial_sort", ordered=True))

    # -- row operations ---------------------------------------------------------------------
    def filter(self, sql_or_func: str | Callable[[dict], bool], **kwargs) -> DataFrame:
        """Keep rows where the SQL predicate holds or the function returns True."""
        check_stage_options(kwargs)
        if isinstance(sql_or_func, str):
            sql = f"SELECT * FROM {{0}} WHERE ({_sql_text(sql_or_func, 'filter')})"
            return self._derive(SqlQuery((self._node,), sql, name="filter"))
        return self._derive(PythonMap(self._node, "filter", _pickle(sql_or_func, "filter"),
                                      _name(sql_or_func)))

    def map(self, sql_or_func: str | Callable[[dict], dict], *, schema: pa.Schema | None = None,
            udfs: Sequence | None = None, **kwargs) -> DataFrame:
        """`SELECT <sql> FROM partition`, or a function from row dict to row dict."""
        return self._row_op("map", sql_or_func, schema, udfs, kwargs)

    def flat_map(self, sql_or_func: str | Callable[[dict], list[dict]], *,
                 schema: pa.Schema | None = None, udfs: Sequence | None = None,
                 **kwargs) -> DataFrame:
        """Like map, but a row may give any number of rows (`unnest(...)` in SQL)."""
        return self._row_op("flat_map", sql_or_func, schema, udfs, kwargs)

    def _row_op(self, kind, sql_or_func, schema, udfs, kwargs) -> DataFrame:
        check_stage_options(kwargs)
        if isinstance(sql_or_func, str):
            from smallpond.session import _pickle_udfs

            sql = f"SELECT {_sql_text(sql_or_func, kind)} FROM {{0}}"
            return self._derive(SqlQuery((self._node,), sql, name=kind, udfs=_pickle_udfs(udfs)))
        return self._derive(PythonMap(self._node, kind, _pickle(sql_or_func, kind),
                                      _name(sql_or_func), _schema_bytes(schema)))

    def map_batches(self, func: Callable[[pa.Table], pa.Table], *, batch_size: int = 122880,
                    **kwargs) -> DataFrame:
        """Call `func(pyarrow.Table)` on batches of `batch_size` rows of each partition."""
        check_stage_options(kwargs)
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise PlanError(f"batch_size must be a positive integer, got {batch_size!r}")
        return self._derive(PythonMap(self._node, "batches", _pickle(func, "map_batches"),
                                      _name(func), batch_size=batch_size))

    def limit(self, limit: int) -> DataFrame:
        """The first `limit` rows (partitions in order), as one partition."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise PlanError(f"limit must be a non-negative integer, got {limit!r}")
        return self._derive(Limit(self._node, limit))

    def recompute(self) -> DataFrame:
        """This DataFrame, forced to run again instead of reusing committed outputs."""
        return DataFrame(self.session, self._node, recompute=True, sink=self._sink)

    # -- actions ----------------------------------------------------------------------------
    def write_parquet(self, path: str, mode: str = "error") -> None:
        """Write partitions as part-NNNNN.parquet files (then _SUCCESS) under `path`."""
        self.write_parquet_lazy(path, mode)._compute()

    def write_parquet_lazy(self, path: str, mode: str = "error") -> DataFrame:
        """A DataFrame that writes `path` when computed (e.g. by session.wait)."""
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise PlanError("write_parquet needs an output path")
        path = check_output(path, mode, input_paths(self._node), self.session.config.data_root)
        return DataFrame(self.session, self._node, self._recompute, sink=(path, mode))

    def _compute(self) -> list[list[FileSlice]]:
        return compute_many(self.session, [self])[0]

    def count(self) -> int:
        """Number of rows."""
        return sum(count_rows(part) for part in self._compute())

    def to_arrow(self) -> pa.Table:
        """All partitions concatenated in index order."""
        parts = self._compute()
        tables = [read_slices(part) for part in parts if part]
        if not tables:
            return pa.table({})
        return to_large(pa.concat_tables(tables, promote_options="default"))

    def to_pandas(self):
        """The result as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    def take(self, limit: int) -> list[dict[str, Any]]:
        """The first `limit` rows as dicts."""
        return self.limit(limit).to_arrow().to_pylist()

    def take_all(self) -> list[dict[str, Any]]:
        """All rows as dicts."""
        return self.to_arrow().to_pylist()

    # -- inspection -------------------------------------------------------------------------
    def explain(self, stage: str = "all") -> str:
        """The logical, optimized and physical plans as text (stage: logical|optimized|
        physical|all)."""
        optimized = optimize(self._node)
        graph = Planner().plan(optimized)
        return explain_text(self._node, optimized, graph, stage)

    @property
    def schema(self) -> pa.Schema | None:
        """The output schema where it is known without running (None otherwise)."""
        from smallpond.logical.schema import infer_schema

        return infer_schema(self._node)

    def __repr__(self) -> str:
        try:
            schema = self.schema
        except Exception:  # repr must never raise
            schema = None
        head = ", ".join(f"{f.name}: {f.type}" for f in schema) if schema is not None \
            else "schema known after running"
        return f"DataFrame[{head}] ({self.num_partitions} partitions)\n{plan_tree(self._node)}"


def compute_many(session: Session, dfs: Sequence[DataFrame]) -> list[list[list[FileSlice]]]:
    """Plan several DataFrames into one task graph, run it, commit sinks, return partitions."""
    planner = Planner()
    parts_per_df = [planner.add_output(optimize(df._node)) for df in dfs]
    graph = planner.graph
    force: set[str] = set()
    for df, parts in zip(dfs, parts_per_df):
        if df._recompute:
            force |= _reachable(graph, parts)
    outputs = session.run_graph(graph, frozenset(force))
    movable = _movable_outputs(graph, dfs, parts_per_df, outputs)
    results = []
    for df, parts in zip(dfs, parts_per_df):
        resolved = []
        for part in parts:
            files: list[FileSlice] = []
            for source in part:
                files.extend(outputs[source.task].slices(source.bucket)
                             if isinstance(source, TaskSlice) else [source])
            resolved.append(files)
        if df._sink is not None:
            path, mode = df._sink
            write_output(resolved, path, mode, session.config.data_root,
                         input_paths(df._node), movable=movable, job_id=session.job_id)
        results.append(resolved)
    return results


def _movable_outputs(graph: TaskGraph, dfs, parts_per_df, outputs) -> dict[str, str]:
    """Files that a sink may move out of the task cache instead of copying: whole outputs of
    tasks that one sink alone reads (no other task, sink or returned result needs them).

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
    return {output.path(f): output.directory
            for key, count in readers.items() if count == 1 and key in outputs
            for output in [outputs[key]] for f in output.files}


def input_paths(node: Node) -> list[str]:
    """Every file and named folder the plan reads: outputs must never overlap them."""
    found: list[str] = []
    seen: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if current.token in seen:
            continue
        seen.add(current.token)
        if isinstance(current, Scan):
            found.extend(s.path for part in current.partitions for s in part)
            found.extend(current.roots)
        stack.extend(current.inputs)
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
