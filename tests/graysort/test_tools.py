"""gensort / valsort compatibility: official vectors, a slow reference, and the CLI."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from smallpond.cli import main
from smallpond.graysort.checksum import checksum_records
from smallpond.graysort.gensort import generate_records
from smallpond.graysort.valsort import merge, report_lines, summarize_file, summarize_records

DATA = Path(__file__).parent.parent / "data" / "graysort"
VECTORS = [
    ("binary_b0_n1000", 0, 1000, False),
    ("binary_b123456789_n100", 123456789, 100, False),
    ("binary_b1e20_n10", 10**20, 10, False),
    ("ascii_b0_n1000", 0, 1000, True),
]
A = 0x2360ED051FC65DA44385DF649FCCF645
C = 0x4A696D47726179524950202020202001
MASKS = [0xF0E8E4E2E1D8D4D2D1CC, 0xCAC9C6C5C3B8B4B2B1AC, 0xAAA9A6A5A39C9A999695,
         0x938E8D8B87787472716C, 0x6A696665635C5A595655, 0x534E4D4B473C3A393635,
         0x332E2D2B271E1D1B170F, 0xC8C4C2C1989492918CE0, 0x170F332E2D2B271E1D1B]


def reference_binary(start: int, count: int) -> bytes:
    """Record by record with Python ints, straight from FORMAT.md (slow, obviously right)."""
    x = 0
    a, c = A, C
    steps, ja, jc = start + 1, 1, 0
    while steps:  # jump to X(start + 1)
        if steps & 1:
            ja, jc = (a * ja) % 2**128, (a * jc + c) % 2**128
        a, c = (a * a) % 2**128, (a * c + c) % 2**128
        steps >>= 1
    x = jc
    values = []
    for _ in range(count + 9):
        values.append(x)
        x = (A * x + C) % 2**128
    out = bytearray()
    for i in range(count):
        out += (values[i] >> 48).to_bytes(10, "big")
        for j in range(1, 10):
            out += ((values[i + j] >> 48) ^ MASKS[j - 1]).to_bytes(10, "big")
    return bytes(out)


@pytest.mark.parametrize("name,start,count,ascii", VECTORS)
def test_official_vectors(name, start, count, ascii):
    expected = (DATA / f"{name}.dat").read_bytes()
    records = generate_records(start, count, ascii)
    assert records.tobytes() == expected
    assert format(checksum_records(records), "x") == (DATA / f"{name}.sum").read_text().strip()


@given(start=st.integers(0, 2**100), count=st.integers(0, 40), split=st.integers(0, 40))
def test_generation_matches_reference_and_splits(start, count, split):
    split = min(split, count)
    whole = generate_records(start, count).tobytes()
    assert whole == reference_binary(start, count)
    assert whole == (generate_records(start, split).tobytes()
                     + generate_records(start + split, count - split).tobytes())


@given(st.binary(min_size=0, max_size=3000).map(lambda b: b[: len(b) // 100 * 100]))
def test_checksum_equals_zlib_per_record(data):
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, 100)
    assert checksum_records(records) == sum(zlib.crc32(r.tobytes()) for r in records)


def test_valsort_on_unsorted_and_sorted_vector():
    summary = summarize_file(str(DATA / "binary_b0_n1000.dat"))
    assert report_lines(summary) == [
        "First unordered record is record 2", "Records: 1000", "Checksum: 1ea6370b955",
        "ERROR - there are 483 unordered records"]
    records = generate_records(0, 1000)
    ordered = records[np.lexsort([records[:, i] for i in range(9, -1, -1)])]
    assert report_lines(summarize_records(ordered)) == [
        "Records: 1000", "Checksum: 1ea6370b955", "Duplicate keys: 0",
        "SUCCESS - all records are in order"]


@given(cuts=st.lists(st.integers(0, 200), max_size=4), dup=st.booleans())
def test_merged_summaries_equal_the_whole(cuts, dup):
    records = generate_records(7, 200)
    records = records[np.lexsort([records[:, i] for i in range(9, -1, -1)])]
    if dup:
        records[100] = records[99]
    records[150:160] = records[150:160][::-1].copy()  # some disorder, across files too
    bounds = [0, *sorted(cuts), 200]
    parts = [summarize_records(records[a:b]) for a, b in zip(bounds, bounds[1:])]
    assert merge(parts) == summarize_records(records)


def test_cli_gensort_and_valsort_roundtrip(tmp_path):
    runner = CliRunner()
    out = tmp_path / "g.dat"
    result = runner.invoke(main, ["gensort", "-b", "123456789", "-c", "100", str(out)])
    assert result.exit_code == 0 and result.stderr.strip() == "2df2359d4d"
    assert out.read_bytes() == (DATA / "binary_b123456789_n100.dat").read_bytes()
    big = runner.invoke(main, ["gensort", "-b", "100000000000000000000", "10",
                               str(tmp_path / "b.dat")])
    assert big.exit_code == 0
    assert (tmp_path / "b.dat").read_bytes() == (DATA / "binary_b1e20_n10.dat").read_bytes()
    bad = runner.invoke(main, ["valsort", str(DATA / "binary_b0_n1000.dat")])
    assert bad.exit_code == 1 and "483 unordered" in bad.stderr


def test_cli_valsort_summaries(tmp_path):
    runner = CliRunner()
    records = generate_records(0, 300)
    records = records[np.lexsort([records[:, i] for i in range(9, -1, -1)])]
    (tmp_path / "a.dat").write_bytes(records[:150].tobytes())
    (tmp_path / "b.dat").write_bytes(records[150:].tobytes())
    for name in "ab":
        result = runner.invoke(main, ["valsort", "-o", str(tmp_path / f"{name}.sum"),
                                      str(tmp_path / f"{name}.dat")])
        assert result.exit_code == 0
    (tmp_path / "all.sum").write_bytes((tmp_path / "a.sum").read_bytes()
                                       + (tmp_path / "b.sum").read_bytes())
    merged = runner.invoke(main, ["valsort", "-s", str(tmp_path / "all.sum")])
    assert merged.exit_code == 0 and "SUCCESS" in merged.stderr and "Records: 300" in merged.stderr
    swapped = runner.invoke(main, ["valsort", str(tmp_path / "b.dat"), str(tmp_path / "a.dat")])
    assert swapped.exit_code == 1 and "First unordered record is record 150" in swapped.stderr


def test_cli_valsort_rejects_bad_files(tmp_path):
    runner = CliRunner()
    odd = tmp_path / "odd.dat"
    odd.write_bytes(b"x" * 150)
    result = runner.invoke(main, ["valsort", str(odd)])
    assert result.exit_code == 2 and "odd.dat" in result.stderr
    missing = runner.invoke(main, ["valsort", str(tmp_path / "missing.dat")])
    assert missing.exit_code == 2 and "missing.dat" in missing.stderr


@given(st.binary(min_size=0, max_size=2000).map(lambda b: b[: len(b) // 100 * 100]))
def test_numpy_checksum_path_equals_zlib(data):
    from smallpond.graysort.checksum import record_crcs

    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, 100)
    assert [int(c) for c in record_crcs(records)] == [zlib.crc32(r.tobytes()) for r in records]


@given(length=st.integers(1, 130), rows=st.integers(0, 70), pad=st.integers(0, 9),
       seed=st.integers(0, 2**32 - 1))
def test_compiled_checksum_any_length_and_row_stride(length, rows, pad, seed):
    from smallpond.graysort.jit import compiled_crc_sum

    wide = np.random.default_rng(seed).integers(0, 256, (rows, length + pad), dtype=np.uint8)
    records = wide[:, :length]  # rows `length + pad` bytes apart
    expected = sum(zlib.crc32(r.tobytes()) for r in records)
    assert compiled_crc_sum(length) is not None  # the compiled loop, not the numpy fallback
    assert checksum_records(records) == expected


def test_checksum_is_the_compiled_loop_in_workers_too(local_sp):
    import pyarrow as pa

    def probe(table: pa.Table) -> pa.Table:
        from smallpond.graysort.jit import _COMPILED

        return pa.table({"compiled": [_COMPILED.get(100) is not None]})

    local_sp.runner.preload(["smallpond.graysort.checksum:warm"])
    assert local_sp.from_items([1]).map_batches(probe).take_all() == [{"compiled": True}]


@given(rows=st.integers(0, 300), length=st.sampled_from([1, 7, 64, 100, 129]),
       picks=st.integers(0, 500), seed=st.integers(0, 2**32 - 1))
def test_compiled_gather_equals_numpy_take(rows, length, picks, seed):
    from smallpond.graysort.jit import compiled, gather_rows

    rng = np.random.default_rng(seed)
    source = rng.integers(0, 256, (rows, length), dtype=np.uint8)
    index = rng.integers(0, max(rows, 1), picks if rows else 0).astype(np.int64)
    out = np.empty((len(index), length), dtype=np.uint8)
    assert compiled(length) is not None
    gather_rows(source, index, out)
    assert (out == source[index]).all()


def test_compiled_gather_checks_bounds():
    from smallpond.graysort.jit import gather_rows

    source = np.zeros((3, 100), dtype=np.uint8)
    out = np.empty((1, 100), dtype=np.uint8)
    with pytest.raises(IndexError):
        gather_rows(source, np.array([3]), out)
    with pytest.raises(IndexError):
        gather_rows(source, np.array([-1]), out)


@given(length=st.integers(1, 130), seed=st.integers(0, 2**32 - 1))
def test_folded_crc_reference_equals_zlib(length, seed):
    from smallpond.graysort.crc_fold import constants, reference_crc

    record = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    assert reference_crc(record, constants(length)) == zlib.crc32(record)


@pytest.mark.parametrize("clmul", [True, False])
@pytest.mark.parametrize("length", [100, 7, 8, 64, 90, 129])
def test_both_compiled_crc_loops_equal_zlib(clmul, length):
    from smallpond.graysort import jit

    if clmul and not jit.has_clmul():
        pytest.skip("this CPU has no carry-less multiply; the slicing-by-8 loop is used")
    loops = jit._compile(length, clmul=clmul)
    records = np.random.default_rng(length).integers(0, 256, (301, length + 3), dtype=np.uint8)
    expected = sum(zlib.crc32(r[:length].tobytes()) for r in records)
    assert loops.crc_sum(records.ctypes.data, len(records), length + 3) == expected


@given(keys=st.lists(st.tuples(st.sampled_from([b"\0" * 8, b"\1" * 8, b"\xff" * 8]),
                               st.binary(min_size=2, max_size=2)).map(b"".join),
                     min_size=0, max_size=200), pad=st.integers(0, 90))
def test_compiled_order_check_equals_numpy(keys, pad):
    from smallpond.graysort.jit import order_stats
    from smallpond.graysort.valsort import _order_stats_numpy

    records = np.zeros((len(keys), 10 + pad), dtype=np.uint8)
    if keys:
        records[:, :10] = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 10)
    assert order_stats(records) == _order_stats_numpy(records[:, :10])
