"""The distributed plan of a SQL result as text: stages, shuffles, broadcasts, partitions."""

from __future__ import annotations

import os

from smallpond.logical.nodes import (
    Broadcast,
    Concat,
    Limit,
    Node,
    PythonMap,
    Repartition,
    Scan,
    SqlQuery,
    Stage,
)

__all__ = ["distributed_text", "stage_nodes"]


def _fused_into_mapper(node: Node, consumers: dict[str, list[Node]]) -> bool:
    """Whether the task planner runs this query inside the map tasks of the shuffle above it."""
    users = consumers.get(node.token, [])
    return (isinstance(node, SqlQuery) and len(users) == 1 and isinstance(users[0], Repartition)
            and users[0].method in ("hash", "expr", "random") and node.sources
            and not node.ordered and not node.udfs
            and (len(node.sources) == 1 or node.copartitioned))


def stage_nodes(root: Node) -> tuple[list[Node], dict[str, list[Node]]]:
    """Nodes in the order they run (inputs first), and who reads each node."""
    order: list[Node] = []
    consumers: dict[str, list[Node]] = {}
    seen: set[str] = set()

    def visit(node: Node) -> None:
        if node.token in seen:
            return
        seen.add(node.token)
        for child in node.inputs:
            consumers.setdefault(child.token, []).append(node)
            visit(child)
        order.append(node)

    visit(root)
    return order, consumers


def _files(scan: Scan) -> str:
    paths = {s.path for part in scan.partitions for s in part}
    groups = sum(len(s.row_groups) if s.row_groups is not None else 0
                 for part in scan.partitions for s in part)
    names = sorted({os.path.basename(p) for p in paths})
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    detail = f", {groups} row groups listed" if groups else ""
    return f"{len(paths)} file(s) [{shown}]{detail}"


def distributed_text(root: Node, notes: list[str], fallback: str | None = None,
                     seconds: float | None = None) -> str:
    order, consumers = stage_nodes(root)
    numbers: dict[str, int] = {}
    lines = ["== distributed plan =="]
    if seconds is not None:
        lines[0] += f" (planned in {seconds * 1000:.0f} ms)"
    if fallback:
        lines.append(f"NOTE: runs as ONE DuckDB stage over the whole input: {fallback}")

    def source(node: Node) -> str:
        if isinstance(node, Stage):
            return source(node.source)
        if isinstance(node, Scan):
            return f"scan {_files(node)} in {node.num_partitions} partition(s)"
        if isinstance(node, Broadcast):
            inner = source(node.source)
            if node.n == 1:
                return f"gather of {inner} ({node.source.num_partitions} -> 1)"
            return f"broadcast of {inner} to each of {node.n} partitions"
        if isinstance(node, Repartition):
            return f"shuffle of stage {numbers.get(node.token, '?')}"
        if isinstance(node, Concat):
            return "concat of " + " + ".join(source(s) for s in node.sources)
        if node.token in numbers:
            return f"stage {numbers[node.token]}"
        if isinstance(node, SqlQuery):
            return f"[{node.name}] " + " x ".join(source(s) for s in node.sources)
        return node.describe()

    for node in order:
        if isinstance(node, (Scan, Broadcast, Concat, Stage)):
            continue
        if isinstance(node, SqlQuery) and _fused_into_mapper(node, consumers):
            continue
        number = len(numbers) + 1
        numbers[node.token] = number
        n = node.num_partitions
        if isinstance(node, Repartition):
            inner = node.source
            mapper = ""
            if isinstance(inner, SqlQuery) and _fused_into_mapper(inner, consumers):
                mapper = f" map side runs [{inner.name}] over " + \
                    " x ".join(source(s) for s in inner.sources)
            else:
                mapper = f" map side reads {source(inner)}"
            how = {"hash": f"hash on {list(node.hash_by)}",
                   "range": f"sampled range on {node.by!r}"
                            f"{' desc' if node.descending else ''}",
                   "files": "split by files/row groups", "rows": "split by rows",
                   "expr": f"by {node.by!r}", "random": "at random"}[node.method]
            lines.append(f"stage {number}: shuffle {how} -> {n} partitions;{mapper}")
        elif isinstance(node, SqlQuery):
            inputs = " x ".join(source(s) for s in node.sources) or "no input"
            tail = " (ordered)" if node.ordered else ""
            lines.append(f"stage {number}: [{node.name}] {n} partition(s){tail} <- {inputs}")
        elif isinstance(node, Limit):
            lines.append(f"stage {number}: limit {node.n} <- {source(node.source)}")
        elif isinstance(node, PythonMap):
            lines.append(f"stage {number}: python {node.kind} {node.func_name} <- "
                         f"{source(node.source)}")
        else:
            lines.append(f"stage {number}: {node.describe()} ({n} partitions)")
    if notes:
        lines.append("decisions:")
        lines.extend(f"  - {note}" for note in notes)
    return "\n".join(lines)
