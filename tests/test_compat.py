"""smallpond 0.15 scripts run unchanged: each case is a 0.15 call and the behaviour 0.15 gives.

Differences kept on purpose (safer, a 0.15 script still runs) are listed in the README.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import smallpond
from smallpond.errors import PlanError, UserFunctionError


def _stages(df) -> str:
    return df.explain("physical")


# -- writing to the same folder again ----------------------------------------------------------
def test_rerun_replaces_its_own_previous_output(sp, tmp_path):
    out = str(tmp_path / "totals")
    df = sp.from_items([{"user": i % 3, "amount": i} for i in range(30)])
    totals = sp.partial_sql("SELECT user, sum(amount) AS total FROM {0} GROUP BY user", df)
    totals.write_parquet(out)
    totals.write_parquet(out)  # 0.15: the second run of a script replaces its output
    assert sorted(sp.read_parquet(out).to_arrow()["total"].to_pylist()) == [135, 145, 155]


def test_quickstart_runs_twice(tmp_path):
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "quickstart.py")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    for _ in range(2):
        done = subprocess.run([sys.executable, script], capture_output=True, text=True,
                              timeout=300, env=env)
        assert done.returncode == 0, done.stderr


# -- reuse: Python functions run again in a new session; the same job resumes ----------------
def _calls_script(tmp_path, job_id: str | None, deterministic: bool) -> str:
    return textwrap.dedent(f"""
        import os, smallpond
        sp = smallpond.init(data_root={str(tmp_path / "root")!r}, num_executors=1,
                            job_id={job_id!r})
        marker = {str(tmp_path / "calls")!r}

        def count_call(row):
            with open(marker, "a") as handle:
                handle.write("x")
            return row

        df = sp.from_items([1, 2, 3]).map(count_call, deterministic={deterministic})
        assert df.count() == 3
    """)


@pytest.mark.parametrize("job_id, deterministic, calls", [
    (None, False, 6),      # 0.15: a new session runs the function again
    ("job-7", False, 3),   # the same job_id resumes (0.15's resume)
    (None, True, 3),       # marked deterministic: reused by any later session
])
def test_python_functions_are_reused_only_by_the_same_job(tmp_path, job_id, deterministic,
                                                          calls):
    script = tmp_path / "job.py"
    script.write_text(_calls_script(tmp_path, job_id, deterministic))
    for _ in range(2):
        subprocess.run([sys.executable, str(script)], check=True, timeout=300)
    assert len((tmp_path / "calls").read_text()) == calls


def test_a_write_after_deleting_the_output_writes_again(tmp_path):
    script = tmp_path / "write.py"
    out = tmp_path / "out"
    script.write_text(textwrap.dedent(f"""
        import smallpond
        sp = smallpond.init(data_root={str(tmp_path / "root")!r}, num_executors=1)
        sp.from_items(list(range(10))).map(lambda r: r).write_parquet({str(out)!r})
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=300)
    for name in os.listdir(out):
        os.remove(out / name)
    subprocess.run([sys.executable, str(script)], check=True, timeout=300)
    assert pq.read_table(str(out / "part-00000.parquet")).num_rows == 10


def test_random_sql_is_not_reused_across_sessions(tmp_path):
    values = []
    for _ in range(2):
        session = smallpond.init(data_root=str(tmp_path / "root"), num_executors=1)
        values.append(session.from_items([1]).map("random() AS r").take_all()[0]["r"])
        session.shutdown()
    assert values[0] != values[1]


def test_recompute_as_a_bare_statement(local_sp):
    df = local_sp.from_items(list(range(10))).map("item * 2 AS x")
    df.count()
    df.recompute()  # 0.15: marks df itself
    mark = len(local_sp.events)
    assert df.count() == 10
    assert any(e.kind == "finished" for e in local_sp.events[mark:])
    derived = df.filter("x > 4")  # and what is derived from it
    assert derived._recompute


# -- keywords 0.15 accepts ---------------------------------------------------------------------
def test_stage_keywords_of_0_15_are_accepted(sp):
    df = sp.from_items([{"a": i} for i in range(20)])
    shuffled = df.repartition(4, hash_by="a", engine_type="duckdb", output_name="by_a",
                              cpu_limit=2, memory_limit=1 << 30)
    named = sp.partial_sql("SELECT a FROM {0}", shuffled, output_name="stage_x",
                           per_thread_output=False, materialize_in_memory=True)
    assert "stage_x" in _stages(named)
    assert sorted(named.to_arrow()["a"].to_pylist()) == list(range(20))
    both = df.repartition(3, hash_by="a", by_rows=True)  # 0.15 ignores by_rows here
    assert both._node.method == "hash"
    with pytest.raises(PlanError, match="unknown option"):
        df.repartition(2, hash_by="a", no_such_option=1)


def test_init_keywords_of_0_15_are_accepted(tmp_path):
    session = smallpond.init(data_root=str(tmp_path / "root"), num_executors=0, job_name="j",
                             bind_numa_node=True, platform="mpi", memory_allocator="system",
                             enable_profiling=True, _remove_output_root=False)
    try:
        assert session.config.num_executors >= 1
        assert session.from_items([1, 2]).count() == 2
    finally:
        session.shutdown()
    with pytest.raises(PlanError, match="unknown init option"):
        smallpond.init(data_root=str(tmp_path / "root"), not_an_option=1)


# -- missing pieces of the surface ---------------------------------------------------------------
def test_compute_and_is_computed(sp, tmp_path):
    df = sp.from_items(list(range(5))).map("item + 100 AS x")
    assert not df.is_computed()
    assert df.compute() is None
    assert df.is_computed()
    out = tmp_path / "lazy"
    df.write_parquet_lazy(str(out)).compute()
    assert sorted(pq.read_table(str(out))["x"].to_pylist()) == list(range(100, 105))


def test_partial_sql_with_a_list_of_queries(sp):
    df = sp.from_items(list(range(6))).repartition(2, by_rows=True)
    result = sp.partial_sql([
        "CREATE TEMP TABLE t AS SELECT item * 10 AS x FROM {0}",
        "SELECT x, {query_index} AS q FROM t",
    ], df)
    rows = result.take_all()
    assert sorted(r["x"] for r in rows) == [0, 10, 20, 30, 40, 50]
    assert {r["q"] for r in rows} == {1}


def test_named_placeholders_and_brace_escapes(sp):
    df = sp.from_items(list(range(6))).repartition(3, by_rows=True)
    rows = sp.partial_sql(
        "SELECT item, {__data_partition__} AS p, {batch_index} AS b, {rand_seed} AS seed, "
        "'{{literal}}' AS braces FROM {0}", df).take_all()
    assert [r["p"] for r in rows] == [0, 0, 1, 1, 2, 2]
    assert {r["b"] for r in rows} == {0}
    assert {r["braces"] for r in rows} == {"{literal}"}
    seeds = {r["p"]: r["seed"] for r in rows}
    assert len(set(seeds.values())) == 3 and all(0 <= s < 2**32 for s in seeds.values())


def test_udfs_on_filter_and_0_15_udf_decorator(sp):
    from smallpond.logical.udf import UDFType, udf

    @udf(params=[UDFType.INTEGER, UDFType.INTEGER], return_type=UDFType.INTEGER)
    def gcd(a: int, b: int) -> int:
        while b:
            a, b = b, a % b
        return a

    def is_even(x: int) -> bool:
        return x % 2 == 0

    df = sp.from_items([{"a": 12, "b": 18}, {"a": 7, "b": 3}, {"a": 10, "b": 4}])
    assert df.map("gcd(a, b) AS g", udfs=[gcd]).to_arrow()["g"].to_pylist() == [6, 1, 2]
    assert df.filter("is_even(a)", udfs=[is_even]).count() == 2


def test_udf_modules_and_extension_paths(sp, tmp_path):
    module = tmp_path / "my_udfs.py"
    module.write_text(textwrap.dedent("""
        def triple(x: int) -> int:
            return 3 * x

        def create_duckdb_udfs(conn):
            conn.create_function("triple", triple)
    """))
    df = sp.from_items([1, 2])
    assert df.map("triple(item) AS t", udf_module_paths=[str(module)]) \
        .to_arrow()["t"].to_pylist() == [3, 6]
    missing = str(tmp_path / "nope.duckdb_extension")
    with pytest.raises(Exception, match="nope.duckdb_extension"):
        df.map("item", udfs=[missing]).count()


def test_except_the_users_exception_class(sp):
    def divide(row):
        return {"x": 1 / (row["item"] - 2)}

    with pytest.raises(ZeroDivisionError):
        sp.from_items([1, 2, 3]).map(divide).to_arrow()
    try:
        sp.from_items([1, 2, 3]).map(divide).to_arrow()
    except ZeroDivisionError as error:
        assert isinstance(error, UserFunctionError) and "divide" in str(error)


def test_read_parquet_of_a_glob_over_our_output(sp, tmp_path):
    out = str(tmp_path / "out")
    sp.from_items(list(range(8))).repartition(2, by_rows=True).write_parquet(out)
    assert sp.read_parquet(out + "/*").count() == 8  # _SUCCESS is skipped
    assert sp.read_parquet(out).count() == 8


def test_from_arrow_to_arrow_keeps_the_table(sp):
    table = pa.table({"i": pa.array([1, 2], pa.int32()), "s": ["a", None],
                      "b": pa.array([b"x", b"y"], pa.binary())})
    assert sp.from_arrow(table).to_arrow().equals(table)
    assert sp.from_pandas(table.to_pandas()).to_arrow().column("s").to_pylist() == ["a", None]


def test_map_batches_streaming(sp):
    def running_total(tables):
        total = 0
        for table in tables:
            for value in table["item"].to_pylist():
                total += value
                yield pa.table({"total": [total]})

    df = sp.from_items(list(range(1, 5)))
    assert df.map_batches(running_total, batch_size=2, streaming=True) \
        .to_arrow()["total"].to_pylist() == [1, 3, 6, 10]


def test_session_imports_like_0_15():
    from smallpond.dataframe import DataFrame, Session

    assert Session is smallpond.Session and DataFrame is smallpond.DataFrame


def test_script_without_shutdown_leaves_no_scratch(tmp_path):
    root = tmp_path / "root"
    script = tmp_path / "noshutdown.py"
    script.write_text(textwrap.dedent(f"""
        import smallpond
        sp = smallpond.init(data_root={str(root)!r}, num_executors=1)
        print(sp.from_items([1, 2, 3]).map("item * 2 AS x").count())
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.stdout.strip() == "3"
    assert os.listdir(root / "sessions") == []


@pytest.mark.parametrize("argument, smallpond_env, sp_env, expected", [
    ("arg", "new", "old", "arg"),
    (None, "new", "old", "new"),
    (None, None, "old", "old"),
])
def test_arguments_win_over_environment_variables(tmp_path, monkeypatch, argument,
                                                  smallpond_env, sp_env, expected):
    """Our rule (0.15 let SP_* override arguments): argument > SMALLPOND_* > SP_* > default."""
    for name, value in (("SMALLPOND_DATA_ROOT", smallpond_env), ("SP_DATA_ROOT", sp_env)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(tmp_path / value))
    session = smallpond.init(data_root=str(tmp_path / argument) if argument else None,
                             num_executors=1)
    try:
        assert session.config.data_root == str(tmp_path / expected)
    finally:
        session.shutdown()


def test_udfs_of_the_same_name_in_consecutive_tasks(tmp_path):
    session = smallpond.init(data_root=str(tmp_path / "root"), num_executors=1)
    try:
        def plus(x: int) -> int:
            return x + 1

        df = session.from_items([1, 2]).repartition(2, by_rows=True)
        assert df.map("plus(item) AS y", udfs=[plus]).to_arrow()["y"].to_pylist() == [2, 3]

        def plus(x: int) -> int:  # noqa: F811 - a new function under the same SQL name
            return x + 100

        assert df.map("plus(item) AS y", udfs=[plus]).to_arrow()["y"].to_pylist() == [101, 102]
    finally:
        session.shutdown()



def test_an_edited_module_function_runs_again(tmp_path):
    (tmp_path / "mylib.py").write_text("def f(row):\n    return {'x': row['item'] * 10}\n")
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import mylib, smallpond
        sp = smallpond.init(data_root={str(tmp_path / "root")!r}, num_executors=1,
                            job_id="same-job")
        print(sorted(r["x"] for r in sp.from_items([1, 2]).map(mylib.f,
                                                               deterministic=True).take_all()))
    """))

    def run() -> str:
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              check=True, timeout=300).stdout.strip()

    assert run() == "[10, 20]"
    (tmp_path / "mylib.py").write_text("def f(row):\n    return {'x': row['item'] * 1000}\n")
    assert run() == "[1000, 2000]"


class TwoPartError(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")
        self.a, self.b = a, b


@pytest.mark.parametrize("raised, caught", [
    (lambda: TwoPartError(1, 2), TwoPartError),
    (lambda: KeyError("k"), KeyError),
    (lambda: SystemExit(3), SystemExit),
])
def test_the_users_exception_class_whatever_its_constructor(sp, raised, caught):
    def fail(row):
        raise raised()

    with pytest.raises(caught) as info:
        sp.from_items([1]).map(fail).count()
    assert isinstance(info.value, UserFunctionError) and info.value.function
    if caught is TwoPartError:
        assert (info.value.a, info.value.b) == (1, 2)
    # errors in the user's code are never retried, whatever they are
    assert not any(e.kind == "retried" for e in sp.events[-20:])


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_except_a_class_the_script_defines(request, tmp_path, runner):
    """`except MyError:` in a script catches its own class raised in a worker (Ray pickles a
    class of `__main__` by value: the driver must hand back the script's class)."""
    address = request.getfixturevalue("ray_address") if runner == "ray" else None
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import smallpond

        class MyError(Exception):
            pass

        def fails(table):
            raise MyError("nope")

        sp = smallpond.init(data_root={str(tmp_path / "root")!r}, runner={runner!r},
                            ray_address={address!r}, progress=False)
        try:
            sp.from_items([1, 2]).map_batches(fails).count()
        except MyError as error:
            print("caught", type(error).__name__, isinstance(error, smallpond.errors.UserFunctionError))
        sp.shutdown()
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["caught", "UserFunctionError[MyError]", "True"]
