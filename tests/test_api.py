"""smallpond 0.15 behaviour of the DataFrame API, on every runner."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smallpond.errors import PartitionKeyError, PlanError, SqlError, UserFunctionError


def test_from_items_gives_item_column(sp):
    assert sp.from_items([1, 2]).to_arrow().to_pylist() == [{"item": 1}, {"item": 2}]


def test_dataframe_import_path_of_015():
    from smallpond.dataframe import DataFrame, Session  # noqa: F401


def test_partition_key_out_of_range(sp):
    df = sp.from_items(list(range(20))).repartition(2, by_rows=True) \
        .repartition(10, by="item % 11")
    with pytest.raises(PartitionKeyError, match="partition key 10 is out of range 0-9") as info:
        df.count()
    assert info.value.partition == 1  # item 10 is in the second half: its mapper is named


def test_sql_error_contains_sql(sp):
    df = sp.from_items([1, 2, 3])
    with pytest.raises(SqlError, match="no_such_column"):
        sp.partial_sql("SELECT no_such_column FROM {0}", df).to_arrow()


def test_map_sql_and_flat_map_unnest(sp):
    df = sp.from_items([{"a": 1, "b": 2}, {"a": 3, "b": 4}])
    assert df.map("a + b as c").take_all() == [{"c": 3}, {"c": 7}]
    assert df.flat_map("unnest(array[a, b]) as c").take_all() == [
        {"c": 1}, {"c": 2}, {"c": 3}, {"c": 4}]


def test_python_row_functions_get_dicts(sp):
    df = sp.from_items([{"a": 1}, {"a": 2}, {"a": 3}])
    assert df.map(lambda r: {"a": r["a"], "sq": r["a"] ** 2}).take_all() == [
        {"a": 1, "sq": 1}, {"a": 2, "sq": 4}, {"a": 3, "sq": 9}]
    assert df.flat_map(lambda r: [r] * r["a"]).count() == 6
    assert df.filter(lambda r: r["a"] != 2).take_all() == [{"a": 1}, {"a": 3}]
    assert df.filter("a >= 2").take_all() == [{"a": 2}, {"a": 3}]


def test_map_with_schema_handles_leading_nulls(sp):
    df = sp.from_items([{"a": i} for i in range(5)])
    schema = pa.schema([("x", pa.int64())])
    out = df.map(lambda r: {"x": None if r["a"] < 3 else r["a"]}, schema=schema).to_arrow()
    assert out.column("x").to_pylist() == [None, None, None, 3, 4]


def test_map_batches_batch_sizes_follow_partition(sp, make_parquet):
    table = pa.table({"x": list(range(1000))})
    folder = make_parquet(table, files=10)
    df = sp.read_parquet(os.path.join(folder, "*.parquet"))
    sizes = df.map_batches(lambda t: pa.table({"n": [t.num_rows]}), batch_size=350).to_arrow()
    assert sizes.column("n").to_pylist() == [350, 350, 300]


def test_strings_come_back_large(sp):
    table = sp.from_items([{"s": "x", "b": b"y"}]).map("s, b").to_arrow()
    assert table.schema.field("s").type == pa.large_string()
    assert table.schema.field("b").type == pa.large_binary()


def test_order_preserved_from_items_by_rows_and_take(sp):
    items = list(range(1000))
    df = sp.from_items(items)
    assert [r["item"] for r in df.repartition(7, by_rows=True).take_all()] == items
    assert [r["item"] for r in df.take(10)] == items[:10]


def test_repartition_by_rows_is_even(sp):
    df = sp.from_items(list(range(100))).repartition(3, by_rows=True)
    counts = sp.partial_sql("SELECT count(*) AS c FROM {0}", df).to_arrow()
    assert counts.column("c").to_pylist() == [33, 33, 34] or sorted(
        counts.column("c").to_pylist()) == [33, 33, 34]


def test_repartition_by_files_and_row_groups(sp, make_parquet):
    table = pa.table({"x": list(range(600))})
    many = sp.read_parquet(make_parquet(table, files=6))
    assert many.repartition(3).num_partitions == 3
    assert "shuffle" not in many.repartition(3).explain("physical")  # split at plan time
    per_part = sp.partial_sql("SELECT count(*) AS c FROM {0}", many.repartition(3)).to_arrow()
    assert per_part.column("c").to_pylist() == [200, 200, 200]
    few = sp.read_parquet(make_parquet(table, files=1, row_group_size=100))
    per_part = sp.partial_sql("SELECT count(*) AS c FROM {0}", few.repartition(3)).to_arrow()
    assert per_part.column("c").to_pylist() == [200, 200, 200]
    assert sorted(r["x"] for r in few.repartition(3).take_all()) == list(range(600))


def test_hash_partitions_hold_disjoint_keys(sp):
    df = sp.from_items([{"k": i % 13, "v": i} for i in range(500)]).repartition(4, hash_by="k")
    keys = sp.partial_sql("SELECT DISTINCT k FROM {0}", df)
    distinct = keys.to_arrow().column("k").to_pylist()
    assert len(distinct) == len(set(distinct)) == 13
    assert df.num_partitions == 4


def test_random_shuffle_keeps_rows_and_partitions(sp):
    df = sp.from_items(list(range(300))).repartition(3, by_rows=True)
    shuffled = df.random_shuffle()
    assert shuffled.num_partitions == 3
    values = [r["item"] for r in shuffled.take_all()]
    assert sorted(values) == list(range(300)) and values != list(range(300))


def test_partial_sql_joins_partition_i_with_partition_i(sp):
    left = sp.from_items([{"k": i, "a": i} for i in range(50)]).repartition(3, hash_by="k")
    right = sp.from_items([{"k": i, "b": -i} for i in range(50)]).repartition(3, hash_by="k")
    joined = sp.partial_sql("SELECT {0}.k, a, b FROM {0} JOIN {1} ON {0}.k = {1}.k",
                            left, right)
    rows = sorted(joined.take_all(), key=lambda r: r["k"])
    assert rows == [{"k": i, "a": i, "b": -i} for i in range(50)]


def test_partial_sql_needs_equal_partition_counts(sp):
    a = sp.from_items([1]).repartition(2, by_rows=True)
    b = sp.from_items([1]).repartition(3, by_rows=True)
    with pytest.raises(PlanError, match="partition counts"):
        sp.partial_sql("SELECT * FROM {0}, {1}", a, b)


def test_partial_sort_and_limit(sp):
    df = sp.from_items([5, 3, 9, 1]).partial_sort("item")
    assert [r["item"] for r in df.take_all()] == [1, 3, 5, 9]
    assert df.limit(2).count() == 2
    assert sp.from_items(list(range(100))).repartition(4, by_rows=True).limit(10).count() == 10


def test_source_without_inputs(sp):
    assert sp.partial_sql("SELECT 42 AS answer").take_all() == [{"answer": 42}]


def test_read_csv_and_json(sp, tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("1\tx\n2\ty\n")
    df = sp.read_csv(str(csv), schema={"n": "BIGINT", "s": "VARCHAR"}, delim=r"\t")
    assert df.take_all() == [{"n": 1, "s": "x"}, {"n": 2, "s": "y"}]
    js = tmp_path / "a.json"
    js.write_text('{"n": 1, "s": "x"}\n{"n": 2, "s": "y"}\n')
    assert sp.read_json(str(js), schema={"n": "BIGINT", "s": "VARCHAR"}).count() == 2


def test_from_pandas_and_to_pandas(sp):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert sp.from_pandas(frame).to_pandas()["a"].tolist() == [1, 2]


def test_write_parquet_layout_and_modes(sp, tmp_path):
    from smallpond.errors import OutputExistsError

    df = sp.from_items(list(range(30))).repartition(3, by_rows=True)
    out = str(tmp_path / "out")
    df.write_parquet(out)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000.parquet", "part-00001.parquet",
                                       "part-00002.parquet"]
    df.write_parquet(out)  # a previous smallpond output is replaced by a rerun (0.15)
    assert pq.read_table(out).num_rows == 30
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="notes.txt"):
        df.write_parquet(out)
    df.write_parquet(out, mode="append")
    assert sp.read_parquet(out).count() == 60
    df.write_parquet(out, mode="overwrite")
    assert sp.read_parquet(out).count() == 30
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # not ours: kept


def test_write_parquet_lazy_with_wait(sp, tmp_path):
    out = str(tmp_path / "lazy")
    lazy = sp.from_items([1, 2, 3]).write_parquet_lazy(out)
    assert not os.path.exists(out)
    sp.wait(lazy)
    assert pq.read_table(out).num_rows == 3


def test_user_function_error_names_function(sp):
    def explode(row):
        raise ValueError("boom")

    with pytest.raises(UserFunctionError, match="explode") as info:
        sp.from_items([1]).map(explode).to_arrow()
    assert "boom" in str(info.value)


def test_unknown_option_rejected(sp):
    with pytest.raises(PlanError, match="unknown option"):
        sp.from_items([1]).filter("item > 0", bogus=1)


def test_repr_never_runs(sp):
    def boom(row):
        raise AssertionError("repr ran the plan")

    tasks = sorted(os.listdir(sp.config.tasks_dir))
    mark = len(sp.events)
    df = sp.from_items([{"a": 1}]).map("a * 2 AS b")
    text = repr(df)
    assert "b: int" in text and "map" in text
    shuffled = sp.partial_sql("SELECT b, count(*) AS c FROM {0} GROUP BY b",
                              df.repartition(3, hash_by="b"))
    for plan in (shuffled, shuffled.map(boom), df.repartition(2, range_by="b")):
        assert "partitions" in repr(plan)
    assert sp.events[mark:] == []  # no task submitted, run or reused
    assert sorted(os.listdir(sp.config.tasks_dir)) == tasks


def test_explain_shows_partitions(sp):
    df = sp.from_items(list(range(10))).repartition(4, hash_by="item")
    agg = sp.partial_sql("SELECT count(*) AS c FROM {0}", df)
    text = agg.explain()
    assert "== logical plan ==" in text and "== physical plan ==" in text
    assert "tasks=4" in text


def test_progress_events_reach_listeners_with_rows_and_bytes(sp):
    seen = []
    remove = sp.on_event(seen.append)
    try:
        df = sp.from_items(list(range(300))).repartition(3, by_rows=True)
        out = sp.partial_sql("SELECT item * 2 AS x FROM {0}", df).recompute()
        assert out.count() == 300
    finally:
        remove()
    finished = [e for e in seen if e.kind == "finished"]
    submitted = [e for e in seen if e.kind == "submitted"]
    assert len(finished) == len(submitted) >= 3
    sql_tasks = [e for e in finished if e.stage.startswith("partial_sql")]
    assert sorted(e.partition for e in sql_tasks) == [0, 1, 2]
    assert sum(e.rows for e in sql_tasks) == 300
    assert all(e.bytes > 0 and e.elapsed > 0 for e in sql_tasks)
    # every task is submitted before it finishes
    order = {(e.kind, e.key): i for i, e in enumerate(seen)}
    assert all(order[("submitted", e.key)] < order[("finished", e.key)] for e in finished)
    count_before = len(seen)
    sp.from_items([1]).count()
    assert len(seen) == count_before  # removed listeners hear nothing more


def test_a_partition_moves_on_before_its_stage_finishes(sp):
    """Tasks start as soon as their own inputs committed, not stage by stage."""

    def slow_on_partition_one(table):
        import time

        if table.num_rows and min(table.column("item").to_pylist()) >= 100:
            time.sleep(4.0)  # long enough for partition 0 to finish on a loaded machine
        return table

    seen = []
    remove = sp.on_event(seen.append)
    try:
        df = sp.from_items(list(range(200))).repartition(2, by_rows=True)
        mapped = df.map_batches(slow_on_partition_one)
        out = sp.partial_sql("SELECT item + 1 AS x FROM {0}", mapped).recompute()
        assert sorted(r["x"] for r in out.take_all()) == list(range(1, 201))
    finally:
        remove()
    stages = list(dict.fromkeys(e.stage for e in seen if e.kind == "submitted"))
    slow_stage, next_stage = stages[-2], stages[-1]
    at = {(e.kind, e.stage, e.partition): i for i, e in enumerate(seen)}
    assert slow_stage.startswith("batches") and next_stage.startswith("partial_sql"), stages
    assert at[("submitted", next_stage, 0)] < at[("finished", slow_stage, 1)], stages
