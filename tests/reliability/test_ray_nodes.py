"""The Ray runner on a multi-node `ray start` cluster: every README address form, with and
without Ray's token authentication; R2 on real nodes; a driver killed mid-job leaves no task
running, through `ray://` too; the default task memory comes from the nodes.

Two clusters run in turn (smallpond/bench/raycluster.py, free ports): one started with
authentication disabled, one with RAY_AUTH_MODE=token. Drivers run as new users would: a fresh
process, RAY_AUTH_MODE unset, a home folder that holds the cluster's token or none. Killing a
worker process and a whole node in the middle of a job is also proven by
tests/test_ray_cluster.py (test_sigkill_of_a_worker_process, test_a_worker_node_dies_mid_job).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import psutil
import pytest

from smallpond.bench.raycluster import ENV, RAY, Cluster

pytestmark = [pytest.mark.ray_cluster, pytest.mark.timeout(900)]

DRIVER = textwrap.dedent('''
    import json, os, sys, time
    import smallpond

    args = json.loads(sys.argv[1])
    options = {"data_root": args["data_root"], "runner": "ray", "ray_connect_timeout": 60,
               **args.get("options", {})}
    if args.get("address"):
        options["ray_address"] = args["address"]
    report = {}
    try:
        sp = smallpond.init(**options)
        sp.runner
        import ray
        report["nodes_memory"] = sorted(
            int(n["Resources"]["memory"] // n["Resources"]["CPU"]) for n in ray.nodes()
            if n.get("Alive") and n["Resources"].get("CPU"))
        if args["job"] == "count":
            df = sp.from_items(list(range(100))).repartition(4, by_rows=True)
            report["count"] = df.map("item * 2 AS x").count()
        elif args["job"] == "sleep":
            def sleeps(table, folder=args["marker"]):
                import os, time
                open(os.path.join(folder, str(os.getpid())), "w").close()
                time.sleep(600)
                return table
            df = sp.from_items(list(range(4))).repartition(2, by_rows=True)
            df.map_batches(sleeps).count()
        elif args["job"] == "graysort":
            from smallpond.graysort import job
            result = job.run(args["output"], records=args["records"], partitions=8,
                             session=sp)
            report.update(valid=result.valid, checksum=result.output_checksum)
        report["task_memory"] = sp.runner._memory
        report["capacity"] = sp.runner.capacity()
        report["retried"] = [e.error for e in sp.events if e.kind == "retried"]
        report["nodes"] = sorted(set(sp.runner.task_nodes().values()))
        sp.shutdown()
    except smallpond.errors.SmallpondError as error:
        report["error"] = f"{type(error).__name__}: {error}"
    json.dump(report, open(args["report"], "w"))
''')


class Driver:
    """A driver subprocess as a new user runs it: its own home (with or without a token)."""

    def __init__(self, tmp_path, name: str, token: str | None, env: dict | None = None):
        self.tmp_path, self.name = tmp_path, name
        home = tmp_path / f"home-{name}"
        (home / ".ray").mkdir(parents=True)
        if token:
            (home / ".ray" / "auth_token").write_text(token)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")
                    and k not in ("RAY_ADDRESS", "SMALLPOND_RAY_ADDRESS", "SP_RAY_ADDRESS")}
        self.env.update(HOME=str(home), PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0",
                        **(env or {}))
        self.script = tmp_path / "driver.py"
        self.script.write_text(DRIVER)
        self.report = tmp_path / f"{name}.json"
        self.log_path = tmp_path / f"{name}.log"

    def start(self, job: str, address: str | None = None, **extra) -> subprocess.Popen:
        args = {"job": job, "address": address, "report": str(self.report),
                "data_root": str(self.tmp_path / f"root-{self.name}"), **extra}
        self.log = open(self.log_path, "w")
        return subprocess.Popen([sys.executable, str(self.script), json.dumps(args)],
                                env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def run(self, job: str, address: str | None = None, timeout: float = 300, **extra) -> dict:
        process = self.start(job, address, **extra)
        try:
            process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
            self.log.close()
        text = self.log_path.read_text()
        assert self.report.exists(), f"the driver ended without a report:\n{text[-4000:]}"
        report = json.loads(self.report.read_text())
        report["log"] = text
        return report


@pytest.fixture(scope="module", params=["disabled", "token"])
def cluster(request, tmp_path_factory):
    if not os.path.exists(RAY):
        pytest.skip("the `ray` command is not installed")
    home = tmp_path_factory.mktemp("cluster-home")
    token = uuid.uuid4().hex if request.param == "token" else None
    env = {**ENV, "HOME": str(home), "RAY_AUTH_MODE": request.param}
    if token:
        (home / "token").write_text(token)
        env["RAY_AUTH_TOKEN_PATH"] = str(home / "token")
    cluster = Cluster(env)
    cluster.auth, cluster.token = request.param, token
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    assert not cluster.leftovers(), "Ray processes survived the cluster teardown"


def _auto_env(cluster, tmp_path) -> dict:
    """RAY_TMPDIR whose cluster file names this cluster (as `ray start` leaves on the head)."""
    folder = tmp_path / "raytmp" / "ray"
    folder.mkdir(parents=True, exist_ok=True)
    with open(os.path.join(cluster.nodes["head"].temp_dir, "ray_current_cluster")) as handle:
        (folder / "ray_current_cluster").write_text(handle.read())
    return {"RAY_TMPDIR": str(tmp_path / "raytmp")}


FORMS = ["HOST:PORT", "auto", "ray://HOST:PORT", "RAY_ADDRESS", "SMALLPOND_RAY_ADDRESS"]


@pytest.mark.parametrize("form", FORMS)
def test_every_address_form_connects(cluster, tmp_path, form):
    """With the cluster's token in the driver's home (where `ray start` and a local
    `ray.init()` keep it) and RAY_AUTH_MODE unset, as a new user has it."""
    env, address = {}, None
    if form == "HOST:PORT":
        address = cluster.address
    elif form == "auto":
        address = "auto"
        env = _auto_env(cluster, tmp_path)
    elif form == "ray://HOST:PORT":
        address = cluster.client_address
    else:
        env = {form: cluster.address}
    report = Driver(tmp_path, "form", cluster.token, env).run("count", address)
    assert report.get("count") == 100, report
    assert len(report["nodes"]) >= 1


def test_a_driver_without_the_token_gets_a_clear_error_or_connects(cluster, tmp_path):
    report = Driver(tmp_path, "no-token", None).run("count", cluster.address, timeout=200)
    if cluster.auth == "token":
        assert report.get("error", "").startswith("ConfigError"), report
        assert "auth_token" in report["error"] and cluster.address in report["error"]
    else:
        assert report.get("count") == 100, report


def test_default_task_memory_comes_from_the_nodes(cluster, tmp_path):
    report = Driver(tmp_path, "memory", cluster.token).run("count", cluster.address)
    assert report["task_memory"] == min(report["nodes_memory"]), report
    assert report["capacity"] == 2  # memory never holds concurrency below the CPUs


def _task_processes(cluster) -> list[psutil.Process]:
    return [p for p in cluster.worker_processes()
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("form", ["HOST:PORT", "ray://HOST:PORT"])
def test_a_killed_driver_leaves_no_task_running(cluster, tmp_path, form):
    """Through a GCS address Ray ends a dead driver's tasks; through `ray://` the client
    server keeps them for its reconnect grace period, so smallpond's own lease does."""
    marker = tmp_path / "started"
    marker.mkdir()
    address = cluster.address if form == "HOST:PORT" else cluster.client_address
    driver = Driver(tmp_path, "killed", cluster.token)
    process = driver.start("sleep", address, marker=str(marker),
                           options={"heartbeat_timeout": 6})
    try:
        deadline = time.monotonic() + 240
        while len(os.listdir(marker)) < 2 and time.monotonic() < deadline:
            assert process.poll() is None, driver.log_path.read_text()[-3000:]
            time.sleep(0.1)
        assert len(os.listdir(marker)) == 2, "the tasks never started"
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed = time.monotonic()
    finally:
        if process.poll() is None:
            process.kill()
        driver.log.close()
    tasks = [int(pid) for pid in os.listdir(marker)]
    while time.monotonic() - killed < 120 and any(_alive(pid) for pid in tasks):
        time.sleep(0.2)
    ended = time.monotonic() - killed
    print(f"{form}: the dead driver's tasks ended {ended:.1f} s after the kill")
    assert not any(_alive(pid) for pid in tasks), "tasks outlived their driver"


def _alive(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    return False


def test_graysort_survives_a_node_killed_at_half_way(cluster, tmp_path):
    """R2 on nodes: a worker node dies with the job half done; the sort is still valid."""
    if cluster.auth != "disabled":
        pytest.skip("one cluster is enough for the node kill: it leaves the cluster smaller")
    driver = Driver(tmp_path, "node-kill", cluster.token)
    output = str(tmp_path / "sorted")
    process = driver.start("graysort", cluster.address, output=output, records=2_000_000)
    root = tmp_path / "root-node-kill" / "tasks"
    try:
        deadline = time.monotonic() + 300
        while not (root.exists() and len(os.listdir(root)) >= 9 and cluster.tasks_on("node_b")):
            assert process.poll() is None, driver.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "node_b never ran a task past half way"
            time.sleep(0.02)
        cluster.nodes["node_b"].kill()
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
        driver.log.close()
    report = json.loads(driver.report.read_text())
    assert report.get("valid") is True, (report, driver.log_path.read_text()[-3000:])
    assert report["retried"], "the node died with none of our tasks on it: nothing was tested"
    print(f"node kill: retried {report['retried']}")
