"""The embedded runner and the Ray runner side by side on the same jobs and the same input.

(a) hash repartition + partial_sql aggregate, (b) a sort (sampled range repartition, or hash
repartition, then partial_sort), (c) a trivial job end to end (from_items -> partial_sql ->
to_arrow, warm session, median of `repeat`), (d) the per-task overhead of a 64-task job. Each
runner runs in its own session (the other one shut down), so the peak RSS of the process tree
(driver + workers, and on Ray its GCS, raylet and agents, which this driver starts) is its own.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import duckdb

import smallpond
from smallpond.bench.common import (
    Measurement,
    PeakMemory,
    machine_info,
    markdown_table,
    timed,
    write_report,
)
from smallpond.bench.core import AGG_SQL, make_hash_input

__all__ = ["run_runners_benchmark"]


def _session(runner: str, root: str, workers: int):
    if runner == "ray":
        # a Ray of our own (children of this process, so their memory is counted)
        return smallpond.init(data_root=root, runner="ray", ray_address="local",
                              ray_num_cpus=workers)
    return smallpond.init(data_root=root, runner="local", num_executors=workers)


def _aggregate(sp, source: str, partitions: int, out: str) -> dict:
    df = sp.read_parquet(os.path.join(source, "*.parquet")).repartition(partitions)
    shuffled = df.repartition(partitions, hash_by="k")
    sp.partial_sql(AGG_SQL, shuffled).recompute().write_parquet(out, mode="overwrite")
    row = duckdb.connect().execute(f"SELECT count(*), sum(n), round(sum(total), 3) "
                                   f"FROM read_parquet('{out}/*.parquet')").fetchone()
    return {"groups": row[0], "rows": int(row[1]), "total": row[2]}


def _sort(sp, source: str, partitions: int, out: str, method: str) -> dict:
    df = sp.read_parquet(os.path.join(source, "*.parquet")).repartition(partitions)
    if method == "range":
        parts = df.repartition(partitions, range_by="v")
    else:
        parts = df.repartition(partitions, hash_by="id")
    parts.partial_sort(["v", "id"]).recompute().write_parquet(out, mode="overwrite")
    files = sorted(f for f in os.listdir(out) if f.endswith(".parquet"))
    con = duckdb.connect()
    ordered = True
    last = None
    rows = 0
    for name in files:  # each part sorted; with range partitioning also across parts
        path = os.path.join(out, name)
        first, final, count, unsorted = con.execute(
            f"SELECT first(v ORDER BY file_row_number), last(v ORDER BY file_row_number), "
            f"count(*), count(*) FILTER (WHERE v < prev) FROM (SELECT v, file_row_number, "
            f"lag(v) OVER (ORDER BY file_row_number) AS prev FROM read_parquet('{path}', "
            f"file_row_number = true))").fetchone()
        rows += count
        ordered = ordered and unsorted == 0
        if method == "range" and count:
            ordered = ordered and (last is None or last <= first)
            last = final
    return {"rows": rows, "parts": len(files), "sorted": ordered}


def _trivial_job(sp, counter) -> None:
    value = next(counter)
    df = sp.from_items([1, 2, 3])
    sp.partial_sql(f"SELECT item + {value} AS x FROM {{0}}", df).to_arrow()


def _many_tasks(sp, counter, tasks: int = 64) -> None:
    value = next(counter)
    df = sp.from_items(list(range(tasks))).repartition(tasks, by_rows=True)
    sp.partial_sql(f"SELECT item + {value} AS x FROM {{0}}", df).to_arrow()


def _tree_rss() -> int:
    with PeakMemory() as memory:
        time.sleep(0.12)
    return memory.peak


def _bench_runner(runner: str, work: str, source: str, partitions: int, workers: int,
                  repeat: int, sort_method: str, measurements: list[Measurement]) -> dict:
    started = time.perf_counter()
    sp = _session(runner, os.path.join(work, f"data-{runner}"), workers)
    counter = iter(range(10**9))
    try:
        _trivial_job(sp, counter)  # starts workers (or Ray) and imports everything
        first = time.perf_counter() - started
        idle = _tree_rss()
        trivial = []
        for _ in range(repeat):
            t = time.perf_counter()
            _trivial_job(sp, counter)
            trivial.append(time.perf_counter() - t)
        _many_tasks(sp, counter)
        many = []
        for _ in range(3):
            t = time.perf_counter()
            _many_tasks(sp, counter)
            many.append(time.perf_counter() - t)
        with timed(f"{runner}: hash aggregate", measurements, runner=runner):
            agg = _aggregate(sp, source, partitions, os.path.join(work, f"agg-{runner}"))
        with timed(f"{runner}: sort", measurements, runner=runner):
            srt = _sort(sp, source, partitions, os.path.join(work, f"sort-{runner}"),
                        sort_method)
        capacity = sp.runner.capacity()
    finally:
        sp.shutdown()
    return {"first_result_s": first, "idle_rss": idle, "trivial_s": trivial, "many_s": many,
            "per_task_s": (statistics.median(many) - statistics.median(trivial)) / 64,
            "aggregate": agg, "sort": srt, "capacity": capacity,
            "aggregate_run": vars(measurements[-2]), "sort_run": vars(measurements[-1])}


def run_runners_benchmark(gigabytes: float = 1.0, partitions: int | None = None,
                          results_dir: str = "benchmarks/results", repeat: int = 10,
                          runners: tuple[str, ...] = ("local", "ray"),
                          sort_method: str = "range") -> str:
    """Run both runners on the same input; write JSON + markdown reports; return markdown."""
    work = tempfile.mkdtemp(prefix="smallpond-runners-")
    workers = os.cpu_count() or 1
    partitions = partitions or 4 * workers
    measurements: list[Measurement] = []
    results: dict[str, dict] = {}
    try:
        t = time.perf_counter()
        source = make_hash_input(os.path.join(work, "input"), gigabytes)
        generate = time.perf_counter() - t
        input_bytes = sum(os.path.getsize(os.path.join(source, f)) for f in os.listdir(source))
        for runner in runners:
            results[runner] = _bench_runner(runner, work, source, partitions, workers, repeat,
                                            sort_method, measurements)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    checks = []
    if len(results) > 1:
        first, *others = results.values()
        for key in ("aggregate", "sort"):
            same = all(other[key] == first[key] for other in others)
            checks.append(f"{key}: results {'identical' if same else 'DIFFER'} across runners")
            if not same:
                raise RuntimeError(f"{key} results differ: "
                                   f"{ {r: v[key] for r, v in results.items()} }")

    def mib(n: int) -> str:
        return f"{n / 2**20:.0f} MiB"

    names = list(results)
    rows = []

    def row(label, fmt):
        rows.append([label, *(fmt(results[r]) for r in names)])

    row(f"(a) {gigabytes:g} GB hash repartition + aggregate ({partitions} partitions)",
        lambda r: f"{r['aggregate_run']['seconds']:.2f} s")
    row("(a) peak RSS, process tree", lambda r: mib(r["aggregate_run"]["peak_bytes"]))
    sort_label = "range" if sort_method == "range" else "hash"
    row(f"(b) {gigabytes:g} GB sort ({sort_label} repartition + partial_sort)",
        lambda r: f"{r['sort_run']['seconds']:.2f} s")
    row("(b) peak RSS, process tree", lambda r: mib(r["sort_run"]["peak_bytes"]))
    row(f"(c) trivial job, warm session (median of {repeat})",
        lambda r: f"{statistics.median(r['trivial_s']) * 1000:.1f} ms")
    row("(d) per-task overhead (64-task job)", lambda r: f"{r['per_task_s'] * 1000:.2f} ms")
    row("session start to first result", lambda r: f"{r['first_result_s']:.2f} s")
    row("idle RSS after the first result", lambda r: mib(r["idle_rss"]))
    row("task slots (capacity)", lambda r: str(r["capacity"]))

    info = machine_info()
    info["load_avg_1m_at_end"] = os.getloadavg()[0]
    first_agg = next(iter(results.values()))["aggregate"]
    markdown = (
        f"# runners benchmark: embedded vs Ray ({info['cpus']} cores, {info['memory_gib']} GiB, "
        f"{info['time']})\n\n"
        f"input: {input_bytes / 1e6:.0f} MB Parquet in 8 files ({gigabytes:g} GB of rows, "
        f"{first_agg['rows']:,} rows, generated by DuckDB in {generate:.1f} s); "
        f"{first_agg['groups']:,} groups; {workers} workers/CPUs per runner\n\n"
        + markdown_table(["measure", *names], rows)
        + "\n\n" + "; ".join(checks) + "\n")
    data = {"machine": info, "gigabytes": gigabytes, "partitions": partitions,
            "input_bytes": input_bytes, "workers": workers, "sort_method": sort_method,
            "results": results}
    write_report(results_dir, "runners", data, markdown)
    return markdown
