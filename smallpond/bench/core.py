"""Engine overheads and a 1 GB hash repartition + aggregate, side by side with DuckDB."""

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
    machine_info,
    markdown_table,
    timed,
    write_report,
)
from smallpond.bench.validate import ValidationError, compare_aggregates

__all__ = ["run_core_benchmark", "make_hash_input", "smallpond_hash_aggregate",
           "duckdb_hash_aggregate", "check_hash_aggregate"]

ROW_BYTES = 100  # id, k, v and an 80-byte pad: about 100 bytes a row in memory


def make_hash_input(folder: str, gigabytes: float, files: int = 8) -> str:
    """`files` Parquet files of about `gigabytes` in total (uncompressed row size)."""
    os.makedirs(folder, exist_ok=True)
    rows = int(gigabytes * 1e9 / ROW_BYTES)
    con = duckdb.connect()
    con.execute("SELECT setseed(0.42)")  # v is random (a sort key without ties), yet repeatable
    for i in range(files):
        lo, hi = i * rows // files, (i + 1) * rows // files
        path = os.path.join(folder, f"part-{i:03d}.parquet").replace("'", "''")
        con.execute(
            f"COPY (SELECT range AS id, hash(range) % 100000 AS k, random() AS v, "
            f"repeat('x', 80) AS pad FROM range({lo}, {hi})) TO '{path}' (FORMAT parquet)")
    con.close()
    return folder


AGG_SQL = "SELECT k, count(*) AS n, sum(v) AS total FROM {0} GROUP BY k"


def smallpond_hash_aggregate(sp, source: str, partitions: int, out: str) -> None:
    """The timed job: hash repartition + per-partition aggregate, written to `out`."""
    df = sp.read_parquet(os.path.join(source, "*.parquet")).repartition(partitions)
    shuffled = df.repartition(partitions, hash_by="k")
    result = sp.partial_sql(AGG_SQL, shuffled).recompute()
    result.write_parquet(out, mode="overwrite")


def duckdb_hash_aggregate(source: str, out: str, memory: str) -> None:
    """The same aggregate by DuckDB in one process, written to the Parquet file `out`."""
    con = duckdb.connect(config={"memory_limit": memory})
    query = AGG_SQL.replace("{0}", f"read_parquet('{source}/*.parquet')")
    con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet)")
    con.close()


def check_hash_aggregate(reference: str, out: str) -> int:
    """Every group's count and sum equal DuckDB's (sums of doubles to 1e-9); returns groups."""
    return compare_aggregates(reference, out, "k", exact=["n"], approximate=["total"])["groups"]


def run_core_benchmark(gigabytes: float = 1.0, partitions: int | None = None,
                       results_dir: str = "benchmarks/results", repeat: int = 10,
                       tasks: int = 64) -> str:
    """Run every measurement; write JSON + markdown reports; return the markdown.

    `tasks`: the size of the job that measures the per-task overhead."""
    work = tempfile.mkdtemp(prefix="smallpond-bench-")
    measurements: list[Measurement] = []
    try:
        start = time.perf_counter()
        sp = smallpond.init(data_root=os.path.join(work, "data"))
        init_seconds = time.perf_counter() - start
        sp.partial_sql("SELECT 1 AS x").to_arrow()
        first_result = time.perf_counter() - start

        counter = iter(range(10**9))

        def trivial():
            value = next(counter)
            df = sp.from_items([1, 2, 3])
            return value, sp.partial_sql(f"SELECT item + {value} AS x FROM {{0}}", df).to_arrow()

        trivial()
        trivial_seconds = _times(trivial, repeat)
        _check_items(*trivial(), [1, 2, 3])  # outside the clock, like every check

        def many_tasks():
            value = next(counter)
            df = sp.from_items(list(range(tasks))).repartition(tasks, by_rows=True)
            return value, sp.partial_sql(f"SELECT item + {value} AS x FROM {{0}}", df).to_arrow()

        many = statistics.median(_times(many_tasks, 3))
        _check_items(*many_tasks(), list(range(tasks)))
        per_task = (many - statistics.median(trivial_seconds)) / tasks

        source = make_hash_input(os.path.join(work, "input"), gigabytes)
        input_bytes = sum(os.path.getsize(os.path.join(source, f)) for f in os.listdir(source))
        partitions = partitions or 2 * sp.config.num_executors
        memory = f"{sp.config.memory_per_task * sp.config.num_executors >> 20}MB"
        reference, ours_out = os.path.join(work, "duck.parquet"), os.path.join(work, "sp-out")
        for attempt in range(2):
            # timed: the job until its output is written, what a user waits for; the check
            # of every group's values against DuckDB's comes after the clock stops
            with timed("duckdb", measurements, attempt=attempt):
                duckdb_hash_aggregate(source, reference, memory)
            with timed("smallpond", measurements, attempt=attempt):
                smallpond_hash_aggregate(sp, source, partitions, ours_out)
            groups = check_hash_aggregate(reference, ours_out)
        sp.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def best(name):
        return min((m for m in measurements if m.name == name), key=lambda m: m.seconds)

    duck, ours = best("duckdb"), best("smallpond")
    rows = [
        ["session start (init)", f"{init_seconds:.3f} s", ""],
        ["session start to first result", f"{first_result:.3f} s", ""],
        [f"trivial job, warm session (median of {repeat})",
         f"{statistics.median(trivial_seconds) * 1000:.1f} ms", ""],
        [f"per-task overhead ({tasks}-task job)", f"{per_task * 1000:.2f} ms", ""],
        [f"{gigabytes:g} GB hash repartition + aggregate: DuckDB one process",
         f"{duck.seconds:.2f} s", f"peak {duck.peak_bytes / 2**20:.0f} MiB"],
        [f"{gigabytes:g} GB hash repartition + aggregate: smallpond ({partitions} partitions)",
         f"{ours.seconds:.2f} s", f"peak {ours.peak_bytes / 2**20:.0f} MiB, "
         f"ratio to DuckDB {ours.seconds / duck.seconds:.2f}x"],
    ]
    info = machine_info()
    info["load_avg_1m_at_end"] = os.getloadavg()[0]  # other work on the machine, if any
    markdown = (f"# core benchmark ({info['cpus']} cores, {info['memory_gib']} GiB, "
                f"{info['time']}, load average {info['load_avg_1m_at_end']:.1f} at the end)"
                f"\n\ninput: {input_bytes / 1e6:.0f} MB Parquet "
                f"({gigabytes:g} GB of rows), {groups} groups; after each timed run every "
                f"group's count and sum is checked against DuckDB's (timed: the job until its "
                f"output is written)\n\n"
                + markdown_table(["measure", "value", "notes"], rows))
    data = {"machine": info, "init_s": init_seconds, "first_result_s": first_result,
            "trivial_s": trivial_seconds, "per_task_s": per_task, "gigabytes": gigabytes,
            "partitions": partitions, "groups": groups,
            "validated": "every group's n and total against DuckDB's, after each timed run",
            "runs": [vars(m) for m in measurements]}
    write_report(results_dir, "core", data, markdown)
    return markdown


def _times(function, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        function()
        out.append(time.perf_counter() - t)
    return out


def _check_items(added: int, table, items: list[int]) -> None:
    """A small job's result is its items plus the number it added, in order."""
    got = table.column("x").to_pylist()
    if got != [item + added for item in items]:
        raise ValidationError(f"a small job returned {got[:5]}..., expected items + {added}")
