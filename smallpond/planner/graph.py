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


@dataclass(frozen=True)
class OutputFile:
    """One committed file; `buckets` maps a shuffle destination to its row groups."""

    name: str
    num_rows: int
    num_bytes: int
    buckets: dict[int, tuple[int, ...]] | None = None


@dataclass(frozen=True)
class TaskOutput:
    """What a committed task produced; recorded in its manifest entry."""

    key: str
    directory: str
    files: tuple[OutputFile, ...]
    elapsed: float = 0.0
    reused: bool = False

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)

    @property
    def num_bytes(self) -> int:
        return sum(f.num_bytes for f in self.files)

    def slices(self, bucket: int | None) -> list[FileSlice]:
        result = []
        for f in self.files:
            path = f"{self.directory}/{f.name}"
            if bucket is None:
                result.append(FileSlice(path))
            else:
                groups = (f.buckets or {}).get(bucket, ())
                result.append(FileSlice(path, row_groups=tuple(groups)))
        return result

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "elapsed": self.elapsed,
            "files": [
                {"name": f.name, "num_rows": f.num_rows, "num_bytes": f.num_bytes,
                 "buckets": None if f.buckets is None
                 else {str(k): list(v) for k, v in f.buckets.items()}}
                for f in self.files
            ],
        }

    @classmethod
    def from_json(cls, data: dict, directory: str, reused: bool = False) -> TaskOutput:
        files = tuple(
            OutputFile(f["name"], f["num_rows"], f["num_bytes"],
                       None if f["buckets"] is None
                       else {int(k): tuple(v) for k, v in f["buckets"].items()})
            for f in data["files"]
        )
        return cls(data["key"], directory, files, data.get("elapsed", 0.0), reused)


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
