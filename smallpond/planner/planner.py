"""Turn an optimized logical plan into a TaskGraph: one task per partition per stage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smallpond.errors import SmallpondError
from smallpond.io.files import FileSlice
from smallpond.io.parquet import open_parquet
from smallpond.logical.nodes import (
    Broadcast,
    Concat,
    KernelMap,
    Limit,
    Node,
    PartitionSlice,
    PythonMap,
    Repartition,
    Scan,
    SqlQuery,
    Stage,
)
from smallpond.logical.sqlcheck import nondeterministic
from smallpond.logical.sqlinfo import is_rowwise
from smallpond.planner.graph import Source, Task, TaskGraph, TaskSlice, task_key

__all__ = ["Planner", "plan", "split_files"]

Part = tuple[Source, ...]
PARQUET = {"format": "parquet"}


@dataclass
class Planned:
    """A node's partitions (what each one reads) and how to read its raw files."""

    parts: list[Part]
    read: dict


def split_files(slices: Sequence[FileSlice], n: int) -> list[Part] | None:
    """Split Parquet files (and their row groups where files are few) into n contiguous parts.

    Returns None when the files cannot give n parts (then the planner shuffles by rows).
    """
    if len(slices) >= n:
        bounds = [round(i * len(slices) / n) for i in range(n + 1)]
        return [tuple(slices[bounds[i]:bounds[i + 1]]) for i in range(n)]
    units: list[tuple[str, int, int]] = []
    for piece in slices:
        meta = open_parquet(piece.path).metadata
        groups = range(meta.num_row_groups) if piece.row_groups is None else piece.row_groups
        units.extend((piece.path, g, meta.row_group(g).num_rows) for g in groups)
    if len(units) < n:
        return None
    before = [0]
    for _, _, rows in units:
        before.append(before[-1] + rows)
    total = before[-1] or 1
    starts = [0]
    for k in range(1, n):
        index = next((i for i, b in enumerate(before) if b * n >= k * total), len(units))
        starts.append(min(max(index, starts[-1] + 1), len(units) - (n - k)))
    starts.append(len(units))
    parts = [[(p, g) for p, g, _ in units[starts[k]:starts[k + 1]]] for k in range(n)]
    result = []
    for part in parts:
        merged: dict[str, list[int]] = {}
        for path, group in part:
            merged.setdefault(path, []).append(group)
        result.append(tuple(FileSlice(p, row_groups=tuple(g)) for p, g in merged.items()))
    return result


class Planner:
    """Visits logical nodes (inputs first) and adds their tasks to one graph."""

    def __init__(self, scope: str = ""):
        """`scope` names the job: tasks whose result may change between runs (Python
        functions not marked deterministic, SQL with random values, the clock or files it
        reads by itself) hash it into their keys, so only the same job reuses them."""
        self.graph = TaskGraph()
        self.scope = scope
        self._memo: dict[str, Planned] = {}
        self._identity: dict[str, str] = {}

    def plan(self, node: Node, materialize: bool = True) -> TaskGraph:
        self.add_output(node, materialize)
        return self.graph

    def add_output(self, node: Node, materialize: bool = True) -> list[Part]:
        """Plan `node` as an output of the graph; return its partitions.

        With `materialize`, partitions that are still raw user files get a copy task, so that
        every output is a committed task output.
        """
        planned = self.visit(node)
        parts = planned.parts
        if materialize and any(isinstance(s, FileSlice) for part in parts for s in part):
            parts = self._sql_tasks("materialize", "SELECT * FROM {0}", [planned],
                                    len(parts), udfs=None)
        self.graph.outputs.extend(parts)
        return list(parts)

    def visit(self, node: Node) -> Planned:
        if node.token not in self._memo:
            visitor = getattr(self, f"visit_{type(node).__name__}")
            self._memo[node.token] = visitor(node)
        return self._memo[node.token]

    # -- helpers ----------------------------------------------------------------------------
    def _token(self, source: Source) -> str:
        if isinstance(source, TaskSlice):
            return f"{source.task}:{source.bucket}"
        return f"{self._identity.get(source.path, source.path)}:{source.row_groups}"

    def _add(self, stage: str, partition: int, kernel: str, params: dict,
             inputs: tuple[Part, ...]) -> Task:
        tokens = [[self._token(s) for s in part] for part in inputs]
        key = task_key(kernel, params, tokens)
        return self.graph.add(Task(key, stage, partition, kernel, params, inputs))

    def _sql_params(self, sql: str, udfs: bytes | None, setup: tuple[str, ...] = (),
                    read: list | None = None, settings: tuple = ()) -> dict:
        params: dict = {"sql": sql, "read": read or [], "udfs": udfs}
        if setup:
            params["setup"] = list(setup)
        if settings:
            params["settings"] = [list(pair) for pair in settings]
        if udfs or any(nondeterministic(s) for s in (sql, *setup)):
            params["scope"] = self.scope
        return params

    def _sql_tasks(self, stage: str, sql: str, inputs: list[Planned], n: int,
                   udfs: bytes | None, setup: tuple[str, ...] = (),
                   settings: tuple = ()) -> list[Part]:
        parts = []
        for i in range(n):
            params = self._sql_params(sql, udfs, setup, [p.read for p in inputs], settings)
            task = self._add(stage, i, "sql", params, tuple(p.parts[i] for p in inputs))
            parts.append((TaskSlice(task.key),))
        return parts

    @staticmethod
    def _stage(node: Node, name: str) -> str:
        return f"{name}-{node.token.rsplit('-', 1)[1][:6]}"

    # -- visitors ---------------------------------------------------------------------------
    def visit_Scan(self, node: Scan) -> Planned:
        files = [s.path for part in node.partitions for s in part]
        self._identity.update(zip(files, node.identities))
        return Planned([tuple(p) for p in node.partitions], node.options.as_params())

    def visit_SqlQuery(self, node: SqlQuery) -> Planned:
        inputs = [self.visit(s) for s in node.sources]
        stage = self._stage(node, node.name)
        if not inputs:
            task = self._add(stage, 0, "sql",
                             self._sql_params(node.sql, node.udfs, node.setup, None,
                                              node.settings), ())
            return Planned([(TaskSlice(task.key),)], PARQUET)
        return Planned(self._sql_tasks(stage, node.sql, inputs, node.num_partitions, node.udfs,
                                       node.setup, node.settings), PARQUET)

    def visit_Broadcast(self, node: Broadcast) -> Planned:
        source = self.visit(node.source)
        everything = tuple(s for part in source.parts for s in part)
        return Planned([everything] * node.n, source.read)

    def visit_Stage(self, node: Stage) -> Planned:
        return self.visit(node.source)

    def visit_Concat(self, node: Concat) -> Planned:
        planned = [self.visit(s) for s in node.sources]
        if any(p.read != planned[0].read for p in planned):
            # inputs read differently (e.g. raw CSV next to Parquet outputs): copy them first
            planned = [p if p.read == PARQUET else Planned(
                self._sql_tasks(self._stage(s, "materialize"), "SELECT * FROM {0}", [p],
                                len(p.parts), udfs=None), PARQUET)
                for s, p in zip(node.sources, planned)]
        return Planned([part for p in planned for part in p.parts], planned[0].read)

    def visit_PythonMap(self, node: PythonMap) -> Planned:
        source = self.visit(node.source)
        stage = self._stage(node, node.kind)
        parts = []
        for i, part in enumerate(source.parts):
            params = {"kind": node.kind, "func": node.func, "func_name": node.func_name,
                      "schema": node.schema, "batch_size": node.batch_size,
                      "read": [source.read]}
            if node.fingerprint:
                params["code"] = node.fingerprint
            if not node.deterministic:  # side effects or outside inputs: this job only
                params["scope"] = self.scope
            task = self._add(stage, i, "python", params, (part,))
            parts.append((TaskSlice(task.key),))
        return Planned(parts, PARQUET)

    def visit_KernelMap(self, node: KernelMap) -> Planned:
        source = self.visit(node.source)
        stage = self._stage(node, node.kernel)
        parts = []
        for i, part in enumerate(source.parts):
            params = {**dict(node.params), "read": [source.read]}
            task = self._add(stage, i, node.kernel, params, (part,))
            parts.append((TaskSlice(task.key),))
        return Planned(parts, PARQUET)

    def visit_Repartition(self, node: Repartition) -> Planned:
        inner = node.source
        fused: SqlQuery | None = None
        if (node.method in ("hash", "expr", "random") and isinstance(inner, SqlQuery)
                and inner.sources and not inner.ordered and not inner.udfs and not inner.setup
                and (len(inner.sources) == 1 or inner.copartitioned)):
            # run the per-partition query inside the mapper instead of as a task of its own
            fused = inner
        sources = [self.visit(s) for s in fused.sources] if fused else [self.visit(inner)]
        source = sources[0]
        if node.method == "files" and source.read.get("format") == "parquet":
            files = [s for part in source.parts for s in part]
            if files and all(isinstance(s, FileSlice) for s in files):
                parts = split_files(files, node.n)
                if parts is not None:
                    return Planned(parts, source.read)
        stage = self._stage(node, f"shuffle_{node.method}")
        params = {"method": "rows" if node.method == "files" else node.method, "n": node.n,
                  "hash_by": list(node.hash_by), "by": node.by, "seed": node.seed,
                  "read": [s.read for s in sources]}
        if fused is not None:
            params["sql"] = fused.sql
            if nondeterministic(fused.sql):
                params["scope"] = self.scope
            if len(fused.sources) > 1:
                params["sql_inputs"] = len(fused.sources)
            if fused.settings:
                params["settings"] = [list(pair) for pair in fused.settings]
        if node.descending:
            params["descending"] = True
        if node.nulls_first:
            params["nulls_first"] = True
        if node.method == "range":
            return Planned(self._range_parts(node, self._map_split(node, None, source), stage,
                                             params), PARQUET)
        if params["method"] == "rows":
            # one mapper reads everything in order, so row order survives the split
            mappers = [self._add(stage, 0, "shuffle", params,
                                 (tuple(s for part in source.parts for s in part),))]
        else:
            if len(sources) == 1:
                sources = [self._map_split(node, fused, source)]
            mappers = [self._add(stage, i, "shuffle", params, tuple(p.parts[i] for p in sources))
                       for i in range(len(sources[0].parts))]
        parts = [tuple(TaskSlice(m.key, j) for m in mappers) for j in range(node.n)]
        return Planned(parts, PARQUET)

    @staticmethod
    def _map_split(node: Repartition, fused: SqlQuery | None, source: Planned) -> Planned:
        """The map side of a shuffle split by row groups when its input is fewer partitions of
        user Parquet files: each mapper reads a contiguous run, so reducers see rows in the
        same order as from one mapper. Only where the fused query works on any split."""
        if node.method == "random" or source.read.get("format") != "parquet" or \
                source.read.get("union_by_name") or len(source.parts) >= node.n:
            return source
        if fused is not None and not (fused.partial or is_rowwise(fused.sql)):
            return source
        files = [s for part in source.parts for s in part]
        if not files or not all(isinstance(s, FileSlice) for s in files):
            return source
        try:
            units = len(files) if len(files) >= node.n else sum(
                open_parquet(s.path).metadata.num_row_groups if s.row_groups is None
                else len(s.row_groups) for s in files)
            count = min(node.n, units)
            if count <= len(source.parts):
                return source
            return Planned(split_files(files, count), source.read)
        except SmallpondError:  # e.g. a file that is gone: its task reports it properly
            return source

    def _range_parts(self, node: Repartition, source: Planned, stage: str,
                     params: dict) -> list[Part]:
        """Sample each partition, pick n-1 boundaries from all samples, then split by range."""
        samples = [self._add(f"{stage}-sample", i, "sample",
                             {"column": node.by, "rows": node.samples_per_partition,
                              "seed": node.seed, "read": [source.read]}, (part,))
                   for i, part in enumerate(source.parts)]
        bounds = self._add(f"{stage}-bounds", 0, "boundaries", {"column": node.by, "n": node.n},
                           (tuple(TaskSlice(s.key) for s in samples),))
        params = {**params, "read": [source.read, PARQUET]}
        mappers = [self._add(stage, i, "shuffle", params, (part, (TaskSlice(bounds.key),)))
                   for i, part in enumerate(source.parts)]
        return [tuple(TaskSlice(m.key, j) for m in mappers) for j in range(node.n)]

    def visit_PartitionSlice(self, node: PartitionSlice) -> Planned:
        source = self.visit(node.source)
        return Planned(source.parts[node.start:node.stop], source.read)

    def visit_Limit(self, node: Limit) -> Planned:
        source = self.visit(node.source)
        everything = tuple(s for part in source.parts for s in part)
        params = self._sql_params(f"SELECT * FROM {{0}} LIMIT {node.n}", None,
                                  read=[source.read])
        task = self._add(self._stage(node, "limit"), 0, "sql", params, (everything,))
        return Planned([(TaskSlice(task.key),)], PARQUET)


def plan(node: Node, materialize: bool = True) -> TaskGraph:
    """The TaskGraph of an (optimized) logical plan."""
    return Planner().plan(node, materialize)
