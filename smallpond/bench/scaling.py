"""A scaling curve: the same jobs with 1, 2, 4, 8, 16 workers, each run a fresh process.

    smallpond bench scaling --workers 1,2,4,8,16 --graysort-gb 4 --hash-gb 4

GraySort: `smallpond graysort --input` (validation on) with SMALLPOND_NUM_EXECUTORS=n; every
output is checked apart by valsort against the input. Hash shuffle: Parquet rows (id, k, v,
80-byte pad) repartitioned by hash of k into 2n partitions, then a per-partition
GROUP BY k (count, sum); the result is compared with DuckDB's GROUP BY over the same files.
The report gives wall and CPU seconds, speedup over one worker and efficiency (speedup / n).
Meant for a many-core machine (the device machine when one is lent); nothing outside a fresh
work folder is written.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable

from smallpond.bench.common import machine_info, markdown_table, write_report
from smallpond.bench.fresh import run_fresh

__all__ = ["run_scaling_benchmark", "hash_job"]


def hash_job(source: str, output: str, root: str, partitions: int) -> None:
    """The hash-shuffle job, run by `python -m smallpond.bench.scaling hash ...`."""
    import smallpond
    from smallpond.bench.core import AGG_SQL

    sp = smallpond.init(data_root=root)
    try:
        df = sp.read_parquet(os.path.join(source, "*.parquet")).repartition(partitions)
        result = sp.partial_sql(AGG_SQL, df.repartition(partitions, hash_by="k"))
        result.write_parquet(output)
    finally:
        sp.shutdown()


def _check_hash(source: str, output: str) -> str:
    import duckdb

    from smallpond.bench.core import AGG_SQL

    con = duckdb.connect()
    expected = con.execute(
        AGG_SQL.replace("{0}", f"read_parquet('{source}/*.parquet')") + " ORDER BY k").fetchall()
    got = con.execute(f"SELECT k, n, total FROM read_parquet('{output}/*.parquet') "
                      "ORDER BY k").fetchall()
    con.close()
    if len(got) != len(expected):
        return f"INVALID: {len(got)} groups, DuckDB has {len(expected)}"
    for (k, n, total), (k2, n2, total2) in zip(got, expected):
        if k != k2 or n != n2 or abs(total - total2) > 1e-6 * max(1.0, abs(total2)):
            return f"INVALID: group {k} differs"
    return "valid"


def _check_graysort(output: str, records: int, checksum: int) -> str:
    from smallpond.graysort.valsort import merge, summarize_file

    files = sorted(f for f in os.listdir(output) if f.endswith(".dat"))
    summary = merge(summarize_file(os.path.join(output, f)) for f in files)
    ok = (summary.records == records and summary.checksum == checksum
          and not summary.unordered)
    return "valid" if ok else "INVALID"


def run_scaling_benchmark(workers: tuple[int, ...] = (1, 2, 4, 8, 16),
                          graysort_gb: float = 4.0, hash_gb: float = 4.0, rounds: int = 1,
                          results_dir: str | None = None, work_dir: str | None = None,
                          notify: Callable[[str], None] = print) -> str:
    from smallpond.bench.core import make_hash_input
    from smallpond.bench.graysort import _smallpond_cli, default_results_dir
    from smallpond.graysort.gensort import write_gensort_file

    results_dir = os.path.abspath(results_dir or default_results_dir())
    work = tempfile.mkdtemp(prefix="smallpond-scaling-", dir=work_dir)
    results: dict[str, dict[int, list[dict]]] = {"graysort": {}, "hash": {}}
    try:
        dat = os.path.join(work, "input.dat")
        records = int(graysort_gb * 1e7)
        checksum = write_gensort_file(dat, records) if graysort_gb else 0
        parquet = make_hash_input(os.path.join(work, "hash-input"), hash_gb) if hash_gb else None
        for round_ in range(rounds):
            for n in workers:
                env = {**os.environ, "SMALLPOND_NUM_EXECUTORS": str(n)}
                jobs = []
                if graysort_gb:
                    jobs.append(("graysort", lambda out, root: [
                        *_smallpond_cli(), "graysort", "--input", dat, "--output", out,
                        "--data-root", root], lambda out: _check_graysort(out, records,
                                                                          checksum)))
                if parquet:
                    jobs.append(("hash", lambda out, root, n=n: [
                        sys.executable, "-m", "smallpond.bench.scaling", "hash", parquet, out,
                        root, str(2 * n)], lambda out: _check_hash(parquet, out)))
                for name, command, check in jobs:
                    scratch = tempfile.mkdtemp(prefix="run-", dir=work)
                    out, root = os.path.join(scratch, "out"), os.path.join(scratch, "root")
                    try:
                        run = run_fresh(command(out, root), env=env, cwd=scratch)
                        status = check(out) if run.returncode == 0 else \
                            f"FAILED: {run.stderr.strip()[-300:]}"
                    finally:
                        shutil.rmtree(scratch, ignore_errors=True)
                    results[name].setdefault(n, []).append(
                        {"seconds": run.seconds, "cpu_seconds": run.cpu_seconds,
                         "peak_bytes": run.peak_bytes, "status": status})
                    notify(f"round {round_ + 1}: {name} with {n} workers: {run.seconds:.2f} s, "
                           f"{status}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _report(results, workers, graysort_gb, hash_gb, results_dir, notify)


def _report(results, workers, graysort_gb, hash_gb, results_dir, notify) -> str:
    info = machine_info()
    lines = [f"# Scaling, {info['cpus']} cores, {info['memory_gib']} GiB, {info['time']}", ""]
    for name, label in (("graysort", f"GraySort {graysort_gb:g} GB (`smallpond graysort "
                                      "--input`, validation on)"),
                        ("hash", f"hash shuffle {hash_gb:g} GB + GROUP BY (2 partitions "
                                 "per worker)")):
        if not results[name]:
            continue
        medians = {n: statistics.median(r["seconds"] for r in runs if r["status"] == "valid")
                   for n, runs in results[name].items()
                   if any(r["status"] == "valid" for r in runs)}
        base = medians.get(min(medians)) if medians else None
        rows = []
        for n in workers:
            runs = results[name].get(n, [])
            if n not in medians:
                rows.append([n, "-", "-", "-", "-", runs[-1]["status"][:80] if runs else "-"])
                continue
            cpu = [r["cpu_seconds"] for r in runs if r["cpu_seconds"] is not None]
            speedup = base * min(medians) / medians[n] if base else 0
            rows.append([n, f"{medians[n]:.2f}", f"{statistics.median(cpu):.1f}" if cpu else "-",
                         f"{speedup:.2f}", f"{speedup / n:.0%}", "valid"])
        lines += [f"## {label}", "", markdown_table(
            ["workers", "median wall s", "CPU s", "speedup", "efficiency", "output"], rows), ""]
    lines.append("Each run a fresh process (wall from spawn to exit). Speedup: relative to the "
                 "fewest workers measured, scaled to one worker.")
    markdown = "\n".join(lines)
    json_path, md_path = write_report(results_dir, "scaling", {"machine": info,
                                                               "results": results}, markdown)
    notify(f"report written to {md_path}")
    return markdown


if __name__ == "__main__":
    if sys.argv[1] == "hash":
        hash_job(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
