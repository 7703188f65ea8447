"""The Ray runner on a real multi-node Ray cluster simulated on this machine (slow tier).

`ray start --block` starts a 0-CPU head and two 1-CPU worker nodes (custom resources `node_a`
and `node_b` tell them apart), each with its own short temp dir, so that every process of a
node is a descendant of its `ray start` process or names its temp dir: a node can be killed
alone, and teardown kills exactly what the fixture started. Jobs run in a separate driver
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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid

import pyarrow.parquet as pq
import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray")

pytestmark = [pytest.mark.ray_cluster, pytest.mark.timeout(300)]

RAY = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
       "PYTHONUNBUFFERED": "1"}
ENV.pop("RAY_ADDRESS", None)
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


def _free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class RayNode:
    """One `ray start --block` process and everything it starts."""

    def __init__(self, name: str, args: list[str], temp_dir: str):
        self.name = name
        self.temp_dir = temp_dir
        self.log_path = f"{temp_dir}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={temp_dir}",
             "--object-store-memory=80000000", *args],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=ENV,
            start_new_session=True)
        self.markers = [temp_dir]

    def wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as handle:
                text = handle.read()
            if "Ray runtime started" in text:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"ray node {self.name} did not start:\n{text[-3000:]}")

    def processes(self) -> list[psutil.Process]:
        """The node's process tree, plus daemons that name its temp dir or ports."""
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.process.pid)
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                cmdline = " ".join(proc.info["cmdline"] or ())
                if any(marker in cmdline for marker in self.markers):
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
        found.pop(os.getpid(), None)
        return [p for p in found.values() if _alive(p)]

    def kill(self) -> None:
        """SIGKILL the whole node at once (a machine that dies), then reap."""
        for _ in range(3):
            victims = self.processes()
            if not victims:
                break
            for proc in victims:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(victims, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.log.close()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Cluster:
    def __init__(self):
        self.tag = uuid.uuid4().hex[:6]
        self.nodes: dict[str, RayNode] = {}
        self.address = ""

    def start(self) -> None:
        gcs, dashboard, client, agent = _free_ports(4)
        self.address = f"127.0.0.1:{gcs}"
        self.client_address = f"ray://127.0.0.1:{client}"
        head = RayNode("head", [
            "--head", f"--port={gcs}", "--num-cpus=0", "--include-dashboard=false",
            f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent}"], self._temp("h"))
        head.markers.append(f":{gcs} ")  # the client server names only the GCS address
        self.nodes["head"] = head
        head.wait_started()
        for name in ("node_a", "node_b"):
            self.add_worker(name)
        for name in ("node_a", "node_b"):
            self.nodes[name].wait_started()

    def add_worker(self, name: str) -> None:
        manager, agent = _free_ports(2)
        self.nodes[name] = RayNode(name, [
            f"--address={self.address}", "--num-cpus=1", f"--resources={json.dumps({name: 1})}",
            f"--node-manager-port={manager}", f"--dashboard-agent-listen-port={agent}"],
            self._temp(name[-1]))

    def _temp(self, suffix: str) -> str:
        # short: Ray's unix socket paths live under it (limit ~107 characters)
        return os.path.join(tempfile.gettempdir(), f"rt-{self.tag}{suffix}")

    def worker_processes(self) -> list[psutil.Process]:
        """Ray worker processes that are running one of our tasks right now."""
        found = []
        for name in ("node_a", "node_b"):
            for proc in self.nodes[name].processes():
                with contextlib.suppress(psutil.Error):
                    if proc.cmdline() and proc.cmdline()[0].startswith("ray::smallpond_task"):
                        found.append(proc)
        return found

    def leftovers(self) -> list[psutil.Process]:
        return [p for node in self.nodes.values() for p in node.processes()]

    def stop(self) -> None:
        for name in ("node_b", "node_a", "head"):
            if name in self.nodes:
                self.nodes[name].kill()
        for node in self.nodes.values():
            shutil.rmtree(node.temp_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.remove(node.log_path)


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
