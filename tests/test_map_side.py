"""The map side of shuffles: a combiner for GROUP BY after a hash shuffle, mappers split by
row groups, and counts of bare scans that copy nothing."""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smallpond.logical.nodes import Repartition, SqlQuery
from smallpond.logical.optimizer import optimize
from smallpond.planner.planner import Planner

AGG = ("SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS s, min(v) AS lo, avg(w) AS a, "
       "max(w) FILTER (WHERE w < 3) AS m FROM {0} WHERE w <> 4 GROUP BY k HAVING count(*) > 1")


@pytest.fixture
def one_file(tmp_path):
    n = 5000
    rng = np.random.default_rng(7)
    v = rng.integers(-50, 50, n).astype(float)
    table = pa.table({"k": rng.integers(0, 60, n), "v": pa.array(v, mask=v > 40),
                      "w": rng.integers(0, 6, n), "pad": ["x" * 20] * n})
    path = tmp_path / "one.parquet"
    pq.write_table(table, path, row_group_size=500)
    return str(path), table


def _mappers(df) -> int:
    planner = Planner()
    planner.add_output(optimize(df._node))
    return sum(1 for t in planner.graph if t.kernel == "shuffle")


def test_combiner_pre_aggregates_in_mappers(sp, one_file):
    path, table = one_file
    shuffled = sp.read_parquet(path).repartition(4, hash_by="k")
    df = sp.partial_sql(AGG, shuffled)
    optimized = optimize(df._node)
    mapper_input = optimized.sources[0].source
    assert isinstance(optimized.sources[0], Repartition)
    assert isinstance(mapper_input, SqlQuery) and mapper_input.partial
    assert "GROUP BY" in mapper_input.sql
    con = duckdb.connect()
    con.register("t", table)
    expected = con.sql(AGG.replace("{0}", "t"))
    sp.events.clear()
    got = df.to_arrow()
    assert [f.type for f in got.schema] == [f.type for f in
                                             expected.to_arrow_table().schema]
    key = lambda r: r["k"]  # noqa: E731
    assert sorted(got.to_pylist(), key=key) == sorted(expected.to_arrow_table().to_pylist(),
                                                      key=key)
    # the shuffle carries groups, not rows
    shuffled_rows = sum(e.rows for e in sp.events if e.kind in ("finished", "reused")
                        and e.stage.startswith("shuffle_hash"))
    assert 0 < shuffled_rows <= 60 * 4


def test_no_combiner_when_groups_do_not_contain_the_hash_keys(sp, one_file):
    path, _ = one_file
    df = sp.partial_sql("SELECT w, count(*) AS n FROM {0} GROUP BY w",
                        sp.read_parquet(path).repartition(4, hash_by="k"))
    optimized = optimize(df._node)
    assert not (isinstance(optimized.sources[0].source, SqlQuery)
                and optimized.sources[0].source.partial)
    per_partition = df.to_arrow()  # 0.15 semantics: one row per (partition, w)
    assert per_partition.num_rows > 6


def test_one_partition_input_runs_several_mappers_with_the_same_result(sp, one_file):
    path, table = one_file
    df = sp.read_parquet(path).repartition(8, hash_by="k")
    assert df.num_partitions == 8 and _mappers(df) == 8
    got = df.to_arrow()
    con = duckdb.connect()
    con.register("t", table)
    # one mapper over the whole file would give, partition by partition, the rows in order
    expected = pa.concat_tables(
        con.sql(f"SELECT * FROM t WHERE hash(k) % 8 = {j}").to_arrow_table() for j in range(8))
    assert got.column("k").to_pylist() == expected.column("k").to_pylist()
    assert got.column("v").to_pylist() == expected.column("v").to_pylist()


def test_a_per_partition_aggregate_keeps_one_mapper(sp, one_file):
    path, _ = one_file
    counted = sp.partial_sql("SELECT k, count(*) AS n FROM {0} GROUP BY k",
                             sp.read_parquet(path))
    df = counted.repartition(4, hash_by="k")
    assert _mappers(df) == 1  # splitting would change the partial_sql's result
    assert sum(r["n"] for r in df.take_all()) == 5000


def test_count_of_a_scan_reads_footers_and_copies_nothing(sp, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4):
        pq.write_table(pa.table({"x": list(range(i * 10, i * 10 + 10 + i))}),
                       folder / f"p{i}.parquet")
    tasks = os.path.join(sp.config.data_root, "tasks")
    before = set(os.listdir(tasks))
    sp.events.clear()
    assert sp.read_parquet(str(folder / "*.parquet")).count() == 46
    assert set(os.listdir(tasks)) == before
    assert not [e for e in sp.events if e.kind == "finished"]


@given(keys=st.lists(st.integers(0, 9) | st.none(), max_size=80), n=st.integers(1, 5))
def test_combiner_equals_duckdb(sp, tmp_path_factory, keys, n):
    table = pa.table({"k": pa.array(keys, pa.int64()),
                      "v": pa.array([None if i % 7 == 0 else i for i in range(len(keys))],
                                    pa.int64())})
    df = sp.partial_sql("SELECT k, count(*) AS c, sum(v) AS s, avg(v) AS a FROM {0} "
                        "GROUP BY k", sp.from_arrow(table).repartition(n, hash_by="k"))
    con = duckdb.connect()
    con.register("t", table)
    expected = con.execute("SELECT k, count(*), sum(v), avg(v) FROM t GROUP BY k").fetchall()
    got = [tuple(r.values()) for r in df.to_arrow().to_pylist()]
    assert sorted(got, key=repr) == sorted(expected, key=repr)
