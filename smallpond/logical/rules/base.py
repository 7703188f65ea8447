"""The rule interface."""

from __future__ import annotations

from smallpond.logical.nodes import Node

__all__ = ["Rule"]


class Rule:
    """Rewrites one node whose inputs are already optimized; returns it unchanged if no match."""

    name = "rule"

    def apply(self, node: Node) -> Node:
        raise NotImplementedError
