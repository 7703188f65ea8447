"""The Runner protocol and the scheduling loop both runners share.

A runner only supplies three primitives (submit, wait, cancel); the loop here decides what is
ready, reuses committed tasks, retries tasks whose worker was lost, and emits progress events.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from smallpond.config import Config
from smallpond.errors import TaskError
from smallpond.io.files import FileSlice
from smallpond.planner.graph import Task, TaskGraph, TaskOutput, TaskSlice
from smallpond.runners.execute import ExecSettings, load_committed

__all__ = ["Runner", "TaskEvent", "WorkerLost", "resolve_inputs", "needed_tasks"]


@dataclass(frozen=True)
class TaskEvent:
    """A progress event: a task was submitted, finished, reused, retried or failed."""

    kind: str
    stage: str
    partition: int
    key: str
    rows: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    error: str | None = None


class WorkerLost(Exception):
    """The process or node running a task died; the task may run again elsewhere."""


EventCallback = Callable[[TaskEvent], None]


def resolve_inputs(task: Task, outputs: dict[str, TaskOutput]) -> list[list[FileSlice]]:
    """Replace TaskSlices by the committed files (or bucket row groups) they stand for."""
    resolved = []
    for part in task.inputs:
        files: list[FileSlice] = []
        for source in part:
            if isinstance(source, TaskSlice):
                files.extend(outputs[source.task].slices(source.bucket))
            else:
                files.append(source)
        resolved.append(files)
    return resolved


def needed_tasks(graph: TaskGraph, data_root: str, force: frozenset[str],
                 ) -> tuple[dict[str, Task], dict[str, TaskOutput]]:
    """Tasks that must run, and the committed outputs that can be reused instead.

    Walks back from the graph's outputs: a committed task's inputs are never needed.
    """
    reused: dict[str, TaskOutput] = {}
    needed: dict[str, Task] = {}
    stack = [s.task for part in graph.outputs for s in part if isinstance(s, TaskSlice)]
    while stack:
        key = stack.pop()
        if key in needed or key in reused:
            continue
        if key not in force:
            done = load_committed(data_root, key)
            if done is not None:
                reused[key] = done
                continue
        task = graph.tasks[key]
        needed[key] = task
        stack.extend(task.deps)
    return needed, reused


class Runner(abc.ABC):
    """Executes a TaskGraph. Subclasses provide submit / wait / cancel."""

    name = "base"

    def __init__(self, config: Config):
        self.config = config

    # -- primitives -------------------------------------------------------------------------
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many tasks may run at once."""

    @abc.abstractmethod
    def submit(self, task: Task, inputs: list[list[FileSlice]], settings: ExecSettings) -> Any:
        """Start a task; return a handle."""

    @abc.abstractmethod
    def wait(self, handles: Iterable[Any]) -> list[tuple[Any, TaskOutput | BaseException]]:
        """Block until at least one handle finished; return (handle, output or error) pairs."""

    @abc.abstractmethod
    def cancel(self, handles: Iterable[Any]) -> None:
        """Stop running tasks (Ctrl-C or a failed job)."""

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release workers."""

    def threads_per_task(self) -> int:
        return 1

    # -- the loop ---------------------------------------------------------------------------
    def run(self, graph: TaskGraph, force: frozenset[str] = frozenset(),
            on_event: EventCallback | None = None) -> dict[str, TaskOutput]:
        """Run what the graph's outputs need; return the outputs of every task involved."""
        emit = on_event or (lambda event: None)
        needed, outputs = needed_tasks(graph, self.config.data_root, force)
        for key, output in outputs.items():
            task = graph.tasks[key]
            emit(TaskEvent("reused", task.stage, task.partition, key, output.num_rows,
                           output.num_bytes))
        waiting = {key: {d for d in task.deps if d in needed} for key, task in needed.items()}
        dependents: dict[str, list[str]] = {key: [] for key in needed}
        for key, deps in waiting.items():
            for dep in deps:
                dependents[dep].append(key)
        ready = [key for key, deps in waiting.items() if not deps]
        running: dict[Any, str] = {}
        attempts: dict[str, int] = {}
        remaining = len(needed)
        try:
            while remaining:
                while ready and len(running) < self.capacity():
                    key = ready.pop(0)
                    task = needed[key]
                    attempts[key] = attempts.get(key, 0) + 1
                    settings = ExecSettings(self.config.data_root, self.config.memory_per_task,
                                            self.threads_per_task(), force=key in force)
                    handle = self.submit(task, resolve_inputs(task, outputs), settings)
                    running[handle] = key
                    emit(TaskEvent("submitted", task.stage, task.partition, key))
                if not running:
                    raise TaskError("scheduler stalled: tasks wait on inputs that never ran")
                for handle, result in self.wait(list(running)):
                    key = running.pop(handle)
                    task = needed[key]
                    if isinstance(result, WorkerLost):
                        if attempts[key] > self.config.max_retries:
                            raise TaskError(
                                f"{task.describe()} failed: its worker died {attempts[key]} "
                                f"times ({result})", stage=task.stage, partition=task.partition)
                        emit(TaskEvent("retried", task.stage, task.partition, key,
                                       error=str(result)))
                        ready.insert(0, key)
                        continue
                    if isinstance(result, BaseException):
                        emit(TaskEvent("failed", task.stage, task.partition, key,
                                       error=str(result).splitlines()[0] if str(result) else ""))
                        raise result
                    outputs[key] = result
                    remaining -= 1
                    emit(TaskEvent("finished", task.stage, task.partition, key, result.num_rows,
                                   result.num_bytes, result.elapsed))
                    for child in dependents[key]:
                        waiting[child].discard(key)
                        if not waiting[child]:
                            ready.append(child)
        except BaseException:
            if running:
                self.cancel(list(running))
            raise
        return outputs
