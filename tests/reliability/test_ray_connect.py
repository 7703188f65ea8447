"""The Ray runner connects the way the README says and never hangs.

- no address: a private local Ray, even beside a stale cluster file that names a dead cluster;
- 'auto' with a stale cluster file, or an address nobody listens on: a clear error at once;
- an address that accepts connections but never answers: a clear error at the deadline;
- Ctrl-C and SIGTERM end the driver while it connects and while its tasks run, leaving no
  task running.
Drivers run as subprocesses: a hung connection must not touch this process's own Ray.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest

import smallpond
from smallpond.errors import ConfigError
from smallpond.runners.ray_connect import RayTarget, choose_address, connect

pytest.importorskip("ray")


@pytest.fixture
def ray_env(tmp_path):
    """Environment for a driver subprocess: its own short Ray temp dir, no address set."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "SP_RAY_ADDRESS", "SMALLPOND_RAY_ADDRESS")}
    temp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # Ray's socket paths must stay short
    env.update(RAY_TMPDIR=temp, TMPDIR=temp, PYTHONUNBUFFERED="1",
               RAY_USAGE_STATS_ENABLED="0")
    yield env
    shutil.rmtree(temp, ignore_errors=True)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stale_cluster_file(temp: str) -> str:
    folder = os.path.join(temp, "ray")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "ray_current_cluster")
    with open(path, "w") as handle:
        handle.write(f"127.0.0.1:{_dead_port()}")
    return path


@pytest.mark.reliability_quick
def test_addresses_come_from_the_argument_then_the_environment(tmp_path, monkeypatch):
    for name in ("RAY_ADDRESS", "SP_RAY_ADDRESS", "SMALLPOND_RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    config = smallpond.config.resolve_config(data_root=str(tmp_path), runner="ray")
    assert choose_address(config) == RayTarget("local", "default")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert choose_address(config).address == "10.0.0.1:6379"
    monkeypatch.setenv("SP_RAY_ADDRESS", "10.0.0.2:6379")
    config = smallpond.config.resolve_config(data_root=str(tmp_path))
    assert config.runner == "ray" and choose_address(config).address == "10.0.0.2:6379"
    config = smallpond.config.resolve_config(data_root=str(tmp_path), ray_address="ray://h:1")
    assert choose_address(config) == RayTarget("ray://h:1", "ray_address")
    with pytest.raises(ConfigError, match="not 'local', 'auto'"):
        choose_address(config.with_(ray_address="no-port-here"))


@pytest.mark.reliability_quick
def test_auto_with_a_stale_cluster_file_fails_at_once(ray_env, monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_TMPDIR", ray_env["RAY_TMPDIR"])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = _stale_cluster_file(ray_env["RAY_TMPDIR"])
    config = smallpond.config.resolve_config(data_root=str(tmp_path), ray_address="auto")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"cannot reach Ray at 127.0.0.1:.*{path}.*ray stop"):
        connect(config)
    assert time.monotonic() - started < 10


@pytest.mark.reliability_quick
def test_an_address_nobody_listens_on_fails_at_once(tmp_path):
    config = smallpond.config.resolve_config(data_root=str(tmp_path),
                                             ray_address=f"127.0.0.1:{_dead_port()}")
    with pytest.raises(ConfigError, match="cannot reach Ray at 127.0.0.1:.*ray_address.*refused"):
        connect(config)


CONNECT = textwrap.dedent('''
    import sys, time
    import smallpond
    sp = smallpond.init(data_root=sys.argv[1], ray_address=sys.argv[2], ray_connect_timeout=4)
    print("connecting", flush=True)
    started = time.monotonic()
    try:
        sp.runner
    except smallpond.errors.ConfigError as error:
        print(f"error after {time.monotonic() - started:.1f}s: {error}", flush=True)
        sys.exit(3)
''')


def _black_hole():
    """A port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    return server


def _start(code: str, env: dict, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_line(process: subprocess.Popen, word: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if word in line:
            return
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"the driver never printed {word!r}")


@pytest.mark.reliability_quick
def test_a_silent_address_fails_at_the_deadline(tmp_path, ray_env):
    server = _black_hole()
    try:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        process = _start(CONNECT, ray_env, tmp_path / "data", address)
        output, _ = process.communicate(timeout=120)
    finally:
        server.close()
    assert process.returncode == 3, output
    assert f"could not connect to Ray at {address} (ray_address) within 4 s" in output


@pytest.mark.reliability_quick
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_end_a_driver_that_is_connecting(tmp_path, ray_env, signum):
    server = _black_hole()
    code = CONNECT.replace("ray_connect_timeout=4", "ray_connect_timeout=600")
    try:
        process = _start(code, ray_env, tmp_path / "data", f"127.0.0.1:{server.getsockname()[1]}")
        _wait_line(process, "connecting")
        time.sleep(1.0)
        sent = time.monotonic()
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        server.close()
    # SIGTERM: SystemExit(143) once connecting began, the default action (-15) before it;
    # Ctrl-C: KeyboardInterrupt, exit status 1
    expected = (128 + signum, -signum) if signum == signal.SIGTERM else (1,)
    assert process.returncode in expected, output
    assert took < 30, output


RUNNING = textwrap.dedent('''
    import os, sys, time
    import smallpond
    sp = smallpond.init(data_root=sys.argv[1], runner="ray", ray_num_cpus=2)
    marker = sys.argv[2]

    def sleeps(table):
        import os, time
        with open(os.path.join(marker, str(os.getpid())), "w"):
            pass
        time.sleep(600)
        return table

    import ray
    print("ray", os.getpid(), flush=True)
    sp.from_items(list(range(4))).repartition(2, by_rows=True).map_batches(sleeps).count()
''')


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_driver_stopped_while_its_tasks_run_leaves_nothing_running(tmp_path, ray_env, signum):
    """Ctrl-C, SIGTERM and even SIGKILL of a driver with a private Ray: the tasks, workers and
    Ray's own processes all end."""
    marker = tmp_path / "pids"
    marker.mkdir()
    process = _start(RUNNING, ray_env, tmp_path / "data", marker)
    try:
        _wait_line(process, "ray")
        deadline = time.monotonic() + 120
        while len(os.listdir(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(os.listdir(marker)) == 2, "the tasks never started"
        tree = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signum)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    tasks = [p for p in tree if str(p.pid) in os.listdir(marker)]
    assert len(tasks) == 2
    _, alive = psutil.wait_procs(tasks, timeout=60)
    assert not _running(alive), "tasks outlived their driver"
    # Ray's dashboard and runtime-env agents of a private Ray outlive a SIGKILLed driver by
    # a minute or two (until their own check of the raylet); everything else goes at once
    _, alive = psutil.wait_procs(tree, timeout=240 if signum == signal.SIGKILL else 60)
    assert not _running(alive), [p.cmdline()[:1] for p in _running(alive)]


def _running(processes) -> list:
    found = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found
