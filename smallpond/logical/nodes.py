"""Logical plan nodes: frozen, hashable values that validate their arguments.

A node describes what to compute per partition; resource and file-format knobs live in
`ReadOptions` (sources) and the session config, never in the nodes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from functools import cached_property

from smallpond.config import MAX_PARTITIONS
from smallpond.errors import PlanError
from smallpond.io.files import FileSlice

__all__ = [
    "Node",
    "Scan",
    "SqlQuery",
    "PythonMap",
    "Repartition",
    "Limit",
    "KernelMap",
    "PartitionSlice",
    "Broadcast",
    "Concat",
    "Stage",
    "iter_nodes",
    "ReadOptions",
    "SHUFFLE_METHODS",
]

SHUFFLE_METHODS = ("files", "rows", "hash", "expr", "random", "range")
PYTHON_KINDS = ("map", "flat_map", "filter", "batches", "stream")


@dataclass(frozen=True)
class ReadOptions:
    """How a source's files are read: format and its options."""

    format: str = "parquet"
    columns: tuple[str, ...] | None = None
    union_by_name: bool = False
    schema: tuple[tuple[str, str], ...] | None = None
    delim: str | None = None
    header: bool | None = None

    def as_params(self) -> dict:
        params: dict = {"format": self.format}
        if self.columns:
            params["columns"] = list(self.columns)
        if self.union_by_name:
            params["union_by_name"] = True
        if self.schema:
            params["schema"] = dict(self.schema)
        if self.delim is not None:
            params["delim"] = self.delim
        if self.header is not None:
            params["header"] = self.header
        return params


@dataclass(frozen=True, eq=False)
class Node:
    """Base of plan nodes. Equality and hashing go by content (`token`)."""

    @property
    def inputs(self) -> tuple[Node, ...]:
        return ()

    @property
    def num_partitions(self) -> int:
        raise NotImplementedError

    @property
    def label(self) -> str:
        return type(self).__name__

    def describe(self) -> str:
        return self.label

    @cached_property
    def token(self) -> str:
        """A deterministic name from the node's content: `label-<hash>`."""
        digest = hashlib.sha256()
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Node):
                value = value.token
            elif isinstance(value, tuple) and value and isinstance(value[0], Node):
                value = tuple(v.token for v in value)
            digest.update(f"{f.name}={value!r};".encode())
        return f"{type(self).__name__.lower()}-{digest.hexdigest()[:16]}"

    def __eq__(self, other) -> bool:
        return isinstance(other, Node) and self.token == other.token

    def __hash__(self) -> int:
        return hash(self.token)


class OneInput(Node):
    """A node that reads the partitions of one `source` node (by default, as many)."""

    source: Node

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.source,)

    @property
    def num_partitions(self) -> int:
        return self.source.num_partitions


@dataclass(frozen=True, eq=False)
class Scan(Node):
    """Files read as they are; each entry of `partitions` is one partition's file list."""

    partitions: tuple[tuple[FileSlice, ...], ...]
    options: ReadOptions = field(default_factory=ReadOptions)
    identities: tuple[str, ...] = ()
    roots: tuple[str, ...] = ()  # folders the user named: outputs must stay out of them

    def __post_init__(self):
        if not self.partitions:
            raise PlanError("a scan needs at least one partition")

    @property
    def num_partitions(self) -> int:
        return len(self.partitions)

    def describe(self) -> str:
        files = sum(len(p) for p in self.partitions)
        return f"Scan {self.options.format}: {files} file(s), {self.num_partitions} partition(s)"


@dataclass(frozen=True, eq=False)
class SqlQuery(Node):
    """Per-partition DuckDB SQL; `{k}` is partition i of input k. `ordered` blocks fusion.

    `copartitioned` says the producer guarantees that partition i of every input holds the rows
    that belong together (e.g. both sides hash-shuffled on the join keys, or a broadcast input).
    `settings` are DuckDB `SET name = value` pairs applied in every task that runs this query.
    `partial` marks a partial aggregate whose groups a later step merges: it may run on any split
    of its input (the map side of a shuffle splits a large partition by row groups).
    """

    sources: tuple[Node, ...]
    sql: str
    name: str = "sql"
    udfs: bytes | None = None
    ordered: bool = False
    copartitioned: bool = False
    setup: tuple[str, ...] = ()  # statements run before `sql` (0.15's list of queries)
    settings: tuple[tuple[str, str], ...] = ()
    partial: bool = False

    def __post_init__(self):
        counts = {s.num_partitions for s in self.sources}
        if len(counts) > 1:
            raise PlanError(
                f"inputs of {self.name} have different partition counts {sorted(counts)}; "
                "repartition them to the same count first")

    @property
    def inputs(self) -> tuple[Node, ...]:
        return self.sources

    @property
    def num_partitions(self) -> int:
        return self.sources[0].num_partitions if self.sources else 1

    def describe(self) -> str:
        return f"{self.name}: {' '.join(self.sql.split())}"


@dataclass(frozen=True, eq=False)
class PythonMap(OneInput):
    """A Python function over rows (map, flat_map, filter) or Arrow tables (batches)."""

    source: Node
    kind: str
    func: bytes
    func_name: str
    schema: bytes | None = None
    batch_size: int | None = None
    deterministic: bool = False  # a pure function of its rows: reusable across sessions
    fingerprint: str = ""  # a digest of the function's code (see operations.function_fingerprint)

    def __post_init__(self):
        if self.kind not in PYTHON_KINDS:
            raise PlanError(f"unknown python map kind {self.kind!r}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise PlanError(f"batch_size must be positive, got {self.batch_size}")

    def describe(self) -> str:
        return f"python {self.kind}: {self.func_name}"


@dataclass(frozen=True, eq=False)
class Repartition(OneInput):
    """Redistribute rows into `n` partitions by files, rows, hash, a key expression or at random.

    A range split orders partitions by the column `by` ascending, NULLs last; `descending` and
    `nulls_first` flip those (partition 0 then holds the largest keys, or the NULLs).
    """

    source: Node
    n: int
    method: str
    hash_by: tuple[str, ...] = ()
    by: str | None = None
    seed: int = 0
    samples_per_partition: int = 1000
    descending: bool = False
    nulls_first: bool = False

    def __post_init__(self):
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n <= 0:
            raise PlanError(f"npartitions must be a positive integer, got {self.n!r}")
        if self.n > MAX_PARTITIONS:
            raise PlanError(f"npartitions is {self.n}, more than the {MAX_PARTITIONS} smallpond "
                            "supports; fewer, larger partitions run faster")
        if self.method not in SHUFFLE_METHODS:
            raise PlanError(f"unknown repartition method {self.method!r}")
        if self.method == "hash" and not self.hash_by:
            raise PlanError("hash repartition needs at least one column")
        if self.method in ("expr", "range") and not (self.by and self.by.strip()):
            raise PlanError(f"repartition {self.method} needs a column or SQL expression")

    @property
    def num_partitions(self) -> int:
        return self.n

    def describe(self) -> str:
        order = (" desc" if self.descending else "") + (" nulls first" if self.nulls_first else "")
        detail = {"hash": f" hash_by={list(self.hash_by)}", "expr": f" by={self.by!r}",
                  "range": f" range_by={self.by!r}{order} (sampled)"}
        return f"repartition {self.method} -> {self.n}{detail.get(self.method, '')}"


@dataclass(frozen=True, eq=False)
class Limit(OneInput):
    """The first `n` rows of the partitions concatenated in order: one partition."""

    source: Node
    n: int

    def __post_init__(self):
        if not isinstance(self.n, int) or self.n < 0:
            raise PlanError(f"limit must be a non-negative integer, got {self.n!r}")

    @property
    def num_partitions(self) -> int:
        return 1

    def describe(self) -> str:
        return f"limit {self.n}"


@dataclass(frozen=True, eq=False)
class KernelMap(OneInput):
    """A registered kernel run on each partition (extensions: GraySort, connectors).

    `params` is a tuple of (name, value) pairs so that the node stays hashable.
    """

    source: Node
    kernel: str
    params: tuple[tuple[str, object], ...] = ()

    def describe(self) -> str:
        return f"kernel {self.kernel}"


@dataclass(frozen=True, eq=False)
class PartitionSlice(OneInput):
    """Partitions `start` .. `stop - 1` of the source, as they are (what a preview reads first:
    only the tasks those partitions need run)."""

    source: Node
    start: int
    stop: int

    def __post_init__(self):
        if not 0 <= self.start < self.stop <= self.source.num_partitions:
            raise PlanError(f"partition slice {self.start}:{self.stop} is outside 0:"
                            f"{self.source.num_partitions}")

    @property
    def num_partitions(self) -> int:
        return self.stop - self.start

    def describe(self) -> str:
        return f"partitions {self.start}..{self.stop - 1}"


@dataclass(frozen=True, eq=False)
class Broadcast(OneInput):
    """`n` partitions that each hold every row of `source` (its partitions concatenated in order).

    With n=1 this gathers a partitioned input into one partition without moving data; with n>1 a
    small input is joined with every partition of a large one.
    """

    source: Node
    n: int

    def __post_init__(self):
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n <= 0:
            raise PlanError(f"broadcast needs a positive partition count, got {self.n!r}")

    @property
    def num_partitions(self) -> int:
        return self.n

    def describe(self) -> str:
        if self.n == 1:
            return f"gather {self.source.num_partitions} -> 1"
        return f"broadcast {self.source.num_partitions} -> every one of {self.n}"


@dataclass(frozen=True, eq=False)
class Concat(Node):
    """The partitions of every source, one after another (UNION ALL); same columns in order."""

    sources: tuple[Node, ...]

    def __post_init__(self):
        if not self.sources:
            raise PlanError("concat needs at least one input")

    @property
    def inputs(self) -> tuple[Node, ...]:
        return self.sources

    @property
    def num_partitions(self) -> int:
        return sum(s.num_partitions for s in self.sources)

    def describe(self) -> str:
        return f"concat {' + '.join(str(s.num_partitions) for s in self.sources)}"


@dataclass(frozen=True, eq=False)
class Stage(OneInput):
    """The same partitions as `source`, which runs as a stage of its own: several consumers
    read its output instead of each computing it again (fusion stops here)."""

    source: Node

    def describe(self) -> str:
        return "stage (shared by several consumers)"


def iter_nodes(root: Node):
    """Every node of a plan once (each shared input once), the root first."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node.token in seen:
            continue
        seen.add(node.token)
        yield node
        stack.extend(node.inputs)
