"""Run one task where it is scheduled: kernel, manifest entry, atomic commit, typed errors.

This is the only code a worker runs; both runners call `execute_task`.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

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
from smallpond.io.disk import is_disk_full, mount_point
from smallpond.io.files import FileSlice, forget_listings
from smallpond.kernels import get_kernel
from smallpond.kernels.context import TaskContext
from smallpond.planner.graph import OutputFile, Task, TaskOutput
from smallpond.runners.capture import TaskCapture, attach_output
from smallpond.runners.faults import InjectedFault, maybe_fail
from smallpond.runners.liveness import HEARTBEATS, beating

__all__ = [
    "ExecSettings",
    "execute_task",
    "load_committed",
    "changed_file",
    "corrupt_file",
    "file_checksum",
    "remove_attempt_leftovers",
    "typed_error",
    "MANIFEST_NAME",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "_task.json"
CHECKSUM_BLOCK = 8 << 20


@dataclass(frozen=True)
class ExecSettings:
    """What a worker needs to know about the job: folders, budget, threads, forced rerun.

    Attempts stage and spill under `scratch_dir`, the session's own folder (several sessions
    may share a data_root); committed outputs go to `data_root/tasks/<key>`. An attempt with
    an `attempt` id beats under `scratch_dir/heartbeats/` (liveness.py) and ends itself when
    the driver's lease stops for `orphan_after` seconds; `fault_prob` injects failures.
    """

    data_root: str
    scratch_dir: str
    memory_limit: int
    threads: int
    force: bool = False
    sys_path: tuple[str, ...] = ()  # the driver's: user functions import what the driver can
    attempt: str = ""
    attempt_number: int = 1
    heartbeat_interval: float = 5.0
    orphan_after: float | None = None
    fault_prob: float = 0.0
    fault_seed: int = 0

    def final_dir(self, key: str) -> str:
        return os.path.join(self.data_root, "tasks", key)


def load_committed(data_root: str, key: str, check_files: bool = True,
                   quiet: bool = False) -> TaskOutput | None:
    """The manifest entry of a committed task, or None when it has not committed or its entry
    cannot be trusted: a manifest that is malformed or tampered with (its digest), or a file
    that is missing or changed since commit (size, mtime). Such an entry is run again."""
    directory = os.path.join(data_root, "tasks", key)
    try:
        data = read_json(os.path.join(directory, MANIFEST_NAME))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, OSError) as error:
        logger.warning("ignoring the unreadable manifest of task %s: %s", key, error)
        return None
    try:
        output = TaskOutput.from_json(data, directory, reused=True)
    except ValueError as error:
        logger.warning("ignoring the manifest of task %s: %s", key, error)
        return None
    if output.key != key:
        logger.warning("ignoring the manifest of task %s: it names task %s", key, output.key)
        return None
    if check_files:
        problem = changed_file(output)
        if problem:
            (logger.debug if quiet else logger.warning)("task %s will run again: %s", key,
                                                         problem)
            return None
    return output


def changed_file(output: TaskOutput) -> str | None:
    """Why a committed output cannot be reused as recorded (None when its files look intact)."""
    for f in output.files:
        path = output.path(f)
        try:
            stat = os.stat(path)
        except OSError:
            return f"{path} is missing"
        if stat.st_size != f.num_bytes:
            return f"{path} is {stat.st_size} bytes, {f.num_bytes} at commit"
        if f.mtime_ns is not None and stat.st_mtime_ns != f.mtime_ns:
            return f"{path} was modified after commit"
    return None


def corrupt_file(output: TaskOutput) -> str | None:
    """Like `changed_file`, and also compare each file's checksum with the one recorded."""
    problem = changed_file(output)
    if problem:
        return problem
    for f in output.files:
        if f.checksum is not None and file_checksum(output.path(f)) != f.checksum:
            return f"{output.path(f)} does not match its recorded checksum"
    return None


def file_checksum(path: str) -> str:
    """The file's XXH3-64 digest (~15 GB/s: cheap next to writing the file)."""
    digest = xxhash.xxh3_64()
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(CHECKSUM_BLOCK):
            digest.update(block)
    return f"xxh3_64:{digest.hexdigest()}"


def _attempt_folders(scratch_dir: str, key: str) -> list[str]:
    return [path for folder in ATTEMPT_FOLDERS
            for path in glob.glob(os.path.join(scratch_dir, folder, f"{glob.escape(key)}.*"))]


ATTEMPT_FOLDERS = ("staging", "spill", HEARTBEATS)  # what an attempt makes: `<key>.<id>`


def remove_attempt_leftovers(scratch_dir: str, key: str) -> None:
    """Remove the staging and spill folders of a task's attempts whose process died before
    cleaning up (never a committed output: those live under data_root/tasks/)."""
    for leftover in _attempt_folders(scratch_dir, key):
        if os.path.isdir(leftover):
            remove_tree(leftover)
        else:  # a heartbeat file
            with contextlib.suppress(OSError):
                os.remove(leftover)


def execute_task(task: Task, inputs: Sequence[Sequence[FileSlice]],
                 settings: ExecSettings) -> TaskOutput:
    """Run `task` on resolved inputs and commit its output atomically; idempotent."""
    with beating(settings.scratch_dir, settings.attempt, settings.heartbeat_interval,
                 settings.orphan_after):
        return _execute(task, inputs, settings)


def _inject(settings: ExecSettings, task: Task, point: str) -> None:
    maybe_fail(settings.fault_prob, settings.fault_seed, task.key, settings.attempt_number,
               point, task.describe())


def _execute(task: Task, inputs: Sequence[Sequence[FileSlice]],
             settings: ExecSettings) -> TaskOutput:
    replace = settings.force
    if not settings.force:  # (the driver already said why an entry is not reused)
        done = load_committed(settings.data_root, task.key, quiet=True)
        if done is not None:
            return done
        replace = os.path.exists(settings.final_dir(task.key))  # an entry we cannot trust
    for entry in settings.sys_path:
        if entry not in sys.path:
            sys.path.append(entry)
    forget_listings(s.path for part in inputs for s in part)
    started = time.perf_counter()
    staging = new_staging_dir(os.path.join(settings.scratch_dir, "staging"), task.key)
    spill = os.path.join(settings.scratch_dir, "spill", os.path.basename(staging))
    ctx = TaskContext(output_dir=staging, spill_dir=spill, memory_limit=settings.memory_limit,
                      threads=settings.threads, stage=task.stage, partition=task.partition)
    capture = TaskCapture()  # what the kernel prints and logs, its worker, times and peak memory
    try:
        _inject(settings, task, "before")
        kernel = get_kernel(task.kernel)
        with capture:
            files = kernel(task.params, inputs, ctx)
        outputs = tuple(_committed_file(staging, f) for f in files)
        _inject(settings, task, "after")
        output = TaskOutput(task.key, settings.final_dir(task.key), outputs,
                            time.perf_counter() - started, **capture.fields())
        write_json_atomic(os.path.join(staging, MANIFEST_NAME), output.to_json())
        if not commit_dir(staging, output.directory, replace=replace):
            return load_committed(settings.data_root, task.key) or output
        return output
    except BaseException as error:
        remove_tree(staging)
        if isinstance(error, (KeyboardInterrupt, SystemExit, InjectedFault)):
            raise
        raise attach_output(typed_error(error, task, inputs, ctx), capture.text) from None
    finally:
        remove_tree(spill)


def _committed_file(staging: str, described: dict) -> OutputFile:
    """A kernel's description of a file it wrote, plus what reuse checks later."""
    path = os.path.join(staging, described["name"])
    stat = os.stat(path)
    checksum = described.get("checksum") or file_checksum(path)
    return OutputFile(described["name"], described["num_rows"], stat.st_size,
                      described.get("buckets"), stat.st_mtime_ns, checksum)


def typed_error(error: BaseException, task: Task, inputs, ctx: TaskContext | None = None,
                ) -> SmallpondError:
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
    if is_disk_full(error):
        where = getattr(error, "filename", None) or (ctx.output_dir if ctx else None)
        mount = mount_point(where) if where else None
        return DiskFullError(f"no space left on device (mount {mount}) while running "
                             f"{task.describe()}: {error}", mount=mount, path=where)
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        budget = f" (budget {ctx.memory_limit >> 20} MiB per task)" if ctx else ""
        return OutOfMemoryError(
            f"{task.describe()} ran out of memory{budget}: {error}. Give tasks more memory "
            "(memory_per_task=...), use more partitions, or fewer workers per machine.")
    return TaskError(f"{task.describe()} failed: {type(error).__name__}: {error}",
                     stage=task.stage, partition=task.partition, inputs=paths,
                     remote_traceback=trace)
