"""GraySort side by side: `smallpond graysort` vs DuckDB ORDER BY, Polars (and smallpond 0.15
when asked), every system as a fresh process on the same gensort input.

Cold table: each run is one fresh process timed from outside, as a user times a command.
Warm table: one fresh process per run sorts twice; the second sort is timed inside it.
Rounds interleave the systems (the order rotates each round) and the tables report medians and
the spread. Every output is checked apart, untimed, by the built-in valsort against the input's
record count and checksum. Nothing is written outside a fresh work folder, which is removed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from smallpond.bench.common import machine_info, markdown_table, write_report
from smallpond.bench.fresh import run_fresh

__all__ = ["run_graysort_benchmark", "default_results_dir"]

COLD_CLOCK = (
    "**Cold** (what a user sees): wall time from spawning the command until it exits, "
    "measured from outside: interpreter start, imports, worker start, reading the input, "
    "sorting, writing the output; for smallpond also its default validation (input and "
    "output checksums, order, merged summaries) and the commit of the part files. The input "
    "file is in the page cache for every system (each run reads the same file). CPU s: all "
    "processes of the run together (a cgroup per run; '-' where none can be made). Memory: "
    "peak proportional set size (PSS) of the run's process tree, sampled every 50 ms, and its "
    "anonymous part (the rest is mapped files: smallpond maps the input from the page cache).")
WARM_CLOCK = (
    "**Warm**: one fresh process per run sorts twice; the second sort is timed inside the "
    "process around the sort call (imports done, smallpond's workers up, memory touched once "
    "by the first sort). Memory: peak PSS of the whole process (both sorts).")


@dataclass
class _System:
    name: str
    command: Callable[[str, str], list[str]]  # (output folder, scratch folder) -> argv
    env: dict | None = None
    warm: Callable[[str, str], list[str]] | None = None
    creates_output: bool = False  # the command refuses an existing output folder
    results: dict[str, list[dict]] = field(default_factory=lambda: {"cold": [], "warm": []})


def default_results_dir() -> str:
    """benchmarks/results of the source checkout this package runs from, else
    ~/.smallpond/bench-results (never a path relative to the current directory)."""
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.isdir(os.path.join(checkout, "benchmarks")):
        return os.path.join(checkout, "benchmarks", "results")
    return os.path.join(os.path.expanduser("~"), ".smallpond", "bench-results")


def _smallpond_cli() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "smallpond")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "smallpond.cli"]


def _cli_command(source: str, options: list[str], out: str, scratch: str) -> list[str]:
    return [*_smallpond_cli(), "graysort", "--input", source, "--output", out,
            "--data-root", os.path.join(scratch, "root"), *options]


def _peer_command(system: str, source: str, extra: list[str], out: str, scratch: str
                  ) -> list[str]:
    if system == "smallpond":
        extra = [*extra, "--data-root", os.path.join(scratch, "root")]
    return [sys.executable, "-m", "smallpond.bench.graysort_peers", system, source, out, *extra]


def _systems(source: str, runners, peers, partitions: int | None, notify) -> list[_System]:
    systems = []
    twice = ["--runs", "2"]
    for runner in runners:
        options = ["--runner", runner] + (["--partitions", str(partitions)] if partitions else [])
        for flags in ([], ["--no-validate"]):
            label = "validation on" if not flags else "--no-validate"
            # warm: the same job through graysort.run, twice in one session (local runner)
            warm = partial(_peer_command, "smallpond", source, twice + flags) \
                if runner == "local" else None
            systems.append(_System(f"smallpond graysort ({runner}, {label})",
                                   partial(_cli_command, source, options + flags), warm=warm,
                                   creates_output=True))
    if "duckdb" in peers:
        systems.append(_System("DuckDB ORDER BY (a script)",
                               partial(_peer_command, "duckdb", source, []),
                               warm=partial(_peer_command, "duckdb", source, twice)))
    if "polars" in peers:
        systems.append(_System("Polars sort (a script)",
                               partial(_peer_command, "polars", source, []),
                               warm=partial(_peer_command, "polars", source, twice)))
    if "smallpond015" in peers:
        from smallpond.bench.graysort_sp015 import sp015_python

        python, why = sp015_python(notify)
        if python is None:
            notify(why)
        else:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            parts = partitions or 2 * (os.cpu_count() or 1)
            systems.append(_System("smallpond 0.15 (its own venv)",
                                   partial(_sp015, python, source, parts, 0), env=env,
                                   warm=partial(_sp015, python, source, parts, 2)))
    return systems


def _sp015(python: str, source: str, partitions: int, runs: int, out: str, scratch: str
           ) -> list[str]:
    from smallpond.bench.graysort_sp015 import sp015_command

    return sp015_command(python, scratch, source, out, partitions, runs)


def _validate(folder: str, records: int, checksum: int) -> str:
    from smallpond.graysort.valsort import merge, summarize_file

    try:
        files = sorted(f for f in os.listdir(folder) if f.endswith(".dat"))
    except OSError:
        return "INVALID: no output folder"
    summary = merge(summarize_file(os.path.join(folder, f)) for f in files)
    if summary.records != records:
        return f"INVALID: {summary.records} records"
    if summary.checksum != checksum:
        return "INVALID: checksum differs"
    if summary.unordered:
        return f"INVALID: {summary.unordered} unordered"
    return "valid"


def _cold_run(system: _System, work: str, records: int, checksum: int) -> dict:
    scratch = tempfile.mkdtemp(prefix="run-", dir=work)
    out = os.path.join(scratch, "out")
    if not system.creates_output:
        os.makedirs(out)
    load = os.getloadavg()[0]
    try:
        run = run_fresh(system.command(out, scratch), env=system.env, cwd=scratch)
        status = _validate(out, records, checksum) if run.returncode == 0 else \
            f"FAILED ({run.returncode}): {run.stderr.strip()[-300:]}"
        return {"seconds": run.seconds, "cpu_seconds": run.cpu_seconds,
                "peak_bytes": run.peak_bytes, "peak_anon_bytes": run.peak_anon_bytes,
                "status": status, "load": load}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _warm_run(system: _System, work: str, records: int, checksum: int) -> dict:
    scratch = tempfile.mkdtemp(prefix="warm-", dir=work)
    out = os.path.join(scratch, "out")
    os.makedirs(out)
    load = os.getloadavg()[0]
    try:
        run = run_fresh(system.warm(out, scratch), env=system.env, cwd=scratch)
        times = {int(k): float(v) for _, k, v in (line.split() for line in run.stdout.splitlines()
                                                  if line.startswith("seconds "))}
        if run.returncode or 1 not in times:
            status = f"FAILED ({run.returncode}): {run.stderr.strip()[-300:]}"
        else:
            status = next((s for s in (_validate(os.path.join(out, f"run-{k}"), records, checksum)
                                       for k in (0, 1)) if s != "valid"), "valid")
        return {"seconds": times.get(1, float("nan")), "first_seconds": times.get(0),
                "cpu_seconds": None, "peak_bytes": run.peak_bytes,
                "peak_anon_bytes": run.peak_anon_bytes, "status": status, "load": load}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _table(systems: list[_System], mode: str, reference: str, megabytes: float) -> str:
    medians = {}
    rows = []
    for system in systems:
        runs = [r for r in system.results[mode] if r["status"] == "valid"]
        if runs:
            medians[system.name] = statistics.median(r["seconds"] for r in runs)
    base = medians.get(reference)
    for system in systems:
        all_runs = system.results[mode]
        if not all_runs:
            continue
        runs = [r for r in all_runs if r["status"] == "valid"]
        if not runs:
            rows.append([system.name, "-", "-", "-", "-", "-", "-", "-",
                         f"0/{len(all_runs)}: {all_runs[-1]['status'][:120]}"])
            continue
        seconds = [r["seconds"] for r in runs]
        median = statistics.median(seconds)
        cpu = [r["cpu_seconds"] for r in runs if r["cpu_seconds"] is not None]
        rows.append([
            system.name, f"{median:.2f}", f"{min(seconds):.2f}-{max(seconds):.2f}",
            f"{median / base:.2f}" if base else "-",
            f"{statistics.median(cpu):.2f}" if cpu else "-",
            f"{statistics.median(r['peak_bytes'] for r in runs) / 2**20:.0f}",
            f"{statistics.median(r.get('peak_anon_bytes', 0) for r in runs) / 2**20:.0f}",
            f"{megabytes / median:.0f}", f"{len(runs)}/{len(all_runs)} valid"])
    return markdown_table(["system", "median s", "min-max s", f"time / {reference.split()[0]}",
                           "CPU s", "peak MiB", "of which anonymous", "MB/s", "outputs"], rows)


def run_graysort_benchmark(gigabytes: float = 1.0, runners: tuple[str, ...] = ("local",),
                           peers: tuple[str, ...] = ("duckdb", "polars"),
                           partitions: int | None = None, rounds: int = 3,
                           results_dir: str | None = None, modes: tuple[str, ...] = ("cold",
                                                                                    "warm"),
                           pause: float = 2.0, work_dir: str | None = None,
                           input_path: str | None = None,
                           notify: Callable[[str], None] = print) -> str:
    """Run the rounds, write JSON + markdown (+ a PNG with matplotlib) and return the markdown.

    `input_path`: sort this .dat file (never modified) instead of generating `gigabytes`.
    """
    from smallpond.graysort.gensort import write_gensort_file
    from smallpond.graysort.valsort import summarize_file

    results_dir = os.path.abspath(results_dir or default_results_dir())
    work = tempfile.mkdtemp(prefix="smallpond-graysort-bench-", dir=work_dir)
    try:
        if input_path:
            source = os.path.abspath(input_path)
            summary = summarize_file(source)
            records, checksum = summary.records, summary.checksum
        else:
            source = os.path.join(work, "input.dat")
            records = int(gigabytes * 1e7)
            checksum = write_gensort_file(source, records)
        systems = _systems(source, runners, peers, partitions, notify)
        for mode in modes:
            for round_ in range(rounds):
                turn = [s for s in systems if mode == "cold" or s.warm is not None]
                shift = round_ % max(1, len(turn))
                for system in turn[shift:] + turn[:shift]:
                    run = (_cold_run if mode == "cold" else _warm_run)(system, work, records,
                                                                        checksum)
                    run["round"] = round_
                    system.results[mode].append(run)
                    notify(f"{mode} round {round_ + 1}/{rounds}: {system.name}: "
                           f"{run['seconds']:.2f} s, {run['status']}")
                    time.sleep(pause)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _report(systems, records, gigabytes if not input_path else records / 1e7, rounds,
                   modes, pause, results_dir, notify)


def _report(systems, records, gigabytes, rounds, modes, pause, results_dir, notify) -> str:
    info = machine_info()
    megabytes = records * 100 / 1e6
    loads = [r["load"] for s in systems for m in modes for r in s.results[m]]
    reference = next((s.name for s in systems if s.name.startswith("DuckDB")), systems[0].name)
    sections = [f"# GraySort {gigabytes:g} GB ({records} records), {info['cpus']} cores, "
                f"{info['memory_gib']} GiB, {info['time']}", ""]
    if "cold" in modes:
        sections += ["## Cold: each run a fresh process", "",
                     _table(systems, "cold", reference, megabytes), "", COLD_CLOCK, ""]
    if "warm" in modes:
        sections += ["## Warm: the second sort in a process", "",
                     _table(systems, "warm", reference, megabytes), "", WARM_CLOCK, ""]
    sections.append(
        f"{rounds} round(s); systems interleaved, their order rotating each round; "
        f"{pause:g} s pause between runs. Outputs checked apart (untimed) by the built-in "
        "valsort against the input's record count and checksum. 1-minute load average before "
        f"the runs: {min(loads):.1f}-{max(loads):.1f} ({info['cpus']} cores): other work on "
        "the machine inflates wall times; CPU seconds move less." if loads else "")
    markdown = "\n".join(sections)
    data = {"machine": info, "gigabytes": gigabytes, "records": records, "rounds": rounds,
            "results": {s.name: s.results for s in systems}}
    json_path, md_path = write_report(results_dir, f"graysort-{gigabytes:g}gb", data, markdown)
    _chart(systems, json_path.replace(".json", ".png"), gigabytes)
    notify(f"report written to {md_path} (and {os.path.basename(json_path)})")
    return markdown


def _chart(systems: list[_System], path: str, gigabytes: float) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names, seconds = [], []
    for system in systems:
        runs = [r["seconds"] for r in system.results["cold"] if r["status"] == "valid"]
        if runs:
            names.append(system.name)
            seconds.append(statistics.median(runs))
    if not names:
        return
    figure, axis = plt.subplots(figsize=(8, 0.6 * len(names) + 1.5))
    axis.barh(names, seconds, color="#4477aa")
    axis.set_xlabel("median wall seconds, fresh process (lower is better)")
    axis.set_title(f"GraySort {gigabytes:g} GB on {os.cpu_count()} cores, cold")
    for y, value in enumerate(seconds):
        axis.text(value, y, f" {value:.2f} s", va="center")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
