"""Fast unit tier: placeholders, optimizer rules, planner layout and task keys (no workers)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smallpond.errors import SqlError
from smallpond.io.files import FileSlice
from smallpond.kernels.placeholders import split_placeholders, substitute
from smallpond.logical.nodes import Limit, ReadOptions, Repartition, Scan, SqlQuery
from smallpond.logical.optimizer import optimize
from smallpond.planner.graph import TaskSlice
from smallpond.planner.planner import plan, split_files


def _scan(paths=("/data/a.parquet",)) -> Scan:
    return Scan((tuple(FileSlice(p) for p in paths),), ReadOptions(), tuple(paths))


def test_placeholders_skip_quotes_and_comments():
    sql = "SELECT '{0}', \"{1}\" FROM {0} -- {2}\n JOIN { 1 } /* {3} */"
    assert [p for p in split_placeholders(sql) if isinstance(p, int)] == [0, 1]


def test_placeholder_substitution_is_not_format():
    with pytest.raises(SqlError, match=r"placeholder \{2\} has no input"):
        substitute("SELECT * FROM {2}", str, 1)
    assert substitute("{0.__class__}", lambda i: "x", 1) == "{0.__class__}"


@given(st.text(alphabet="{}0123'\" abc_", max_size=30))
def test_template_substitution_is_the_identity(sql):
    # placeholders replaced by themselves, escapes and unknown names kept: the same template
    assert substitute(sql, lambda i: f"{{{i}}}", 10**6, final=False) == sql


_PIECES = st.one_of(
    st.text(alphabet="abc ,()*=+", min_size=1, max_size=5),
    st.integers(0, 2).map(lambda i: f"{{{i}}}"),
    st.sampled_from(["{{", "}}", "{__data_partition__}", "{rand_seed}", "{query_index}"]))


@given(st.lists(_PIECES, max_size=12))
def test_placeholders_follow_str_format_outside_quotes(pieces):
    # 0.15 ran str.format on partial_sql text: outside quotes we give the same result
    sql = "".join(pieces)
    values = {"__data_partition__": 7, "rand_seed": 123, "query_index": 0}
    expected = sql.format("t0", "t1", "t2", **values)
    assert substitute(sql, lambda i: f"t{i}", 3, values) == expected


def test_consecutive_sql_fuses_into_one_stage():
    scan = _scan()
    inner = SqlQuery((scan,), "SELECT a + 1 AS b FROM {0}", name="map")
    outer = SqlQuery((inner,), "SELECT * FROM {0} WHERE (b > 2)", name="filter")
    fused = optimize(outer)
    assert isinstance(fused, SqlQuery) and fused.sources == (scan,)
    assert fused.sql == "SELECT * FROM (\nSELECT a + 1 AS b FROM {0}\n) WHERE (b > 2)"
    assert fused.name == "map+filter"
    assert len(plan(fused)) == 1


def test_order_by_is_not_fused_away():
    inner = SqlQuery((_scan(),), "SELECT * FROM {0} ORDER BY a", ordered=True)
    outer = SqlQuery((inner,), "SELECT a FROM {0}")
    assert optimize(outer).sources == (inner,)


def test_limit_is_pushed_into_each_partition():
    node = Limit(SqlQuery((_scan(),), "SELECT a FROM {0}"), 5)
    optimized = optimize(node)
    assert isinstance(optimized, Limit)
    assert "LIMIT 5" in optimized.source.sql and "SELECT a FROM" in optimized.source.sql
    assert optimize(optimized) == optimized


def test_task_keys_are_deterministic_and_content_based():
    def build(sql):
        return plan(optimize(SqlQuery((Repartition(_scan(), 3, "hash", hash_by=("a",)),), sql)))

    first, second = build("SELECT * FROM {0}"), build("SELECT * FROM {0}")
    assert list(first.tasks) == list(second.tasks)
    assert set(build("SELECT a FROM {0}").tasks) != set(first.tasks)
    changed = Scan(((FileSlice("/data/a.parquet"),),), ReadOptions(), ("other-mtime",))
    assert set(plan(SqlQuery((changed,), "SELECT * FROM {0}")).tasks) != set(
        plan(SqlQuery((_scan(),), "SELECT * FROM {0}")).tasks)


def test_shuffle_layout_has_one_mapper_per_partition_and_reads_buckets():
    scan = Scan(tuple((FileSlice(f"/d/{i}.parquet"),) for i in range(4)), ReadOptions(),
                tuple(f"/d/{i}.parquet" for i in range(4)))
    graph = plan(SqlQuery((Repartition(scan, 3, "hash", hash_by=("k",)),), "SELECT * FROM {0}"))
    mappers = [t for t in graph if t.kernel == "shuffle"]
    reducers = [t for t in graph if t.kernel == "sql"]
    assert len(mappers) == 4 and len(reducers) == 3
    for j, task in enumerate(reducers):
        assert task.inputs[0] == tuple(TaskSlice(m.key, j) for m in mappers)


def test_split_files_balances_row_groups(tmp_path):
    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"x": list(range(1000))}), path, row_group_size=100)
    parts = split_files([FileSlice(str(path))], 4)
    groups = [sum(len(s.row_groups) for s in part) for part in parts]
    assert sum(groups) == 10 and all(g >= 2 for g in groups)
    assert split_files([FileSlice(str(path))], 11) is None
    many = [FileSlice(f"/f{i}") for i in range(7)]
    assert [len(p) for p in split_files(many, 3)] == [2, 3, 2]


def test_projection_is_pushed_below_a_shuffle(tmp_path):
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"k": [1], "v": [2], "pad": ["x"]}), path)
    scan = Scan(((FileSlice(str(path)),),), ReadOptions(), (str(path),))
    shuffle = Repartition(scan, 2, "hash", hash_by=("k",))
    query = SqlQuery((shuffle,), "SELECT k, v + 1 AS w FROM {0}")  # a GROUP BY would combine
    optimized = optimize(query)
    projected = optimized.sources[0].source
    assert isinstance(projected, SqlQuery) and projected.sql == 'SELECT "k", "v" FROM {0}'
    graph = plan(optimized)
    mapper = next(t for t in graph if t.kernel == "shuffle")
    assert mapper.params["sql"] == 'SELECT "k", "v" FROM {0}'  # fused into the mapper
    assert len(graph) == 3  # 1 mapper + 2 reducers, no separate projection task
    star = SqlQuery((shuffle,), "SELECT * FROM {0}")
    assert optimize(star).sources[0] == shuffle
