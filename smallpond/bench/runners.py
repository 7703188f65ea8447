"""The embedded runner and the Ray runner side by side on the same jobs and the same input.

(a) hash repartition + partial_sql aggregate, (b) a sort (sampled range repartition, or hash
repartition, then partial_sort), (c) a trivial job end to end (from_items -> partial_sql ->
to_arrow, warm session, median of `repeat`), (d) the per-task overhead of a 64-task job. Each
runner runs in its own session (the other one shut down), so the peak RSS of the process tree
(driver + workers, and on Ray its GCS, raylet and agents, which this driver starts) is its own.
Clocks time each job until its output is written; every run, with one runner too, is then
checked against DuckDB on the same input (`Reference`): the aggregate group by group, the sort's
rows (count and a row-hash sum) and order.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time

import smallpond
from smallpond.bench.common import (
    Measurement,
    PeakMemory,
    machine_info,
    markdown_table,
    timed,
    write_report,
)
from smallpond.bench.core import (
    AGG_SQL,
    check_hash_aggregate,
    duckdb_hash_aggregate,
    make_hash_input,
)
from smallpond.bench.validate import check_same_rows, check_sorted, fingerprint, parquet_source

__all__ = ["run_runners_benchmark"]


def _session(runner: str, root: str, workers: int):
    if runner == "ray":
        # a Ray of our own (children of this process, so their memory is counted)
        return smallpond.init(data_root=root, runner="ray", ray_address="local",
                              ray_num_cpus=workers)
    return smallpond.init(data_root=root, runner="local", num_executors=workers)


COLUMNS = ("id", "k", "v", "pad")
SORT_KEYS = ("v", "id")
REFERENCE_MEMORY = "2GB"  # DuckDB's budget for the untimed reference aggregate


def _aggregate(sp, source: str, partitions: int, out: str) -> None:
    df = sp.read_parquet(os.path.join(source, "*.parquet")).repartition(partitions)
    shuffled = df.repartition(partitions, hash_by="k")
    sp.partial_sql(AGG_SQL, shuffled).recompute().write_parquet(out, mode="overwrite")


def _sort(sp, source: str, partitions: int, out: str, method: str) -> None:
    df = sp.read_parquet(os.path.join(source, "*.parquet")).repartition(partitions)
    if method == "range":
        parts = df.repartition(partitions, range_by="v")
    else:
        parts = df.repartition(partitions, hash_by="id")
    parts.partial_sort(list(SORT_KEYS)).recompute().write_parquet(out, mode="overwrite")


class Reference:
    """What every run is checked against, computed by DuckDB from the input (untimed)."""

    def __init__(self, source: str, work: str):
        self.aggregate = os.path.join(work, "reference-aggregate.parquet")
        duckdb_hash_aggregate(source, self.aggregate, REFERENCE_MEMORY)
        self.rows = fingerprint(parquet_source(source), COLUMNS)

    def check_aggregate(self, out: str) -> dict:
        groups = check_hash_aggregate(self.aggregate, out)
        return {"groups": groups, "rows": self.rows[0], "checked": "every group vs DuckDB"}

    def check_sort(self, out: str, method: str) -> dict:
        rows = check_same_rows(self.rows, out, COLUMNS)
        parts = check_sorted(out, SORT_KEYS, across_parts=method == "range")
        return {"rows": rows, "parts": parts, "sorted": True,
                "checked": "rows == input rows (count + row-hash sum), sorted by (v, id) in "
                           + ("and across parts" if method == "range" else "each part")}


def _trivial_job(sp, counter) -> None:
    value = next(counter)
    df = sp.from_items([1, 2, 3])
    sp.partial_sql(f"SELECT item + {value} AS x FROM {{0}}", df).to_arrow()


OVERHEAD_TASKS = 64  # tasks of the job that measures the per-task overhead


def _many_tasks(sp, counter, tasks: int | None = None) -> None:
    tasks = tasks or OVERHEAD_TASKS
    value = next(counter)
    df = sp.from_items(list(range(tasks))).repartition(tasks, by_rows=True)
    sp.partial_sql(f"SELECT item + {value} AS x FROM {{0}}", df).to_arrow()


def _tree_rss() -> int:
    with PeakMemory() as memory:
        time.sleep(0.12)
    return memory.peak


def _bench_runner(runner: str, work: str, source: str, reference: Reference, partitions: int,
                  workers: int, repeat: int, sort_method: str,
                  measurements: list[Measurement]) -> dict:
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
        # timed: each job until its output is written; checked after the clock stops
        agg_out, sort_out = os.path.join(work, f"agg-{runner}"), os.path.join(work,
                                                                              f"sort-{runner}")
        with timed(f"{runner}: hash aggregate", measurements, runner=runner):
            _aggregate(sp, source, partitions, agg_out)
        agg = reference.check_aggregate(agg_out)
        with timed(f"{runner}: sort", measurements, runner=runner):
            _sort(sp, source, partitions, sort_out, sort_method)
        srt = reference.check_sort(sort_out, sort_method)
        capacity = sp.runner.capacity()
    finally:
        sp.shutdown()
    return {"first_result_s": first, "idle_rss": idle, "trivial_s": trivial, "many_s": many,
            "per_task_s": (statistics.median(many) - statistics.median(trivial)) / OVERHEAD_TASKS,
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
        t = time.perf_counter()
        reference = Reference(source, work)
        reference_seconds = time.perf_counter() - t
        for runner in runners:
            results[runner] = _bench_runner(runner, work, source, reference, partitions,
                                            workers, repeat, sort_method, measurements)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    checks = [f"every run checked against DuckDB on the input (computed untimed in "
              f"{reference_seconds:.1f} s): the aggregate group by group, the sort's rows "
              f"(count and row-hash sum) and order"]

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
    row(f"(d) per-task overhead ({OVERHEAD_TASKS}-task job)", lambda r: f"{r['per_task_s'] * 1000:.2f} ms")
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
