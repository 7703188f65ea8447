"""Push a global limit into each partition so that scans and queries stop early."""

from __future__ import annotations

from smallpond.logical.nodes import Limit, Node, Scan, SqlQuery
from smallpond.logical.rules.base import Rule

__all__ = ["PushLimit"]


class PushLimit(Rule):
    name = "push_limit"

    def apply(self, node: Node) -> Node:
        if not isinstance(node, Limit):
            return node
        source = node.source
        if isinstance(source, SqlQuery) and source.name.rsplit("+", 1)[-1] == "limit":
            return node  # already pushed (perhaps fused into the query below it since)
        if not isinstance(source, (Scan, SqlQuery)):
            return node
        per_partition = SqlQuery((source,), f"SELECT * FROM {{0}} LIMIT {node.n}", name="limit")
        return Limit(per_partition, node.n)
