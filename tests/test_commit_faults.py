"""Faults injected inside the output writer (smallpond/io/output.py), at every step of a write.

For each way to write (a new folder, an empty folder, a rerun replacing a previous output,
overwrite and append beside a file the user keeps there) and each point a write can fail at
(before staging, mid-staging, disk full, moving old parts aside, mid-publish, verification,
before and after `_SUCCESS`, Ctrl-C), on the output's own file system and on another one: the
write raises a typed error, the output folder is byte for byte as it was, nothing is left
beside it (hidden staging folders included), and the same write then succeeds with the right
rows (tasks whose files left the cache run again).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest

import smallpond.io.output as writer
from smallpond.errors import DiskFullError, IntegrityError, OutputError

OLD = list(range(30))  # the previous output: 3 partitions
NEW = list(range(100, 140))  # what the failing write writes: 4 partitions
FOREIGN = "report.txt"  # a file of the user's beside a previous output


@dataclass(frozen=True)
class Mode:
    name: str
    write_mode: str
    previous: bool  # a previous smallpond output is there
    foreign: bool  # a file of the user's is there too
    exists: bool = True  # the folder exists (False: a new folder)


MODES = {m.name: m for m in (
    Mode("new", "error", previous=False, foreign=False, exists=False),
    Mode("empty", "error", previous=False, foreign=False),
    Mode("rerun", "error", previous=True, foreign=False),
    Mode("overwrite", "overwrite", previous=True, foreign=True),
    Mode("append", "append", previous=True, foreign=True),
)}

# fault -> the modes it applies to (moving old files aside and the journal's last step happen
# only when publishing into a folder that holds files)
FAULTS = {
    "before-staging": list(MODES),
    "first-part": list(MODES),
    "mid-staging": list(MODES),
    "disk-full": list(MODES),
    "move-aside": ["rerun", "overwrite", "append"],
    "mid-publish": list(MODES),
    "verify": list(MODES),
    "before-success": list(MODES),
    "after-success": ["rerun", "overwrite", "append"],
    "interrupt": list(MODES),
}
CASES = [(fault, mode) for fault, modes in FAULTS.items() for mode in modes]


def _tree(path) -> dict[str, bytes] | None:
    """Every file under `path` (hidden ones too) with its bytes; None when it does not exist."""
    if not os.path.exists(path):
        return None
    found = {}
    for folder, subfolders, files in os.walk(path):
        for name in subfolders:
            found[os.path.relpath(os.path.join(folder, name), path) + "/"] = b""
        for name in files:
            full = os.path.join(folder, name)
            with open(full, "rb") as handle:
                found[os.path.relpath(full, path)] = handle.read()
    return found


def _job(sp, items: list[int], partitions: int):
    # a map after the split: each partition is one whole task file that only the writer
    # reads, so the writer moves it out of the cache (the path where a fault loses it)
    return sp.from_items(items).repartition(partitions, by_rows=True).map("item + 0 AS item")


class Injector:
    """Arms one fault inside the writer; records whether it fired."""

    def __init__(self, monkeypatch, fault: str, mode: Mode, out: str):
        self.fault, self.mode, self.out = fault, mode, out
        self.fired = 0
        self.calls: dict[str, int] = {}
        self.monkeypatch = monkeypatch
        getattr(self, "_" + fault.replace("-", "_"))()

    def _count(self, point: str) -> int:
        self.calls[point] = self.calls.get(point, 0) + 1
        return self.calls[point]

    def _fire(self, error: BaseException):
        self.fired += 1
        raise error

    def _eio(self) -> OSError:
        return OSError(errno.EIO, f"injected fault: {self.fault}")

    def _wrap(self, name: str, before=None, after=None):
        real = getattr(writer, name)

        def wrapped(*args, **kwargs):
            call = self._count(name)
            if before:
                before(call, *args)
            result = real(*args, **kwargs)
            if after:
                after(call, *args)
            return result

        self.monkeypatch.setattr(writer, name, wrapped)

    def _rename_fault(self, matches, nth: int, error) -> None:
        real = os.rename

        def rename(source, target, *args, **kwargs):
            if matches(str(source), str(target)) and self._count("rename") == nth:
                self._fire(error())
            return real(source, target, *args, **kwargs)

        self.monkeypatch.setattr(os, "rename", rename)

    # -- the faults ---------------------------------------------------------------------------
    def _before_staging(self):
        self._wrap("_make_staging", before=lambda call, *a: self._fire(self._eio()))

    def _first_part(self):
        self._wrap("_stage_part", before=lambda call, *a: self._fire(self._eio()))

    def _half_written(self, error):
        def after(call, slices, target, *rest):
            if call == 2:  # the second part is half written when the error comes
                with open(target, "r+b") as handle:
                    handle.truncate(os.path.getsize(target) // 2)
                self._fire(error())

        return after

    def _mid_staging(self):
        self._wrap("_stage_part", after=self._half_written(self._eio))

    def _disk_full(self):
        self._wrap("_stage_part", after=self._half_written(
            lambda: OSError(errno.ENOSPC, "No space left on device (injected)")))

    def _move_aside(self):
        nth = 1 if self.mode.name == "append" else 2  # append moves only _SUCCESS aside
        self._rename_fault(lambda s, t: f"{os.sep}backup{os.sep}" in t and
                           os.path.dirname(s) == self.out, nth, self._eio)

    def _publish_matches(self, source: str, target: str) -> bool:
        if not self.mode.exists:
            return target == self.out  # a new folder is published by one rename
        return os.path.dirname(target) == self.out and f"{os.sep}new{os.sep}" in source

    def _mid_publish(self):
        nth = 1 if not self.mode.exists else 2
        self._rename_fault(self._publish_matches, nth, self._eio)

    def _interrupt(self):
        nth = 1 if not self.mode.exists else 2
        self._rename_fault(self._publish_matches, nth, KeyboardInterrupt)

    def _verify(self):
        self._wrap("_verify", before=lambda call, *a: self._fire(
            IntegrityError(f"injected fault: {self.fault}")))

    def _before_success(self):
        self._wrap("_write_manifest", before=lambda call, *a: self._fire(self._eio()))

    def _after_success(self):
        real = writer.write_json_atomic

        def write_json(path, data):
            if path.endswith("journal.json") and data.get("state") == "published":
                assert os.path.exists(os.path.join(self.out, "_SUCCESS"))
                self._fire(self._eio())
            return real(path, data)

        self.monkeypatch.setattr(writer, "write_json_atomic", write_json)

    def expected_error(self):
        if self.fault == "interrupt":
            return pytest.raises(KeyboardInterrupt)
        if self.fault == "verify":
            return pytest.raises(IntegrityError, match="injected fault: verify")
        if self.fault == "disk-full":
            return pytest.raises(DiskFullError, match=re.escape(repr(self.out)))
        return pytest.raises(OutputError, match=re.escape(f"failed writing {self.out!r}") +
                             ".*injected fault.*previous output is untouched")


def _prepare(sp, mode: Mode, base) -> str:
    out = base / "out"
    if mode.previous:
        _job(sp, OLD, 3).write_parquet(str(out))
    elif mode.exists:
        out.mkdir()
    if mode.foreign:
        (out / FOREIGN).write_text("the user's notes")
    return str(out)


def _values(out: str) -> list[int]:
    names = sorted(n for n in os.listdir(out) if n.endswith(".parquet"))
    return sorted(v for n in names for v in pq.read_table(os.path.join(out, n))["item"]
                  .to_pylist())


def _check_fault(sp, monkeypatch, base, fault: str, mode_name: str) -> None:
    mode = MODES[mode_name]
    base.mkdir(exist_ok=True)
    out = _prepare(sp, mode, base)
    before, around = _tree(out), sorted(os.listdir(base))
    job = _job(sp, NEW, 4)
    job.count()  # the tasks run before the fault is armed: only the writer is under test
    injector = Injector(monkeypatch, fault, mode, out)
    with injector.expected_error():
        job.write_parquet(out, mode=mode.write_mode)
    monkeypatch.undo()
    assert injector.fired == 1, f"the fault {fault} never fired ({injector.calls})"
    assert _tree(out) == before  # byte for byte, or still absent
    assert sorted(os.listdir(base)) == around  # no staging sibling, nothing else left
    # the same write then succeeds, with the right rows and only smallpond's files replaced
    job.write_parquet(out, mode=mode.write_mode)
    expected = sorted((OLD if mode.write_mode == "append" else []) + NEW)
    assert _values(out) == expected
    parts = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    first = 3 if mode.write_mode == "append" else 0
    assert parts[-4:] == [f"part-{i:05d}.parquet" for i in range(first, first + 4)]
    assert len(parts) == (7 if mode.write_mode == "append" else 4)
    if mode.foreign:
        assert (base / "out" / FOREIGN).read_text() == "the user's notes"
    assert sorted(os.listdir(base)) == sorted({*around, "out"})


@pytest.mark.parametrize("fault,mode", CASES)
def test_a_failed_write_leaves_the_output_as_it_was(sp, tmp_path, monkeypatch, fault, mode):
    _check_fault(sp, monkeypatch, tmp_path / "base", fault, mode)


# on another file system than the data_root: parts are copied out of the cache, not moved
CROSS_DEVICE = ["mid-staging", "disk-full", "move-aside", "mid-publish", "before-success",
                "after-success"]


@pytest.mark.parametrize("fault,mode", [c for c in CASES if c[0] in CROSS_DEVICE])
def test_a_failed_write_to_another_file_system(sp, tmp_path, monkeypatch, tmpfs, fault, mode):
    with tmpfs(tmp_path / "mnt", "16m") as mount:
        assert os.stat(mount).st_dev != os.stat(sp.config.data_root).st_dev
        _check_fault(sp, monkeypatch, tmp_path / "mnt" / "base", fault, mode)


@pytest.mark.parametrize("mode", ["new", "rerun", "overwrite", "append"])
def test_a_real_disk_full_on_another_file_system(sp, tmp_path, tmpfs, mode):
    """The copy out of the cache fills a small file system: the old output stays."""
    import pyarrow as pa

    with tmpfs(tmp_path / "small", "1m") as mount:
        base = tmp_path / "small"
        out = _prepare(sp, MODES[mode], base)
        before, around = _tree(out), sorted(os.listdir(mount))
        big = pa.table({"item": list(range(200_000)),
                        "pad": [os.urandom(8).hex() for _ in range(200_000)]})
        with pytest.raises(DiskFullError, match="no space left") as info:
            sp.from_arrow(big).repartition(2, by_rows=True).map("item, pad") \
                .write_parquet(out, mode=MODES[mode].write_mode)
        assert info.value.mount == mount
        assert _tree(out) == before
        assert sorted(os.listdir(mount)) == around
