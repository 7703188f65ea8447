"""The per-process DuckDB database that consecutive tasks of a worker share."""

from __future__ import annotations

import os

import pytest

from smallpond.kernels import duck
from smallpond.kernels.context import TaskContext


@pytest.fixture
def context(tmp_path):
    counter = iter(range(1000))
    duck._database = None

    def make(memory_mb: int = 256) -> TaskContext:
        n = next(counter)
        return TaskContext(str(tmp_path / f"out{n}"), str(tmp_path / f"spill{n}"),
                           memory_mb << 20, 1, "stage", n)

    yield make
    if duck._database is not None:
        duck._database.close()
        duck._database = None


def _setting(con, name: str) -> str:
    return con.execute(f"SELECT current_setting('{name}')").fetchone()[0]


def _mebibytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]


def test_tasks_share_the_database_but_not_their_objects_or_limits(context):
    first = context(128)
    con = duck.connect(first)
    con.execute("CREATE TEMP TABLE scratch AS SELECT 1 AS x")
    database = duck._database
    assert _setting(con, "temp_directory") == first.spill_dir
    small_limit = _mebibytes(_setting(con, "memory_limit"))
    con.close()

    second = context(512)
    con = duck.connect(second)
    assert duck._database is database  # reused: no new database per task
    assert _setting(con, "temp_directory") == second.spill_dir
    assert _mebibytes(_setting(con, "memory_limit")) == pytest.approx(4 * small_limit, rel=0.01)
    assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 0
    con.close()


def test_leftover_catalog_objects_get_a_fresh_database(context):
    con = duck.connect(context())
    con.execute("CREATE TABLE kept AS SELECT 1 AS x")  # not temporary: outlives the connection
    database = duck._database
    con.close()
    con = duck.connect(context())
    assert duck._database is not database
    assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] == 0
    con.close()


def test_a_task_that_spilled_gets_a_fresh_database_with_its_own_spill_folder(context):
    spilling = context(64)
    con = duck.connect(spilling)
    con.execute("SET preserve_insertion_order = false")
    con.execute("CREATE TEMP TABLE big AS SELECT range AS a, random() AS b "
                "FROM range(4000000)")
    con.execute("CREATE TEMP TABLE ordered AS SELECT * FROM big ORDER BY b")
    assert os.listdir(spilling.spill_dir), "the query was expected to spill"
    database = duck._database
    con.close()
    after = context()
    con = duck.connect(after)
    assert duck._database is not database
    assert _setting(con, "temp_directory") == after.spill_dir
    con.close()


def test_input_views_die_with_the_task_connection(context, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from smallpond.io.files import FileSlice

    path = str(tmp_path / "in.parquet")
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    con = duck.connect(context())
    names = duck.register_inputs(con, [[FileSlice(path)]], [{}])
    assert con.execute(f"SELECT sum(a) FROM {names[0]}").fetchone()[0] == 6
    database = duck._database
    con.close()
    assert database.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal"
                            ).fetchone()[0] == 0
    con = duck.connect(context())
    assert duck._database is database  # nothing was left behind: the database is reused
    con.close()
