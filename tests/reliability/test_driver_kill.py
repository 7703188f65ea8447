"""R4: SIGKILL the driver at 50% of its job, run the same job again.

The rerun reuses every task the killed run committed (none of them runs again), gives the
fault-free result, and reports the share reused. A changed input file or a changed query is
never answered from stale outputs. The killed driver's workers die with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import duckdb
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smallpond.bench.reliability import DRIVER_KILL_SCRIPT, committed_tasks

QUERY = "SELECT k, count(*) AS c, sum(v) AS s FROM {0} GROUP BY k"


def _write_input(folder, files: int = 4, rows: int = 4000, factor: int = 1) -> str:
    os.makedirs(folder, exist_ok=True)
    for i in range(files):
        ids = pa.array(range(i * rows, (i + 1) * rows))
        table = pa.table({"k": pa.compute.bit_wise_and(ids, 31),
                          "v": pa.compute.multiply(ids, factor)})
        pq.write_table(table, os.path.join(folder, f"part-{i}.parquet"))
    return str(folder)


def _expected(folder: str, query: str) -> list[tuple]:
    return sorted(duckdb.sql(query.format(f"read_parquet('{folder}/*.parquet')")).fetchall())


def _result(path: str) -> list[tuple]:
    table = pq.read_table(path)
    return sorted(zip(*(table[c].to_pylist() for c in table.column_names)))


class Job:
    def __init__(self, tmp_path, runner: str, data_root: str, input: str, query: str = QUERY):
        self.tmp_path, self.runner = tmp_path, runner
        self.args = {"runner": runner, "data_root": data_root, "input": input, "query": query,
                     "mappers": 12, "sleep": 0.4}
        self.script = tmp_path / "driver.py"
        self.script.write_text(DRIVER_KILL_SCRIPT)
        self.count = 0

    def start(self, output: str) -> subprocess.Popen:
        self.count += 1
        args = {**self.args, "output": output,
                "report": str(self.tmp_path / f"report-{self.count}.json")}
        self.report = args["report"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)
        self.log = open(self.tmp_path / f"driver-{self.count}.log", "w")
        return subprocess.Popen([sys.executable, str(self.script), json.dumps(args)], env=env,
                                stdout=self.log, stderr=subprocess.STDOUT,
                                cwd=str(self.tmp_path), start_new_session=True)

    def run(self, output: str) -> list[tuple[str, str]]:
        process = self.start(output)
        code = process.wait(timeout=600)
        self.log.close()
        assert code == 0, open(self.log.name).read()[-3000:]
        return [tuple(e) for e in json.load(open(self.report))["events"]]


def _kinds(events) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for kind, key in events:
        found.setdefault(kind, set()).add(key)
    return found


@pytest.mark.parametrize("runner", [pytest.param("local", marks=pytest.mark.reliability_quick),
                                    "ray"])
def test_a_killed_driver_resumes_from_its_committed_tasks(tmp_path, runner):
    source = _write_input(tmp_path / "input")
    reference = Job(tmp_path, runner, str(tmp_path / "reference-root"), source)
    total = len(_kinds(reference.run(str(tmp_path / "reference")))["finished"])
    expected = _expected(source, QUERY)
    assert _result(str(tmp_path / "reference")) == expected

    root = str(tmp_path / "root")
    job = Job(tmp_path, runner, root, source)
    output = str(tmp_path / "out")
    process = job.start(output)
    try:
        deadline = time.monotonic() + 300
        while len(committed_tasks(root)) < total / 2 and process.poll() is None:
            assert time.monotonic() < deadline, "the job never got half way"
            time.sleep(0.02)
        assert process.poll() is None, "the job ended before it could be killed"
        tree = psutil.Process(process.pid).children(recursive=True)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    _, alive = psutil.wait_procs(tree, timeout=60)
    workers = [p for p in alive if "smallpond.runners.worker" in " ".join(p.cmdline())
               or p.name().startswith("ray::smallpond_task")]
    assert not workers, "workers outlived their driver"
    committed = committed_tasks(root)
    assert 0 < len(committed) < total
    assert not os.path.exists(output)  # killed before it published anything

    events = _kinds(job.run(output))
    assert _result(output) == expected
    rerun = events.get("finished", set())
    assert not rerun & committed, "a task committed before the kill ran again"
    reused = events.get("reused", set())
    assert reused and reused <= committed
    print(f"R4 {runner}: {len(committed)}/{total} tasks had committed at the kill; the rerun "
          f"reused {len(reused)} (the rest were not needed any more) and ran {len(rerun)}: "
          f"{1 - len(rerun) / total:.0%} of the job's tasks not run again")

    # a changed input file: everything that read it runs again, the result is the new one
    time.sleep(0.01)  # a different mtime even on coarse clocks
    _write_input(source, factor=3)
    changed = _kinds(job.run(str(tmp_path / "after-input-change")))
    assert _result(str(tmp_path / "after-input-change")) == _expected(source, QUERY)
    assert not changed.get("reused"), "outputs of the old input were reused"

    # a changed query: the aggregates run again, the unchanged mappers are reused
    query = "SELECT k, count(*) AS c, max(v) AS s FROM {0} GROUP BY k"
    job.args["query"] = query
    events = _kinds(job.run(str(tmp_path / "after-query-change")))
    assert _result(str(tmp_path / "after-query-change")) == _expected(source, query)
    assert len(events.get("finished", ())) == 4  # one aggregate per partition
