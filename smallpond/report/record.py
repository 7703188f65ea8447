"""The run record: a JSON file per action under data_root/runs/<job id>/actions/.

A record holds the job's stages, every task it involved (run or reused) with its worker, times,
rows, bytes, peak memory, attempts and error, per-worker totals and the job's output. What tasks
printed goes to a separate file (`logs/<action>.json`) so records stay small.

    runs/<job id>/status.json          written at shutdown by the session (not here)
    runs/<job id>/actions/0001.json    one record per action (count, write_parquet, ...)
    runs/<job id>/logs/0001.json       {task key: {stage, partition, status, text}}
"""

from __future__ import annotations

import glob
import json
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

from smallpond.io.commit import write_json_atomic
from smallpond.planner.graph import TaskGraph, TaskOutput, TaskSlice
from smallpond.report.stages import graph_stages
from smallpond.runners.base import TaskEvent

__all__ = ["JobRecorder", "RECORD_VERSION", "load_records", "load_logs", "list_jobs",
           "job_dir"]

RECORD_VERSION = 1


def job_dir(data_root: str, job_id: str) -> str:
    return os.path.join(data_root, "runs", job_id)


_next_number: dict[str, int] = {}  # actions folder -> next number to try (this process)


def _reserve(folder: str, content: dict) -> tuple[int, str]:
    """The next free action number in `folder`, claimed by creating its file exclusively
    (with `content`, the record of the running action)."""
    number = _next_number.get(folder)
    if number is None:
        os.makedirs(folder, exist_ok=True)
        numbers = [int(os.path.basename(p)[:4]) for p in glob.glob(os.path.join(folder, "*.json"))
                   if os.path.basename(p)[:4].isdigit()]
        number = max(numbers, default=0) + 1
    while True:
        path = os.path.join(folder, f"{number:04d}.json")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # another session with the same job id took it
            number += 1
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({**content, "action": number}, handle)
        _next_number[folder] = number + 1
        return number, path


class JobRecorder:
    """Collects one action's events and writes its record when the action ends."""

    def __init__(self, graph: TaskGraph, data_root: str, job_id: str, label: str,
                 settings: dict[str, Any] | None = None):
        self.graph = graph
        self.data_root = data_root
        self.job_id = job_id
        self.label = label
        self.settings = settings or {}
        self.started = time.time()
        self.tasks: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, dict[str, Any]] = {}
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.action, self.path = _reserve(
            os.path.join(job_dir(data_root, job_id), "actions"),
            {"version": RECORD_VERSION, "job_id": job_id, "label": label, "status": "running",
             "started": self.started, "host": self.host, "pid": self.pid})
        self.record: dict[str, Any] | None = None

    # -- events -------------------------------------------------------------------------------
    def on_event(self, event: TaskEvent) -> None:
        task = self.tasks.get(event.key)
        if task is None:
            task = self.tasks[event.key] = {
                "key": event.key, "stage": event.stage, "partition": event.partition,
                "status": "pending", "worker": "", "submitted": None, "started": None,
                "ended": None, "elapsed": 0.0, "rows": 0, "bytes": 0, "peak_rss": 0,
                "attempts": 0, "error": None}
        kind = event.kind
        if kind == "reused":
            task.update(status="reused", rows=event.rows, bytes=event.bytes)
        elif kind == "submitted":
            task["attempts"] += 1
            task["status"] = "running"
            if task["submitted"] is None:
                task["submitted"] = event.at
        elif kind == "retried":
            task["status"] = "retrying"
            task["error"] = event.error
        elif kind == "finished":
            task.update(status="finished", worker=event.worker, started=event.started or None,
                        ended=event.ended or None, elapsed=event.elapsed, rows=event.rows,
                        bytes=event.bytes, peak_rss=event.peak_rss, error=None)
        elif kind == "failed":
            task.update(status="failed", error=event.error, ended=event.at)
        if event.logs:
            self.logs[event.key] = {"stage": event.stage, "partition": event.partition,
                                    "status": task["status"], "text": event.logs}

    # -- the record ---------------------------------------------------------------------------
    def finish(self, outputs: dict[str, TaskOutput] | None = None,
               error: BaseException | None = None) -> dict[str, Any]:
        """Write the record (and the logs, if any task printed); return the record."""
        ended = time.time()
        status = "success" if error is None else (
            "interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
        tasks = list(self.tasks.values())
        for task in tasks:
            if task["status"] in ("pending", "running", "retrying"):
                task["status"] = "cancelled" if error is not None else task["status"]
        stages = _stages(self.graph, tasks)
        self.record = {
            "version": RECORD_VERSION,
            "job_id": self.job_id,
            "action": self.action,
            "label": self.label,
            "started": self.started,
            "ended": ended,
            "seconds": ended - self.started,
            "status": status,
            "error": _first_line(error) if error is not None else None,
            "host": self.host,
            "pid": self.pid,
            **self.settings,
            "totals": _totals(tasks),
            "output": _output(self.graph, outputs) if outputs is not None else None,
            "stages": stages,
            "workers": _workers(tasks),
            "tasks": tasks,
        }
        folder = job_dir(self.data_root, self.job_id)
        if self.logs:
            logs_dir = os.path.join(folder, "logs")
            os.makedirs(logs_dir, exist_ok=True)
            write_json_atomic(os.path.join(logs_dir, f"{self.action:04d}.json"), self.logs)
        write_json_atomic(self.path, self.record)
        return self.record


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}"


def _span(tasks: Iterable[dict]) -> tuple[float | None, float | None]:
    starts = [t["started"] for t in tasks if t["started"]]
    ends = [t["ended"] for t in tasks if t["ended"]]
    return (min(starts) if starts else None), (max(ends) if ends else None)


def _stages(graph: TaskGraph, tasks: list[dict]) -> list[dict]:
    by_stage: dict[str, list[dict]] = {}
    for task in tasks:
        by_stage.setdefault(task["stage"], []).append(task)
    result = []
    for name, info in graph_stages(graph).items():
        members = by_stage.get(name)
        if not members:
            continue  # not needed by this action: every task it would feed was reused
        started, ended = _span(members)
        result.append({
            "name": name, "kernel": info.kernel, "label": info.label, "deps": info.deps,
            **_totals(members), "started": started, "ended": ended,
            "seconds": (ended - started) if started and ended else 0.0})
    return result


def _totals(tasks: list[dict]) -> dict[str, Any]:
    return {
        "tasks": len(tasks),
        "ran": sum(t["status"] == "finished" for t in tasks),
        "reused": sum(t["status"] == "reused" for t in tasks),
        "failed": sum(t["status"] == "failed" for t in tasks),
        "retries": sum(max(0, t["attempts"] - 1) for t in tasks),
        "rows": sum(t["rows"] for t in tasks),
        "bytes": sum(t["bytes"] for t in tasks),
        "task_seconds": sum(t["elapsed"] for t in tasks),
        "peak_rss": max((t["peak_rss"] for t in tasks), default=0),
    }


def _workers(tasks: list[dict]) -> list[dict]:
    workers: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if not task["worker"]:
            continue
        entry = workers.setdefault(task["worker"], {"worker": task["worker"], "tasks": 0,
                                                    "busy_seconds": 0.0, "peak_rss": 0})
        entry["tasks"] += 1
        if task["started"] and task["ended"]:
            entry["busy_seconds"] += task["ended"] - task["started"]
        entry["peak_rss"] = max(entry["peak_rss"], task["peak_rss"])
    return sorted(workers.values(), key=lambda w: w["worker"])


def _output(graph: TaskGraph, outputs: dict[str, TaskOutput]) -> dict[str, Any]:
    """Rows and bytes of what the action returned (or wrote): its output tasks' results.

    Output partitions that are buckets of one shuffle cover all of its rows together.
    """
    keys = list(dict.fromkeys(s.task for part in graph.outputs for s in part
                              if isinstance(s, TaskSlice)))
    done = [outputs[k] for k in keys if k in outputs]
    return {"partitions": len(graph.outputs), "tasks": len(keys),
            "rows": sum(o.num_rows for o in done), "bytes": sum(o.num_bytes for o in done)}


# -- reading ----------------------------------------------------------------------------------
def list_jobs(data_root: str) -> list[str]:
    """Job ids that have records, oldest first."""
    folders = glob.glob(os.path.join(data_root, "runs", "*", "actions"))
    folders.sort(key=lambda p: os.path.getmtime(p))
    return [os.path.basename(os.path.dirname(p)) for p in folders]


def load_records(data_root: str, job_id: str,
                 running: bool = False) -> list[dict[str, Any]]:
    """The records of a job's actions, in order; those still running only with `running`."""
    records = []
    for path in sorted(glob.glob(os.path.join(job_dir(data_root, job_id), "actions",
                                              "*.json"))):
        try:
            with open(path) as handle:
                record = json.load(handle)
        except (OSError, ValueError):  # just reserved by an action that is starting
            continue
        if isinstance(record, dict) and (running or record.get("status") != "running"):
            records.append(record)
    return records


def load_logs(data_root: str, job_id: str) -> list[dict[str, Any]]:
    """Captured task output of a job: one entry per task that printed, in action order."""
    entries = []
    for path in sorted(glob.glob(os.path.join(job_dir(data_root, job_id), "logs", "*.json"))):
        try:
            with open(path) as handle:
                logs = json.load(handle)
        except (OSError, ValueError):
            continue
        action = int(os.path.basename(path)[:4])
        for key, entry in logs.items():
            entries.append({"action": action, "key": key, **entry})
    return entries
