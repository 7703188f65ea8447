"""Run one task where it is scheduled: kernel, manifest entry, atomic commit, typed errors.

This is the only code a worker runs; both runners call `execute_task`.
"""

from __future__ import annotations

import errno
import glob
import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

from smallpond.errors import (
    DiskFullError,
    OutOfMemoryError,
    SmallpondError,
    TaskError,
)
from smallpond.io.commit import (
    commit_dir,
    new_staging_dir,
    read_json,
    remove_tree,
    write_json_atomic,
)
from smallpond.io.files import FileSlice
from smallpond.kernels import get_kernel
from smallpond.kernels.context import TaskContext
from smallpond.planner.graph import OutputFile, Task, TaskOutput

__all__ = ["ExecSettings", "execute_task", "load_committed", "MANIFEST_NAME"]

MANIFEST_NAME = "_task.json"


@dataclass(frozen=True)
class ExecSettings:
    """What a worker needs to know about the job: folders, budget, threads, forced rerun."""

    data_root: str
    memory_limit: int
    threads: int
    force: bool = False

    def final_dir(self, key: str) -> str:
        return os.path.join(self.data_root, "tasks", key)


def load_committed(data_root: str, key: str) -> TaskOutput | None:
    """The manifest entry of a committed task, or None when it has not committed."""
    directory = os.path.join(data_root, "tasks", key)
    try:
        data = read_json(os.path.join(directory, MANIFEST_NAME))
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return TaskOutput.from_json(data, directory, reused=True)


ATTEMPT_FOLDERS = ("staging", "spill")  # what execute_task makes per attempt: `<key>.<id>`


def remove_attempt_leftovers(data_root: str, key: str) -> None:
    """Remove the staging and spill folders of a task's attempts whose process died before
    cleaning up (never a committed output: those live under tasks/)."""
    for folder in ATTEMPT_FOLDERS:
        for leftover in glob.glob(os.path.join(data_root, folder, f"{glob.escape(key)}.*")):
            remove_tree(leftover)


def execute_task(task: Task, inputs: Sequence[Sequence[FileSlice]],
                 settings: ExecSettings) -> TaskOutput:
    """Run `task` on resolved inputs and commit its output atomically; idempotent."""
    if not settings.force:
        done = load_committed(settings.data_root, task.key)
        if done is not None:
            return done
    started = time.perf_counter()
    staging = new_staging_dir(os.path.join(settings.data_root, "staging"), task.key)
    spill = os.path.join(settings.data_root, "spill", os.path.basename(staging))
    ctx = TaskContext(output_dir=staging, spill_dir=spill, memory_limit=settings.memory_limit,
                      threads=settings.threads, stage=task.stage, partition=task.partition)
    try:
        kernel = get_kernel(task.kernel)
        files = kernel(task.params, inputs, ctx)
        outputs = tuple(
            OutputFile(f["name"], f["num_rows"], os.path.getsize(os.path.join(staging, f["name"])),
                       f.get("buckets"))
            for f in files)
        output = TaskOutput(task.key, settings.final_dir(task.key), outputs,
                            time.perf_counter() - started)
        write_json_atomic(os.path.join(staging, MANIFEST_NAME), output.to_json())
        if not commit_dir(staging, output.directory, replace=settings.force):
            return load_committed(settings.data_root, task.key) or output
        return output
    except BaseException as error:
        remove_tree(staging)
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        raise _typed(error, task, inputs) from None
    finally:
        remove_tree(spill)


def _typed(error: BaseException, task: Task, inputs) -> SmallpondError:
    """Add the task's stage, partition, inputs and traceback to whatever went wrong."""
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    paths = [s.path for part in inputs for s in part]
    if isinstance(error, SmallpondError):
        if isinstance(error, TaskError):
            error.stage = error.stage or task.stage
            error.partition = task.partition if error.partition is None else error.partition
            error.inputs = error.inputs or paths
            error.remote_traceback = trace
        return error
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        mount = getattr(error, "filename", None)
        return DiskFullError(f"no space left on device while running {task.describe()} "
                             f"(at {mount}): {error}", mount=mount)
    if isinstance(error, MemoryError) or "Out of Memory" in str(error):
        return OutOfMemoryError(f"{task.describe()} ran out of memory: {error}")
    return TaskError(f"{task.describe()} failed: {type(error).__name__}: {error}",
                     stage=task.stage, partition=task.partition, inputs=paths,
                     remote_traceback=trace)
