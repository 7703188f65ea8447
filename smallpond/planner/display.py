"""Plans as text (explain) and as Graphviz DOT (graph)."""

from __future__ import annotations

from smallpond.logical.nodes import Node
from smallpond.planner.graph import TaskGraph

__all__ = ["plan_tree", "explain_text", "physical_text", "to_dot"]


def plan_tree(node: Node, indent: int = 0) -> str:
    """One line per node, inputs indented below it."""
    line = f"{'  ' * indent}{'└─ ' if indent else ''}{node.describe()} " \
           f"[{node.num_partitions} partition{'s' if node.num_partitions != 1 else ''}]"
    return "\n".join([line, *(plan_tree(i, indent + 1) for i in node.inputs)])


def physical_text(graph: TaskGraph, stats: dict | None = None) -> str:
    """One line per stage; with `stats` (stage name -> figures of its latest run), stages
    that ran also show their wall time, rows, bytes and peak memory."""
    lines = [f"{len(graph)} tasks, {len(graph.outputs)} output partitions"]
    for stage, tasks in graph.stages().items():
        kernel = tasks[0].kernel
        inputs = sum(len(part) for t in tasks for part in t.inputs)
        line = (f"  stage {stage}: kernel={kernel} tasks={len(tasks)} "
                f"partitions={len(tasks)} input_sources={inputs}")
        ran = (stats or {}).get(stage)
        if ran:
            line += (f"  [ran {ran['seconds']:.2f}s, {ran['rows']} rows, {ran['bytes']} bytes, "
                     f"peak {ran['peak_rss'] >> 20} MiB; {ran['ran']} ran, "
                     f"{ran['reused']} reused]")
        lines.append(line)
    return "\n".join(lines)


def explain_text(logical: Node, optimized: Node, graph: TaskGraph, stage: str = "all",
                 stats: dict | None = None) -> str:
    sections = {
        "logical": "== logical plan ==\n" + plan_tree(logical),
        "optimized": "== optimized plan ==\n" + plan_tree(optimized),
        "physical": "== physical plan ==\n" + physical_text(graph, stats),
    }
    if stage == "all":
        return "\n\n".join(sections.values())
    if stage not in sections:
        raise ValueError(f"stage must be one of {[*sections, 'all']}, got {stage!r}")
    return sections[stage]


def to_dot(graph: TaskGraph) -> str:
    lines = ["digraph smallpond {", "  rankdir=LR;"]
    for task in graph:
        lines.append(f'  "{task.key}" [label="{task.stage}[{task.partition}]"];')
        for dep in sorted(task.deps):
            lines.append(f'  "{dep}" -> "{task.key}";')
    lines.append("}")
    return "\n".join(lines)
