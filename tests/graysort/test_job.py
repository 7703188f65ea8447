"""The GraySort job: a distributed task graph on every runner, validated like valsort."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from smallpond.errors import InputError
from smallpond.graysort import run
from smallpond.graysort.gensort import generate_records, write_gensort_file
from smallpond.graysort.records import records_to_table
from smallpond.graysort.valsort import summarize_file


def _sorted_bytes(records: np.ndarray) -> bytes:
    return records[np.lexsort([records[:, i] for i in range(9, -1, -1)])].tobytes()


def test_generated_sort_is_valid_and_distributed(sp, tmp_path):
    out = str(tmp_path / "out")
    result = run(out, records=20_000, partitions=4, session=sp)
    assert result.valid and result.input_checksum == result.output_checksum
    names = sorted(os.listdir(out))
    assert names == ["_SUCCESS"] + [f"part-{i:05d}.dat" for i in range(4)]
    sizes = [os.path.getsize(os.path.join(out, n)) for n in names[1:]]
    assert all(s > 0 for s in sizes) and sum(sizes) == 2_000_000  # really 4 ranges
    data = b"".join(open(os.path.join(out, n), "rb").read() for n in names[1:])
    assert data == _sorted_bytes(generate_records(0, 20_000))


def test_dat_input_and_skewed_keys(sp, tmp_path):
    records = generate_records(5, 6000)
    records[:4000, :6] = 7  # two thirds of the keys share a 6-byte prefix
    path = tmp_path / "skewed.dat"
    path.write_bytes(records.tobytes())
    out = str(tmp_path / "out")
    result = run(out, input=str(path), partitions=3, session=sp)
    assert result.valid
    sizes = [os.path.getsize(os.path.join(out, f"part-{i:05d}.dat")) for i in range(3)]
    assert max(sizes) < 0.6 * sum(sizes)  # sampled boundaries split the hot prefix
    joined = b"".join(open(os.path.join(out, f"part-{i:05d}.dat"), "rb").read()
                      for i in range(3))
    assert joined == _sorted_bytes(records)


def test_parquet_input(sp, tmp_path):
    records = generate_records(3, 3000)
    records[:1000, :4] = 9  # a shared prefix: boundaries must still split by whole keys
    pq.write_table(records_to_table(records), tmp_path / "r.parquet", row_group_size=500)
    out = str(tmp_path / "out")
    result = run(out, input=str(tmp_path / "r.parquet"), partitions=2, session=sp)
    assert result.valid and result.records == 3000
    # the bytes themselves, against numpy's sort of the same records (not the job's checks)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000.dat", "part-00001.dat"]
    data = b"".join(open(os.path.join(out, f"part-{i:05d}.dat"), "rb").read() for i in range(2))
    assert data == _sorted_bytes(records)


def test_written_file_checksum_matches(tmp_path):
    path = str(tmp_path / "g.dat")
    checksum = write_gensort_file(path, 2500, start=99, batch_records=1000)
    assert summarize_file(path).checksum == checksum
    assert open(path, "rb").read() == generate_records(99, 2500).tobytes()


def test_bad_input_size_is_named(sp, tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"x" * 250)
    with pytest.raises(InputError, match="bad.dat"):
        run(str(tmp_path / "out"), input=str(bad), session=sp)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("engine", ["records", "dataframe"])
def test_both_engines_agree(sp, tmp_path, engine):
    out = str(tmp_path / engine)
    result = run(out, records=5000, partitions=3, session=sp, engine=engine)
    assert result.valid and len(result.output_files) == 3
    data = b"".join(open(f, "rb").read() for f in result.output_files)
    assert data == _sorted_bytes(generate_records(0, 5000))


def test_pipeline_splits_ranges_evenly():
    from smallpond.graysort.pipeline import plan_pipeline, split_ranges

    ranges = [["dat", "/a", 0, 7], ["dat", "/b", 0, 5]]
    groups = split_ranges(ranges, 3)
    assert [sum(r[-1] for r in g) for g in groups] == [4, 4, 4]
    assert groups[1] == [["dat", "/a", 4, 3], ["dat", "/b", 0, 1]]
    graph, maps, reduces = plan_pipeline([["gen", 0, 100]], [], partitions=4, mappers=2)
    assert len(maps) == 2 and len(reduces) == 4 and len(graph) == 7


def test_partitions_grow_when_data_outgrows_task_memory():
    from smallpond.graysort.job import auto_partitions

    assert auto_partitions(10_000_000, 2, 8 << 30) == 8  # 1 GB fits: four per worker
    assert auto_partitions(40_000_000, 2, 8 << 30) == 32  # 4 GB: 125 MB partitions
    # 40 GB with 1 GiB per task: each partition at most ~430 MB (held twice while sorting)
    parts = auto_partitions(400_000_000, 2, 1 << 30)
    assert parts >= 94 and 400_000_000 * 100 / parts * 2.5 <= (1 << 30) * 1.01


def test_rerun_reuses_the_mappers(local_sp, tmp_path):
    first = run(str(tmp_path / "a"), records=4000, partitions=2, session=local_sp)
    mark = len(local_sp.events)
    again = run(str(tmp_path / "b"), records=4000, partitions=2, session=local_sp)
    assert again.valid and again.input_checksum == first.input_checksum
    events = local_sp.events[mark:]
    maps = [e for e in events if e.stage == "graysort-map"]
    assert maps and all(e.kind == "reused" for e in maps)
    # the sort outputs were moved into the first output folder (never shared with the cache),
    # so the sorts run again
    assert {e.kind for e in events if e.stage == "graysort-sort"} == {"pending", "submitted",
                                                                    "finished"}
    assert again.tasks_reused == len(maps) and again.tasks_run == 2
    assert any(line.startswith(f"reused {again.tasks_reused}/") for line in again.lines())
    for name in ("part-00000.dat", "part-00001.dat"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_without_validation_mappers_skip_the_checksum(local_sp, tmp_path):
    out = tmp_path / "out"
    result = run(str(out), records=7000, partitions=2, session=local_sp, validate=False)
    assert result.input_checksum is None and result.records == 7000
    data = b"".join((out / f"part-{i:05d}.dat").read_bytes() for i in range(2))
    assert data == _sorted_bytes(generate_records(0, 7000))
