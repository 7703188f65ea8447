"""Stages of a task graph as people read them: what each stage does and what it reads."""

from __future__ import annotations

from dataclasses import dataclass

from smallpond.planner.graph import Task, TaskGraph

__all__ = ["StageInfo", "describe_task", "graph_stages", "short"]


def short(text: str, width: int = 72) -> str:
    """One line of at most `width` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def describe_task(task: Task) -> str:
    """What a task computes, in a few words (SQL text, function name, shuffle method...)."""
    params = task.params
    if task.kernel == "sql":
        return short(params.get("display_sql") or params.get("sql", ""))
    if task.kernel == "python":
        return f"{params.get('kind')} {params.get('func_name')}"
    if task.kernel == "shuffle":
        method = params.get("method")
        detail = {"hash": f" by {params.get('hash_by')}", "expr": f" by {params.get('by')!r}",
                  "range": f" by {params.get('by')!r}"}.get(method, "")
        fused = f" after {short(params['sql'], 40)}" if params.get("sql") else ""
        return f"{method} shuffle into {params.get('n')} partitions{detail}{fused}"
    if task.kernel == "sample":
        return f"sample {params.get('rows')} keys of {params.get('column')!r}"
    if task.kernel == "boundaries":
        return f"{params.get('n')} range partitions of {params.get('column')!r}"
    return task.kernel


@dataclass
class StageInfo:
    """One stage: its tasks in the graph, the stages it reads, and a description."""

    name: str
    kernel: str
    label: str
    tasks: int
    deps: list[str]


def graph_stages(graph: TaskGraph) -> dict[str, StageInfo]:
    """Stages in topological order (the planner adds inputs before their readers)."""
    stages: dict[str, StageInfo] = {}
    for task in graph:
        info = stages.get(task.stage)
        if info is None:
            info = stages[task.stage] = StageInfo(task.stage, task.kernel, describe_task(task),
                                                  0, [])
        info.tasks += 1
        for dep in sorted(task.deps):
            dep_stage = graph.tasks[dep].stage if dep in graph.tasks else None
            if dep_stage and dep_stage != task.stage and dep_stage not in info.deps:
                info.deps.append(dep_stage)
    return stages
