"""The Ray runner on a real multi-node Ray cluster simulated on this machine (slow tier).

The cluster (smallpond/bench/raycluster.py): a 0-CPU head and two 1-CPU worker nodes started
with `ray start`, each node killable alone, torn down exactly. Jobs run in a separate driver
process (this process may already hold the suite's own Ray instance), which writes what it saw
into a JSON file. The faults: SIGKILL of a Ray worker process running a task, and SIGKILL of a
whole worker node in the middle of a job. The job must finish with the fault-free result, and
the output folder never shows a partial result.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow.parquet as pq
import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

from smallpond.bench.raycluster import ENV, RAY, Cluster  # noqa: E402 - after the skips

pytestmark = [pytest.mark.ray_cluster, pytest.mark.timeout(300)]

ROWS = 6000
SLEEP = 0.4  # seconds each mapper task sleeps in the user function

DRIVER = textwrap.dedent('''
    import json, sys, time
    import smallpond

    args = json.loads(sys.argv[1])
    sp = smallpond.init(data_root=args["data_root"], ray_address=args["address"])
    sp.runner  # connects to the cluster
    import ray
    labels = {}
    for node in ray.nodes():
        resources = node.get("Resources", {})
        labels[node["NodeID"]] = next(
            (name for name in ("node_a", "node_b") if name in resources), "head")

    def slow_group(table, pause=args["sleep"]):
        import time
        import pyarrow.compute as pc
        time.sleep(pause)
        return table.append_column("g", pc.bit_wise_and(table["item"], 63))

    retries, timeline = [], []
    record = sp._on_event

    def on_event(event):
        timeline.append((time.time(), event.kind, event.stage, event.partition))
        if event.kind == "retried":
            retries.append({"at": time.time(), "error": event.error})
        record(event)

    sp._on_event = on_event
    started = time.monotonic()
    df = sp.from_items(list(range(args["rows"]))).repartition(args["mappers"], by_rows=True)
    df = df.map_batches(slow_group).repartition(args["reducers"], hash_by="g")
    agg = sp.partial_sql(
        "SELECT g, count(*) AS c, sum(item) AS s, min(item) AS lo FROM {0} GROUP BY g", df)
    agg.write_parquet(args["output"])
    elapsed = time.monotonic() - started
    kinds = {}
    for event in sp.events:
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
    nodes = sorted({labels.get(n, "?") for n in sp.runner.task_nodes().values()})
    sp.shutdown()
    json.dump({"elapsed": elapsed, "events": kinds, "nodes": nodes, "retries": retries,
               "timeline": timeline,
               "ray_initialized_after_shutdown": ray.is_initialized()},
              open(args["report"], "w"))
''')


@pytest.fixture(scope="module")
def cluster():
    if not os.path.exists(RAY):
        pytest.skip("the `ray` command is not installed")
    cluster = Cluster()
    atexit.register(cluster.stop)  # even if pytest itself is interrupted
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)
    assert not cluster.leftovers(), "Ray processes survived the cluster teardown"


def _start_job(cluster: Cluster, tmp_path, name: str, mappers: int = 24,
               address: str | None = None, sleep: float = SLEEP) -> tuple:
    report = tmp_path / f"{name}.json"
    output = tmp_path / f"{name}-out"
    args = {"address": address or cluster.address, "data_root": str(tmp_path / f"{name}-data"),
            "output": str(output), "report": str(report), "rows": ROWS, "mappers": mappers,
            "reducers": 4, "sleep": sleep}
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    log = open(tmp_path / f"{name}.log", "w")
    process = subprocess.Popen([sys.executable, str(script), json.dumps(args)], env=ENV,
                               stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))
    return process, args, log


def _finish(process, args, log, timeout: float = 150) -> dict:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = "timeout"
    log.close()
    text = open(log.name).read()
    assert code == 0, f"driver failed ({code}):\n{text[-4000:]}"
    with open(args["report"]) as handle:
        return json.load(handle)


def _result(path: str) -> list[tuple]:
    table = pq.read_table(path)
    return sorted(zip(*(table[c].to_pylist() for c in ("g", "c", "s", "lo"))))


def _expected() -> list[tuple]:
    import duckdb

    return sorted(duckdb.sql(
        f"SELECT range & 63 AS g, count(*), sum(range), min(range) FROM range({ROWS}) "
        "GROUP BY g").fetchall())


def _committed(data_root: str) -> int:
    try:
        return sum(not name.startswith(".") for name in os.listdir(os.path.join(data_root,
                                                                                 "tasks")))
    except FileNotFoundError:
        return 0


class OutputWatcher(threading.Thread):
    """Looks at the output folder every few ms: it is absent or complete, never partial."""

    def __init__(self, path: str):
        super().__init__(daemon=True)
        self.path = path
        self.partial: list[list[str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                names = sorted(os.listdir(self.path))
            except FileNotFoundError:
                names = []
            if names and "_SUCCESS" not in names:
                self.partial.append(names)
            if any(not (n == "_SUCCESS" or (n.startswith("part-") and n.endswith(".parquet")))
                   for n in names):
                self.partial.append(names)
            time.sleep(0.005)


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def baseline(cluster, tmp_path_factory):
    """The fault-free run: tasks land on both nodes, the result equals DuckDB's."""
    tmp_path = tmp_path_factory.mktemp("baseline")
    report = _finish(*_start_job(cluster, tmp_path, "baseline"))
    return report, _result(str(tmp_path / "baseline-out"))


def test_tasks_run_on_both_nodes_and_match_duckdb(baseline):
    report, rows = baseline
    assert report["nodes"] == ["node_a", "node_b"]
    assert rows == _expected()
    assert report["events"].get("retried", 0) == 0
    assert report["ray_initialized_after_shutdown"] is False  # the driver's own connection


def _run_with_fault(cluster, tmp_path, name: str, fault) -> dict:
    process, args, log = _start_job(cluster, tmp_path, name)
    watcher = OutputWatcher(args["output"])
    watcher.start()
    try:
        # mid-job: the source split and a few mappers committed, mappers still running
        _wait_for(lambda: _committed(args["data_root"]) >= 4 or process.poll() is not None,
                  90, "the first tasks to commit")
        assert process.poll() is None, "the job ended before the fault could be injected"
        fault()
        report = _finish(process, args, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        watcher.stop.set()
        watcher.join()
    assert watcher.partial == [], f"partial output seen: {watcher.partial[:3]}"
    report["rows"] = _result(args["output"])
    return report


def test_sigkill_of_a_worker_process(cluster, baseline, tmp_path):
    killed = []

    def kill_worker():
        deadline = time.time() + 30
        while time.time() < deadline:
            # a worker can finish its task between being listed and being killed: kill it
            # only while its command line still names one of our tasks
            for victim in cluster.worker_processes():
                with contextlib.suppress(psutil.Error):
                    name = victim.cmdline()[0]
                    if name.startswith("ray::smallpond_task"):
                        victim.send_signal(signal.SIGKILL)
                        killed.extend([name, time.time()])
                        return
            time.sleep(0.01)
        raise AssertionError("no Ray worker ran one of our tasks within 30 s")

    report = _run_with_fault(cluster, tmp_path, "worker-kill", kill_worker)
    assert killed and killed[0].startswith("ray::smallpond_task")
    assert report["rows"] == baseline[1]
    _check_retries(report, killed[1], r"WorkerCrashedError")


def test_ray_client_address(cluster, baseline, tmp_path):
    """`ray://host:port` (Ray Client) works too: same result, tasks still on the workers."""
    report = _finish(*_start_job(cluster, tmp_path, "client", mappers=6, sleep=0.0,
                                 address=cluster.client_address))
    assert _result(str(tmp_path / "client-out")) == baseline[1]
    assert set(report["nodes"]) <= {"node_a", "node_b"} and report["nodes"]


def test_a_worker_node_dies_mid_job(cluster, baseline, tmp_path):
    lost = {}

    def kill_node():
        _wait_for(lambda: any(p in cluster.nodes["node_b"].processes()
                              for p in cluster.worker_processes()), 30,
                  "node_b to run a task")
        lost["at"] = time.time()
        cluster.nodes["node_b"].kill()
        lost["leftover"] = cluster.nodes["node_b"].processes()

    report = _run_with_fault(cluster, tmp_path, "node-kill", kill_node)
    assert lost["leftover"] == []
    assert report["rows"] == baseline[1]
    # the task running on node_b comes back as lost with the node (or its worker, or the
    # result object that lived there), never as a failure of the task itself
    _check_retries(report, lost["at"], NODE_LOST)


NODE_LOST = r"(NodeDiedError|WorkerCrashedError|ObjectLostError|OwnerDiedError|RaySystemError)"


def _check_retries(report: dict, fault_at: float, error_name: str) -> None:
    """The lost task was retried (as WorkerLost, not failed) soon after the fault: each retry
    names the task and the Ray error that lost it."""
    assert error_name, "an empty pattern would match any error"
    assert report["events"].get("retried", 0) >= 1, report
    assert report["events"].get("failed", 0) == 0, report
    first = report["retries"][0]
    for retry in report["retries"]:
        assert re.match(rf"\S+\[\d+\] .*lost on Ray: {error_name}: ", retry["error"]), retry
    detected = first["at"] - fault_at
    print(f"fault detected after {detected:.2f}s ({first['error']}); "
          f"job took {report['elapsed']:.1f}s with {len(report['retries'])} retried task(s)")
    assert detected < 60
    for at, kind, stage, partition in report["timeline"]:
        print(f"{at - fault_at:+7.2f}s {kind:9s} {stage}[{partition}]")
