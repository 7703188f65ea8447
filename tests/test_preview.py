"""Looking at data: head/show compute only what they need; reprs never run a task."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smallpond import preview
from smallpond.errors import PlanError

ROWS_PER_FILE = 100


@pytest.fixture
def ten_files(make_parquet):
    table = pa.table({"id": list(range(10 * ROWS_PER_FILE)),
                      "v": [i % 13 for i in range(10 * ROWS_PER_FILE)]})
    return make_parquet(table, files=10), table


def _ran(sp, action):
    mark = len(sp.events)
    result = action()
    return result, [e for e in sp.events[mark:] if e.kind == "finished"]


def test_head_runs_only_the_first_partition(sp, ten_files):
    folder, table = ten_files
    df = sp.read_parquet(os.path.join(folder, "*.parquet")).repartition(10).filter("v < 7")
    head, finished = _ran(sp, lambda: df.head(5))
    expected = table.filter(pc.less(table["v"], 7)).slice(0, 5)
    assert head.to_pylist() == expected.to_pylist()
    assert len(finished) == 2  # partition 0's query (with the limit pushed in) + the limit
    assert all(e.rows <= 5 for e in finished)
    _, everything = _ran(sp, lambda: df.limit(5).recompute().to_arrow())
    assert len(everything) == 11  # what the whole plan would run


def test_head_reads_more_partitions_only_while_rows_are_missing(sp, ten_files):
    folder, table = ten_files
    df = sp.read_parquet(os.path.join(folder, "*.parquet")).repartition(10)
    late = df.filter(f"id >= {3 * ROWS_PER_FILE + 50}")  # partitions 0-2 have no such rows
    head, finished = _ran(sp, lambda: late.head(60))
    expected = table.filter(pc.greater_equal(table["id"], 3 * ROWS_PER_FILE + 50)).slice(0, 60)
    assert head.to_pylist() == expected.to_pylist()
    query_tasks = {e.partition for e in finished if not e.stage.startswith("limit")}
    # rounds: partition 0 (no rows), 0-3 (50 rows), then 1.5x the partitions 60 rows seem to
    # need (0-7); partitions 8 and 9 never run, and earlier rounds' tasks are reused
    assert query_tasks == set(range(8))
    assert len([e for e in finished if not e.stage.startswith("limit")]) == 8


@given(n=st.integers(0, 40), partitions=st.integers(1, 6), cutoff=st.integers(0, 60))
def test_head_equals_the_first_rows_of_the_result(sp, n, partitions, cutoff):
    df = sp.from_items([{"x": i} for i in range(60)]).repartition(partitions, by_rows=True)
    filtered = df.filter(f"x >= {cutoff}")
    assert filtered.head(n).to_pylist() == [{"x": i} for i in range(cutoff, 60)][:n]


def test_head_rejects_bad_counts(sp):
    df = sp.from_items([1])
    for bad in (-1, 1.5, True):
        with pytest.raises(PlanError):
            df.head(bad)
        with pytest.raises(PlanError):
            df.show(bad)


def test_show_prints_a_table_or_displays_html(sp, capsys, monkeypatch):
    df = sp.from_items([{"name": "ada", "n": 1}, {"name": "bob", "n": 2}])
    df.show(1)
    out = capsys.readouterr().out
    assert "name" in out and "ada" in out and "bob" not in out
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj.data))
    monkeypatch.setattr("smallpond.progress._in_notebook", lambda: True)
    df.show(5)
    assert "<table" in shown[0] and "ada" in shown[0] and "bob" in shown[0]


def test_reprs_never_run_a_task_and_show_rows_once_computed(sp):
    df = sp.from_items([{"a": i} for i in range(30)]).repartition(3, by_rows=True)
    query = sp.partial_sql("SELECT a * 2 AS b FROM {0} WHERE a < 12", df)
    seen = []
    remove = sp.on_event(seen.append)
    try:
        text = repr(query)
        html = query._repr_html_()
    finally:
        remove()
    assert seen == []  # no task event at all
    assert "b: int64" in text and "partial_sql" in text
    assert "Not computed yet" in html and "<code>b</code>" in html
    query.count()
    remove = sp.on_event(seen.append)
    try:
        html = query._repr_html_()
    finally:
        remove()
    assert seen == []
    # the first 10 of 12 rows, read from the committed files
    assert "Computed" in html and "<td>18</td>" in html and "<td>20</td>" not in html


def test_session_html_names_runner_root_workers_and_memory(sp):
    html = sp._repr_html_()
    config = sp.config
    for text in (config.runner, config.data_root, str(config.num_executors), sp.job_id,
                 preview.human_bytes(config.memory_per_task)):
        assert text in html


def test_limit_over_partly_empty_partitions(sp, ten_files):
    """DuckDB marks a column without NULLs as required in that file only: files of one
    result may differ in nullability, and reading them together must still work."""
    folder, table = ten_files
    df = sp.read_parquet(os.path.join(folder, "*.parquet")).repartition(10)
    late = df.filter(f"id >= {4 * ROWS_PER_FILE}")
    assert [r["id"] for r in late.take(3)] == [400, 401, 402]
    assert late.count() == 6 * ROWS_PER_FILE
