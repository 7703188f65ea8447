"""What observing a job costs: run records, progress, per-task capture, schemas before running.

The same jobs run in one warm session with the observers on (as every action runs) and off
(the runner called directly, as before the observers existed), interleaved, medians reported
with their ratio. Capture is timed in-process per task; schema inference per plan.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import smallpond
import smallpond.report.job as job_module
from smallpond.bench.common import PeakMemory, machine_info, markdown_table, write_report
from smallpond.runners.capture import TaskCapture

__all__ = ["run_observe_benchmark"]


@contextlib.contextmanager
def _observers_off():
    original = job_module.run_job

    def plain(session, graph, force=frozenset(), what=None):
        return session.runner.run(graph, force, session._on_event)

    job_module.run_job = plain
    try:
        yield
    finally:
        job_module.run_job = original


def _interleaved(on: Callable[[], object], off: Callable[[], object],
                 repeat: int) -> tuple[list[float], list[float]]:
    times_on, times_off = [], []
    for _ in range(repeat):
        for target, times in ((on, times_on), (off, times_off)):
            start = time.perf_counter()
            target()
            times.append(time.perf_counter() - start)
    return times_on, times_off


def _capture_micro(count: int = 2000) -> float:
    start = time.perf_counter()
    for _ in range(count):
        with TaskCapture():
            pass
    return (time.perf_counter() - start) / count


def run_observe_benchmark(repeat: int = 15, tasks: int = 64,
                          results_dir: str = "benchmarks/results") -> str:
    """Measure; write JSON + markdown reports under `results_dir`; return the markdown."""
    work = tempfile.mkdtemp(prefix="smallpond-bench-observe-")
    counter = iter(range(10**9))
    rows, data = [], {"machine": machine_info(), "repeat": repeat, "tasks": tasks}
    try:
        with PeakMemory() as memory:
            sp = smallpond.init(data_root=os.path.join(work, "data"), progress=False)

            def job(n: int) -> Callable[[], object]:
                def run():
                    value = next(counter)
                    df = sp.from_items(list(range(n)))
                    if n > 1:
                        df = df.repartition(n, by_rows=True)
                    return sp.partial_sql(f"SELECT item + {value} AS x FROM {{0}}",
                                          df).to_arrow()
                return run

            def off(run):
                def call():
                    with _observers_off():
                        return run()
                return call

            def forced(run):
                def call():
                    sp.progress = True
                    try:
                        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
                            return run()
                    finally:
                        sp.progress = False
                return call

            job(1)()  # warm the workers
            for name, n in (("1-task job", 1), (f"{tasks}-task job", tasks)):
                on_times, off_times = _interleaved(job(n), off(job(n)), repeat)
                forced_times, _ = _interleaved(forced(job(n)), lambda: None, max(3, repeat // 3))
                on, plain = statistics.median(on_times), statistics.median(off_times)
                shown = statistics.median(forced_times)
                data[name] = {"on_s": on_times, "off_s": off_times, "progress_forced_s":
                              forced_times}
                rows.append([name, f"{plain * 1000:.1f} ms", f"{on * 1000:.1f} ms",
                             f"{on / plain:.2f}x", f"{(on - plain) * 1000:+.1f} ms",
                             f"{shown * 1000:.1f} ms"])
            per_capture = _capture_micro()
            data["capture_s"] = per_capture
            df = sp.from_items([{"a": i, "b": str(i)} for i in range(10)])
            plan = sp.partial_sql("SELECT a, count(*) AS n FROM {0} GROUP BY a",
                                  df.repartition(4, hash_by="a").filter("a > 1"))
            start = time.perf_counter()
            plan.schema  # noqa: B018 - the cost of knowing it
            first = time.perf_counter() - start
            start = time.perf_counter()
            repr(plan)
            cached = time.perf_counter() - start
            data["schema_first_s"], data["schema_cached_s"] = first, cached
            sp.shutdown()
        data["peak_bytes"] = memory.peak
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = data["machine"]
    markdown = (
        f"# observability overhead ({info['cpus']} cores, {info['memory_gib']} GiB, "
        f"{info['time']})\n\nMedians of {repeat} interleaved runs in one warm session; "
        "'off' calls the runner directly (no run record, no progress), 'on' is every "
        "action as users run it (progress off by itself: no terminal), 'progress forced' also "
        "draws the progress table (final state to /dev/null).\n\n"
        + markdown_table(["job", "observers off", "observers on", "ratio", "difference",
                          "progress forced"], rows)
        + f"\n\nPer-task capture of output, times and peak memory (in the worker): "
          f"{per_capture * 1e6:.0f} µs. Schema of a 4-stage plan before running: "
          f"{first * 1000:.1f} ms the first time, {cached * 1000:.2f} ms cached (repr). "
          f"Peak memory of the session and its workers: {data['peak_bytes'] / 2**20:.0f} MiB.")
    write_report(results_dir, "observe", data, markdown)
    return markdown
