"""Jobs larger than memory: a hash aggregate and a sort of data several times the budget.

`python -m smallpond.bench.memory JOB DATA OUTPUT [--partitions P] [--options JSON]` runs one
job (agg, sort or graysort) in a fresh process, as a user would, and prints one JSON line: the
budget and workers it chose, seconds, tasks retried, and what it used: each worker's peak
resident memory (VmHWM) and peak private memory (RssAnon, sampled every 50 ms), and the peak
bytes spilled to disk. Run it inside a `MemoryCgroup` to hold it to a cap (R8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

from smallpond.io.disk import folder_bytes

__all__ = ["make_dataset", "Sampler", "run_job", "run_in_group", "JOBS"]

JOBS = ("agg", "sort", "graysort")
ROWS_PER_GIB = 21_000_000  # rows of (id BIGINT, k BIGINT, s md5 VARCHAR): ~51 Arrow bytes each


def make_dataset(folder: str, gib: float, files: int = 8) -> str:
    """Parquet files holding about `gib` GiB of Arrow data: id, k (1M keys), s (md5 text)."""
    import duckdb

    os.makedirs(folder, exist_ok=True)
    rows = int(gib * ROWS_PER_GIB)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    for i in range(files):
        lo, hi = rows * i // files, rows * (i + 1) // files
        path = os.path.join(folder, f"part-{i:03d}.parquet")
        if not os.path.exists(path):
            con.execute(f"COPY (SELECT range AS id, hash(range) % 1000000 AS k, "
                        f"md5(range::VARCHAR) AS s FROM range({lo}, {hi})) TO '{path}.tmp' "
                        "(FORMAT parquet, ROW_GROUP_SIZE 500000)")
            os.replace(f"{path}.tmp", path)
    return folder


def _status(pid: int) -> dict[str, int]:
    found = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "RssAnon"):
                    found[key] = int(value.split()[0]) << 10
    except OSError:
        pass
    return found


class Sampler(threading.Thread):
    """Samples workers' private memory and the spill folder while a job runs."""

    def __init__(self, pids, spill_dir: str, interval: float = 0.05):
        super().__init__(daemon=True, name="smallpond-memory-sampler")
        self.pids, self.spill_dir, self.interval = pids, spill_dir, interval
        self.anon: dict[int, int] = {}
        self.hwm: dict[int, int] = {}
        self.spill = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> None:
        for pid in self.pids():
            status = _status(pid)
            if status:
                self.anon[pid] = max(self.anon.get(pid, 0), status.get("RssAnon", 0))
                self.hwm[pid] = max(self.hwm.get(pid, 0), status.get("VmHWM", 0))
        self.spill = max(self.spill, folder_bytes(self.spill_dir))

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


def run_job(job: str, data: str, output: str, partitions: int | None = None,
            **options) -> dict:
    """Run one job in this process; return its figures."""
    import smallpond
    from smallpond.graysort import job as graysort

    sp = smallpond.init(**options)
    runner = sp.runner
    sampler = Sampler(lambda: list(runner.worker_pids) if hasattr(runner, "worker_pids")
                      else [], os.path.join(sp.config.scratch_dir, "spill"))
    figures = {"job": job, "budget": sp.config.memory_per_task,
               "budget_source": sp.config.memory_source, "workers": sp.config.num_executors}
    started = time.perf_counter()
    sampler.start()
    error = None
    try:
        if job == "graysort":
            result = graysort.run(output, input=data, partitions=partitions, session=sp,
                                  overwrite=True)
            figures.update(partitions=result.partitions, valid=result.valid)
        else:
            parts = partitions or 32
            df = sp.read_parquet(data).repartition(8)
            if job == "agg":
                query = "SELECT k, count(*) AS c, sum(id) AS total, min(s) AS first FROM {0} " \
                        "GROUP BY k"
                result = sp.partial_sql(query, df.repartition(parts, hash_by="k"))
            else:
                result = df.repartition(parts, range_by="k").partial_sort(["k", "id"])
            result.write_parquet(output, mode="overwrite")
            figures["partitions"] = parts
    except Exception as failure:  # reported, not raised: the caller compares outcomes
        error = f"{type(failure).__name__}: {str(failure).splitlines()[0]}"
    finally:
        sampler.stop()
        figures["seconds"] = time.perf_counter() - started
        sp.shutdown()
    figures.update(
        error=error,
        retried=[e.error for e in sp.events if e.kind == "retried"],
        worker_peak_rss=sorted(sampler.hwm.values(), reverse=True),
        worker_peak_private=sorted(sampler.anon.values(), reverse=True),
        spill_peak=sampler.spill)
    return figures


def run_in_group(group, job: str, source: str, output: str, partitions: int | None = None,
                 **options) -> dict:
    """Run one job as a fresh process inside a MemoryCgroup: its figures, plus the group's
    peak memory and OOM kills."""
    args = [sys.executable, "-m", "smallpond.bench.memory", job, source, output,
            "--options", json.dumps(options)]
    if partitions:
        args += ["--partitions", str(partitions)]
    done = group.run(args, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    figures = json.loads(lines[-1]) if lines else {
        "job": job, "error": f"exit {done.returncode}: {done.stderr[-500:]}"}
    stats = group.stats()
    figures.update(cgroup_peak=stats.peak, oom_kills=stats.oom_kills)
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=JOBS)
    parser.add_argument("data")
    parser.add_argument("output")
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--options", default="{}", help="smallpond.init options as JSON")
    args = parser.parse_args(argv)
    figures = run_job(args.job, args.data, args.output, args.partitions,
                      **json.loads(args.options))
    print(json.dumps(figures), flush=True)
    sys.exit(0 if figures["error"] is None else 1)


if __name__ == "__main__":
    main()
