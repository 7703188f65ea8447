"""What data_root holds, and removing it safely: by age, by job, all, or down to a size budget.

Only committed task folders (`data_root/tasks/<kernel>-<24 hex digits>`) and run records
(`data_root/runs/<job id>`) are ever removed; anything else under data_root (sources, staging,
spill, session folders, files a user put there) is listed but left alone. A task that a live
session may be using is never removed (a running action pins its tasks in
`sessions/<id>/pins.json`), nor the records of a job whose session is still open.

A task's "last used" time is its folder's modification time: set when it committed, and touched
again whenever an action reuses it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smallpond.io.disk import folder_bytes

if TYPE_CHECKING:
    from smallpond.session import Session

__all__ = ["TaskEntry", "JobEntry", "CacheListing", "Eviction", "scan", "evict", "pinned_keys",
           "parse_age", "after_action", "cache_budget"]

TASK_NAME = re.compile(r"^[A-Za-z0-9_.]+-[0-9a-f]{24}$")


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
def pinned_keys(data_root: str) -> set[str]:
    """Keys no eviction may touch: what running actions of live sessions need."""
    from smallpond.io.sessions import pinned_task_keys

    return pinned_task_keys(data_root)


def _read_json(path: str) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _subdirs(folder: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


# -- scanning ---------------------------------------------------------------------------------
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
        tasks[entry.name] = TaskEntry(entry.name, entry.path, folder_bytes(entry.path),
                                      last_used)
    return tasks


def _scan_jobs(data_root: str) -> dict[str, JobEntry]:
    from smallpond.io.sessions import live_sessions, owner_alive

    live_areas = {os.path.basename(p) for p in live_sessions(data_root)}
    jobs = {}
    for path in _subdirs(os.path.join(data_root, "runs")):
        job_id = os.path.basename(path)
        records = []
        actions_dir = os.path.join(path, "actions")
        names = sorted(os.listdir(actions_dir)) if os.path.isdir(actions_dir) else []
        for name in names:
            record = _read_json(os.path.join(actions_dir, name))
            if isinstance(record, dict):
                records.append(record)
        status = _read_json(os.path.join(path, "status.json")) or {}
        # open: its session has not shut down and still lives (or never wrote a status yet)
        live = (not status.get("closed") and status.get("session_id") in live_areas) or (
            not status and any(r.get("status") == "running" and owner_alive(r, None)
                               for r in records))
        keys = {t["key"] for r in records for t in r.get("tasks", ())}
        stamps = [r.get("ended") or r.get("started") or 0 for r in records]
        try:
            stamps.append(os.stat(path).st_mtime)
        except OSError:
            continue
        state = "running" if live else status.get("status") or (
            records[-1].get("status", "?") if records else "?")
        jobs[job_id] = JobEntry(
            job_id, path, state, sum(r.get("status") != "running" for r in records),
            min((r["started"] for r in records if r.get("started")), default=None),
            max(stamps), keys, live)
    return jobs


def scan(data_root: str) -> CacheListing:
    """What data_root holds: committed tasks, job records and the other folders' sizes."""
    tasks = _scan_tasks(data_root)
    jobs = _scan_jobs(data_root)
    for key in pinned_keys(data_root):
        if key in tasks:
            tasks[key].pinned = True
    other = {}
    for name in ("sources", "staging", "spill", "sessions"):
        folder = os.path.join(data_root, name)
        if os.path.isdir(folder):
            other[name] = folder_bytes(folder)
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
    pinned_now = pinned_keys(data_root)  # again, just before removing: actions that started
    for entry in sorted(chosen.values(), key=lambda t: t.last_used):  # since the listing
        if entry.key in pinned_now:
            result.kept_pinned += 1
            continue
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
