"""Per-task capture of output, logging, worker, times and peak memory (runners/capture.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from smallpond.errors import SqlError, UserFunctionError
from smallpond.runners.capture import OUTPUT_LIMIT, TaskCapture, attach_output, worker_id


def test_capture_gets_prints_c_level_writes_children_and_logging_in_order():
    with TaskCapture() as capture:
        print("first")
        os.write(2, b"second (fd 2)\n")
        subprocess.run([sys.executable, "-c", "print('third (child)')"], check=True)
        logging.getLogger("user.module").info("fourth (logging)")
        print("fifth", file=sys.stderr)
    lines = capture.text.splitlines()
    assert lines == ["first", "second (fd 2)", "third (child)",
                     "INFO user.module: fourth (logging)", "fifth"]
    assert capture.worker == worker_id() and capture.ended >= capture.started > 0
    assert capture.peak_rss > 0


def test_capture_restores_descriptors_logging_and_level():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    before = os.fstat(1).st_ino, os.fstat(2).st_ino
    with pytest.raises(ValueError):
        with TaskCapture():
            raise ValueError("x")
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == before
    assert root.level == level and root.handlers == handlers


def test_capture_is_capped_keeping_head_and_tail():
    with TaskCapture() as capture:
        sys.stdout.write("HEAD" + "x" * (3 * OUTPUT_LIMIT) + "TAIL\n")
    assert capture.text.startswith("HEAD") and capture.text.rstrip().endswith("TAIL")
    assert "bytes omitted" in capture.text
    assert len(capture.text) < OUTPUT_LIMIT + 100


def test_peak_memory_is_per_task():
    with TaskCapture() as big:
        block = bytearray(200 << 20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    del block
    with TaskCapture() as small:
        pass
    assert big.peak_rss - small.peak_rss > 150 << 20


def test_attach_output_keeps_type_and_quotes_tail():
    error = attach_output(SqlError("SQL failed", sql="SELECT 1"), "line 1\nline 2\n")
    assert isinstance(error, SqlError) and error.sql == "SELECT 1"
    assert error.output == "line 1\nline 2\n"
    assert str(error).startswith("SQL failed") and "line 2" in str(error)
    plain = ValueError("x")
    assert attach_output(plain, "") is plain and not hasattr(plain, "output")


def test_failed_task_error_carries_its_output(sp):
    def noisy(table):
        print("about to fail on", table.num_rows, "rows")
        raise RuntimeError("boom")

    with pytest.raises(UserFunctionError) as info:
        sp.from_items([1, 2, 3]).map_batches(noisy).count()
    assert info.value.output == "about to fail on 3 rows\n"
    assert "about to fail on 3 rows" in str(info.value)
