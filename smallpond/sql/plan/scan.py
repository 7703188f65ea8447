"""Table scans: columns and filters pushed into the read, row groups pruned, files split."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from smallpond.io.files import FileSlice
from smallpond.logical.nodes import ReadOptions, Scan
from smallpond.planner.planner import split_files
from smallpond.sql.catalog import TableEntry
from smallpond.sql.plan.context import PlanContext, Unsupported
from smallpond.sql.plan.estimate import selectivity
from smallpond.sql.plan.exprs import and_all, col, render
from smallpond.sql.plan.prune import range_checks
from smallpond.sql.plan.rel import ANY, Partitioning, Rel, quote

__all__ = ["Source", "scan_table", "rename_source"]


@dataclass
class Source:
    """A FROM item of a query block once planned: its rows and where its columns are."""

    alias: str
    rel: Rel
    columns: dict[str, str]  # lower-case column name -> physical column of rel
    base_rows: float


def _pruned_slices(ctx: PlanContext, entry: TableEntry, alias: str,
                   predicates: list[exp.Expression]) -> tuple[list[FileSlice], int, int, float]:
    """The table's files with row groups that may match; (slices, kept, total, kept rows)."""
    checks = range_checks(predicates, alias, ctx.binder.con) if predicates else []
    slices, kept, total, rows = [], 0, 0, 0.0
    for info in entry.files:
        groups = [g for g, group in enumerate(info.groups)
                  if all(c.may_match(group) for c in checks)]
        total += len(info.groups)
        kept += len(groups)
        rows += sum(info.groups[g].rows for g in groups)
        if len(groups) == len(info.groups):
            slices.append(FileSlice(info.path))
        elif groups:
            slices.append(FileSlice(info.path, row_groups=tuple(groups)))
    if not slices:  # every row group pruned: read none, keep the schema
        slices.append(FileSlice(entry.files[0].path, row_groups=()))
    return slices, kept, total, rows


def scan_table(ctx: PlanContext, entry: TableEntry, alias: str, needed: list[str],
               predicates: list[exp.Expression]) -> Source:
    """Scan `entry` as `alias`, reading `needed` columns (lower case) where `predicates` hold."""
    real = {}
    for name in needed:
        column = entry.column(name)
        if column is None:
            raise Unsupported(f"table {entry.name} has no column {name}")
        real[name] = column
    physical = {name: ctx.fresh(f"{alias}.{real[name]}") for name in needed}
    scan_columns = [n for n, _ in entry.columns]
    scan_types = [t for _, t in entry.columns]
    base_rows = entry.rows
    if entry.files is not None:
        slices, kept, total, rows = _pruned_slices(ctx, entry, alias, predicates)
        fraction = rows / max(1.0, entry.rows)
        read_bytes = entry.bytes_of(needed or [scan_columns[0]]) * fraction
        count = max(1, min(ctx.partitions_for(read_bytes), max(kept, 1)))
        parts = split_files(slices, count) or [tuple(slices)]
        identities = {i.path: i.identity for i in entry.files}
        node = Scan(tuple(parts), ReadOptions(),
                    tuple(identities[s.path] for part in parts for s in part),
                    entry.node.roots if isinstance(entry.node, Scan) else ())
        if kept < total:
            ctx.note(f"scan {entry.name}: {kept} of {total} row groups after pruning by "
                     "min/max statistics")
        source_rel = Rel(node, tuple(scan_columns), tuple(scan_types), ANY, max(rows, 1.0),
                         1.0, read_bytes)
    else:
        rows = entry.rows
        read_bytes = entry.bytes_of(needed or [scan_columns[0]])
        partitioning = ANY
        if entry.hash_keys:
            partitioning = Partitioning.hashed(entry.hash_keys)
        source_rel = Rel(entry.node, tuple(scan_columns), tuple(scan_types), partitioning,
                         rows, 1.0, 0.0)

    def resolve(column: exp.Column) -> exp.Expression | None:
        if column.table.lower() != alias:
            return None
        name = real.get(column.name.lower()) or entry.column(column.name)
        return col(name) if name else None

    items = [f"{quote(real[n])} AS {quote(physical[n])}" for n in needed]
    types = dict(entry.columns)
    known = [(physical[n], types[real[n]]) for n in needed]
    if not items:  # nothing read but the rows themselves (count(*))
        marker = ctx.fresh(f"{alias}.__row")
        items = [f"TRUE AS {quote(marker)}"]
        known = [(marker, "BOOLEAN")]
    sql = f"SELECT {', '.join(items)} FROM {{0}}"
    condition = and_all(predicates)
    if condition is not None:
        sql += f" WHERE {render(condition, resolve)}"
    partitioning = source_rel.partitioning.renamed(
        {real[n]: physical[n] for n in needed} | {n: physical[n] for n in needed})
    def distinct(column: exp.Column) -> float | None:
        if entry.files is None or column.table.lower() != alias:
            return None
        from smallpond.sql.plan.ndv import column_ndv

        return column_ndv(entry, column.name)

    est_rows = source_rel.rows * selectivity(predicates, distinct)
    shown = ", ".join(real[n] for n in needed) or "no columns (row count only)"
    pushed = f"; filter pushed into the read: {condition.sql(dialect='duckdb')}" \
        if condition is not None else ""
    ctx.note(f"scan {entry.name} as {alias}: {source_rel.node.num_partitions} partition(s), "
             f"columns {shown}{pushed}")
    rel = ctx.stage(sql, [source_rel], f"scan {entry.name}", partitioning, rows=est_rows,
                    columns=known)
    rel = rel.with_(scan_bytes=read_bytes)
    return Source(alias, rel, physical, base_rows)


def rename_source(ctx: PlanContext, rel: Rel, names: list[str], alias: str,
                  needed: list[str], base_rows: float | None = None) -> Source:
    """A planned query (CTE, derived table) read as `alias`: its columns get fresh names."""
    lookup = {n.lower(): c for n, c in zip(names, rel.columns)}
    items, physical, known = [], {}, []
    for name in needed:
        column = lookup.get(name)
        if column is None:
            raise Unsupported(f"{alias} has no column {name}")
        physical[name] = ctx.fresh(f"{alias}.{name}")
        items.append(f"{quote(column)} AS {quote(physical[name])}")
        known.append((physical[name], rel.type_of(column)))
    if not items:
        marker = ctx.fresh(f"{alias}.__row")
        items = [f"TRUE AS {quote(marker)}"]
        known = [(marker, "BOOLEAN")]
    partitioning = rel.partitioning.renamed(
        {c: physical[n.lower()] for n, c in zip(names, rel.columns) if n.lower() in physical})
    out = ctx.stage(f"SELECT {', '.join(items)} FROM {{0}}", [rel], f"read {alias}",
                    partitioning, columns=known)
    return Source(alias, out, physical, base_rows if base_rows is not None else rel.rows)
