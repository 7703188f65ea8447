"""What data_root holds, and removing it safely: by age, by job, all, or down to a size budget.

Only committed task folders (`data_root/tasks/<kernel>-<24 hex digits>`) and run records
(`data_root/runs/<job id>`) are ever removed; anything else under data_root (sources, staging,
spill, session folders, files a user put there) is listed but left alone. A task that a live
session may be using is never removed: those pinned by a live session (`sessions/<id>/pins.json`)
and every task of an action still running in a live process (its run record says so).

A task's "last used" time is its folder's modification time: set when it committed, and touched
again whenever an action reuses it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smallpond.session import Session

__all__ = ["TaskEntry", "JobEntry", "CacheListing", "scan", "evict", "pinned_keys",
           "parse_age", "after_action", "cache_budget", "is_live"]

TASK_NAME = re.compile(r"^[A-Za-z0-9_.]+-[0-9a-f]{24}$")
_REMOTE_RUNNING_TTL = 24 * 3600  # a running action on another host counts as live this long


@dataclass
class TaskEntry:
    """A committed task folder."""

    key: str
    path: str
    bytes: int
    last_used: float
    pinned: bool = False


@dataclass
class JobEntry:
    """A job's run records: its actions, the tasks they involved, and whether it is live."""

    job_id: str
    path: str
    status: str
    actions: int
    started: float | None
    last_used: float
    keys: set[str] = field(default_factory=set)
    live: bool = False


@dataclass
class CacheListing:
    """Everything `smallpond cache` shows."""

    data_root: str
    tasks: dict[str, TaskEntry]
    jobs: dict[str, JobEntry]
    other_bytes: dict[str, int]

    @property
    def task_bytes(self) -> int:
        return sum(t.bytes for t in self.tasks.values())

    def job_bytes(self, job: JobEntry) -> int:
        return sum(self.tasks[k].bytes for k in job.keys if k in self.tasks)


# -- liveness and pins ------------------------------------------------------------------------
def is_live(host: str | None, pid: int | None, started: float | None) -> bool:
    """Whether the process `pid` on `host` (that started before `started`) still runs."""
    if not pid:
        return False
    if host and host != socket.gethostname():
        return started is not None and time.time() - started < _REMOTE_RUNNING_TTL
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        import psutil

        created = psutil.Process(int(pid)).create_time()
        return started is None or created <= started + 1
    except Exception:  # psutil missing or the process just ended: trust kill(0)
        return True


def _read_json(path: str) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _session_pins(data_root: str) -> set[str]:
    """Task keys pinned by live sessions: `sessions/<id>/pins.json` of sessions whose owner
    (`owner.json`: host, pid, start time) is alive."""
    try:
        from smallpond.io import sessions as session_folders  # the session folders' owner
    except ImportError:
        session_folders = None
    keys: set[str] = set()
    root = os.path.join(data_root, "sessions")
    if session_folders is not None and hasattr(session_folders, "live_sessions"):
        folders = [os.path.join(root, str(s)) if not os.path.isabs(str(s)) else str(s)
                   for s in session_folders.live_sessions(data_root)]
    else:
        folders = []
        for entry in _subdirs(root):
            owner = _read_json(os.path.join(entry, "owner.json")) or {}
            if is_live(owner.get("host"), owner.get("pid"),
                       owner.get("start_time") or owner.get("started")):
                folders.append(entry)
    for folder in folders:
        pins = _read_json(os.path.join(folder, "pins.json"))
        if isinstance(pins, list):
            keys.update(str(k) for k in pins)
    return keys


def _subdirs(folder: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def pinned_keys(data_root: str, jobs: dict[str, JobEntry] | None = None) -> set[str]:
    """Keys no eviction may touch: live sessions' pins and live running actions' tasks."""
    keys = _session_pins(data_root)
    for job in (jobs if jobs is not None else _scan_jobs(data_root)).values():
        if job.live:
            keys |= job.running_keys  # type: ignore[attr-defined]
    return keys


# -- scanning ---------------------------------------------------------------------------------
def _folder_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _scan_tasks(data_root: str) -> dict[str, TaskEntry]:
    tasks = {}
    try:
        entries = list(os.scandir(os.path.join(data_root, "tasks")))
    except OSError:
        return tasks
    for entry in entries:
        if not TASK_NAME.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            last_used = entry.stat(follow_symlinks=False).st_mtime
        except OSError:  # removed meanwhile
            continue
        tasks[entry.name] = TaskEntry(entry.name, entry.path, _folder_bytes(entry.path),
                                      last_used)
    return tasks


def _scan_jobs(data_root: str) -> dict[str, JobEntry]:
    jobs = {}
    for path in _subdirs(os.path.join(data_root, "runs")):
        job_id = os.path.basename(path)
        records, running = [], set()
        live = False
        actions_dir = os.path.join(path, "actions")
        names = sorted(os.listdir(actions_dir)) if os.path.isdir(actions_dir) else []
        for name in names:
            record = _read_json(os.path.join(actions_dir, name))
            if not isinstance(record, dict):
                continue
            records.append(record)
            if record.get("status") == "running" and is_live(
                    record.get("host"), record.get("pid"), record.get("started")):
                live = True
                running.update(record.get("keys", ()))
        status_file = _read_json(os.path.join(path, "status.json")) or {}
        keys = {t["key"] for r in records for t in r.get("tasks", ())} | running
        stamps = [r.get("ended") or r.get("started") or 0 for r in records]
        try:
            stamps.append(os.stat(path).st_mtime)
        except OSError:
            continue
        status = status_file.get("status") or ("running" if live else
                                               records[-1].get("status", "?") if records else "?")
        job = JobEntry(job_id, path, status, len(records),
                       min((r.get("started") for r in records if r.get("started")), default=None),
                       max(stamps), keys, live)
        job.running_keys = running  # type: ignore[attr-defined]
        jobs[job_id] = job
    return jobs


def scan(data_root: str) -> CacheListing:
    """What data_root holds: committed tasks, job records and the other folders' sizes."""
    tasks = _scan_tasks(data_root)
    jobs = _scan_jobs(data_root)
    for key in pinned_keys(data_root, jobs):
        if key in tasks:
            tasks[key].pinned = True
    other = {}
    for name in ("sources", "staging", "spill", "sessions"):
        folder = os.path.join(data_root, name)
        if os.path.isdir(folder):
            other[name] = _folder_bytes(folder)
    return CacheListing(data_root, tasks, jobs, other)


# -- removing ---------------------------------------------------------------------------------
def _remove_task(data_root: str, entry: TaskEntry) -> bool:
    """Move the folder out of the way in one rename (readers see it or nothing), then delete."""
    tasks_dir = os.path.realpath(os.path.join(data_root, "tasks"))
    if (not TASK_NAME.match(entry.key) or os.path.islink(entry.path)
            or os.path.dirname(os.path.realpath(entry.path)) != tasks_dir):
        return False
    trash = os.path.join(tasks_dir, f".evict-{entry.key}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(entry.path, trash)
    except OSError:  # gone already, or replaced meanwhile
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _remove_job(data_root: str, job: JobEntry) -> bool:
    runs_dir = os.path.realpath(os.path.join(data_root, "runs"))
    if job.live or os.path.islink(job.path) or \
            os.path.dirname(os.path.realpath(job.path)) != runs_dir:
        return False
    shutil.rmtree(job.path, ignore_errors=True)
    return True


def parse_age(text: str) -> float:
    """'90s', '30m', '12h', '7d', '2w' (or plain seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text))
    if not match:
        raise ValueError(f"an age looks like 30m, 12h or 7d, got {text!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return float(match.group(1)) * unit


@dataclass
class Eviction:
    """What an eviction removed (or would remove, in a dry run)."""

    tasks: list[str] = field(default_factory=list)
    bytes: int = 0
    jobs: list[str] = field(default_factory=list)
    kept_pinned: int = 0


def evict(data_root: str, *, everything: bool = False, older_than: float | None = None,
          job: str | None = None, max_bytes: int | None = None,
          protect: Iterable[str] = (), dry_run: bool = False) -> Eviction:
    """Remove committed tasks (and job records) chosen by the given criteria.

    everything: all tasks and records; older_than: seconds since last use; job: the records of
    one job and the tasks no other job used; max_bytes: least recently used tasks until the
    rest fit. Pinned tasks, `protect`ed keys and live jobs are always kept.
    """
    listing = scan(data_root)
    keep = set(protect)
    result = Eviction()
    candidates = {k: t for k, t in listing.tasks.items() if not t.pinned and k not in keep}
    result.kept_pinned = sum(t.pinned for t in listing.tasks.values())
    chosen: dict[str, TaskEntry] = {}
    jobs: list[JobEntry] = []
    now = time.time()
    if everything:
        chosen.update(candidates)
        jobs = list(listing.jobs.values())
    if older_than is not None:
        chosen.update({k: t for k, t in candidates.items() if now - t.last_used > older_than})
        jobs += [j for j in listing.jobs.values() if now - j.last_used > older_than]
    if job is not None:
        if job not in listing.jobs:
            raise KeyError(job)
        target = listing.jobs[job]
        others = set().union(*[j.keys for j in listing.jobs.values() if j.job_id != job])
        chosen.update({k: candidates[k] for k in target.keys - others if k in candidates})
        jobs.append(target)
    if max_bytes is not None:
        total = listing.task_bytes - sum(t.bytes for t in chosen.values())
        for entry in sorted(candidates.values(), key=lambda t: t.last_used):
            if total <= max_bytes:
                break
            if entry.key not in chosen:
                chosen[entry.key] = entry
                total -= entry.bytes
    for entry in sorted(chosen.values(), key=lambda t: t.last_used):
        if dry_run or _remove_task(data_root, entry):
            result.tasks.append(entry.key)
            result.bytes += entry.bytes
    for entry in {j.job_id: j for j in jobs}.values():
        if not entry.live and (dry_run or _remove_job(data_root, entry)):
            result.jobs.append(entry.job_id)
    return result


# -- after each action ------------------------------------------------------------------------
def cache_budget(session: Session) -> int | None:
    """The session's size budget for data_root/tasks in bytes (None: unbounded)."""
    from smallpond.config import _parse_bytes

    value = session.config.extra.get("cache_budget") or os.environ.get("SMALLPOND_CACHE_BUDGET")
    return _parse_bytes(value, "cache_budget") if value else None


def after_action(session: Session, record: dict[str, Any]) -> Eviction | None:
    """Mark reused tasks as used now; keep data_root within the session's budget."""
    tasks_dir = session.config.tasks_dir
    for task in record["tasks"]:
        if task["status"] == "reused":
            try:
                os.utime(os.path.join(tasks_dir, task["key"]))
            except OSError:
                pass
    budget = cache_budget(session)
    if budget is None:
        return None
    # the caller reads this action's outputs after it returns: they stay
    return evict(session.config.data_root, max_bytes=budget,
                 protect={t["key"] for t in record["tasks"]})
