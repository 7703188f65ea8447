"""Fault injectors and observers for the reliability suite and `benchmarks/reliability.py`.

- `KillAtFraction`: an event listener that SIGKILLs a worker process running a task once a
  given share of a job's tasks has finished (the embedded runner's workers, or Ray workers
  running `smallpond_task` below a given process).
- `OutputWatcher`: looks at an output folder every few milliseconds while a job runs and
  records anything a reader must never see: temporary files, or a part of the result without
  all the others.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

import psutil

__all__ = ["KillAtFraction", "OutputWatcher", "busy_worker_pids", "ray_task_pids",
           "slow_once"]

RAY_TASK_TITLE = "ray::smallpond_task"


def ray_task_pids(root: int | None = None) -> list[int]:
    """Ray worker processes below `root` (default: this process) running a smallpond task."""
    found = []
    try:
        children = psutil.Process(root or os.getpid()).children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        try:
            title = child.cmdline()
        except psutil.Error:
            continue
        if title and title[0].startswith(RAY_TASK_TITLE):
            found.append(child.pid)
    return found


def busy_worker_pids(session, ray_root: int | None = None) -> list[int]:
    """Processes running one of the session's tasks right now."""
    runner = session.runner
    if runner.name == "local":
        return sorted(w.pid for w in list(runner._busy.values()) if w.pid)
    return sorted(ray_task_pids(ray_root))


def slow_once(marker: str, seconds: float, pause: float = 0.0):
    """A map_batches function: the first call anywhere records its process id in `marker`
    and sleeps `seconds` (a task to stop, or one that never returns); every call then sleeps
    `pause`. A rerun finds the marker and goes on."""

    def slow_once(table):
        import os
        import time

        if not os.path.exists(marker):
            with open(marker, "w") as handle:
                handle.write(str(os.getpid()))
            time.sleep(seconds)
        time.sleep(pause)
        return table

    return slow_once


@dataclass
class KillAtFraction:
    """SIGKILL one busy worker when `fraction` of `total` tasks have finished.

    Register with `session.on_event(killer)`. `seed` picks which busy worker dies. The kill
    happens in the event callback, on the driver's scheduling thread, so it is deterministic
    relative to the job's progress.
    """

    session: object
    total: int
    fraction: float
    seed: int = 0
    ray_root: int | None = None
    killed: list[tuple[int, float, int]] = field(default_factory=list)  # (pid, time, finished)
    finished: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _poller: threading.Thread | None = field(default=None, repr=False)

    def __call__(self, event) -> None:
        if event.kind == "finished":
            self.finished += 1
        if self.killed or event.kind not in ("finished", "submitted"):
            return
        # (at least two tasks left to hit: a job's last task may end before it is seen)
        if self.finished < min(self.fraction * self.total, self.total - 2):
            return
        if not self._kill_one() and self._poller is None:
            # nothing runs at this instant (the last tasks may be starting): look again
            # every few milliseconds for a while, as later events may never come
            self._poller = threading.Thread(target=self._poll, daemon=True)
            self._poller.start()

    def _kill_one(self) -> bool:
        with self._lock:
            if self.killed:
                return True
            pids = busy_worker_pids(self.session, self.ray_root)
            if not pids:
                return False
            victim = random.Random(self.seed).choice(pids)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                return False
            self.killed.append((victim, time.time(), self.finished))
            return True

    def _poll(self, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while self.finished < self.total and time.monotonic() < deadline:
            if self._kill_one():
                return
            time.sleep(0.005)


class OutputWatcher(threading.Thread):
    """Records every view of `path` that a reader must never get.

    Allowed: no folder (or an empty one), or the complete result: exactly `part-*` files of
    their final sizes (once known, `check(final)`), plus `_SUCCESS`. Anything else (a temporary
    file, a part missing while others are there, a part of the wrong size) is a violation.
    """

    def __init__(self, path: str, interval: float = 0.005):
        super().__init__(daemon=True, name="smallpond-output-watcher")
        self.path = path
        self.interval = interval
        self.views: set[tuple[tuple[str, int], ...]] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            view = []
            try:
                for entry in os.scandir(self.path):
                    try:
                        view.append((entry.name, entry.stat().st_size))
                    except FileNotFoundError:
                        view.append((entry.name, -1))
            except (FileNotFoundError, NotADirectoryError):
                pass
            self.views.add(tuple(sorted(view)))
            time.sleep(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def violations(self) -> list[tuple]:
        """Views that were neither empty nor the final result (call after the job)."""
        final = {}
        for entry in os.scandir(self.path):
            if entry.name != "_SUCCESS":
                final[entry.name] = entry.stat().st_size
        bad = []
        for view in self.views:
            parts = {name: size for name, size in view if name != "_SUCCESS"}
            if parts and parts != final:
                bad.append(view)
            elif not parts and view:  # _SUCCESS without parts
                bad.append(view)
        return bad
