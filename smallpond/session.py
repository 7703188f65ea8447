"""Session: configuration, the runner, and the sources that start a DataFrame."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from smallpond.config import Config, resolve_config
from smallpond.errors import ConfigError, DiskFullError, PlanError
from smallpond.io.commit import write_json_atomic
from smallpond.io.disk import is_disk_full, mount_point
from smallpond.io.files import (
    FileSlice,
    exclude_data_root,
    expand_paths,
    file_identity,
    named_folders,
    set_storage_options,
)
from smallpond.io.sessions import SessionArea, clean_dead_sessions
from smallpond.logical.nodes import Node, ReadOptions, Scan
from smallpond.runners.base import Runner, TaskEvent

if TYPE_CHECKING:
    import pyarrow as pa

    from smallpond.dataframe import DataFrame

__all__ = ["Session", "init"]


class Session:
    """Entry point of a job: creates DataFrames and runs their plans on one runner."""

    def __init__(self, config: Config):
        self.job_id = config.job_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
        self.session_id = f"{self.job_id}-{uuid.uuid4().hex[:8]}"
        seed = config.extra.get("random_seed")
        # what keys tasks that only the same job may reuse (and seeds {rand_seed})
        self.scope = self.job_id if seed is None else f"{self.job_id}:{seed}"
        try:
            for folder in (config.tasks_dir, config.sources_dir, config.runs_dir):
                os.makedirs(folder, exist_ok=True)
            self._area = SessionArea(config.data_root, self.session_id)
        except OSError as error:
            raise ConfigError(f"cannot use data_root {config.data_root!r}: {error}") from error
        clean_dead_sessions(config.data_root, keep=self._area.path)
        exclude_data_root(config.data_root)
        self.config = config.with_(scratch_dir=self._area.path)
        self._runner: Runner | None = None
        self._last_graph = None
        self.events: list[TaskEvent] = []
        self._listeners: list[Callable[[TaskEvent], None]] = []
        self._actions: list[dict] = []
        self._closed = False
        # a script without shutdown() leaves no scratch behind; a weak reference, so that
        # sessions a notebook drops can still be garbage-collected
        self._at_exit = _shutdown_at_exit(weakref.ref(self))
        atexit.register(self._at_exit)
        if config.runner == "local":
            self._get_runner()  # start warm workers now, while the user builds the plan

    # -- runner -----------------------------------------------------------------------------
    def _get_runner(self) -> Runner:
        if self._runner is None:
            if self.config.runner == "ray":
                from smallpond.runners.ray import RayRunner

                self._runner = RayRunner(self.config)
            else:
                from smallpond.runners.local import LocalRunner

                self._runner = LocalRunner(self.config)
        return self._runner

    @property
    def runner(self) -> Runner:
        return self._get_runner()

    def _on_event(self, event: TaskEvent) -> None:
        self.events.append(event)
        for listener in list(self._listeners):
            listener(event)

    def on_event(self, listener: Callable[[TaskEvent], None]) -> Callable[[], None]:
        """Call `listener` with every TaskEvent (submitted, finished, reused, retried, failed).

        Events arrive on the driver in the order the runner saw them, the same on every
        runner. Returns a function that removes the listener.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # -- sources ----------------------------------------------------------------------------
    def _scan(self, paths, options: ReadOptions, recursive: bool = False,
              suffixes: tuple[str, ...] = (".parquet",),
              storage_options: dict | None = None) -> DataFrame:
        from smallpond.dataframe import DataFrame

        if storage_options is not None:
            set_storage_options([paths] if isinstance(paths, (str, os.PathLike)) else paths,
                                storage_options)
        files = expand_paths(paths, recursive=recursive, suffixes=suffixes)
        identities = tuple(file_identity(f) for f in files)
        slices = tuple(FileSlice(f, format=options.format) for f in files)
        return DataFrame(self, Scan((slices,), options, identities, named_folders(paths)))

    def read_parquet(self, paths: str | Sequence[str], recursive: bool = False,
                     columns: Sequence[str] | None = None, union_by_name: bool = False,
                     storage_options: dict | None = None, **kwargs) -> DataFrame:
        """Parquet files (paths, globs or folders) as one partition.

        Names starting with `_` or `.` (e.g. `_SUCCESS`) are skipped when a folder or glob
        is expanded, unless named explicitly. `storage_options` go to fsspec for remote URLs
        (e.g. `{"endpoint_url": ..., "key": ..., "secret": ...}` for s3://): they apply to
        the URL's bucket in this session's processes and never enter plans or task keys.
        """
        _check_options(kwargs)
        options = ReadOptions("parquet", tuple(columns) if columns else None, union_by_name)
        return self._scan(paths, options, recursive, storage_options=storage_options)

    def read_csv(self, paths: str | Sequence[str], schema: dict[str, str], delim: str = ",",
                 header: bool = False, storage_options: dict | None = None,
                 **kwargs) -> DataFrame:
        """CSV files read by DuckDB with the given column types ({name: duckdb_type}).

        As in 0.15, every line is data (no header line) unless `header=True`.
        `storage_options`: as for read_parquet.
        """
        _check_options(kwargs)
        _check_schema(schema)
        options = ReadOptions("csv", schema=tuple(schema.items()), delim=delim, header=header)
        return self._scan(paths, options, suffixes=(".csv", ".tsv", ".txt", ".csv.gz"),
                          storage_options=storage_options)

    def read_json(self, paths: str | Sequence[str], schema: dict[str, str],
                  storage_options: dict | None = None, **kwargs) -> DataFrame:
        """Newline-delimited JSON files read by DuckDB with the given column types.
        `storage_options`: as for read_parquet."""
        _check_options(kwargs)
        _check_schema(schema)
        options = ReadOptions("json", schema=tuple(schema.items()))
        return self._scan(paths, options, suffixes=(".json", ".jsonl", ".ndjson"),
                          storage_options=storage_options)

    def from_arrow(self, table: pa.Table | pa.RecordBatch) -> DataFrame:
        """An Arrow table as one partition (stored once under data_root by content hash)."""
        import pyarrow as pa  # here, not at import: `init()` starts workers before it loads
        import pyarrow.parquet as pq

        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise PlanError(f"from_arrow needs a pyarrow Table, got {type(table).__name__}")
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest = hashlib.sha256(sink.getvalue()).hexdigest()[:32]
        path = os.path.join(self.config.sources_dir, f"{digest}.parquet")
        if not os.path.exists(path):
            temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                pq.write_table(table, temporary)
                os.replace(temporary, path)
            except OSError as error:
                with contextlib.suppress(OSError):
                    os.remove(temporary)
                if is_disk_full(error):
                    raise DiskFullError(f"no space left on device (mount "
                                        f"{mount_point(path)}) storing a table under "
                                        f"{self.config.sources_dir}", mount=mount_point(path),
                                        path=path) from error
                raise ConfigError(f"cannot store a table under {self.config.sources_dir}: "
                                  f"{error}") from error
        slices = (FileSlice(path),)
        return self._dataframe(Scan((slices,), ReadOptions(), (f"memory:{digest}",)))

    def from_pandas(self, df) -> DataFrame:
        """A pandas DataFrame as one partition."""
        import pandas as pd
        import pyarrow as pa

        if not isinstance(df, pd.DataFrame):
            raise PlanError(f"from_pandas needs a pandas DataFrame, got {type(df).__name__}")
        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowException, ValueError, TypeError) as error:
            raise PlanError(f"from_pandas: the DataFrame cannot become an Arrow table: "
                            f"{error}") from error
        return self.from_arrow(table)

    def from_items(self, items: Iterable[Any]) -> DataFrame:
        """A list of dicts (one row each) or of plain values (column `item`)."""
        import pyarrow as pa

        from smallpond.io.arrow import table_from_rows, table_from_values

        if isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable):
            raise PlanError(f"from_items needs a list of rows, got {type(items).__name__}")
        items = list(items)
        try:
            if items and all(isinstance(i, dict) for i in items):
                return self.from_arrow(table_from_rows(items))
            return self.from_arrow(table_from_values(items))
        except (pa.ArrowException, ValueError, TypeError) as error:
            raise PlanError(f"from_items: the values do not make one table (each column needs "
                            f"one type): {error}") from error

    def partial_sql(self, query: str | Sequence[str], *inputs: DataFrame,
                    copartitioned: bool = False, **kwargs) -> DataFrame:
        """Run `query` on each partition; `{0}`, `{1}` stand for partition i of each input.

        As in 0.15: several inputs need the same partition count; a list of queries runs
        them all and keeps the last one's result; `{__data_partition__}`, `{rand_seed}`,
        `{batch_index}`, `{query_index}` are placeholders and `{{`/`}}` literal braces.
        Inputs must be provably co-partitioned (hash-partitioned alike, or one partition
        each); `copartitioned=True` says you know that they line up.
        """
        from smallpond.dataframe import DataFrame
        from smallpond.operations import sql_query

        for item in inputs:
            if not isinstance(item, DataFrame):
                raise PlanError(f"partial_sql inputs must be DataFrames, got {type(item).__name__}")
        node = sql_query(query, tuple(i._node for i in inputs), kwargs, "partial_sql",
                         copartitioned_inputs=bool(copartitioned))
        return DataFrame(self, node, recompute=any(i._recompute for i in inputs))

    def _dataframe(self, node: Node) -> DataFrame:
        from smallpond.dataframe import DataFrame

        return DataFrame(self, node)

    # -- running ----------------------------------------------------------------------------
    def wait(self, *dfs: DataFrame) -> None:
        """Compute several DataFrames together."""
        from smallpond.dataframe import compute_many

        compute_many(self, list(dfs))

    def graph(self):
        """The stages of the last executed task graph, annotated with their figures: a
        graphviz.Digraph when graphviz is installed (as in 0.15), else a PlanGraph; `str()`
        of either is the DOT text."""
        from smallpond.planner.graph import TaskGraph
        from smallpond.report.graph import plan_graph
        from smallpond.report.job import stage_stats

        return plan_graph(self._last_graph or TaskGraph(), stage_stats(self))

    def run_graph(self, graph, force: frozenset[str] = frozenset(), what=None) -> dict:
        """Run a task graph on this session's runner; record the action's outcome.

        `what` names the action in its progress display and run record (the DataFrames it
        computes, or a text)."""
        if self._closed:
            raise ConfigError("this session was shut down; start another with smallpond.init()")
        from smallpond.report.job import run_job

        self._last_graph = graph
        self._area.pin(graph.tasks)
        started = time.time()
        outcome = "failed"
        try:
            outputs = run_job(self, graph, force, what)  # the runner, with its observers
            outcome = "success"
            return outputs
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        finally:
            self._area.unpin()
            self._actions.append({"started": started, "seconds": time.time() - started,
                                  "tasks": len(graph), "status": outcome})
            self._write_status()

    def _write_status(self) -> None:
        outcomes = {a["status"] for a in self._actions}
        status = next((s for s in ("interrupted", "failed") if s in outcomes),
                      "success" if self._actions else "empty")
        report_dir = os.path.join(self.config.runs_dir, self.job_id)
        os.makedirs(report_dir, exist_ok=True)
        write_json_atomic(os.path.join(report_dir, "status.json"), {
            "job_id": self.job_id, "session_id": self.session_id, "status": status,
            "closed": self._closed, "actions": self._actions,
            "tasks_run": sum(e.kind == "finished" for e in self.events),
            "tasks_reused": sum(e.kind == "reused" for e in self.events),
        })

    def shutdown(self) -> None:
        """Stop workers, remove this session's temporary folders and record the job status.

        Only this session's own folder is removed: other sessions on the same data_root keep
        running undisturbed.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        try:
            if self._runner is not None:
                self._runner.shutdown()
        finally:
            self._area.close()
            self._write_status()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (f"Session(runner={self.config.runner!r}, data_root={self.config.data_root!r}, "
                f"num_executors={self.config.num_executors})")

    # -- observability ----------------------------------------------------------------------
    @property
    def progress(self):
        """Progress display: None (auto: terminal or notebook), True (always) or False."""
        return getattr(self, "_progress", self.config.extra.get("progress"))

    @progress.setter
    def progress(self, value) -> None:
        self._progress = value

    def report(self, job_id: str | None = None):
        """The run report of this session's job (or another job on this data_root): every
        action's stages, tasks per worker over time, rows, bytes, retries and reuse. Shows as
        HTML in a notebook; `.save(path)` writes a self-contained page."""
        from smallpond.report.html import load_report

        return load_report(self.config.data_root, job_id or self.job_id)

    def logs(self, stage: str | None = None, partition: int | None = None) -> str:
        """What tasks of this session printed or logged (stdout, stderr, Python logging),
        captured per task on either runner. `stage` is a stage name or its prefix (e.g.
        "map" or "partial_sql"); `partition` a partition number. Tasks reused from earlier
        runs did not run here and have no output."""
        from smallpond.report.record import load_logs

        blocks = []
        for entry in load_logs(self.config.data_root, self.job_id):
            name = entry["stage"]
            if stage is not None and name != stage and name.rsplit("-", 1)[0] != stage \
                    and not name.startswith(stage):
                continue
            if partition is not None and entry["partition"] != partition:
                continue
            status = "" if entry["status"] == "finished" else f" ({entry['status']})"
            blocks.append(f"== {name}[{entry['partition']}]{status} ==\n"
                          f"{entry['text'].rstrip()}")
        return "\n".join(blocks)

    def dump_graph(self, path: str | None = None) -> str:
        """Draw the last executed plan's stages to a file (0.15 API): PNG with graphviz, SVG
        without it; `path` without extension, by default data_root/runs/<job>/graph.
        Returns the file written."""
        from smallpond.report.graph import PlanGraph

        path = path or os.path.join(self.config.runs_dir, self.job_id, "graph")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        graph = self.graph()
        if isinstance(graph, PlanGraph):
            return graph.render(path, format="svg")
        return graph.render(path, format="png", cleanup=True)

    def dump_timeline(self, path: str | None = None) -> list[str]:
        """Write the tasks of this job's actions as Chrome trace-event JSON (0.15 API; open in
        chrome://tracing or ui.perfetto.dev): `<path>_exec.json` grouped by worker and
        `<path>_plan.json` grouped by stage; by default under data_root/runs/<job>/.
        Returns the two paths."""
        import json

        from smallpond.report.record import load_records
        from smallpond.report.timeline import trace_events

        path = path or os.path.join(self.config.runs_dir, self.job_id, "timeline")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        records = load_records(self.config.data_root, self.job_id)
        written = []
        for suffix, group in (("exec", "worker"), ("plan", "stage")):
            target = f"{path}_{suffix}.json"
            with open(target, "w") as handle:
                json.dump(trace_events(records, group), handle)
            written.append(target)
        return written

    def _repr_html_(self) -> str:
        from smallpond.preview import session_html

        return session_html(self)

    # -- SQL across partitions ----------------------------------------------------------------
    def sql(self, query: str) -> DataFrame | None:
        """Run SQL across partitions; returns the lazy DataFrame of its query.

        `query` holds `SET smallpond.partitions = N` (and other settings), `CREATE VIEW name AS
        ...`, `COPY (...) TO 'path' (FORMAT parquet)`, and at most one query, last. Tables are
        names given to `register`, views created before, and `read_parquet('glob')`.
        """
        from smallpond.sql.api import sql

        return sql(self, query)

    def register(self, name: str, source: DataFrame | str | Sequence[str]) -> None:
        """Name a DataFrame, or Parquet files (path, glob, folder or list), for `sql`."""
        from smallpond.sql.api import register

        register(self, name, source)


def _shutdown_at_exit(ref: weakref.ref) -> Callable[[], None]:
    def shutdown() -> None:
        session = ref()
        if session is not None:
            try:
                session.shutdown()
            except Exception:  # the interpreter is going away: never raise from atexit
                pass

    return shutdown


def _check_options(kwargs: dict) -> None:
    from smallpond.compat import stage_options

    stage_options(kwargs, "read")


def _check_schema(schema) -> None:
    if not isinstance(schema, dict) or not schema:
        raise PlanError("schema must be a non-empty dict of {column: duckdb_type}")


def init(job_id: str | None = None, job_time: float | None = None, job_name: str | None = None,
         data_root: str | None = None, num_executors: int | None = None,
         ray_address: str | None = None, runner: str | None = None, **kwargs) -> Session:
    """Start a session. Without `ray_address` (or runner='ray') jobs run on this machine.

    Every smallpond 0.15 keyword is accepted (those without a meaning here are logged once).
    Arguments win over environment variables: argument > SMALLPOND_<NAME> > SP_<NAME> >
    default. `job_id` names the job: a session with the same job_id resumes its Python
    tasks; others reuse only tasks that are functions of their inputs.
    """
    from smallpond.compat import init_options

    del job_time  # accepted for compatibility; resume is keyed by content and job_id
    used = init_options(kwargs)
    if num_executors == 0:  # 0.15's default: "run on this node", i.e. the machine's cores
        num_executors = None
    env = used.pop("env_overrides", None)
    if env:
        os.environ.update({str(k): str(v) for k, v in env.items()})  # workers inherit them
    config = resolve_config(
        data_root=data_root, runner=runner, ray_address=ray_address,
        num_executors=num_executors, job_id=job_id, job_name=job_name,
        memory_per_task=used.pop("memory_per_task", None),
        partitions=used.pop("partitions", None), max_retries=used.pop("max_retries", None),
        verify=used.pop("verify", None), **used)
    return Session(config)
