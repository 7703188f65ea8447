"""TPC-H per query and in total: smallpond (embedded runner) vs DuckDB in one process vs
Polars (SQLContext over lazy Parquet scans), on the same Parquet files, side by side.

Every system runs every query `repeat` times, warm, interleaved query by query; the median is
reported. Results are checked against DuckDB's. For smallpond the report also says where the
time goes: planning, task count, bytes moved through shuffles, and the summed task time
against the wall time (the rest is scheduling and task overhead).
"""

from __future__ import annotations

import decimal
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import duckdb
import psutil

from smallpond.bench.common import PeakMemory, machine_info, markdown_table, write_report
from smallpond.bench.tpch_queries import QUERIES, TABLES
from smallpond.errors import ConfigError

__all__ = ["run_tpch_benchmark", "ensure_tpch_data", "parse_queries"]


def parse_queries(text: str) -> list[int]:
    """'1-22', '1,3,5' or '2-4,9' -> query numbers."""
    numbers: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        if "-" in piece:
            lo, hi = piece.split("-", 1)
            numbers.extend(range(int(lo), int(hi) + 1))
        elif piece:
            numbers.append(int(piece))
    bad = [n for n in numbers if n not in QUERIES]
    if bad:
        raise ConfigError(f"no TPC-H query {bad[0]} (1-22)")
    return numbers


def ensure_tpch_data(scale: float, folder: str | None) -> str:
    """A folder with <table>.parquet for every TPC-H table; generated with tpchgen-cli."""
    if folder is None:
        folder = os.path.expanduser(f"~/.smallpond/tpch/sf{scale:g}")
    if all(os.path.exists(os.path.join(folder, f"{t}.parquet")) for t in TABLES):
        return folder
    tool = shutil.which("tpchgen-cli")
    if tool is None:
        raise ConfigError("TPC-H data is generated with tpchgen-cli: pip install tpchgen-cli "
                          "(or pass --data with <table>.parquet files)")
    os.makedirs(folder, exist_ok=True)
    subprocess.run([tool, "parquet", "-s", f"{scale:g}", "-o", folder], check=True,
                   capture_output=True)
    return folder


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its worker processes so far."""
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def _close(a, b) -> bool:
    if isinstance(a, (float, decimal.Decimal)) or isinstance(b, (float, decimal.Decimal)):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    return a == b


def _same(got: list[tuple], expected: list[tuple]) -> bool:
    if len(got) != len(expected):
        return False
    key = lambda row: repr([round(float(v), 4) if isinstance(v, (float, decimal.Decimal))  # noqa: E731
                            else v for v in row])
    return all(len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
               for a, b in zip(sorted(got, key=key), sorted(expected, key=key)))


class _Smallpond:
    name = "smallpond"

    def __init__(self, folder: str, partitions: int | None, work: str):
        import smallpond

        self.session = smallpond.init(data_root=os.path.join(work, "data"))
        for table in TABLES:
            self.session.register(table, os.path.join(folder, f"{table}.parquet"))
        if partitions:
            self.session.sql(f"SET smallpond.partitions = {partitions}")
        self.details: dict[int, dict] = {}

    def run(self, number: int) -> list[tuple]:
        session = self.session
        session.events.clear()
        started = time.perf_counter()
        df = session.sql(QUERIES[number])
        planned = time.perf_counter()
        table = df.recompute().to_arrow()
        wall = time.perf_counter() - started
        finished = [e for e in session.events if e.kind == "finished"]
        shuffle = sum(e.bytes for e in finished if e.stage.startswith("shuffle_"))
        self.details.setdefault(number, []).append({
            "plan_s": planned - started, "wall_s": wall, "tasks": len(finished),
            "stages": len({e.stage for e in finished}),
            "task_s": sum(e.elapsed for e in finished), "shuffle_bytes": shuffle,
            "written_bytes": sum(e.bytes for e in finished),
            "fallback": df.sql_plan.fallback})
        return [tuple(r.values()) for r in table.to_pylist()]

    def close(self) -> None:
        self.session.shutdown()


class _DuckDB:
    name = "duckdb"

    def __init__(self, folder: str, memory: str, work: str):
        self.con = duckdb.connect(config={"memory_limit": memory,
                                          "temp_directory": os.path.join(work, "duck-spill")})
        for table in TABLES:
            path = os.path.join(folder, f"{table}.parquet").replace("'", "''")
            self.con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")

    def run(self, number: int) -> list[tuple]:
        return self.con.execute(QUERIES[number]).fetchall()

    def close(self) -> None:
        self.con.close()


class _Polars:
    name = "polars"

    def __init__(self, folder: str):
        import polars as pl

        self.context = pl.SQLContext({t: pl.scan_parquet(os.path.join(folder, f"{t}.parquet"))
                                      for t in TABLES})

    def run(self, number: int) -> list[tuple]:
        return self.context.execute(QUERIES[number]).collect().rows()

    def close(self) -> None:
        pass


def run_tpch_benchmark(scale: float = 1.0, data: str | None = None,
                       systems: tuple[str, ...] = ("smallpond", "duckdb", "polars"),
                       queries: list[int] | None = None, repeat: int = 3,
                       partitions: int | None = None,
                       results_dir: str = "benchmarks/results") -> str:
    """Run the benchmark; write JSON + markdown reports; return the markdown."""
    queries = queries or sorted(QUERIES)
    folder = ensure_tpch_data(scale, data)
    work = tempfile.mkdtemp(prefix="smallpond-tpch-")
    runners = {}
    try:
        reference = _DuckDB(folder, "4GB", work)
        if "smallpond" in systems:
            runners["smallpond"] = _Smallpond(folder, partitions, work)
        if "duckdb" in systems:
            memory = "4GB"
            if "smallpond" in runners:
                config = runners["smallpond"].session.config
                memory = f"{config.memory_per_task * config.num_executors >> 20}MB"
            runners["duckdb"] = _DuckDB(folder, memory, work)
        if "polars" in systems:
            runners["polars"] = _Polars(folder)
        times: dict[str, dict[int, list[float]]] = {s: {} for s in runners}
        cpu: dict[str, dict[int, list[float]]] = {s: {} for s in runners}
        peaks: dict[str, int] = {s: 0 for s in runners}
        errors: dict[str, dict[int, str]] = {s: {} for s in runners}
        wrong: dict[str, list[int]] = {s: [] for s in runners}
        for number in queries:
            expected = reference.run(number)
            for attempt in range(repeat + 1):  # the first run of each warms caches
                for name, runner in runners.items():
                    if number in errors[name]:
                        continue
                    with PeakMemory() as memory:
                        started, cpu_started = time.perf_counter(), _cpu_seconds()
                        try:
                            got = runner.run(number)
                        except Exception as error:  # a peer that cannot run the query
                            errors[name][number] = f"{type(error).__name__}: {error}"[:200]
                            continue
                        seconds = time.perf_counter() - started
                        cpu_used = _cpu_seconds() - cpu_started
                    peaks[name] = max(peaks[name], memory.peak)
                    if attempt == 0:
                        if not _same(got, expected):
                            wrong[name].append(number)
                        continue
                    times[name].setdefault(number, []).append(seconds)
                    cpu[name].setdefault(number, []).append(cpu_used)
        details = runners["smallpond"].details if "smallpond" in runners else {}
    finally:
        for runner in runners.values():
            runner.close()
        shutil.rmtree(work, ignore_errors=True)
    return _report(scale, folder, queries, repeat, times, cpu, peaks, errors, wrong, details,
                   partitions, results_dir)


def _report(scale, folder, queries, repeat, times, cpu, peaks, errors, wrong, details,
            partitions, results_dir) -> str:
    systems = list(times)
    median = {s: {q: statistics.median(v) for q, v in times[s].items()} for s in systems}
    cpu_median = {s: {q: statistics.median(v) for q, v in cpu[s].items()} for s in systems}
    rows = []
    for q in queries:
        row = [f"Q{q}"]
        for s in systems:
            row.append(f"{median[s][q]:.3f}" if q in median[s] else "n/a")
        if "smallpond" in median and "duckdb" in median and q in median["smallpond"]:
            row.append(f"{median['smallpond'][q] / median['duckdb'][q]:.2f}x")
        if q in details:
            d = details[q][-1]
            row += [f"{d['plan_s'] * 1000:.0f}", str(d["tasks"]),
                    f"{d['shuffle_bytes'] / 2**20:.1f}",
                    f"{d['task_s'] / max(d['wall_s'], 1e-9):.2f}"]
        rows.append(row)
    complete = [q for q in queries if all(q in median[s] for s in systems)]
    total = ["total (all systems ran)"] + [f"{sum(median[s][q] for q in complete):.2f}"
                                          for s in systems]
    if "smallpond" in median and "duckdb" in median and complete:
        ours = sum(median["smallpond"][q] for q in complete)
        theirs = sum(median["duckdb"][q] for q in complete)
        total.append(f"{ours / theirs:.2f}x")
    if details:
        total += ["", "", "", ""]
    rows.append(total)
    for s in systems:
        own = [q for q in queries if q in median[s]]
        rows.append([f"total {s} ({len(own)} queries)"] + [
            f"{sum(median[s][q] for q in own):.2f}" if t == s else "" for t in systems] +
            [""] * (len(rows[0]) - 1 - len(systems)))
    headers = ["query"] + [f"{s} s" for s in systems]
    if "smallpond" in median and "duckdb" in median:
        headers.append("smallpond/duckdb")
    if details:
        headers += ["plan ms", "tasks", "shuffle MB", "task s / wall s"]
    info = machine_info()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    complete_cpu = [q for q in queries if all(q in cpu_median[s] for s in systems)]
    cpu_line = "CPU seconds (this process and its workers, all queries every system ran): " + \
        ", ".join(f"{s} {sum(cpu_median[s][q] for q in complete_cpu):.2f}" for s in systems)
    lines = [f"# TPC-H SF{scale:g} ({info['cpus']} cores, {info['memory_gib']} GiB, "
             f"{info['time']}, load average {load:.1f} at the end)", "",
             f"median of {repeat} warm runs per query and system, interleaved; smallpond "
             f"partitions: {partitions or 'automatic'}; data: {folder}",
             "", markdown_table(headers, rows), "", cpu_line, "",
             "peak memory (this process and its workers): " +
             ", ".join(f"{s} {peaks[s] / 2**20:.0f} MiB" for s in systems)]
    for s in systems:
        if errors[s]:
            lines.append(f"{s} could not run: " +
                         "; ".join(f"Q{q}: {e}" for q, e in sorted(errors[s].items())))
        if wrong[s]:
            lines.append(f"{s} differed from DuckDB on: " + ", ".join(f"Q{q}" for q in wrong[s]))
    markdown = "\n".join(lines)
    data = {"machine": info, "load_average": load, "scale": scale, "repeat": repeat,
            "partitions": partitions, "queries": queries, "times": times, "cpu_seconds": cpu,
            "peak_bytes": peaks, "errors": errors, "wrong": wrong,
            "smallpond_details": details}
    name = f"tpch-sf{scale:g}" + (f"-p{partitions}" if partitions else "")
    write_report(results_dir, name, data, markdown)
    return markdown
