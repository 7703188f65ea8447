"""Cold start: what a fresh process pays before its first result.

    smallpond bench cold-start --rounds 5

Each run is a fresh interpreter, timed from outside (spawn to exit) and inside:
`import smallpond`; then a tiny job: `init()`, `from_items(...).map("a + 1 AS b").count()`
on the embedded runner, `shutdown()`. Beside it, the same shape with DuckDB alone
(`import duckdb`, one query) as the floor a Python process sets on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Callable

from smallpond.bench.common import machine_info, markdown_table, write_report
from smallpond.bench.fresh import run_fresh

__all__ = ["run_cold_start_benchmark", "TINY_JOB"]

TINY_JOB = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import smallpond
    t1 = time.perf_counter()
    sp = smallpond.init(data_root={root!r})
    t2 = time.perf_counter()
    rows = sp.from_items([{{"a": 1}}, {{"a": 2}}]).map("a + 1 AS b").count()
    t3 = time.perf_counter()
    driver_cpu = time.process_time()
    sp.shutdown()
    t4 = time.perf_counter()
    assert rows == 2
    import json
    print(json.dumps({{"import": t1 - t0, "init": t2 - t1, "first result": t3 - t0,
                      "driver CPU to first result": driver_cpu, "shutdown": t4 - t3}}))
""")

IMPORT_ONLY = "import time; t = time.perf_counter(); import smallpond; " \
    "import json; print(json.dumps({'import': time.perf_counter() - t}))"

DUCKDB_ONLY = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import duckdb
    rows = duckdb.sql("SELECT a + 1 AS b FROM (VALUES (1), (2)) t(a)").fetchall()
    import json
    print(json.dumps({"first result": time.perf_counter() - t0}))
""")


def run_cold_start_benchmark(rounds: int = 5, results_dir: str | None = None,
                             work_dir: str | None = None,
                             notify: Callable[[str], None] = print) -> str:
    from smallpond.bench.graysort import default_results_dir

    results_dir = os.path.abspath(results_dir or default_results_dir())
    work = tempfile.mkdtemp(prefix="smallpond-cold-start-", dir=work_dir)
    runs: dict[str, list[dict]] = {"import smallpond": [], "tiny job (import, init, first "
                                   "result, shutdown)": [], "DuckDB alone (import, query)": []}
    try:
        for round_ in range(rounds):
            root = tempfile.mkdtemp(prefix="root-", dir=work)
            scripts = dict(zip(runs, (IMPORT_ONLY, TINY_JOB.format(root=root), DUCKDB_ONLY)))
            for name, script in scripts.items():
                run = run_fresh([sys.executable, "-c", script], cwd=work)
                inside = json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 \
                    else {}
                runs[name].append({"seconds": run.seconds, "cpu_seconds": run.cpu_seconds,
                                   "inside": inside, "ok": run.returncode == 0,
                                   "error": run.stderr[-300:] if run.returncode else None})
                notify(f"round {round_ + 1}/{rounds}: {name}: {run.seconds:.2f} s")
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, results in runs.items():
        good = [r for r in results if r["ok"]]
        if not good:
            rows.append([name, "-", "-", "-", f"failed: {results[-1]['error']}"])
            continue
        walls = [r["seconds"] for r in good]
        cpu = [r["cpu_seconds"] for r in good if r["cpu_seconds"] is not None]
        inside = {k: statistics.median(r["inside"][k] for r in good) for k in good[0]["inside"]}
        rows.append([name, f"{statistics.median(walls):.2f}",
                     f"{min(walls):.2f}-{max(walls):.2f}",
                     f"{statistics.median(cpu):.2f}" if cpu else "-",
                     ", ".join(f"{k} {v:.3f}" for k, v in inside.items())])
    info = machine_info()
    markdown = "\n".join([
        f"# Cold start, {info['cpus']} cores, {info['time']}", "",
        markdown_table(["fresh process", "median wall s (spawn to exit)", "min-max",
                        "CPU s", "inside the process, median s"], rows), "",
        f"{rounds} rounds, interleaved. Wall: from spawning the interpreter to its exit. "
        "Inside: perf_counter from the script's first line (the interpreter's own start "
        "comes before it); the driver's CPU seconds up to the first result bound that time "
        "on an idle machine (the workers start in parallel, on the other cores). CPU: every "
        "process of the run (workers included), from a cgroup. "
        f"1-minute load average at the end: {os.getloadavg()[0]:.1f}."])
    _, md_path = write_report(results_dir, "cold-start", {"machine": info, "runs": runs},
                              markdown)
    notify(f"report written to {md_path}")
    return markdown
