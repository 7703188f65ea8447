"""R7 disk full (spill and output on a small tmpfs) and R15 empty partitions and skew.

R7 needs root to mount a tmpfs (CI runs as root); without it the tests skip and say why.
Already proven elsewhere: tests/test_errors.py::test_disk_full_while_spilling_names_the_mount
(the typed error) and ::test_unwritable_output_fails_before_the_job_runs.
"""

from __future__ import annotations

import os
import subprocess

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smallpond.errors import DiskFullError

from .helpers import kinds, leftovers


def _remount(mount: str, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", mount], check=True)


def _sort_job(sp):
    table = duckdb.sql("SELECT range AS i, range % 7 AS k FROM range(200000)").to_arrow_table()
    shuffled = sp.from_arrow(table).repartition(2, hash_by="k")
    return sp.partial_sql("SELECT i, k, md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS s "
                          "FROM {0}, range(6) r(j) ORDER BY s", shuffled)


@pytest.mark.reliability_quick
def test_spill_disk_full_then_a_rerun_after_freeing_space_reuses_committed_tasks(
        session, tmp_path, tmpfs):
    with tmpfs(tmp_path / "root", "40m") as mount:
        sp = session(data_root=mount, memory_per_task="64MB", num_executors=1)
        job = _sort_job(sp)
        with pytest.raises(DiskFullError) as info:
            job.count()
        assert info.value.mount == mount and mount in str(info.value)
        assert leftovers(sp) == []
        committed = {e.key for e in sp.events if e.kind == "finished"}
        assert any(k.startswith("shuffle") for k in committed), \
            "the shuffle should have committed before the sort filled the disk"
        sorts_left = 2 - sum(not k.startswith("shuffle") for k in committed)
        _remount(mount, "1g")
        mark = len(sp.events)
        assert job.count() == 1_200_000
        reused = {e.key for e in sp.events[mark:] if e.kind == "reused"}
        ran = {e.key for e in sp.events[mark:] if e.kind == "finished"}
        assert committed <= reused and not committed & ran
        assert len(ran) == sorts_left  # only the sorts that had not committed ran


@pytest.mark.reliability_quick
def test_output_disk_full_leaves_nothing_and_a_rerun_reuses_every_task(session, tmp_path,
                                                                          tmpfs):
    sp = session()
    table = duckdb.sql("SELECT range AS i, md5(range::VARCHAR) AS s "
                       "FROM range(60000)").to_arrow_table()
    df = sp.from_arrow(table).repartition(3, by_rows=True).map("i, s, s || s AS t")
    with tmpfs(tmp_path / "small", "1m") as mount:
        output = os.path.join(mount, "out")
        with pytest.raises(DiskFullError) as info:
            df.write_parquet(output)
        assert info.value.mount == mount and mount in str(info.value)
        assert os.listdir(mount) == []  # no part, no staging sibling, no _SUCCESS
        _remount(mount, "64m")
        mark = len(sp.events)
        df.write_parquet(output)
        assert kinds(sp.events, mark).get("finished", 0) == 0  # every task was reused
        assert pq.read_table(output).num_rows == 60000
        assert sorted(os.listdir(output)) == ["_SUCCESS", "part-00000.parquet",
                                              "part-00001.parquet", "part-00002.parquet"]


# -- R15 ----------------------------------------------------------------------------------------
@pytest.mark.reliability_quick
def test_partitions_without_files_or_rows_keep_the_schema(session, tmp_path, make_parquet):
    sp = session()
    folder = make_parquet(pa.table({"a": list(range(30)), "b": [str(i) for i in range(30)]}), 3)
    df = sp.read_parquet(folder).repartition(8)  # 8 partitions of 3 files: 5 have no file
    query = "SELECT a, b, a * 2 AS c FROM {0} WHERE a >= 0"
    out = str(tmp_path / "out")
    sp.partial_sql(query, df).write_parquet(out)
    parts = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    assert len(parts) == 8
    schemas = {pq.read_schema(os.path.join(out, n)).remove_metadata() for n in parts}
    assert len(schemas) == 1 and schemas.pop().names == ["a", "b", "c"]
    assert pq.read_table(out).num_rows == 30
    # hash partitions most of which get no row: same schema, right result
    few = sp.from_items([{"k": k % 3, "v": k} for k in range(90)]).repartition(16, hash_by="k")
    agg = sp.partial_sql("SELECT k, sum(v) AS s, count(*) AS c FROM {0} GROUP BY k", few)
    table = agg.to_arrow()
    assert sorted(table.to_pylist(), key=lambda r: r["k"]) == [
        {"k": k, "s": sum(range(k, 90, 3)), "c": 30} for k in range(3)]
    assert table.schema.names == ["k", "s", "c"]


@pytest.mark.reliability_quick
@pytest.mark.parametrize("method", ["hash", "range"])
def test_one_partition_holding_90_percent_of_rows(session, method):
    sp = session()
    rows = 50_000
    table = duckdb.sql(f"SELECT range AS id, CASE WHEN range % 10 = 0 THEN range % 97 "
                       f"ELSE 1000 END AS k FROM range({rows})").to_arrow_table()
    source = sp.from_arrow(table).repartition(4, by_rows=True)
    if method == "hash":
        parts = source.repartition(8, hash_by="k")
        result = sp.partial_sql("SELECT k, count(*) AS c, sum(id) AS s FROM {0} GROUP BY k",
                                parts).to_arrow()
        con = duckdb.connect()
        con.register("t", table)
        expected = sorted(con.execute("SELECT k, count(*), sum(id) FROM t GROUP BY k")
                          .fetchall())
        assert sorted(tuple(r.values()) for r in result.to_pylist()) == expected
    else:
        parts = source.repartition(8, range_by="k")
        got = [(r["k"], r["id"]) for r in parts.partial_sort(["k", "id"]).take_all()]
        assert got == sorted(zip(table["k"].to_pylist(), table["id"].to_pylist()))
    sizes = sp.partial_sql("SELECT count(*) AS n FROM {0}", parts).to_arrow()["n"].to_pylist()
    assert len(sizes) == 8 and sum(sizes) == rows
    assert max(sizes) >= 0.9 * rows  # the skew is real: one task holds 90% of the rows
    print(f"R15 {method}: rows per partition {sizes}")
