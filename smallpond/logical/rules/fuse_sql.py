"""Fuse a per-partition query into the query that reads it: one task instead of two.

The inner query becomes a parenthesized subquery in place of its placeholder, and its own inputs
become inputs of the fused query. Queries whose row order matters (ORDER BY) stay unfused.
"""

from __future__ import annotations

from smallpond.kernels.placeholders import substitute
from smallpond.logical.nodes import Node, SqlQuery
from smallpond.logical.rules.base import Rule
from smallpond.logical.sqlinfo import is_rowwise

__all__ = ["FuseSql"]


def _fusable(outer: SqlQuery, inner: Node) -> bool:
    return (isinstance(inner, SqlQuery) and not inner.ordered and not inner.setup
            and not outer.setup and not (inner.udfs and outer.udfs)
            and inner.settings == outer.settings)


class FuseSql(Rule):
    name = "fuse_sql"

    def apply(self, node: Node) -> Node:
        if not isinstance(node, SqlQuery) or not any(_fusable(node, s) for s in node.sources):
            return node
        sources: list[Node] = []

        def index_of(source: Node) -> int:
            if source not in sources:
                sources.append(source)
            return sources.index(source)

        replacement: dict[int, str] = {}
        udfs = node.udfs
        for position, source in enumerate(node.sources):
            if _fusable(node, source):
                inner_index = [index_of(s) for s in source.sources]
                inner_sql = substitute(source.sql, lambda i, m=inner_index: f"{{{m[i]}}}",
                                       len(inner_index), final=False)
                # on lines of its own, so that a trailing `-- comment` ends where it should
                replacement[position] = f"(\n{inner_sql}\n)"
                udfs = udfs or source.udfs
            else:
                replacement[position] = f"{{{index_of(source)}}}"
        sql = substitute(node.sql, lambda j: replacement[j], len(node.sources), final=False)
        fused = [s for s in node.sources if _fusable(node, s)]
        name = "+".join(dict.fromkeys([s.name for s in fused] + [node.name]))
        aligned = node.copartitioned or any(s.copartitioned for s in fused)
        # a partial aggregate stays splittable when what it fused below it is row by row
        partial = node.partial and all(s.partial or is_rowwise(s.sql) for s in fused)
        return SqlQuery(tuple(sources), sql, name=name, udfs=udfs, ordered=node.ordered,
                        copartitioned=aligned, settings=node.settings, partial=partial)
