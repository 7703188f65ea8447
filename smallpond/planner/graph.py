"""The task graph: plain picklable data with no runner code inside.

A task reads, for each of its logical inputs, an ordered list of sources: a user's file
(``FileSlice``) or the output of another task (``TaskSlice``, optionally one shuffle bucket of
it). Runners resolve TaskSlices into FileSlices once the producing task has committed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

from smallpond.io.files import FileSlice

__all__ = [
    "TaskSlice",
    "Source",
    "Task",
    "OutputFile",
    "TaskOutput",
    "TaskGraph",
    "task_key",
    "manifest_digest",
]


@dataclass(frozen=True)
class TaskSlice:
    """All output files of a task, or only the row groups of one shuffle bucket."""

    task: str
    bucket: int | None = None


Source = Union[FileSlice, TaskSlice]  # noqa: UP007 - a runtime alias, py3.10 safe


@dataclass(frozen=True)
class Task:
    """One kernel run on one partition: what it computes and what it reads."""

    key: str
    stage: str
    partition: int
    kernel: str
    params: dict[str, Any]
    inputs: tuple[tuple[Source, ...], ...]

    @property
    def deps(self) -> frozenset[str]:
        return frozenset(s.task for part in self.inputs for s in part if isinstance(s, TaskSlice))

    def describe(self) -> str:
        return f"{self.stage}[{self.partition}]"

    def summary(self) -> str:
        """What the task runs, for error messages: the user's function or SQL."""
        if self.kernel == "python":
            return f"function {self.params.get('func_name')!r}"
        sql = self.params.get("display_sql") or self.params.get("sql")
        if sql:
            text = " ".join(str(sql).split())
            return f"SQL: {text[:117] + '...' if len(text) > 120 else text}"
        return f"kernel {self.kernel}"


@dataclass(frozen=True)
class OutputFile:
    """One committed file; `buckets` maps a shuffle destination to its row groups.

    `mtime_ns` and `checksum` are recorded at commit, so that a reused file that changed since
    (rewritten in place, truncated, flipped bytes) is detected and its task run again.
    """

    name: str
    num_rows: int
    num_bytes: int
    buckets: dict[int, tuple[int, ...]] | None = None
    mtime_ns: int | None = None
    checksum: str | None = None  # "<algorithm>:<hex digest>"


@dataclass(frozen=True)
class TaskOutput:
    """What a committed task produced; recorded in its manifest entry.

    The fields after `reused` describe the run that produced it (not in the manifest): the
    worker (`host:pid`), wall-clock start and end of its kernel, the worker's peak resident
    bytes during the task, and what the kernel printed or logged.
    """

    key: str
    directory: str
    files: tuple[OutputFile, ...]
    elapsed: float = 0.0
    reused: bool = False
    worker: str = ""
    started: float = 0.0
    ended: float = 0.0
    peak_rss: int = 0
    logs: str = ""

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)

    @property
    def num_bytes(self) -> int:
        return sum(f.num_bytes for f in self.files)

    def path(self, file: OutputFile) -> str:
        return f"{self.directory}/{file.name}"

    def slices(self, bucket: int | None) -> list[FileSlice]:
        result = []
        for f in self.files:
            if bucket is None:
                result.append(FileSlice(self.path(f)))
            else:
                groups = (f.buckets or {}).get(bucket, ())
                result.append(FileSlice(self.path(f), row_groups=tuple(groups)))
        return result

    def to_json(self) -> dict:
        data = {
            "key": self.key,
            "elapsed": self.elapsed,
            "files": [
                {"name": f.name, "num_rows": f.num_rows, "num_bytes": f.num_bytes,
                 "mtime_ns": f.mtime_ns, "checksum": f.checksum,
                 "buckets": None if f.buckets is None
                 else {str(k): list(v) for k, v in f.buckets.items()}}
                for f in self.files
            ],
        }
        data["digest"] = manifest_digest(data)
        return data

    @classmethod
    def from_json(cls, data: dict, directory: str, reused: bool = False) -> TaskOutput:
        """Parse a manifest; ValueError when it is malformed or its digest does not match."""
        try:
            if data.get("digest") != manifest_digest(data):
                raise ValueError("the manifest's digest does not match its content")
            files = tuple(
                OutputFile(f["name"], int(f["num_rows"]), int(f["num_bytes"]),
                           None if f["buckets"] is None
                           else {int(k): tuple(v) for k, v in f["buckets"].items()},
                           f.get("mtime_ns"), f.get("checksum"))
                for f in data["files"]
            )
            return cls(data["key"], directory, files, data.get("elapsed", 0.0), reused)
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"malformed manifest: {error!r}") from None


def manifest_digest(data: dict) -> str:
    """A digest of a manifest's content (without its own digest field): tampering shows."""
    body = {k: v for k, v in data.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"__bytes__": hashlib.sha256(value).hexdigest()}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (FileSlice, TaskSlice)):
        return {type(value).__name__: _canonical(vars(value))}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def task_key(kernel: str, params: dict[str, Any], input_tokens: Iterable[Any]) -> str:
    """Deterministic identity of a task: a hash of its kernel, parameters and input identities."""
    payload = json.dumps(
        {"kernel": kernel, "params": _canonical(params), "inputs": _canonical(list(input_tokens))},
        sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(payload.encode()).hexdigest()[:24]
    return f"{kernel}-{digest}"


@dataclass
class TaskGraph:
    """Tasks in topological order plus, per output partition, the sources to read."""

    tasks: dict[str, Task] = field(default_factory=dict)
    outputs: list[tuple[Source, ...]] = field(default_factory=list)

    def add(self, task: Task) -> Task:
        self.tasks.setdefault(task.key, task)
        return self.tasks[task.key]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks.values())

    def __len__(self) -> int:
        return len(self.tasks)

    def stages(self) -> dict[str, list[Task]]:
        result: dict[str, list[Task]] = {}
        for task in self.tasks.values():
            result.setdefault(task.stage, []).append(task)
        return result

    def dependents(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {key: [] for key in self.tasks}
        for task in self.tasks.values():
            for dep in task.deps:
                if dep in result:
                    result[dep].append(task.key)
        return result
