"""The embedded runner: a supervised pool of long-lived worker processes on this machine.

Workers are forks of a fork server that has already imported the heavy modules (see
forkserver.py); the server starts when the runner does (at `init()`) and workers are asked
for at once, so they are ready while the user builds a plan. Workers are kept warm between
jobs and watched: a worker that dies mid-task is replaced and its task re-queued by the
scheduling loop. Workers die with the driver (parent-death signals + socket EOF).
"""

from __future__ import annotations

import itertools
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from multiprocessing.connection import Connection, wait

from smallpond.config import Config
from smallpond.io.files import FileSlice, storage_table
from smallpond.limits import OomWatch
from smallpond.planner.graph import Task, TaskOutput
from smallpond.runners.base import Runner, WorkerLost
from smallpond.runners.execute import ExecSettings, remove_attempt_leftovers
from smallpond.runners.forkserver import ForkServer

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


HELLO_TIMEOUT = 60.0  # seconds a new worker may take to come up (the server imports first)


def _pending(conn: Connection) -> bool:
    """Whether a message (or EOF) is waiting on `conn`."""
    try:
        return conn.poll(0)
    except OSError:
        return True  # broken: _receive reports how the worker ended


class _Worker:
    """The driver's handle on one worker: its socket, and its pid once it said hello."""

    def __init__(self, server: ForkServer):
        self.server = server
        self.conn: Connection = server.spawn()
        self.pid: int | None = None
        self.ready_at: float | None = None  # time.time() when the worker said hello
        self.task: Task | None = None
        self.closed = False
        # worker_pids may be asked from another thread (a sampler): the hello is read under
        # this lock, or two readers could take the task's result for the hello
        self._hello_lock = threading.Lock()
        self.storage_version = 0  # the storage options table it has (see io/files.py)

    def read_hello(self, timeout: float | None = 0.0) -> bool:
        """Learn the pid from the worker's first message; False if it died before."""
        if self.pid is not None:
            return True
        with self._hello_lock:
            if self.pid is not None:
                return True
            if self.closed:
                return False
            try:
                if not self.conn.poll(timeout):
                    return False
                kind, pid, ready_at = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                self.closed = True
                return False
            self.pid, self.ready_at = (pid, ready_at) if kind == "hello" else (None, None)
            return self.pid is not None

    def alive(self) -> bool:
        """For an idle worker: nothing but hello is ever pending, so a readable socket past
        hello means EOF (it died)."""
        if self.closed:
            return False
        if self.pid is None:
            self.read_hello()
            return not self.closed
        try:
            return not self.conn.poll(0)
        except OSError:
            return False

    def send(self, message: tuple) -> None:
        self.conn.send_bytes(pickle.dumps(message))

    def kill(self) -> None:
        if not self.closed and self.pid is None and self.task is not None:
            # a task was sent: learn the pid so that it cannot run on unseen
            self.read_hello(HELLO_TIMEOUT)
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.closed = True
        self.conn.close()


class LocalRunner(Runner):
    """Runs tasks in `num_executors` warm worker processes."""

    name = "local"

    def __init__(self, config: Config):
        super().__init__(config)
        self._server = ForkServer()
        self._preloaded: list[str] = []
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        self._handles = itertools.count()
        self._oom = OomWatch()
        self._start_workers()

    def _new_worker(self) -> _Worker:
        if not self._server.alive():  # killed from outside: its workers died with it
            self._server.close()
            self._server = ForkServer()
            if self._preloaded:
                self._server.preload(self._preloaded)
        self._server.collect_exits()
        return _Worker(self._server)

    def _start_workers(self) -> None:
        while len(self._idle) + len(self._busy) < self.config.num_executors:
            self._idle.append(self._new_worker())

    def preload(self, names: Sequence[str]) -> None:
        """Import modules (or call `module:function`) in every worker before its next task,
        and in the fork server, so that workers forked later have them too."""
        names = [n for n in names if n not in self._preloaded]
        if not names:
            return
        self._preloaded.extend(names)
        self._server.preload(names)
        for worker in self._idle:
            try:
                worker.send(("preload", names))
            except OSError:
                pass  # dead: replaced at its next use

    def call_in_workers(self, names: Sequence[str]) -> None:
        """Have every idle worker import `module` or call `module:function` (in the
        background: before its next task)."""
        for worker in self._idle:
            try:
                worker.send(("preload", list(names)))
            except OSError:
                pass

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the workers (waits for those that are still starting)."""
        workers = [*self._idle, *self._busy.values()]
        return [w.pid for w in workers if w.read_hello(HELLO_TIMEOUT)]

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
        while True:
            if worker.alive():
                try:
                    worker.task = task
                    version, table = storage_table()
                    if worker.storage_version != version:  # beside the task, never in it
                        worker.send(("storage", table))
                        worker.storage_version = version
                    worker.send(("task", task, inputs, settings))
                    break
                except OSError:
                    pass
            worker.task = None
            worker.kill()
            worker = self._new_worker()
        handle = next(self._handles)
        self._busy[handle] = worker
        return handle

    def wait(self, handles: Iterable[int], timeout: float | None = None,
             ) -> list[tuple[int, TaskOutput | BaseException]]:
        by_conn = {self._busy[handle].conn: handle for handle in handles}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            results = []
            for conn in wait(list(by_conn), left):
                handle = by_conn[conn]
                worker = self._busy[handle]
                if worker.pid is None:
                    worker.read_hello()
                if not worker.closed and not _pending(worker.conn):
                    continue  # only its hello had arrived (read here or by worker_pids)
                self._busy.pop(handle)
                del by_conn[conn]
                result = self._receive(worker)
                if isinstance(result, WorkerLost):
                    self._discard(worker)
                else:
                    worker.task = None
                    self._idle.append(worker)
                results.append((handle, result))
            if results or (deadline is not None and time.monotonic() >= deadline):
                return results

    def _receive(self, worker: _Worker) -> TaskOutput | BaseException:
        if not worker.closed:
            try:
                ok, value = pickle.loads(worker.conn.recv_bytes())
                return value
            except (EOFError, OSError):
                pass
        code = worker.server.exit_code(worker.pid, timeout=5) if worker.pid else None
        task = worker.task
        what = f"{task.describe()} ({task.summary()})" if task else "a task"
        reason = exit_reason(code)
        oom = code == -signal.SIGKILL and self._oom.struck()
        if oom:
            reason += " (the kernel's OOM killer: out of memory)"
        return WorkerLost(f"worker pid {worker.pid or '?'} running {what} {reason}", oom=oom)

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
            worker.conn.close()  # an idle worker exits at EOF; the server's exit ends it too
        self._idle.clear()
        self._server.close()
