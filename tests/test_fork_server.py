"""The embedded runner's fork server: warm workers, and the guarantees of fresh interpreters kept.

Workers are forks of one server process; these tests check that it starts no thread of its
own and opens no DuckDB database before forking, that workers die with the driver, that a
killed server or worker is replaced, and that a user script without a main guard runs once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pyarrow as pa


def _threads(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as handle:
            names.append(handle.read().strip())
    return names


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.time() + seconds
    alive = list(pids)
    while alive and time.time() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.05)
    return alive


def test_workers_are_forks_of_a_server_without_threads_or_duckdb(local_sp):
    local_sp.from_items([1, 2, 3]).map("item + 1 AS x").count()  # workers ran DuckDB
    server = local_sp.runner._server.process.pid
    for pid in local_sp.runner.worker_pids:
        assert psutil.Process(pid).ppid() == server
    # only the main thread, plus the allocator thread that loading pyarrow's jemalloc starts
    names = _threads(server)
    assert names.count("jemalloc_bg_thd") <= 1
    assert len([n for n in names if n != "jemalloc_bg_thd"]) == 1, names
    modules = subprocess.run(["grep", "-c", "duckdb", f"/proc/{server}/maps"],
                             capture_output=True, text=True).stdout
    assert int(modules or 0) > 0  # duckdb is loaded in the server, so forks share it, but
    # no database was opened there: it would have started DuckDB's threads (checked above)


def test_worker_has_what_the_server_imported(local_sp):
    def modules(table: pa.Table) -> pa.Table:
        import sys as worker_sys

        loaded = [m for m in ("duckdb", "pyarrow.parquet", "smallpond.kernels.sql")
                  if m in worker_sys.modules]
        return pa.table({"loaded": [",".join(loaded)] * table.num_rows})

    rows = local_sp.from_items([1]).map_batches(modules).take_all()
    assert rows == [{"loaded": "duckdb,pyarrow.parquet,smallpond.kernels.sql"}]


def test_driver_killed_takes_server_and_workers_with_it(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import smallpond, time, sys
        sp = smallpond.init(data_root={str(tmp_path / 'root')!r}, num_executors=2)
        runner = sp.runner
        pids = [runner._server.process.pid, *runner.worker_pids]
        print(" ".join(map(str, pids)), flush=True)
        time.sleep(600)
    """))
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]
        assert len(pids) == 3 and all(psutil.pid_exists(p) for p in pids)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        assert _wait_gone(pids) == []
    finally:
        if driver.poll() is None:
            driver.kill()


def test_killed_server_is_replaced_and_jobs_still_run(local_sp):
    runner = local_sp.runner
    old_server = runner._server.process.pid
    old_workers = runner.worker_pids
    os.kill(old_server, signal.SIGKILL)
    assert _wait_gone([old_server, *old_workers]) == []  # workers died with their server
    df = local_sp.from_items(list(range(40))).repartition(4, by_rows=True)
    assert sorted(r["item"] for r in df.take_all()) == list(range(40))
    assert runner._server.process.pid != old_server


def test_script_without_main_guard_runs_once(tmp_path):
    marker = tmp_path / "ran.txt"
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import smallpond
        with open({str(marker)!r}, "a") as handle:
            handle.write("x")
        sp = smallpond.init(data_root={str(tmp_path / 'root')!r}, num_executors=2)
        df = sp.from_items(list(range(10))).repartition(2, by_rows=True)
        print(sp.partial_sql("SELECT max(item) AS s FROM {{0}}", df).to_arrow()
              .column("s").to_pylist())
        sp.shutdown()
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[4, 9]"
    assert marker.read_text() == "x"  # the script body ran in the driver only


def test_workers_draw_different_random_numbers(local_sp):
    def draw(table: pa.Table) -> pa.Table:
        time.sleep(0.3)  # both workers take a partition
        return pa.table({"pid": [os.getpid()], "value": [int(np.random.randint(1 << 62))]})

    df = local_sp.from_items([0, 1]).repartition(2, by_rows=True).map_batches(draw)
    rows = df.recompute().take_all()
    assert len({r["pid"] for r in rows}) == 2, "both partitions ran on one worker"
    assert rows[0]["value"] != rows[1]["value"]


def test_preload_reaches_idle_workers_and_later_forks(local_sp):
    runner = local_sp.runner
    runner.preload(["smallpond.graysort.checksum"])

    def loaded(table: pa.Table) -> pa.Table:
        import sys as worker_sys

        return pa.table({"ok": ["smallpond.graysort.checksum" in worker_sys.modules]})

    assert local_sp.from_items([1]).map_batches(loaded).recompute().take_all() == [{"ok": True}]
    for pid in runner.worker_pids:  # replace the workers: new forks have it from the server
        os.kill(pid, signal.SIGKILL)
    assert local_sp.from_items([2]).map_batches(loaded).recompute().take_all() == [{"ok": True}]
