"""The GraySort record pipeline: both shuffles, validation from the sort tasks' summaries, and
the pieces under them (sort order, routing, O_DIRECT block writes), against references."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smallpond.errors import InputError
from smallpond.graysort import job
from smallpond.graysort.checksum import checksum_records
from smallpond.graysort.direct_io import BlockWriter
from smallpond.graysort.gensort import generate_records
from smallpond.graysort.pipeline import plan_pipeline, run_pipeline, source_ranges
from smallpond.graysort.sorting import destinations, keys_as_bytes, sort_order
from smallpond.graysort.sources import file_records, release_files
from smallpond.graysort.valsort import summarize_file


def _reference_order(records: np.ndarray) -> np.ndarray:
    """Stable order by all 10 key bytes (numpy's lexsort, an independent implementation)."""
    return np.lexsort([records[:, i] for i in range(9, -1, -1)])


def _skewed(seed: int, count: int) -> np.ndarray:
    records = generate_records(seed * 1000, count)
    records[: count // 3, :7] = 9  # a hot 7-byte prefix
    records[count // 3: count // 2, :10] = records[0, :10]  # many fully equal keys
    return records


@pytest.mark.parametrize("shuffle", ["index", "records"])
def test_shuffles_sort_several_files_like_the_reference(sp, tmp_path, shuffle):
    parts = [_skewed(1, 3000), generate_records(7, 10), generate_records(9, 2200)]
    folder = tmp_path / "in"
    folder.mkdir()
    for i, records in enumerate(parts):
        (folder / f"f{i}.dat").write_bytes(records.tobytes())
    (folder / "empty.dat").write_bytes(b"")
    ranges, identities = source_ranges(None, str(folder))
    out = tmp_path / "out"
    files, count, checksum, summary = run_pipeline(sp, str(out), ranges, identities,
                                                   partitions=5, mappers=3, shuffle=shuffle)
    whole = np.concatenate(parts)
    expected = whole[_reference_order(whole)]
    written = b"".join(open(f, "rb").read() for f in files)
    assert written == expected.tobytes()
    assert count == len(whole) and checksum == checksum_records(whole)
    # the summary merged from the sort tasks equals valsort reading the files
    reread = [summarize_file(f) for f in files]
    assert summary.records == sum(s.records for s in reread) == len(whole)
    assert summary.checksum == sum(s.checksum for s in reread) == checksum
    assert summary.unordered == 0
    assert summary.duplicates == int((keys_as_bytes(expected)[1:]
                                      == keys_as_bytes(expected)[:-1]).sum())
    assert summary.first_key == expected[0, :10].tobytes()
    assert summary.last_key == expected[-1, :10].tobytes()


def test_records_engine_validates_without_reading_the_output(local_sp, tmp_path, monkeypatch):
    path = tmp_path / "in.dat"
    path.write_bytes(generate_records(3, 5000).tobytes())

    def no_reread(*args, **kwargs):
        raise AssertionError("the output was read again to validate it")

    monkeypatch.setattr(job, "_validate", no_reread)
    result = job.run(str(tmp_path / "out"), input=str(path), partitions=3, session=local_sp)
    assert result.valid and result.output_checksum == result.input_checksum
    assert "SUCCESS - all records are in order" in result.report


def test_index_shuffle_is_chosen_for_dat_input_on_the_local_runner(local_sp, tmp_path):
    path = tmp_path / "in.dat"
    path.write_bytes(generate_records(0, 1000).tobytes())
    job.run(str(tmp_path / "out"), input=str(path), partitions=2, session=local_sp)
    maps = [t for t in local_sp._last_graph if t.kernel == "graysort.map"]
    assert maps and all(t.params["shuffle"] == "index" for t in maps)
    committed = os.listdir(os.path.join(local_sp.config.tasks_dir, maps[0].key))
    assert "part.idx" in committed and "part.dat" not in committed  # no records moved


def test_without_validation_no_summary_is_made(local_sp, tmp_path):
    path = tmp_path / "in.dat"
    records = generate_records(11, 3000)
    path.write_bytes(records.tobytes())
    ranges, identities = source_ranges(None, str(path))
    files, count, checksum, summary = run_pipeline(
        local_sp, str(tmp_path / "out"), ranges, identities, partitions=2, checksum=False)
    assert (count, checksum, summary) == (3000, None, None)
    assert b"".join(open(f, "rb").read() for f in files) == \
        records[_reference_order(records)].tobytes()


# keys over few byte values share long prefixes: they tie on the packed prefix and must be
# ordered by their last bytes
_KEY = st.one_of(st.binary(min_size=10, max_size=10),
                 st.tuples(st.sampled_from([b"\0" * 8, b"\1" * 8, b"\xff" * 7 + b"\0"]),
                           st.binary(min_size=2, max_size=2)).map(b"".join))


@given(keys=st.lists(_KEY, min_size=0, max_size=300), repeat=st.integers(1, 3))
@example(keys=[b"\1" * 8 + b"\xff\xff", b"\1" * 8 + b"\0\0"], repeat=1)
def test_sort_order_is_the_stable_key_order(keys, repeat):
    keys = keys * repeat  # duplicates
    records = np.zeros((len(keys), 100), dtype=np.uint8)
    for i, key in enumerate(keys):
        records[i, :10] = np.frombuffer(key, dtype=np.uint8)
        records[i, 10:18] = np.frombuffer(i.to_bytes(8, "little"), dtype=np.uint8)
    assert sort_order(records).tolist() == _reference_order(records).tolist()


@given(keys=st.lists(_KEY, min_size=1, max_size=200), bounds=st.lists(_KEY, max_size=12),
       share=st.booleans())
def test_destinations_count_the_bounds_at_or_below_each_key(keys, bounds, share):
    if share and bounds:  # keys that share a bound's 8-byte prefix, below and above it
        keys = keys + [bounds[0][:8] + b"\x00\x00", bounds[0][:8] + b"\xff\xff", bounds[0]]
    records = np.zeros((len(keys), 100), dtype=np.uint8)
    records[:, :10] = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 10)
    sorted_bounds = np.sort(np.array(bounds, dtype="S10"))
    expected = [sum(b <= k for b in sorted(bounds)) for k in keys]
    assert destinations(records, sorted_bounds).tolist() == expected


@pytest.mark.parametrize("folder", ["tmp", "shm"])
@pytest.mark.parametrize("blocks", [[4096 * 3, 4096, 100], [100], [4096 * 2], [5000, 4096]])
def test_block_writer_writes_every_byte_in_order(tmp_path, folder, blocks):
    if folder == "shm":  # tmpfs: no O_DIRECT, the buffered path
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm here")
        import tempfile

        base = tempfile.mkdtemp(dir="/dev/shm")
    else:
        base = str(tmp_path)
    try:
        path = os.path.join(base, "out.dat")
        data = np.random.default_rng(len(blocks)).integers(0, 256, sum(blocks), dtype=np.uint8)
        with BlockWriter(path, max(blocks)) as writer:
            offset = 0
            for size in blocks:
                block = writer.buffer()
                block[:size] = data[offset:offset + size]
                writer.submit(size)
                offset += size
        assert open(path, "rb").read() == data.tobytes()
    finally:
        if folder == "shm":
            import shutil

            shutil.rmtree(base, ignore_errors=True)


def test_block_writer_uses_o_direct_where_the_file_system_allows(tmp_path):
    writer = BlockWriter(str(tmp_path / "x.dat"), 8192)
    try:
        direct = writer.direct
    finally:
        writer.close()
    probe = tmp_path / "probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
        supported = True
    except OSError:
        supported = False
    assert direct == supported


def test_mapped_input_that_shrank_is_named(tmp_path):
    path = tmp_path / "short.dat"
    path.write_bytes(generate_records(0, 10).tobytes())
    try:
        assert file_records(str(path), 2, 8).shape == (8, 100)
        with pytest.raises(InputError, match="short.dat"):
            file_records(str(path), 5, 8)
    finally:
        release_files()


def test_killed_sort_worker_is_replaced_and_the_output_stays_valid(local_sp, tmp_path):
    import signal

    path = tmp_path / "in.dat"
    records = generate_records(21, 60_000)
    path.write_bytes(records.tobytes())
    killed = []

    def kill_on_first_sort(event):
        if event.kind == "submitted" and event.stage == "graysort-sort" and not killed:
            busy = [w for w in local_sp.runner._busy.values() if w.read_hello(60)]
            os.kill(busy[-1].pid, signal.SIGKILL)
            killed.append(busy[-1].pid)

    remove = local_sp.on_event(kill_on_first_sort)
    try:
        result = job.run(str(tmp_path / "out"), input=str(path), partitions=4, session=local_sp)
    finally:
        remove()
    assert killed and any(e.kind == "retried" for e in local_sp.events)
    assert result.valid
    written = b"".join(open(f, "rb").read() for f in result.output_files)
    assert written == records[_reference_order(records)].tobytes()


def test_sort_task_manifest_checksum_is_the_files_checksum(local_sp, tmp_path):
    from smallpond.runners.execute import file_checksum, load_committed

    path = tmp_path / "in.dat"
    path.write_bytes(generate_records(5, 70_000).tobytes())  # more than one output block
    ranges, identities = source_ranges(None, str(path))
    graph, _, reduces = plan_pipeline(ranges, identities, 2, 2, shuffle="index")
    local_sp.run_graph(graph, what="test")
    for task in reduces:
        output = load_committed(local_sp.config.data_root, task.key)
        dat = next(f for f in output.files if f.name.endswith(".dat"))
        assert dat.checksum == file_checksum(output.path(dat))


@given(count=st.integers(0, 40_000), shift=st.integers(1, 63), seed=st.integers(0, 2**32 - 1),
       values=st.sampled_from(["random", "few", "top"]))
def test_radix_sort_equals_numpy_sort(count, shift, seed, values):
    from smallpond.graysort.radix import radix_sort

    rng = np.random.default_rng(seed)
    if values == "random":
        keys = rng.integers(0, 2**64 - 1, count, dtype=np.uint64, endpoint=True)
    elif values == "few":  # most passes find every value in one bucket
        keys = rng.choice(np.array([3, 2**40, 2**63 + 5], dtype=np.uint64), count)
    else:  # the top digit's last bucket, the others all zero
        keys = np.full(count, 2**64 - 1, dtype=np.uint64)
        keys[: count // 2] = 0
    packed = ((keys >> np.uint64(shift)) << np.uint64(shift)) \
        | (np.arange(count, dtype=np.uint64) & np.uint64((1 << shift) - 1))
    result = radix_sort(packed.copy(), np.empty_like(packed), shift)
    if count:
        assert result is not None
        # stable by the bits from `shift` up: equal keys keep their input order
        order = np.argsort(packed >> np.uint64(shift), kind="stable")
        assert result.tolist() == packed[order].tolist()


def test_sort_order_of_a_large_partition_takes_the_radix_sort(monkeypatch):
    from smallpond.graysort import sorting

    calls = []
    real = sorting.radix_sort
    monkeypatch.setattr(sorting, "radix_sort", lambda *a: calls.append(1) or real(*a))
    records = _skewed(4, 60_000)
    assert sorting.sort_order(records).tolist() == _reference_order(records).tolist()
    assert calls  # the compiled path ran, and gave the reference's order
