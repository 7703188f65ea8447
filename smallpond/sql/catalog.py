"""Names that SQL can read: Parquet paths or globs, and DataFrames (`session.register`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from smallpond.errors import InputError, PlanError, SqlError
from smallpond.io.files import FileSlice, expand_paths, file_identity, named_folders
from smallpond.io.parquet import check_same_schema
from smallpond.logical.nodes import Node, ReadOptions, Repartition, Scan, iter_nodes
from smallpond.logical.schema import infer_schema
from smallpond.sql.footers import FileInfo, file_info

__all__ = ["TableEntry", "Catalog", "files_table", "frame_table", "duckdb_types"]


@dataclass(frozen=True)
class TableEntry:
    """A table as the planner sees it: what reads it, its columns, and what is known of size."""

    name: str
    node: Node
    columns: tuple[tuple[str, str], ...]
    files: tuple[FileInfo, ...] | None = None
    rows: float = 1e6
    column_bytes: tuple[tuple[str, float], ...] = ()
    hash_keys: tuple[str, ...] = ()  # a DataFrame hash-partitioned on these columns

    def bytes_of(self, columns: list[str]) -> float:
        """Estimated in-memory bytes of these columns (lower-case names): Parquet's
        uncompressed sizes, but at least rows x the type's width (encodings such as RLE and
        dictionaries make Parquet's own figure far smaller than the values in memory)."""
        from smallpond.sql.plan.context import type_width

        sizes = dict(self.column_bytes)
        types = {n.lower(): t for n, t in self.columns}
        total = 0.0
        for c in columns:
            floor = self.rows * type_width(types.get(c.lower(), "BIGINT"))
            total += max(sizes.get(c.lower(), 0.0), floor)
        return total or self.rows

    def column(self, name: str) -> str | None:
        """The real name of a column matched without regard to case."""
        for real, _ in self.columns:
            if real.lower() == name.lower():
                return real
        return None


def duckdb_types(schema: pa.Schema) -> tuple[tuple[str, str], ...]:
    """Column names and DuckDB type names of an Arrow schema."""
    con = duckdb.connect()
    try:
        relation = con.from_arrow(schema.empty_table())
        return tuple((n, str(t)) for n, t in zip(relation.columns, relation.types))
    finally:
        con.close()


def files_table(name: str, paths: str | list[str]) -> TableEntry:
    """Parquet files (paths, globs or folders) as one table; footers give its size."""
    files = expand_paths(paths)
    if len(files) > 1:
        check_same_schema(files)
    infos = tuple(file_info(f, file_identity(f)) for f in files)
    identities = tuple(i.identity for i in infos)
    node = Scan((tuple(FileSlice(f) for f in files),), ReadOptions(), identities,
                named_folders(paths))
    columns = duckdb_types(infos[0].schema)
    sizes: dict[str, float] = {}
    for info in infos:
        for group in info.groups:
            for column, size in group.column_bytes:
                sizes[column] = sizes.get(column, 0) + size
    return TableEntry(name, node, columns, infos, float(sum(i.rows for i in infos)),
                      tuple(sizes.items()))


def frame_table(name: str, node: Node, hash_keys: tuple[str, ...] = ()) -> TableEntry:
    """A DataFrame's plan as a table; its schema must be known without running it.
    `hash_keys`: columns its partitions are hash-partitioned on (a SQL result says so)."""
    schema = infer_schema(node)
    if schema is None:
        raise SqlError(f"table {name!r}: the DataFrame's columns are known only after running "
                       "it (a Python map without schema=); pass schema= or write it to Parquet")
    rows, size = _leaf_size(node)
    if isinstance(node, Repartition) and node.method == "hash":
        hash_keys = tuple(node.hash_by)
    return TableEntry(name, node, duckdb_types(schema), None, rows,
                      tuple((f.name.lower(), size / max(1, len(schema))) for f in schema),
                      hash_keys)


def _leaf_size(node: Node) -> tuple[float, float]:
    """Rows and bytes of the files under a plan: an upper bound for filters and projections."""
    rows = size = 0.0
    for current in iter_nodes(node):
        if isinstance(current, Scan):
            for part in current.partitions:
                for piece in part:
                    try:
                        info = file_info(piece.path, file_identity(piece.path)) \
                            if piece.format == "parquet" else None
                    except (InputError, OSError):
                        info = None
                    if info is not None:
                        rows += info.rows
                        size += sum(b for g in info.groups for _, b in g.column_bytes)
                    else:
                        size += 1e8
                        rows += 1e6
    return max(rows, 1.0), max(size, 1.0)


@dataclass
class Catalog:
    """Registered tables by lower-case name."""

    tables: dict[str, TableEntry] = field(default_factory=dict)

    def register(self, name: str, entry: TableEntry) -> None:
        if not isinstance(name, str) or not name.strip():
            raise PlanError("a table name must be a non-empty string")
        self.tables[name.lower()] = entry
        self.__dict__.pop("_sqlglot_schema", None)  # the optimizer's schema is stale now

    def drop(self, name: str) -> bool:
        """Forget a table; whether it was there."""
        found = self.tables.pop(name.lower(), None) is not None
        self.__dict__.pop("_sqlglot_schema", None)
        return found

    def get(self, name: str) -> TableEntry | None:
        return self.tables.get(name.lower())

    def copy(self) -> Catalog:
        return Catalog(dict(self.tables))
