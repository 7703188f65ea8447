"""A memory-capped cgroup of our own, for R8 and the memory benchmark (needs root).

`MemoryCgroup(limit)` creates a child of this process's memory cgroup (v1 `memory` controller,
or v2 where the parent delegates `memory`), caps it, runs commands inside it and reports the
peak memory the group used and how many of its processes the kernel's OOM killer ended. It
removes the group on exit, killing whatever still runs in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass

from smallpond.limits import memory_cgroup_folders

__all__ = ["MemoryCgroup", "CgroupUnavailable", "cgroup_stats"]


class CgroupUnavailable(RuntimeError):
    """No writable memory cgroup hierarchy here (not root, or no memory controller)."""


def _own_memory_folder() -> tuple[str, int]:
    found = memory_cgroup_folders()
    v1 = [(folder, version) for folder, _, version in found if version == 1]
    if v1 or found:
        return (v1 or [(f, v) for f, _, v in found])[0]
    raise CgroupUnavailable("no cgroup memory controller is mounted")


@dataclass
class CgroupStats:
    peak: int  # bytes, the most the group ever used (page cache included)
    oom_kills: int
    limit: int


def cgroup_stats(folder: str, version: int) -> CgroupStats:
    def read(name: str) -> str:
        with open(os.path.join(folder, name)) as handle:
            return handle.read()

    if version == 1:
        peak = int(read("memory.max_usage_in_bytes"))
        limit = int(read("memory.limit_in_bytes"))
        events = read("memory.oom_control")
    else:
        peak = int(read("memory.peak")) if os.path.exists(os.path.join(folder, "memory.peak")) \
            else int(read("memory.current"))
        limit = int(read("memory.max"))
        events = read("memory.events")
    kills = 0
    for line in events.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            kills = int(value)
    return CgroupStats(peak, kills, limit)


class MemoryCgroup:
    """`with MemoryCgroup(512 << 20) as group: group.run([...])`."""

    def __init__(self, limit: int):
        self.limit = limit
        if os.geteuid() != 0:
            raise CgroupUnavailable("creating a cgroup needs root")
        parent, self.version = _own_memory_folder()
        self.folder = os.path.join(parent, f"smallpond-{uuid.uuid4().hex[:10]}")

    def __enter__(self) -> MemoryCgroup:
        try:
            os.mkdir(self.folder)
            if self.version == 1:
                self._write("memory.limit_in_bytes", self.limit)
                with contextlib.suppress(OSError):  # no swap accounting on this kernel
                    self._write("memory.memsw.limit_in_bytes", self.limit)
            else:
                self._write("memory.max", self.limit)
                with contextlib.suppress(OSError):
                    self._write("memory.swap.max", 0)
        except OSError as error:
            with contextlib.suppress(OSError):
                os.rmdir(self.folder)
            raise CgroupUnavailable(f"cannot create a memory cgroup at {self.folder}: "
                                    f"{error}") from None
        return self

    def _write(self, name: str, value) -> None:
        with open(os.path.join(self.folder, name), "w") as handle:
            handle.write(str(value))

    def _join(self) -> None:
        """Runs in the child between fork and exec: move it into the group."""
        with open(os.path.join(self.folder, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))

    def popen(self, args, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(args, preexec_fn=self._join, **kwargs)

    def run(self, args, timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
        """Like subprocess.run(args, capture_output=True, text=True) inside the group."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        with self.popen(args, **kwargs) as process:
            try:
                out, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
                return subprocess.CompletedProcess(args, -9, out, err)
            return subprocess.CompletedProcess(args, process.returncode, out, err)

    def stats(self) -> CgroupStats:
        return cgroup_stats(self.folder, self.version)

    def pids(self) -> list[int]:
        with open(os.path.join(self.folder, "cgroup.procs")) as handle:
            return [int(line) for line in handle if line.strip()]

    def __exit__(self, *exc) -> None:
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for _ in range(50):
            try:
                os.rmdir(self.folder)
                return
            except OSError:  # the kernel releases a group a moment after its last process
                time.sleep(0.1)
