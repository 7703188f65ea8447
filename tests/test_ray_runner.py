"""The Ray runner on the suite's one local Ray instance: typed errors cross Ray unchanged, an
initialized Ray is reused and left running, lost workers are retried, results equal the
embedded runner's and DuckDB's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import duckdb
import pyarrow as pa
import pytest

import smallpond
from smallpond.errors import PartitionKeyError, SqlError, TaskError, UserFunctionError
from smallpond.planner.graph import Task, TaskSlice

ray = pytest.importorskip("ray")


@pytest.fixture
def ray_sp(ray_address, tmp_path):
    """A private Ray-runner session on the shared Ray instance."""
    session = smallpond.init(data_root=str(tmp_path / "data"), ray_address=ray_address)
    yield session
    session.shutdown()


def _kinds(session) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in session.events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return counts


def _leftovers(session) -> list[str]:
    staging = os.path.join(session.config.scratch_dir, "staging")
    return os.listdir(staging) if os.path.isdir(staging) else []


# -- typed errors ---------------------------------------------------------------------------
def test_bad_sql_is_a_sql_error_with_the_sql_text(ray_sp):
    df = ray_sp.from_items([1, 2, 3])
    with pytest.raises(SqlError, match="SELEC item FROM") as info:
        ray_sp.partial_sql("SELEC item FROM {0}", df).to_arrow()
    assert type(info.value) is SqlError  # the original type, not Ray's RayTaskError(SqlError)
    assert not isinstance(info.value, ray.exceptions.RayError)
    assert "SELEC" in info.value.sql
    assert _leftovers(ray_sp) == []


def test_user_function_error_names_the_function(ray_sp):
    def explode_on_seven(row):
        if row["item"] == 7:
            raise ValueError("seven is not allowed")
        return row

    df = ray_sp.from_items(list(range(10))).repartition(3, by_rows=True)
    with pytest.raises(UserFunctionError, match="explode_on_seven") as info:
        df.map(explode_on_seven).to_arrow()
    error = info.value
    # the same typed error as on the embedded runner, and also the user's own exception
    assert isinstance(error, UserFunctionError) and isinstance(error, ValueError)
    assert error.function and "explode_on_seven" in error.function
    assert "seven is not allowed" in str(error) and error.remote_traceback
    assert error.stage.startswith("map") and error.partition == 2  # rows 7..9 of 10 in 3


def test_partition_key_out_of_range(ray_sp):
    # only the mapper of rows 20..29 (partition 2) meets the bad key: the error names it
    df = ray_sp.from_items(list(range(30))).repartition(3, by_rows=True) \
        .repartition(10, by="CASE WHEN item = 25 THEN 10 ELSE item % 10 END")
    with pytest.raises(PartitionKeyError, match="partition key 10 is out of range 0-9") as info:
        df.count()
    assert type(info.value) is PartitionKeyError
    assert info.value.stage.startswith("shuffle_expr") and info.value.partition == 2


# -- connection -------------------------------------------------------------------------------
def test_reuses_an_initialized_ray_and_leaves_it_running(ray_address, tmp_path):
    assert ray.is_initialized()
    session = smallpond.init(data_root=str(tmp_path / "data"), ray_address=ray_address)
    assert session.config.runner == "ray"
    runner = session.runner
    assert runner.name == "ray" and not runner.owns_ray
    assert runner.capacity() == int(ray.cluster_resources()["CPU"])
    assert session.from_items(list(range(100))).repartition(4, by_rows=True).count() == 100
    session.shutdown()
    assert ray.is_initialized()

    @ray.remote
    def still_up():
        return "yes"

    assert ray.get(still_up.remote()) == "yes"
    again = smallpond.init(data_root=str(tmp_path / "data"), runner="ray")
    assert again.from_items([1, 2]).count() == 2  # no address: the initialized Ray again
    again.shutdown()
    assert ray.is_initialized()


OWNED = textwrap.dedent('''
    import sys
    import psutil
    import smallpond
    assert "ray" not in sys.modules
    sp = smallpond.init(data_root=sys.argv[1], ray_address="local", ray_num_cpus=1)
    assert sp.from_items(list(range(10))).repartition(2, by_rows=True).count() == 10
    import ray
    assert ray.is_initialized() and sp.runner.owns_ray
    assert ray.cluster_resources()["CPU"] == 1
    started = psutil.Process().children(recursive=True)
    assert started, "a local Ray starts its processes under the driver"
    sp.shutdown()
    assert not ray.is_initialized()
    gone, alive = psutil.wait_procs(started, timeout=20)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    print("OK")
''')


def test_starts_and_shuts_down_its_own_ray(tmp_path):
    """Without an initialized Ray, the runner starts one, and its shutdown leaves nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SP_RAY_ADDRESS",
                                                            "SMALLPOND_RAY_ADDRESS")}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short, and removed
    try:
        result = subprocess.run([sys.executable, "-c", OWNED, str(tmp_path / "data")],
                                env=env, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_import_does_not_import_ray(tmp_path):
    code = ("import sys, smallpond; "
            f"smallpond.init(data_root={str(tmp_path)!r}).from_items([1]).count(); "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- faults -----------------------------------------------------------------------------------
def test_a_killed_worker_is_retried(ray_sp, tmp_path):
    marker = str(tmp_path / "killed-once")

    def die_once(table):
        import os
        import signal

        if table.num_rows and 17 in table["item"].to_pylist() and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # the Ray worker process dies mid-task
        return table

    df = ray_sp.from_items(list(range(40))).repartition(4, by_rows=True).map_batches(die_once)
    assert sorted(df.to_arrow()["item"].to_pylist()) == list(range(40))
    assert os.path.exists(marker)
    kinds = _kinds(ray_sp)
    assert kinds["retried"] == 1 and "failed" not in kinds
    retried = [e for e in ray_sp.events if e.kind == "retried"][0]
    assert "WorkerCrashedError" in retried.error
    assert _leftovers(ray_sp) == []


def test_a_worker_that_always_dies_fails_after_the_retry_limit(ray_address, tmp_path):
    session = smallpond.init(data_root=str(tmp_path / "data"), ray_address=ray_address,
                             max_retries=1)

    def always_dies(table):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    try:
        with pytest.raises(TaskError, match="worker died 2 times"):
            session.from_items([1, 2, 3]).map_batches(always_dies).to_arrow()
    finally:
        session.shutdown()


def test_a_failed_job_cancels_running_tasks_and_ray_stays_usable(ray_sp, tmp_path):
    marker = str(tmp_path / "sleeper")

    def sleep_or_fail(table):
        import os
        import time

        try:  # the first task to start sleeps; the next one, running beside it, fails
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            time.sleep(0.5)
            raise RuntimeError("a later partition fails") from None
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(120)
        return table

    df = ray_sp.from_items(list(range(8))).repartition(4, by_rows=True)
    started = time.monotonic()
    with pytest.raises(UserFunctionError, match="a later partition fails"):
        df.map_batches(sleep_or_fail).to_arrow()
    assert time.monotonic() - started < 60  # the sleeper was cancelled, not awaited
    assert ray_sp.runner._running == {}
    sleeper = int(open(marker).read())
    psutil = pytest.importorskip("psutil")
    deadline = time.monotonic() + 10
    while psutil.pid_exists(sleeper) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(sleeper), "ray.cancel(force=True) kills the worker"
    assert ray_sp.from_items(list(range(5))).repartition(2, by_rows=True).count() == 5
    assert _leftovers(ray_sp) == []


# -- results ----------------------------------------------------------------------------------
def _table(rows: int = 20_000) -> pa.Table:
    return duckdb.sql(
        f"SELECT range AS id, (hash(range) % 97)::BIGINT AS k, (range % 13) * 1.5 AS v, "
        f"CASE WHEN range % 7 = 0 THEN NULL ELSE 's' || (range % 5) END AS s "
        f"FROM range({rows})").to_arrow_table()


QUERY = ("SELECT k, count(*) AS c, sum(v) AS sv, count(s) AS cs, min(id) AS lo, max(id) AS hi "
         "FROM {0} GROUP BY k")


def _run(session, table: pa.Table) -> list[tuple]:
    df = session.from_arrow(table).repartition(3, by_rows=True).repartition(7, hash_by="k")
    result = session.partial_sql(QUERY, df).to_arrow()
    return sorted(tuple(row.values()) for row in result.to_pylist())


def test_hash_repartition_aggregate_equals_local_runner_and_duckdb(ray_sp, tmp_path):
    table = _table()
    con = duckdb.connect()
    con.register("t", table)
    expected = sorted(con.execute(QUERY.format("t")).fetchall())
    local = smallpond.init(data_root=str(tmp_path / "local"), runner="local", num_executors=2)
    try:
        on_local = _run(local, table)
    finally:
        local.shutdown()
    on_ray = _run(ray_sp, table)
    assert on_ray == on_local == expected
    assert len(on_ray) == 97


def test_results_come_back_as_metadata_and_record_nodes(ray_sp):
    df = ray_sp.from_items(list(range(50))).repartition(5, by_rows=True)
    assert df.count() == 50
    nodes = set(ray_sp.runner.task_nodes().values())
    assert nodes <= {n["NodeID"] for n in ray.nodes()}
    assert len(nodes) == 1  # one local node here; several on a cluster (test_ray_cluster.py)


# -- scheduling decisions (no tasks run) ------------------------------------------------------
def _task(*producers: str) -> Task:
    return Task("t-key", "stage", 0, "sql", {}, (tuple(TaskSlice(p, 0) for p in producers),))


def test_locality_prefers_the_node_with_most_input_bytes(ray_sp):
    runner = ray_sp.runner
    runner._refresh()
    runner._nodes = {"a" * 56: {"CPU": 1, "memory": 8 << 30},
                     "b" * 56: {"CPU": 4, "memory": 2 << 30}}
    runner._cluster_at = time.monotonic() + 3600  # keep this fake view
    runner._where = {"p1": ("b" * 56, 700), "p2": ("a" * 56, 500), "p3": ("a" * 56, 100)}
    options = runner._options(_task("p1", "p2", "p3"))
    strategy = options["scheduling_strategy"]
    assert strategy.node_id == "b" * 56 and strategy.soft
    assert options["num_cpus"] == 1 and options["max_retries"] == 0
    assert options["retry_exceptions"] is False
    assert "scheduling_strategy" not in runner._options(_task("unknown"))
    # a node that just lost a task (NodeDiedError) is avoided while Ray still lists it
    runner._suspect(RuntimeError(f"node died. Node IP: 1.2.3.4, node ID: {'b' * 56}."))
    runner._cluster_at = time.monotonic() + 3600
    assert runner._options(_task("p1"))["scheduling_strategy"].node_id == "a" * 56


def test_memory_request_is_capped_at_the_smallest_node(ray_address, tmp_path):
    session = smallpond.init(data_root=str(tmp_path / "data"), ray_address=ray_address,
                             memory_per_task="1000GB")
    try:
        runner = session.runner
        runner._refresh(force=True)
        smallest = min(int(r["memory"]) for r in runner._nodes.values() if r.get("CPU"))
        assert runner._options(_task())["memory"] == smallest
        assert session.from_items([1, 2, 3]).count() == 3  # still schedulable
    finally:
        session.shutdown()


def test_a_ray_client_connection_is_tried_again(monkeypatch):
    """`ray://` connections retry a failed start of the client server; others do not."""
    from smallpond.runners import ray_connect

    calls = []

    def flaky_init(address=None, **kwargs):
        calls.append(address)
        if len(calls) == 1:
            raise ConnectionAbortedError("Starting Ray client server failed")

    monkeypatch.setattr(ray_connect.ray, "init", flaky_init)
    monkeypatch.setattr(ray_connect.ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray_connect.time, "sleep", lambda seconds: None)
    ray_connect._init(ray_connect.RayTarget("ray://head:10001", "test"), {})
    assert calls == ["ray://head:10001"] * 2
    calls.clear()
    with pytest.raises(ConnectionAbortedError):
        ray_connect._init(ray_connect.RayTarget("head:6379", "test"), {})
    assert calls == ["head:6379"]
