"""Shared benchmark helpers: timing, peak memory of a process tree, machine facts, reports."""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

__all__ = ["PeakMemory", "machine_info", "timed", "median_time", "write_report", "markdown_table"]


class PeakMemory:
    """Samples the summed RSS of this process and its children (workers) every 50 ms."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for process in [me, *me.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Measurement:
    name: str
    seconds: float
    peak_bytes: int = 0
    extra: dict = field(default_factory=dict)


@contextmanager
def timed(name: str, results: list[Measurement], **extra):
    with PeakMemory() as memory:
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
    results.append(Measurement(name, seconds, memory.peak, extra))


def median_time(function: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_info() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(folder: str, name: str, data: dict, markdown: str) -> tuple[str, str]:
    os.makedirs(folder, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = os.path.join(folder, f"{name}-{stamp}.json")
    md_path = os.path.join(folder, f"{name}-{stamp}.md")
    with open(json_path, "w") as handle:
        json.dump(data, handle, indent=2, default=str)
    with open(md_path, "w") as handle:
        handle.write(markdown + "\n")
    return json_path, md_path
