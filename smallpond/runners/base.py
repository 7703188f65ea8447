"""The Runner protocol and the scheduling loop both runners share.

A runner only supplies three primitives (submit, wait, cancel); the loop here decides what is
ready, reuses committed tasks, retries tasks whose worker was lost (or that stopped beating, ran
past task_timeout, or drew an injected fault), and emits progress events.
"""

from __future__ import annotations

import abc
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from smallpond.config import Config
from smallpond.errors import (
    InputError,
    OutOfMemoryError,
    SmallpondError,
    TaskError,
    UserFunctionError,
    as_user_exception,
)
from smallpond.io.files import FileSlice
from smallpond.planner.graph import Task, TaskGraph, TaskOutput, TaskSlice
from smallpond.runners.execute import ExecSettings, corrupt_file, load_committed
from smallpond.runners.faults import InjectedFault
from smallpond.runners.liveness import AttemptWatch, DriverLease, new_attempt_id

__all__ = ["Runner", "TaskEvent", "WorkerLost", "resolve_inputs", "resolve_parts",
           "needed_tasks"]


@dataclass(frozen=True)
class TaskEvent:
    """A progress event: a task is pending, was submitted, finished, reused, retried or failed.

    Every task of a job gets either `reused` or `pending` first (before any `submitted`), so a
    listener knows the job's size up front. A `finished` event carries the worker (`host:pid`),
    the kernel's wall-clock start and end, the worker's peak resident bytes during the task
    and what the task printed or logged (`logs`: kept by the run record, and left out of the
    events that session listeners get; see Session.logs); `at` is when the driver saw it.
    """

    kind: str
    stage: str
    partition: int
    key: str
    rows: int = 0
    bytes: int = 0
    elapsed: float = 0.0
    error: str | None = None
    worker: str = ""
    started: float = 0.0
    ended: float = 0.0
    peak_rss: int = 0
    logs: str = ""
    at: float = field(default_factory=time.time)

    @classmethod
    def finished(cls, task: Task, output: TaskOutput) -> TaskEvent:
        return cls("finished", task.stage, task.partition, task.key, output.num_rows,
                   output.num_bytes, output.elapsed, worker=output.worker,
                   started=output.started, ended=output.ended, peak_rss=output.peak_rss,
                   logs=output.logs)


class WorkerLost(Exception):
    """The process or node running a task died; the task may run again elsewhere.

    `oom`: it was most likely killed for memory (the kernel's OOM killer, Ray's monitor).
    """

    def __init__(self, message: str = "", oom: bool = False):
        super().__init__(message)
        self.oom = oom


EventCallback = Callable[[TaskEvent], None]

THREAD_MEMORY = 128 << 20  # DuckDB streaming a Parquet scan in order needs ~100 MiB a thread

logger = logging.getLogger(__name__)


def resolve_inputs(task: Task, outputs: dict[str, TaskOutput]) -> list[list[FileSlice]]:
    """Replace TaskSlices by the committed files (or bucket row groups) they stand for."""
    return resolve_parts(task.inputs, outputs)


def resolve_parts(parts, outputs: dict[str, TaskOutput]) -> list[list[FileSlice]]:
    """Each part's sources as files: TaskSlices replaced by the committed files (or bucket
    row groups) they stand for."""
    resolved = []
    for part in parts:
        files: list[FileSlice] = []
        for source in part:
            if isinstance(source, TaskSlice):
                files.extend(outputs[source.task].slices(source.bucket))
            else:
                files.append(source)
        resolved.append(files)
    return resolved


def needed_tasks(graph: TaskGraph, data_root: str, force: frozenset[str],
                 trust: Callable[[TaskOutput], bool] = lambda output: True,
                 ) -> tuple[dict[str, Task], dict[str, TaskOutput]]:
    """Tasks that must run, and the committed outputs that can be reused instead.

    Walks back from the graph's outputs: a committed task's inputs are never needed. A
    committed output is reused only when its files are as recorded and `trust(output)` holds.
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
            if done is not None and trust(done):
                reused[key] = done
                continue
        task = graph.tasks[key]
        needed[key] = task
        stack.extend(task.deps)
    return needed, reused


def _lost_input(result, task: Task, data_root: str) -> str | None:
    """The producer whose committed file `task` could not find or read, if that is why it
    failed (an InputError naming a file under data_root/tasks/<producer>/)."""
    path = getattr(result, "path", None)
    if not isinstance(result, InputError) or not path:
        return None
    tasks_dir = os.path.join(data_root, "tasks") + os.sep
    if not path.startswith(tasks_dir):
        return None
    producer = path[len(tasks_dir):].split(os.sep, 1)[0]
    return producer if producer in task.deps else None


def _state(output: TaskOutput) -> tuple:
    return tuple((f.name, f.num_bytes, f.mtime_ns, f.checksum) for f in output.files)


class Runner(abc.ABC):
    """Executes a TaskGraph. Subclasses provide submit / wait / cancel."""

    name = "base"

    def __init__(self, config: Config):
        self.config = config
        self._verified: dict[str, tuple] = {}  # task key -> what was checked, per session
        seed = config.extra.get("random_seed")  # injected faults repeat with the same seed
        self._fault_seed = random.getrandbits(32) if seed is None else int(seed)

    @property
    def scratch_dir(self) -> str:
        """The session's own folder for attempts' staging and spill."""
        return self.config.scratch_dir or os.path.join(self.config.data_root, "sessions",
                                                       "unnamed")

    def trust(self, output: TaskOutput) -> bool:
        """Whether a committed output may be reused: its checksums match (once per session
        and file state), unless the config verifies only sizes and mtimes."""
        if self.config.verify != "checksum" or self._verified.get(output.key) == _state(output):
            return True
        problem = corrupt_file(output)
        if problem:
            logger.warning("task %s will run again: %s", output.key, problem)
            return False
        self._verified[output.key] = _state(output)
        return True

    # -- primitives -------------------------------------------------------------------------
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many tasks may run at once."""

    @abc.abstractmethod
    def submit(self, task: Task, inputs: list[list[FileSlice]], settings: ExecSettings) -> Any:
        """Start a task; return a handle."""

    @abc.abstractmethod
    def wait(self, handles: Iterable[Any], timeout: float | None = None,
             ) -> list[tuple[Any, TaskOutput | BaseException]]:
        """Block until at least one handle finished, or `timeout` seconds passed (then the
        list may be empty); return (handle, output or error) pairs."""

    @abc.abstractmethod
    def cancel(self, handles: Iterable[Any]) -> None:
        """Stop running tasks (Ctrl-C or a failed job)."""

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release workers."""

    def threads_per_task(self) -> int:
        return 1

    def threads_for(self, running: int, waiting: int) -> int:
        """Threads for the next task, given the tasks running and the ones ready after it."""
        return self.threads_per_task()

    starts_at_submit = True  # a submitted task starts at once (no queue in front of it)

    def abandon(self, handle: Any, owner: tuple[str, int] | None) -> None:
        """Give up on an attempt that stopped answering or ran too long: stop it for good.
        `owner` is (host, pid) of the process that last beat for it, when known."""
        self.cancel([handle])

    @property
    def _beat_interval(self) -> float:
        """Seconds between heartbeats (and lease renewals): a sixth of the timeout."""
        return min(5.0, max(0.1, self.config.heartbeat_timeout / 6))

    def _settings(self, key: str, attempt: int, force: bool, threads: int) -> ExecSettings:
        config = self.config
        # DuckDB's scans and sorts hold buffers per thread: a thread per THREAD_MEMORY of budget
        threads = max(1, min(threads, config.memory_per_task // THREAD_MEMORY))
        return ExecSettings(config.data_root, self.scratch_dir, config.memory_per_task,
                            threads, force=force, attempt=new_attempt_id(key),
                            attempt_number=attempt, heartbeat_interval=self._beat_interval,
                            orphan_after=config.heartbeat_timeout,
                            fault_prob=float(config.extra.get("fault_inject_prob") or 0),
                            fault_seed=self._fault_seed, sys_path=tuple(sys.path))

    # -- the loop ---------------------------------------------------------------------------
    def run(self, graph: TaskGraph, force: frozenset[str] = frozenset(),
            on_event: EventCallback | None = None) -> dict[str, TaskOutput]:
        """Run what the graph's outputs need; return the outputs of every task involved."""
        emit = on_event or (lambda event: None)
        invalid: set[str] = set()  # committed entries that failed verification: replace them

        def trust(output: TaskOutput) -> bool:
            if self.trust(output):
                return True
            invalid.add(output.key)
            return False

        needed, outputs = needed_tasks(graph, self.config.data_root, force, trust)
        for key, output in outputs.items():
            task = graph.tasks[key]
            emit(TaskEvent("reused", task.stage, task.partition, key, output.num_rows,
                           output.num_bytes))
        for key, task in needed.items():
            emit(TaskEvent("pending", task.stage, task.partition, key))
        waiting = {key: {d for d in task.deps if d in needed} for key, task in needed.items()}
        dependents: dict[str, list[str]] = {key: [] for key in needed}
        for key, deps in waiting.items():
            for dep in deps:
                dependents[dep].append(key)
        ready = [key for key, deps in waiting.items() if not deps]
        running: dict[Any, str] = {}
        attempts: dict[str, int] = {}
        unfinished = set(needed)
        watch = AttemptWatch(self.scratch_dir, self.config.heartbeat_timeout,
                             self.config.task_timeout, self.starts_at_submit)
        remade: dict[str, int] = {}  # consumer -> times an input of it had to be made again

        def remake(lost: str, consumer: str) -> None:
            """An input of `consumer` vanished or went bad after it was committed (another
            session moved or evicted it, the disk lost it): make it again, then the consumer."""
            outputs.pop(lost, None)
            invalid.add(lost)
            self._verified.pop(lost, None)
            todo = [lost]
            while todo:
                key = todo.pop()
                if key in unfinished:
                    continue
                needed[key] = graph.tasks[key]
                missing = set()
                for dep in graph.tasks[key].deps:
                    if dep in outputs:
                        continue
                    if dep not in unfinished:
                        done = load_committed(self.config.data_root, dep)
                        if done is not None and trust(done):
                            outputs[dep] = done
                            continue
                        todo.append(dep)
                    missing.add(dep)
                waiting[key] = missing
                for dep in missing:
                    dependents.setdefault(dep, []).append(key)
                dependents.setdefault(key, [])
                unfinished.add(key)
                if not missing:
                    ready.append(key)
            waiting[consumer] = {lost}
            dependents[lost].append(consumer)

        try:
            with DriverLease(self.scratch_dir, self._beat_interval):
                while unfinished:
                    while ready and len(running) < self.capacity():
                        key = ready.pop(0)
                        task = needed[key]
                        attempts[key] = attempts.get(key, 0) + 1
                        settings = self._settings(key, attempts[key],
                                                  key in force or key in invalid,
                                                  self.threads_for(len(running), len(ready)))
                        handle = self.submit(task, resolve_inputs(task, outputs), settings)
                        running[handle] = key
                        watch.started(handle, settings.attempt)
                        emit(TaskEvent("submitted", task.stage, task.partition, key))
                    if not running:
                        raise TaskError("scheduler stalled: tasks wait on inputs that never ran")
                    for handle, result in self._next_results(running, needed, watch):
                        key = running.pop(handle)
                        task = needed[key]
                        if isinstance(result, (WorkerLost, InjectedFault)):
                            if attempts[key] > self.config.max_retries:
                                raise _retries_exhausted(task, attempts[key], result)
                            emit(TaskEvent("retried", task.stage, task.partition, key,
                                           error=str(result)))
                            ready.insert(0, key)
                            continue
                        lost = _lost_input(result, task, self.config.data_root)
                        if lost is not None and remade.get(key, 0) < self.config.max_retries + 1:
                            remade[key] = remade.get(key, 0) + 1
                            emit(TaskEvent("retried", task.stage, task.partition, key,
                                           error=f"its input from task {lost} is gone; making "
                                                 "it again"))
                            remake(lost, key)
                            continue
                        if isinstance(result, BaseException):
                            first_line = str(result).splitlines()[0] if str(result) else ""
                            emit(TaskEvent("failed", task.stage, task.partition, key,
                                           error=first_line,
                                           logs=getattr(result, "output", "") or ""))
                            if isinstance(result, UserFunctionError):
                                raise as_user_exception(result)
                            raise result
                        outputs[key] = result
                        self._verified[key] = _state(result)  # written by this session now
                        unfinished.discard(key)
                        emit(TaskEvent.finished(task, result))
                        for child in dependents[key]:
                            waiting[child].discard(key)
                            if child in unfinished and not waiting[child] \
                                    and child not in ready and child not in running.values():
                                ready.append(child)
        except BaseException:
            if running:
                self.cancel(list(running))
            raise
        return outputs

    def _next_results(self, running: dict[Any, str], needed: dict[str, Task],
                      watch: AttemptWatch) -> list[tuple[Any, TaskOutput | BaseException]]:
        """What finished within a poll interval, plus the attempts given up on as lost."""
        results = self.wait(list(running), timeout=min(1.0, watch.interval))
        done = {handle for handle, _ in results}
        for handle in done:
            watch.finished(handle)
        for handle, why, owner in watch.expired():
            if handle in running and handle not in done:
                task = needed[running[handle]]
                self.abandon(handle, owner)
                results.append((handle, WorkerLost(f"{task.describe()} ({task.summary()}) "
                                                   f"{why}")))
        return results


def _retries_exhausted(task: Task, attempts: int, last: BaseException) -> SmallpondError:
    cause = "its worker died" if isinstance(last, WorkerLost) else "it failed"
    message = (f"{task.describe()} ({task.summary()}) failed: {cause} {attempts} times; the "
               f"last time: {last}")
    if getattr(last, "oom", False):
        return OutOfMemoryError(f"{message}. Give tasks more memory (memory_per_task=...), use "
                                "more partitions, or fewer workers per machine.")
    return TaskError(message, stage=task.stage, partition=task.partition)
