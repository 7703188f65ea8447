"""Tables a statement reads: Parquet paths named in SQL become catalog tables, and the size
of everything a statement reads decides whether it is worth partitioning."""

from __future__ import annotations

import duckdb
from sqlglot import exp

from smallpond.errors import SqlError
from smallpond.sql.catalog import Catalog, files_table
from smallpond.sql.plan.fallback import cte_names

__all__ = ["attach_files", "input_bytes"]

FILE_FUNCTIONS = ("read_parquet", "parquet_scan")
OTHER_FILE_FUNCTIONS = ("read_csv", "read_csv_auto", "csv_scan", "read_json", "read_json_auto",
                        "read_ndjson", "read_ndjson_auto", "read_json_objects", "read_text",
                        "read_blob", "json_scan", "iceberg_scan", "delta_scan")


def _path_literals(node: exp.Expression) -> list[str] | None:
    """The file paths a read_parquet(...) call names: string literals, lists of them, or
    constant expressions of them (`${dir} || '/*.parquet'` in a job file)."""
    args = list(node.expressions) if node.expressions else []
    if node.args.get("this") is not None and not isinstance(node, exp.Anonymous):
        args.insert(0, node.this)
    paths: list[str] = []
    for arg in args:
        if isinstance(arg, exp.Literal) and arg.is_string:
            paths.append(arg.this)
            continue
        if arg.find(exp.Column, exp.Subquery, exp.Select) is not None or \
                isinstance(arg, (exp.EQ, exp.PropertyEQ)):
            return None
        try:
            value = duckdb.connect().execute(f"SELECT {arg.sql(dialect='duckdb')}").fetchone()[0]
        except duckdb.Error:
            return None
        if isinstance(value, str):
            paths.append(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            paths.extend(value)
        else:
            return None
    return paths or None


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return node.sql_name().lower() if isinstance(node, exp.Func) else ""


def attach_files(tree: exp.Expression, catalog: Catalog) -> tuple[exp.Expression, Catalog]:
    """`read_parquet('glob')` and `FROM 'file.parquet'` become catalog tables (so the planner
    sees their footers and task keys follow the files' versions)."""
    catalog = catalog.copy()
    tree = tree.copy()
    ctes = cte_names(tree)
    counter = 0
    for table in list(tree.find_all(exp.Table)):
        target = table.this
        paths = None
        if isinstance(target, exp.Func):
            name = _function_name(target)
            if name in FILE_FUNCTIONS or isinstance(target, exp.ReadParquet):
                paths = _path_literals(target)
                if paths is None:
                    raise SqlError(f"{target.sql(dialect='duckdb')}: only file paths are "
                                   "supported here; for options, read the files with "
                                   "session.read_parquet and register the DataFrame")
            elif name in OTHER_FILE_FUNCTIONS or isinstance(target, (exp.ReadCSV,)):
                raise SqlError(f"{target.sql(dialect='duckdb')}: read such files with "
                               "session.read_csv / read_json and register the DataFrame "
                               "(session.register), then query it by name")
        elif isinstance(target, exp.Identifier) and not table.args.get("db"):
            text = target.this
            if text.lower() not in ctes and catalog.get(text) is None and \
                    text.lower().endswith(".parquet"):
                paths = [text]
        if paths is None:
            continue
        generated = f"__file_{counter}"
        counter += 1
        shown = "/".join(paths[0].rstrip("/").split("/")[-2:]) + (
            f" and {len(paths) - 1} more" if len(paths) > 1 else "")
        catalog.register(generated, files_table(shown, paths))
        replacement = exp.Table(this=exp.to_identifier(generated))
        alias = table.args.get("alias")
        if alias is None:
            stem = paths[0].rsplit("/", 1)[-1].split(".", 1)[0] or "t"
            alias = exp.TableAlias(this=exp.to_identifier(stem, quoted=True))
        replacement.set("alias", alias.copy())
        table.replace(replacement)
    return tree, catalog


def input_bytes(catalog: Catalog, tree: exp.Expression) -> float | None:
    """In-memory bytes of every table the statement reads (all their columns); None when a
    table's partitions are more than one already (a partitioned DataFrame)."""
    ctes = cte_names(tree)
    total = 0.0
    seen = set()
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if name in ctes or name in seen or not isinstance(table.this, exp.Identifier):
            continue
        seen.add(name)
        entry = catalog.get(name)
        if entry is None:
            continue
        if entry.node.num_partitions > 1:
            return None
        total += entry.bytes_of([n for n, _ in entry.columns])
    return total
