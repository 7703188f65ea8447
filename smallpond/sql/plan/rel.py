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
    or `any`. After an inner join on a = b the rows are hashed on a and equally on b: such
    equivalent key sets are `alternatives`. A relation of one partition is placed every way."""

    kind: str = "any"
    keys: tuple[str, ...] = ()
    alternatives: tuple[tuple[str, ...], ...] = ()

    @staticmethod
    def hashed(keys, *alternatives) -> Partitioning:
        keys = tuple(keys)
        others = tuple(dict.fromkeys(tuple(a) for a in alternatives if tuple(a) != keys))
        return Partitioning("hash", keys, others)

    @property
    def keysets(self) -> tuple[tuple[str, ...], ...]:
        return (self.keys, *self.alternatives) if self.kind == "hash" and self.keys else ()

    def renamed(self, mapping: dict[str, str]) -> Partitioning:
        """The key sets whose every column `mapping` renames (the others are lost)."""
        sets = [tuple(mapping[k] for k in ks) for ks in self.keysets
                if all(k in mapping for k in ks)]
        return Partitioning.hashed(sets[0], *sets[1:]) if sets else ANY

    def within(self, columns) -> Partitioning:
        """The key sets made only of these columns."""
        return self.renamed({c: c for c in columns})

    def merged(self, other: Partitioning) -> Partitioning:
        sets = list(self.keysets) + list(other.keysets)
        return Partitioning.hashed(sets[0], *sets[1:]) if sets else ANY

    def matching(self, names) -> tuple[str, ...] | None:
        """A key set made only of `names`, if there is one."""
        wanted = set(names)
        return next((ks for ks in self.keysets if set(ks) <= wanted), None)


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
        return self.n == 1 or self.partitioning.matching(keys) is not None

    def with_(self, **changes) -> Rel:
        return replace(self, **changes)
