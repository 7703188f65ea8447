"""The benchmarks check what they time: results against DuckDB, outside the clock."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import smallpond.bench.runners as runners_bench
from smallpond.bench.core import run_core_benchmark
from smallpond.bench.validate import (
    ValidationError,
    check_same_rows,
    check_sorted,
    compare_aggregates,
    fingerprint,
    parquet_source,
)


def _write(folder, **parts: pa.Table) -> str:
    os.makedirs(folder, exist_ok=True)
    for name, table in parts.items():
        pq.write_table(table, os.path.join(folder, f"{name}.parquet"))
    return str(folder)


REF = pa.table({"k": [1, 2, 3], "n": [10, 20, 30], "total": [0.1, 0.2, 0.3]})


@pytest.mark.parametrize("output,message", [
    (pa.table({"k": [3, 1, 2], "n": [30, 10, 20], "total": [0.3 + 1e-12, 0.1, 0.2]}), None),
    (pa.table({"k": [1, 2, 3], "n": [10, 20, 31], "total": [0.1, 0.2, 0.3]}), "1 groups with"),
    (pa.table({"k": [1, 2, 3], "n": [10, 20, 30], "total": [0.1, 0.2, 0.31]}), "k = 3"),
    (pa.table({"k": [1, 2], "n": [10, 20], "total": [0.1, 0.2]}), "1 groups in only one"),
    (pa.table({"k": [1, 2, 3, 3], "n": [10, 20, 15, 15], "total": [0.1, 0.2, 0.1, 0.2]}),
     "1 repeated"),
])
def test_compare_aggregates(tmp_path, output, message):
    reference = _write(tmp_path / "ref", part=REF)
    out = _write(tmp_path / "out", **{"part-00000": output.slice(0, 2),
                                      "part-00001": output.slice(2)})
    if message is None:
        assert compare_aggregates(reference, out, "k", ["n"], ["total"]) == {"groups": 3}
    else:
        with pytest.raises(ValidationError, match=message):
            compare_aggregates(reference, out, "k", ["n"], ["total"])


def test_same_rows_and_sorted(tmp_path):
    rows = pa.table({"v": [0.5, 0.1, 0.9, 0.3], "id": [1, 2, 3, 4]})
    expected = fingerprint(parquet_source(_write(tmp_path / "in", a=rows)), ["v", "id"])
    good = _write(tmp_path / "good", **{"part-00000": rows.take([1, 3]),
                                        "part-00001": rows.take([0, 2])})
    assert check_same_rows(expected, good, ["v", "id"]) == 4
    assert check_sorted(good, ["v", "id"], across_parts=True) == 2
    changed = _write(tmp_path / "changed", **{"part-00000": pa.table(
        {"v": [0.1, 0.3, 0.5, 0.9], "id": [2, 4, 1, 4]})})
    with pytest.raises(ValidationError, match="rows differ"):
        check_same_rows(expected, changed, ["v", "id"])
    swapped = _write(tmp_path / "swapped", **{"part-00000": rows.take([0, 2]),
                                              "part-00001": rows.take([1, 3])})
    assert check_sorted(swapped, ["v"], across_parts=False) == 2
    with pytest.raises(ValidationError, match="across parts"):
        check_sorted(swapped, ["v"], across_parts=True)
    unsorted = _write(tmp_path / "unsorted", **{"part-00000": rows})
    with pytest.raises(ValidationError, match="2 rows follow a larger key"):
        check_sorted(unsorted, ["v", "id"], across_parts=False)


def test_runners_benchmark_checks_a_single_runner(tmp_path, few_tasks):
    report = runners_bench.run_runners_benchmark(
        0.0005, partitions=3, results_dir=str(tmp_path / "results"), repeat=1,
        runners=("local",))
    assert "every run checked against DuckDB" in report
    assert sorted(os.listdir(tmp_path / "results"))[0].startswith("runners-")


@pytest.fixture
def few_tasks(monkeypatch):
    """The overhead measurement with 2 tasks instead of 64: these tests are about checks."""
    monkeypatch.setattr(runners_bench, "OVERHEAD_TASKS", 2)


def test_runners_benchmark_fails_on_a_wrong_aggregate(tmp_path, monkeypatch, few_tasks):
    monkeypatch.setattr(runners_bench, "AGG_SQL",
                        "SELECT k, count(*) AS n, sum(v) + 0.001 AS total FROM {0} GROUP BY k")
    with pytest.raises(ValidationError, match="groups with other values"):
        runners_bench.run_runners_benchmark(0.0002, partitions=2, repeat=1, runners=("local",),
                                            results_dir=str(tmp_path / "results"))
    assert not (tmp_path / "results").exists()  # no report of a wrong answer


def test_runners_benchmark_fails_on_lost_sort_rows(tmp_path, monkeypatch, few_tasks):
    real = runners_bench._sort

    def lossy(sp, source, partitions, out, method):
        real(sp, source, partitions, out, method)
        victim = os.path.join(out, "part-00001.parquet")
        pq.write_table(pq.read_table(victim).slice(1), victim)

    monkeypatch.setattr(runners_bench, "_sort", lossy)
    with pytest.raises(ValidationError, match="rows differ from the input"):
        runners_bench.run_runners_benchmark(0.0002, partitions=2, repeat=1, runners=("local",),
                                            results_dir=str(tmp_path / "results"))


def test_core_benchmark_checks_values(tmp_path, monkeypatch):
    report = run_core_benchmark(0.0005, partitions=2, results_dir=str(tmp_path / "ok"), repeat=1,
                                tasks=2)
    assert "every group's count and sum is checked against DuckDB's" in report
    import smallpond.bench.core as core

    real = core.smallpond_hash_aggregate

    def off_by_one(sp, source, partitions, out):
        real(sp, source, partitions, out)
        victim = os.path.join(out, "part-00000.parquet")
        table = pq.read_table(victim)
        n = table["n"].to_pylist()
        pq.write_table(table.set_column(table.schema.get_field_index("n"), "n",
                                        pa.array([n[0] + 1, *n[1:]], table["n"].type)), victim)

    monkeypatch.setattr(core, "smallpond_hash_aggregate", off_by_one)
    with pytest.raises(ValidationError, match="1 groups with other values"):
        run_core_benchmark(0.0005, partitions=2, results_dir=str(tmp_path / "bad"), repeat=1,
                           tasks=2)
    assert not (tmp_path / "bad").exists()
