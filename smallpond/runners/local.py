"""The embedded runner: a supervised pool of long-lived worker processes on this machine.

Workers are fresh interpreters (forking a process where DuckDB threads run can deadlock),
kept warm between jobs, and watched: a worker that dies mid-task is replaced and its task
re-queued by the scheduling loop. Workers die with the driver (parent-death signal + pipe EOF).
"""

from __future__ import annotations

import itertools
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from multiprocessing.connection import Connection, wait

from smallpond.config import Config
from smallpond.io.files import FileSlice
from smallpond.limits import OomWatch
from smallpond.planner.graph import Task, TaskOutput
from smallpond.runners.base import Runner, WorkerLost
from smallpond.runners.execute import ExecSettings, remove_attempt_leftovers

__all__ = ["LocalRunner", "exit_reason"]


def exit_reason(code: int | None) -> str:
    """How a worker process ended, in words: the signal that killed it or its exit code."""
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


class _Worker:
    """A worker process started as `python -m smallpond.runners.worker` on a socket pair.

    Not multiprocessing's spawn: that re-imports the user's __main__ script in every worker,
    which breaks scripts without an `if __name__ == "__main__"` guard (0.15 scripts have none).
    """

    def __init__(self):
        parent, child = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smallpond.runners.worker", str(child.fileno())],
            pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        child.close()
        self.conn = Connection(parent.detach())
        self.task: Task | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - kill -9 does not take this long
            pass
        self.conn.close()


class LocalRunner(Runner):
    """Runs tasks in `num_executors` warm worker processes."""

    name = "local"

    def __init__(self, config: Config):
        super().__init__(config)
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        self._handles = itertools.count()
        self._oom = OomWatch()
        self._start_workers()

    def _start_workers(self) -> None:
        while len(self._idle) + len(self._busy) < self.config.num_executors:
            self._idle.append(_Worker())

    @property
    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in [*self._idle, *self._busy.values()]]

    def capacity(self) -> int:
        return self.config.num_executors

    def threads_per_task(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.config.num_executors)

    def threads_for(self, running: int, waiting: int) -> int:
        """The cores shared among the tasks that will run together: a task that runs alone
        (a single-partition stage, the last task of a stage) uses every core."""
        together = max(1, min(self.config.num_executors, running + 1 + waiting))
        return max(1, (os.cpu_count() or 1) // together)

    def submit(self, task: Task, inputs: list[list[FileSlice]], settings: ExecSettings) -> int:
        self._start_workers()
        worker = self._idle.pop()
        while not worker.alive():
            worker.kill()
            worker = _Worker()
        worker.task = task
        worker.conn.send_bytes(pickle.dumps((task, inputs, settings)))
        handle = next(self._handles)
        self._busy[handle] = worker
        return handle

    def wait(self, handles: Iterable[int], timeout: float | None = None,
             ) -> list[tuple[int, TaskOutput | BaseException]]:
        by_object = {}
        for handle in handles:
            worker = self._busy[handle]
            by_object[worker.conn] = handle
        ready = wait(list(by_object), timeout)
        results = []
        for handle in dict.fromkeys(by_object[obj] for obj in ready):
            worker = self._busy.pop(handle)
            result = self._receive(worker)
            if isinstance(result, WorkerLost):
                self._discard(worker)
            else:
                worker.task = None
                self._idle.append(worker)
            results.append((handle, result))
        return results

    def _receive(self, worker: _Worker) -> TaskOutput | BaseException:
        try:
            if worker.conn.poll():
                ok, value = pickle.loads(worker.conn.recv_bytes())
                return value
        except (EOFError, OSError):
            pass
        try:
            code = worker.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        task = worker.task
        what = f"{task.describe()} ({task.summary()})" if task else "a task"
        reason = exit_reason(code)
        oom = code == -signal.SIGKILL and self._oom.struck()
        if oom:
            reason += " (the kernel's OOM killer: out of memory)"
        return WorkerLost(f"worker pid {worker.process.pid} running {what} {reason}", oom=oom)

    def _discard(self, worker: _Worker) -> None:
        task = worker.task
        worker.kill()
        if task is not None:
            remove_attempt_leftovers(self.scratch_dir, task.key)

    def cancel(self, handles: Iterable[int]) -> None:
        for handle in list(handles):
            worker = self._busy.pop(handle, None)
            if worker is not None:
                self._discard(worker)

    def shutdown(self) -> None:
        self.cancel(list(self._busy))
        for worker in self._idle:
            worker.kill()
        self._idle.clear()
