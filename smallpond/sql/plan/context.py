"""State shared while one statement is planned: settings, names, the binder and the notes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from smallpond.logical.nodes import SqlQuery
from smallpond.sql.catalog import Catalog
from smallpond.sql.plan.binder import Binder
from smallpond.sql.plan.rel import ANY, Partitioning, Rel
from smallpond.sql.settings import SqlSettings

__all__ = ["PlanContext", "Unsupported", "PlannerBug", "type_width"]


class Unsupported(Exception):
    """The distributed planner cannot handle this construct: run the statement as one stage."""


class PlannerBug(Exception):
    """A query the planner wrote did not bind: a bug; the statement runs as one stage."""


@dataclass
class PlanContext:
    """Everything the planning functions share for one statement."""

    catalog: Catalog
    settings: SqlSettings
    workers: int
    runner: str = "local"
    memory: int = 1 << 30  # per task
    binder: Binder = field(default_factory=Binder)
    notes: list[str] = field(default_factory=list)
    marker: str = "__sp_in_"
    references: dict[str, int] = field(default_factory=dict)  # table name -> references
    _names: set[str] = field(default_factory=set)
    _counter: int = 0

    # -- names -----------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A physical column name not used before in this statement."""
        name = base
        suffix = 1
        while name.lower() in self._names:
            suffix += 1
            name = f"{base}#{suffix}"
        self._names.add(name.lower())
        return name

    def temp(self, prefix: str = "__t") -> str:
        self._counter += 1
        return self.fresh(f"{prefix}{self._counter}")

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # -- partition counts ------------------------------------------------------------------
    @property
    def max_partitions(self) -> int:
        return self.settings.partitions or max(1, 2 * self.workers)

    def partitions_for(self, size: float) -> int:
        """Partitions for a scan or shuffle of `size` bytes: one when it is smaller than a
        partition's worth, else the statement's partition count, the same for every large
        stage, so that what was hashed once stays aligned with what is hashed later."""
        if self.settings.partitions:
            return self.settings.partitions
        if size < self.partition_bytes:
            return 1
        return self.max_partitions

    @property
    def partition_bytes(self) -> int:
        """Data worth a partition of its own. On this machine a task that runs alone uses every
        core, so splitting pays only when a task's data nears its memory budget; on Ray, whose
        tasks use one core each, partitions are what spreads the work."""
        if self.settings.partition_bytes:
            return self.settings.partition_bytes
        if self.runner == "local":
            return max(32 << 20, self.memory // 4)
        return 32 << 20

    def small(self, rel: Rel) -> bool:
        """Whether a result is small enough to finish in one partition."""
        return rel.n == 1 or rel.est_bytes < self.settings.gather_limit

    # -- stages ----------------------------------------------------------------------------
    def stage(self, sql: str, inputs: Sequence[Rel], name: str,
              partitioning: Partitioning = ANY, rows: float | None = None,
              width: float | None = None, ordered: bool = False,
              partial: bool = False, columns: list[tuple[str, str]] | None = None) -> Rel:
        """A per-partition query over aligned inputs as a Rel. Its output `columns` (name,
        type) are bound by DuckDB unless the caller knows them (renames, filters, joins)."""
        nodes = tuple(i.node for i in inputs)
        sql = self.placeholders(sql)
        if columns is None:
            columns = self.binder.bind(sql, [list(zip(i.columns, i.types)) for i in inputs])
        node = SqlQuery(nodes, sql, name=name, ordered=ordered,
                        copartitioned=len(nodes) > 1, settings=self.settings.duckdb,
                        partial=partial)
        rows = rows if rows is not None else (inputs[0].rows if inputs else 1.0)
        width = width if width is not None else float(sum(type_width(t) for _, t in columns))
        return Rel(node, tuple(c for c, _ in columns), tuple(t for _, t in columns),
                   partitioning if node.num_partitions > 1 else ANY, max(rows, 1.0),
                   max(width, 1.0))

    def placeholders(self, sql: str) -> str:
        """Input markers written by the renderer (`__sp_in_<k>`) -> `{k}` placeholders."""
        return re.sub(rf"\b{re.escape(self.marker)}(\d+)\b", r"{\1}", sql)

    def close(self) -> None:
        self.binder.close()


def type_width(duck_type: str) -> float:
    """Bytes a value of this DuckDB type takes in memory, roughly."""
    upper = duck_type.upper()
    if upper.startswith(("VARCHAR", "BLOB", "BIT")):
        return 24.0
    if upper.startswith(("HUGEINT", "UHUGEINT", "DECIMAL", "UUID", "INTERVAL")):
        return 16.0
    if upper.startswith(("BOOLEAN", "TINYINT", "UTINYINT")):
        return 1.0
    if upper.startswith(("SMALLINT", "USMALLINT")):
        return 2.0
    if upper.startswith(("INTEGER", "UINTEGER", "DATE", "FLOAT")):
        return 4.0
    if "[" in upper or upper.startswith(("STRUCT", "MAP", "LIST", "UNION")):
        return 64.0
    return 8.0
