"""Apply rules bottom-up until nothing changes."""

from __future__ import annotations

import dataclasses

from smallpond.logical.nodes import Concat, Node, SqlQuery
from smallpond.logical.rules import DEFAULT_RULES, Rule

__all__ = ["optimize", "with_inputs"]


def with_inputs(node: Node, inputs: tuple[Node, ...]) -> Node:
    """The same node reading other inputs."""
    if inputs == node.inputs:
        return node
    if isinstance(node, (SqlQuery, Concat)):
        return dataclasses.replace(node, sources=inputs)
    return dataclasses.replace(node, source=inputs[0])


def optimize(node: Node, rules: tuple[Rule, ...] = DEFAULT_RULES) -> Node:
    """The optimized plan: every rule applied to every node, inputs first, to a fixed point."""
    memo: dict[str, Node] = {}

    def visit(current: Node) -> Node:
        if current.token in memo:
            return memo[current.token]
        result = with_inputs(current, tuple(visit(i) for i in current.inputs))
        changed = True
        while changed:
            changed = False
            for rule in rules:
                rewritten = rule.apply(result)
                if rewritten is not result and rewritten != result:
                    result = with_inputs(rewritten, tuple(visit(i) for i in rewritten.inputs))
                    changed = True
        memo[current.token] = result
        return result

    return visit(node)
