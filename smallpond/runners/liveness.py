"""Whether a task attempt is still alive, and whether its driver is: heartbeat files.

A process can stop without dying: SIGSTOP, a hung node, a network partition, a task stuck in
a system call. Neither a pipe nor Ray notices that. So, on the session's scratch folder (on
the shared file system every node sees):

- task side, `beating()` around a task: a daemon thread rewrites
  `heartbeats/<attempt id>` every `interval` seconds. It also reads the driver's `lease`: when
  the lease stops changing for `orphan_after` seconds the driver is gone (killed, its machine
  lost, a `ray://` client that vanished while Ray keeps its tasks) and the thread kills its own
  process, so that no orphan runs on or commits.
- driver side, `DriverLease` rewrites the lease while a job runs; `AttemptWatch` names the
  attempts whose heartbeat stopped changing for `heartbeat_timeout` seconds, or that ran longer
  than `task_timeout`, so the scheduling loop can kill and reschedule them.

Staleness is judged on the observer's own clock (how long since the content last changed),
never by comparing clocks of two machines, and from content read with open() (close-to-open
consistency on NFS), not from cached mtimes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["HEARTBEATS", "LEASE", "new_attempt_id", "beating", "DriverLease", "AttemptWatch",
           "Staleness"]

logger = logging.getLogger(__name__)

HEARTBEATS = "heartbeats"
LEASE = "lease"


def new_attempt_id(key: str) -> str:
    """`<task key>.<random>`: like staging folders, so leftovers are found by task key."""
    return f"{key}.{uuid.uuid4().hex[:12]}"


def _write(path: str, text: str) -> None:
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


class Staleness:
    """How long (on this process's monotonic clock) a file's content has not changed."""

    def __init__(self, now=time.monotonic):
        self._now = now
        self._seen: dict[str, tuple[str | None, float]] = {}

    def age(self, path: str) -> tuple[str | None, float]:
        """The file's content (None when missing) and seconds since it last changed."""
        content = _read(path)
        now = self._now()
        previous = self._seen.get(path)
        if previous is None or previous[0] != content:
            self._seen[path] = (content, now)
            return content, 0.0
        return content, now - previous[1]

    def forget(self, path: str) -> None:
        self._seen.pop(path, None)


class _Beat(threading.Thread):
    def __init__(self, path: str, lease: str, interval: float, orphan_after: float | None):
        super().__init__(name="smallpond-heartbeat", daemon=True)
        self.path, self.lease = path, lease
        self.interval, self.orphan_after = interval, orphan_after
        self.stop = threading.Event()
        self.owner = f"{socket.gethostname()} {os.getpid()}"

    def beat(self, count: int) -> None:
        try:
            _write(self.path, f"{self.owner} {count}")
        except OSError:  # the session's folder went away: the driver is gone or cleaned up
            pass

    def run(self) -> None:
        lease = Staleness()
        count = 0
        while not self.stop.wait(self.interval):
            count += 1
            self.beat(count)
            if self.orphan_after is None:
                continue
            content, age = lease.age(self.lease)
            if content is not None and age >= self.orphan_after:
                logger.error("smallpond: the driver's lease %s has not changed for %.0f s: "
                             "the driver is gone; ending this orphaned task", self.lease, age)
                os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def beating(scratch_dir: str, attempt: str, interval: float,
            orphan_after: float | None) -> Iterator[None]:
    """Beat for `attempt` while the body runs (nothing when `attempt` is empty)."""
    if not attempt:
        yield
        return
    folder = os.path.join(scratch_dir, HEARTBEATS)
    os.makedirs(folder, exist_ok=True)
    thread = _Beat(os.path.join(folder, attempt), os.path.join(scratch_dir, LEASE), interval,
                   orphan_after)
    thread.beat(0)  # the driver sees the attempt start at once
    thread.start()
    try:
        yield
    finally:
        thread.stop.set()
        thread.join(5.0)  # not mid-write: a beat after the removal would leave a file behind
        with contextlib.suppress(OSError):
            os.remove(thread.path)


class DriverLease:
    """The driver's proof of life, rewritten every `interval` seconds by a daemon thread."""

    def __init__(self, scratch_dir: str, interval: float):
        self.path = os.path.join(scratch_dir, LEASE)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = 0

    def _renew(self) -> None:
        self._count += 1
        with contextlib.suppress(OSError):
            _write(self.path, f"{socket.gethostname()} {os.getpid()} {self._count}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._renew()

    def __enter__(self) -> DriverLease:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._renew()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="smallpond-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._thread = None


@dataclass
class _Attempt:
    attempt: str
    submitted: float
    started: float | None


class AttemptWatch:
    """Running attempts that stopped beating or ran too long.

    Timeouts count from an attempt's first heartbeat (the task runs). `starts_at_submit`: the
    runner starts a task the moment it is submitted (an idle local worker), so an attempt
    that never beats at all (its worker stopped while idle) is given up after
    `first_beat_timeout`; on Ray a task may wait for resources first, for any time.
    """

    def __init__(self, scratch_dir: str, heartbeat_timeout: float, task_timeout: float | None,
                 starts_at_submit: bool, now=time.monotonic):
        self.folder = os.path.join(scratch_dir, HEARTBEATS)
        self.heartbeat_timeout = heartbeat_timeout
        self.task_timeout = task_timeout
        self.starts_at_submit = starts_at_submit
        self._now = now
        self._staleness = Staleness(now)
        self._attempts: dict[Any, _Attempt] = {}
        self._checked = float("-inf")
        # a fresh worker may take a while before its first beat (imports on a loaded machine)
        self.first_beat_timeout = max(heartbeat_timeout, 60.0)

    @property
    def interval(self) -> float:
        """How often `expired` needs calling to honour the timeouts."""
        timeouts = [t for t in (self.heartbeat_timeout, self.task_timeout) if t]
        return max(0.05, min([5.0, *(t / 4 for t in timeouts)]))

    def started(self, handle: Any, attempt: str) -> None:
        self._attempts[handle] = _Attempt(attempt, self._now(), None)

    def finished(self, handle: Any) -> None:
        attempt = self._attempts.pop(handle, None)
        if attempt is not None:
            self._staleness.forget(os.path.join(self.folder, attempt.attempt))

    def expired(self) -> list[tuple[Any, str, tuple[str, int] | None]]:
        """(handle, why, (host, pid) that last beat or None) of attempts to give up on;
        each is forgotten once named."""
        now = self._now()
        if now - self._checked < self.interval:
            return []
        self._checked = now
        found = []
        for handle, attempt in list(self._attempts.items()):
            content, age = self._staleness.age(os.path.join(self.folder, attempt.attempt))
            why = self._why(attempt, content, age, now)
            if why:
                self.finished(handle)
                found.append((handle, why, _owner(content)))
        return found

    def _why(self, attempt: _Attempt, content: str | None, age: float, now: float) -> str | None:
        if content is not None and attempt.started is None:
            attempt.started = now  # the first beat: the task runs (timeouts count from here)
        if attempt.started is None:
            waited = now - attempt.submitted
            if self.starts_at_submit and waited >= self.first_beat_timeout:
                return (f"never started: no heartbeat {waited:.0f} s after it was sent to its "
                        "worker")
            return None  # a worker still starting, or a task waiting for resources
        if content is None:
            return None  # it beat, then removed its file: it ended, its result is on its way
        if age >= self.heartbeat_timeout:
            owner = _owner(content)
            where = f" (pid {owner[1]} on {owner[0]})" if owner else ""
            return (f"stopped answering{where}: no heartbeat for {age:.0f} s "
                    f"(heartbeat_timeout={self.heartbeat_timeout:g} s)")
        if self.task_timeout and now - attempt.started >= self.task_timeout:
            return f"ran longer than task_timeout={self.task_timeout:g} s"
        return None


def _owner(content: str | None) -> tuple[str, int] | None:
    """(host, pid) from a heartbeat's content."""
    try:
        host, pid, _ = (content or "").split()
        return host, int(pid)
    except ValueError:
        return None
