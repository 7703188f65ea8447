"""A planned relation: a logical node plus what the SQL planner knows about its rows."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from smallpond.logical.nodes import Node

__all__ = ["Partitioning", "Rel", "quote", "INTEGER_TYPES"]

INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                           "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})


def quote(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Partitioning:
    """How rows are placed: `hash` on key columns (rows with equal keys share a partition),
    or `any`. A relation of one partition is placed every way at once."""

    kind: str = "any"
    keys: tuple[str, ...] = ()

    @staticmethod
    def hashed(keys) -> Partitioning:
        return Partitioning("hash", tuple(keys))


ANY = Partitioning()


@dataclass(frozen=True)
class Rel:
    """A relation being planned: `node` yields `columns` (unique physical names) of `types`."""

    node: Node
    columns: tuple[str, ...]
    types: tuple[str, ...]
    partitioning: Partitioning = field(default=ANY)
    rows: float = 1.0
    width: float = 8.0  # estimated bytes per row
    scan_bytes: float = 0.0  # bytes a scan reads to produce it (0: not a plain scan)

    @property
    def n(self) -> int:
        return self.node.num_partitions

    @property
    def est_bytes(self) -> float:
        return self.rows * self.width

    def type_of(self, column: str) -> str:
        return self.types[self.columns.index(column)]

    def hashed_on(self, keys: tuple[str, ...]) -> bool:
        """Whether rows with equal values of `keys` are surely in one partition."""
        if self.n == 1:
            return True
        return self.partitioning.kind == "hash" and bool(self.partitioning.keys) and \
            set(self.partitioning.keys) <= set(keys)

    def with_(self, **changes) -> Rel:
        return replace(self, **changes)
