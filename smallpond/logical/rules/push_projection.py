"""Shuffle only the columns a query reads: project a repartition's input to them.

The query's column references are found with sqlglot (DuckDB dialect). Any `*` other than in
`count(*)`, a parse failure, or an unknown input schema leaves the plan as it is.
"""

from __future__ import annotations

import dataclasses

from smallpond.errors import SmallpondError
from smallpond.kernels.placeholders import PARSE_VALUES, substitute
from smallpond.logical.nodes import Node, Repartition, SqlQuery
from smallpond.logical.rules.base import Rule
from smallpond.logical.schema import infer_schema

__all__ = ["PushProjection", "referenced_columns"]

SHUFFLES = ("hash", "expr", "random", "range")


def referenced_columns(sql: str) -> set[str] | None:
    """Lower-cased names a statement may read (a superset), or None when it may read all."""
    import sqlglot  # here: a plan without a shuffle never pays for importing it
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return None
    for star in tree.find_all(exp.Star):
        if not isinstance(star.parent, exp.Count):
            return None
    names: set[str] = set()
    for column in tree.find_all(exp.Column):
        names.add(column.name.lower())
        if column.table:
            names.add(column.table.lower())  # `s.field` may be a struct column `s`
    return names


def _key_columns(node: Repartition) -> set[str] | None:
    if node.method == "hash":
        return {c.lower() for c in node.hash_by}
    if node.method in ("expr", "range"):
        return referenced_columns(f"SELECT {node.by}")
    return set()


class PushProjection(Rule):
    name = "push_projection"

    def apply(self, node: Node) -> Node:
        if not (isinstance(node, SqlQuery) and len(node.sources) == 1
                and isinstance(node.sources[0], Repartition) and not node.udfs):
            return node
        if node.sources[0].method not in SHUFFLES:
            return node  # splits by files or rows move no column data worth pruning
        shuffle = node.sources[0]
        used = referenced_columns(substitute(node.sql, lambda i: "__sp_input", 1, PARSE_VALUES))
        keys = _key_columns(shuffle)
        try:
            schema = infer_schema(shuffle.source)
        except SmallpondError:
            return node  # e.g. an input file that is gone: the run reports it properly
        if used is None or keys is None or schema is None:
            return node
        keep = [f.name for f in schema if f.name.lower() in used | keys]
        if not keep or len(keep) == len(schema):
            return node
        columns = ", ".join('"' + c.replace('"', '""') + '"' for c in keep)
        projected = SqlQuery((shuffle.source,), f"SELECT {columns} FROM {{0}}", name="project")
        return dataclasses.replace(node, sources=(dataclasses.replace(shuffle, source=projected),))
