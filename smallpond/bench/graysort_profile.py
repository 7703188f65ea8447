"""Where a cold GraySort's time goes: one fresh `smallpond graysort --input` process, traced.

The run is graysort_trace.py in a fresh process (the command's own code path, validation on);
the report gives its timeline from process creation to exit (interpreter start, imports, init,
worker start, each stage, commit, shutdown) and, summed over the tasks, each phase's wall time,
CPU time and page faults (fresh memory touched: a fault maps one 4 KiB page).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable

from smallpond.bench.common import machine_info, markdown_table, write_report
from smallpond.bench.fresh import run_fresh

__all__ = ["run_graysort_profile", "timeline", "task_phases"]

def _stage_span(events: list, stage: str) -> tuple[float, float] | None:
    times = [t for t, kind, name, *_ in events if name == stage and kind in ("submitted",
                                                                             "finished")]
    return (min(times), max(times)) if times else None


def timeline(trace: dict, wall: float) -> list[tuple[str, float, float]]:
    """(phase, start, end) in seconds since the process was created, in order."""
    marks = trace["marks"]
    zero = marks["process_created"]
    rows = [("interpreter start (until the command's first line)", zero, marks["first_line"]),
            ("imports of the command", marks["first_line"], marks["imported"]),
            ("init: configuration, fork server spawned", marks["imported"],
             marks["initialized"])]
    if trace.get("server_created") and trace.get("workers_ready"):
        rows.append(("fork server: imports, preload, first worker forked",
                     trace["server_created"], min(trace["workers_ready"])))
    for stage, label in (("graysort-bounds", "sample boundaries (1 task)"),
                         ("graysort-map", "map stage: checksum, route, write index"),
                         ("graysort-sort", "sort stage: gather, sort, write, summarize")):
        span = _stage_span(trace["events"], stage)
        if span:
            rows.append((label, *span))
    last_task = max((t for t, *_ in trace["events"]), default=marks["initialized"])
    rows += [("commit part files, merge summaries", last_task, marks["finished"]),
             ("shutdown (workers, temporary folders)", marks["finished"], marks["shut_down"]),
             ("exit", marks["shut_down"], zero + wall)]
    return [(name, start - zero, end - zero) for name, start, end in rows]


def task_phases(trace: dict) -> dict[tuple[str, str], list[float]]:
    """(kernel, phase) -> [wall s, CPU s, minor faults, new anonymous bytes] summed over the
    tasks (negative anonymous growth, memory given back, counts as 0)."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0])
    for key, phases in trace["tasks"].items():
        kernel = key.split("-")[0].removeprefix("graysort.")
        for phase, values in phases.items():
            values = (list(values) + [0, 0, 0])[:4] if isinstance(values, list) \
                else [values, 0.0, 0, 0]
            values[3] = max(0, values[3])
            entry = totals[(kernel, phase)]
            for i in range(4):
                entry[i] += values[i]
    return dict(totals)


def run_graysort_profile(gigabytes: float = 1.0, partitions: int | None = None,
                         results_dir: str | None = None, input_path: str | None = None,
                         work_dir: str | None = None,
                         notify: Callable[[str], None] = print) -> str:
    """Trace one cold GraySort; write JSON + markdown; return the markdown."""
    from smallpond.bench.graysort import default_results_dir
    from smallpond.graysort.gensort import write_gensort_file

    results_dir = os.path.abspath(results_dir or default_results_dir())
    work = tempfile.mkdtemp(prefix="smallpond-graysort-profile-", dir=work_dir)
    try:
        source = os.path.abspath(input_path) if input_path else os.path.join(work, "input.dat")
        if not input_path:
            write_gensort_file(source, int(gigabytes * 1e7))
        records = os.path.getsize(source) // 100
        trace_path = os.path.join(work, "trace.json")
        env = {**os.environ, **({"SMALLPOND_PARTITIONS": str(partitions)} if partitions else {})}
        run = run_fresh([sys.executable, "-m", "smallpond.bench.graysort_trace", source,
                         os.path.join(work, "out"), os.path.join(work, "root"), trace_path],
                        env=env, cwd=work)
        if run.returncode:
            raise RuntimeError(f"the traced run failed: {run.stderr[-2000:]}")
        with open(trace_path) as handle:
            trace = json.load(handle)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _report(trace, run, records, results_dir, notify)


def _report(trace: dict, run, records: int, results_dir: str, notify) -> str:
    info = machine_info()
    gigabytes = records / 1e7
    steps = timeline(trace, run.seconds)
    phases = task_phases(trace)
    task_cpu = sum(v[1] for v in phases.values())
    fresh = sum(v[3] for v in phases.values())
    lines = [f"# Cold GraySort profile, {gigabytes:g} GB, {trace['partitions']} partitions, "
             f"{info['cpus']} cores, {info['time']}", "",
             f"One fresh `smallpond graysort --input` process (validation on, output "
             f"{'valid' if trace['valid'] else 'INVALID'}): wall {run.seconds:.2f} s, CPU "
             + (f"{run.cpu_seconds:.2f} s" if run.cpu_seconds is not None else "-")
             + f" (tasks {task_cpu:.2f} s), peak PSS {run.peak_bytes / 2**20:.0f} MiB "
             f"({run.peak_anon_bytes / 2**20:.0f} MiB anonymous, the rest the mapped input); "
             f"load average {os.getloadavg()[0]:.1f} after the run.", "",
             "## Timeline (seconds since the process was created; stages overlap a little: "
             "a partition's next task may start before its stage ends)", "",
             markdown_table(["phase", "from", "to", "seconds"],
                            [[n, f"{a:.2f}", f"{b:.2f}", f"{b - a:.2f}"] for n, a, b in steps]),
             "", "## CPU seconds by process (before shutdown)", "",
             markdown_table(["process", "CPU s"],
                            [[name, f"{value:.2f}"] for name, value in
                             trace.get("cpu", {}).items()]
                            + [["tasks (inside the workers)", f"{task_cpu:.2f}"]]),
             "", "## Task phases, summed over all tasks", "",
             markdown_table(
                 ["task", "phase", "wall s", "CPU s", "minor faults", "new anonymous MiB"],
                 [[k, p, f"{v[0]:.2f}", f"{v[1]:.2f}", f"{v[2]:.0f}", f"{v[3] / 2**20:.0f}"]
                  for (k, p), v in sorted(phases.items(), key=lambda kv: -kv[1][1])]),
             "", f"Fresh memory the tasks kept: {fresh / 2**30:.2f} GiB of new resident "
             "anonymous memory (the workers' buffers, kept from task to task). A minor fault is "
             "a fresh 4 KiB page, a fresh 2 MiB page where numpy asks for huge pages, or, for "
             "the mapped input, the mapping of up to 16 page-cache pages. The output goes to "
             "disk with O_DIRECT (no page cache), the shuffle moves 4-byte record positions "
             "(an index file per map task), and the input is mapped from the page cache, not "
             "copied. CPU outside the tasks (interpreter, imports, fork server, driver) is the "
             "rest of the run's CPU."]
    markdown = "\n".join(lines)
    data = {"machine": info, "records": records, "wall": run.seconds, "cpu": run.cpu_seconds,
            "peak_bytes": run.peak_bytes, "trace": trace,
            "timeline": steps, "phases": {f"{k}/{p}": v for (k, p), v in phases.items()}}
    json_path, md_path = write_report(results_dir, f"graysort-profile-{gigabytes:g}gb", data,
                                      markdown)
    notify(f"report written to {md_path}")
    return markdown
