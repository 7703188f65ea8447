"""A multi-node Ray cluster on this machine, started with `ray start` (tests and benchmarks).

`ray start --block` starts a 0-CPU head and two 1-CPU worker nodes (custom resources `node_a`
and `node_b` tell them apart), each with its own short temp dir, so that every process of a
node is a descendant of its `ray start` process or names its temp dir: a node can be killed
alone, and teardown kills exactly what was started. Ports are free ports, never fixed ones.
Used by tests/test_ray_cluster.py, tests/reliability/test_ray_nodes.py and
benchmarks/reliability.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

__all__ = ["Cluster", "RayNode", "ENV", "RAY", "free_ports"]

RAY = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
       "PYTHONUNBUFFERED": "1"}
ENV.pop("RAY_ADDRESS", None)


def free_ports(n: int) -> list[int]:
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

    def __init__(self, name: str, args: list[str], temp_dir: str, env: dict | None = None):
        self.name = name
        self.temp_dir = temp_dir
        self.log_path = f"{temp_dir}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={temp_dir}",
             "--object-store-memory=80000000", *args],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=ENV if env is None else env,
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
    """A head and two worker nodes; `env` is the environment of every `ray start`."""

    def __init__(self, env: dict | None = None):
        self.env = ENV if env is None else env
        self.tag = uuid.uuid4().hex[:6]
        self.nodes: dict[str, RayNode] = {}
        self.address = ""

    def start(self) -> None:
        gcs, dashboard, client, agent = free_ports(4)
        self.address = f"127.0.0.1:{gcs}"
        self.client_address = f"ray://127.0.0.1:{client}"
        head = RayNode("head", [
            "--head", f"--port={gcs}", "--num-cpus=0", "--include-dashboard=false",
            f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent}"], self._temp("h"), self.env)
        head.markers.append(f":{gcs} ")  # the client server names only the GCS address
        self.nodes["head"] = head
        head.wait_started()
        for name in ("node_a", "node_b"):
            self.add_worker(name)
        for name in ("node_a", "node_b"):
            self.nodes[name].wait_started()

    def add_worker(self, name: str) -> None:
        manager, agent = free_ports(2)
        self.nodes[name] = RayNode(name, [
            f"--address={self.address}", "--num-cpus=1", f"--resources={json.dumps({name: 1})}",
            f"--node-manager-port={manager}", f"--dashboard-agent-listen-port={agent}"],
            self._temp(name[-1]), self.env)

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

    def tasks_on(self, name: str) -> list[psutil.Process]:
        """Ray worker processes of node `name` running one of our tasks right now."""
        mine = {p.pid for p in self.nodes[name].processes()}
        return [p for p in self.worker_processes() if p.pid in mine]

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


