"""The embedded runner: a supervised pool of long-lived worker processes on this machine.

Workers are started with `spawn` (forking a process where DuckDB threads run can deadlock),
kept warm between jobs, and watched: a worker that dies mid-task is replaced and its task
re-queued by the scheduling loop. Workers die with the driver (parent-death signal + pipe EOF).
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import multiprocessing
import os
import pickle
import signal
from collections.abc import Iterable
from multiprocessing.connection import Connection, wait

from smallpond.config import Config
from smallpond.errors import TaskError
from smallpond.io.commit import remove_tree
from smallpond.io.files import FileSlice
from smallpond.planner.graph import Task, TaskOutput
from smallpond.runners.base import Runner, WorkerLost
from smallpond.runners.execute import ExecSettings

__all__ = ["LocalRunner"]


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: pipe EOF still ends an idle worker
        pass


def worker_main(conn: Connection) -> None:
    """Loop of a worker process: receive a task, execute it, send back the result."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C cancels
    from smallpond.runners.execute import execute_task

    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        task, inputs, settings = pickle.loads(message)
        try:
            reply = (True, execute_task(task, inputs, settings))
        except BaseException as error:  # noqa: BLE001 - everything goes back to the driver
            reply = (False, error)
        try:
            payload = pickle.dumps(reply)
        except Exception:
            payload = pickle.dumps((False, TaskError(f"{task.describe()} failed: {reply[1]!r}",
                                                     stage=task.stage, partition=task.partition)))
        conn.send_bytes(payload)


class _Worker:
    def __init__(self, context: multiprocessing.context.BaseContext):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child,), daemon=True,
                                       name="smallpond-worker")
        self.process.start()
        child.close()
        self.task: Task | None = None

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class LocalRunner(Runner):
    """Runs tasks in `num_executors` warm worker processes."""

    name = "local"

    def __init__(self, config: Config):
        super().__init__(config)
        self._context = multiprocessing.get_context("spawn")
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        self._handles = itertools.count()
        self._start_workers()

    def _start_workers(self) -> None:
        while len(self._idle) + len(self._busy) < self.config.num_executors:
            self._idle.append(_Worker(self._context))

    @property
    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in [*self._idle, *self._busy.values()]]

    def capacity(self) -> int:
        return self.config.num_executors

    def threads_per_task(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.config.num_executors)

    def submit(self, task: Task, inputs: list[list[FileSlice]], settings: ExecSettings) -> int:
        self._start_workers()
        worker = self._idle.pop()
        while not worker.alive():
            worker.kill()
            worker = _Worker(self._context)
        worker.task = task
        worker.conn.send_bytes(pickle.dumps((task, inputs, settings)))
        handle = next(self._handles)
        self._busy[handle] = worker
        return handle

    def wait(self, handles: Iterable[int]) -> list[tuple[int, TaskOutput | BaseException]]:
        by_object = {}
        for handle in handles:
            worker = self._busy[handle]
            by_object[worker.conn] = handle
            by_object[worker.process.sentinel] = handle
        ready = wait(list(by_object))
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
        code = worker.process.exitcode
        return WorkerLost(f"worker pid {worker.process.pid} running "
                          f"{worker.task.describe() if worker.task else '?'} exited ({code})")

    def _discard(self, worker: _Worker) -> None:
        task = worker.task
        worker.kill()
        if task is not None:
            for leftover in glob.glob(os.path.join(self.config.data_root, "*", f"{task.key}.*")):
                remove_tree(leftover)

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
