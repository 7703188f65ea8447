"""Run a command as a fresh process and measure what a user would: wall time from spawn to exit,
CPU seconds of its whole process tree, and the peak memory of that tree.

CPU time comes from a cgroup made for the run (cgroup v1 cpuacct or v2, where this user may
create one; None elsewhere): it counts every descendant, including workers that a fork server
reaped, and unlike wall time it barely moves when other jobs share the machine. Peak memory
samples the tree's proportional set size (PSS: a page shared by n processes counts 1/n in each)
every 50 ms, in all and anonymous only (mapped files, like an input read through mmap, are
page cache that every reader of the file shares).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

__all__ = ["FreshRun", "run_fresh", "tree_memory"]


@dataclass
class FreshRun:
    seconds: float
    cpu_seconds: float | None
    peak_bytes: int
    peak_anon_bytes: int
    returncode: int
    stdout: str
    stderr: str


def _pss(pid: int) -> tuple[int, int]:
    """(PSS, anonymous PSS) of a process; RSS twice where smaps_rollup is missing."""
    found = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith(("Pss:", "Pss_Anon:")):
                    name, value = line.split()[:2]
                    found[name] = int(value) * 1024
    except OSError:
        pass
    if "Pss:" in found:
        return found["Pss:"], found.get("Pss_Anon:", found["Pss:"])
    try:
        rss = psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0, 0
    return rss, rss


def tree_memory(pid: int) -> tuple[int, int]:
    """Summed (PSS, anonymous PSS) of a process and its descendants."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    sizes = [_pss(p.pid) for p in processes]
    return sum(s[0] for s in sizes), sum(s[1] for s in sizes)


class _CpuGroup:
    """A cgroup counting the CPU time of the processes put in it; disabled where not allowed."""

    def __init__(self):
        self.path: str | None = None
        self.v2 = False
        name = f"smallpond-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        for parent, v2 in (("/sys/fs/cgroup/cpuacct", False), ("/sys/fs/cgroup", True)):
            marker = "cgroup.controllers" if v2 else "cpuacct.usage"
            if not os.path.exists(os.path.join(parent, marker)):
                continue
            try:
                os.mkdir(os.path.join(parent, name))
            except OSError:
                continue
            self.path, self.v2 = os.path.join(parent, name), v2
            return

    def wrap(self, command: Sequence[str]) -> list[str]:
        if self.path is None:
            return list(command)
        procs = os.path.join(self.path, "cgroup.procs")
        return ["/bin/sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *command]

    def seconds(self) -> float | None:
        if self.path is None:
            return None
        try:
            if self.v2:
                with open(os.path.join(self.path, "cpu.stat")) as handle:
                    usage = dict(line.split() for line in handle)
                return int(usage["usage_usec"]) / 1e6
            with open(os.path.join(self.path, "cpuacct.usage")) as handle:
                return int(handle.read()) / 1e9
        except (OSError, KeyError, ValueError):
            return None

    def remove(self) -> None:
        if self.path is None:
            return
        for _ in range(50):  # the last processes may take a moment to leave
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.05)


def run_fresh(command: Sequence[str], env: dict | None = None, cwd: str | None = None,
              timeout: float = 3600.0, interval: float = 0.05) -> FreshRun:
    """Spawn `command`, wait for it, and measure it (see the module docstring).

    The command finds the time.time() of its spawn in SMALLPOND_TRACE_SPAWNED."""
    group = _CpuGroup()
    peak = peak_anon = 0
    stop = threading.Event()
    try:
        env = {**(os.environ if env is None else env),
               "SMALLPOND_TRACE_SPAWNED": repr(time.time())}
        start = time.perf_counter()
        process = subprocess.Popen(group.wrap(command), env=env, cwd=cwd, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def sample() -> None:
            nonlocal peak, peak_anon
            while not stop.is_set():
                total, anonymous = tree_memory(process.pid)
                peak, peak_anon = max(peak, total), max(peak_anon, anonymous)
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        return FreshRun(seconds, group.seconds(), peak, peak_anon, process.returncode, stdout,
                        stderr)
    finally:
        stop.set()
        group.remove()
