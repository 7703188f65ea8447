"""The original smallpond 0.15 as a GraySort peer, in a virtual environment of its own.

It needs duckdb 1.2.x (it imports `duckdb.typing`, gone in duckdb 2.0), so it never shares our
environment. Building the environment downloads packages: only when asked for
(`--peers smallpond015`), after a notice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable

__all__ = ["SCRIPT", "sp015_python", "sp015_command"]

VENV = os.path.join(tempfile.gettempdir(), "smallpond015-venv")

SCRIPT = textwrap.dedent('''
    import sys, os, time, numpy as np, pyarrow as pa, pyarrow.parquet as pq
    import smallpond
    source, output, work, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    sp = smallpond.init(data_root=os.path.join(work, "root"))

    def fixed(column, width):
        column = column.combine_chunks()
        offsets = np.frombuffer(column.buffers()[1], np.int64)[
            column.offset:column.offset + len(column) + 1]
        data = np.frombuffer(column.buffers()[2], np.uint8)
        return data[offsets[0]:offsets[-1]].reshape(-1, width)

    def sort(target, run):
        data = np.fromfile(source, dtype=np.uint8).reshape(-1, 100)
        key = pa.FixedSizeBinaryArray.from_buffers(pa.binary(10), len(data),
            [None, pa.py_buffer(np.ascontiguousarray(data[:, :10]))])
        value = pa.FixedSizeBinaryArray.from_buffers(pa.binary(90), len(data),
            [None, pa.py_buffer(np.ascontiguousarray(data[:, 10:]))])
        folder = os.path.join(work, f"in-{run}")
        os.makedirs(folder, exist_ok=True)
        pq.write_table(pa.table({"key": key, "value": value}), os.path.join(folder, "r.parquet"))
        df = sp.read_parquet(os.path.join(folder, "*.parquet")).repartition(partitions)
        # 0.15 has no sampled range shuffle: partition by the first key byte, a column it can use
        first_byte = "('0x' || substr(hex(key), 1, 2))::INT"
        df = df.map(f"key, value, ({first_byte} * {partitions} // 256)::INT AS bucket")
        df = df.repartition(partitions, by="bucket").partial_sort("key")
        result = df.to_arrow()
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, "part-00000.dat"), "wb") as out:
            out.write(np.hstack([fixed(result.column("key"), 10),
                                 fixed(result.column("value"), 90)]).tobytes())

    for run in range(max(1, runs)):
        start = time.perf_counter()
        sort(os.path.join(output, f"run-{run}") if runs else output, run)
        print(f"seconds {run} {time.perf_counter() - start:.6f}", flush=True)
''')


def sp015_python(notify: Callable[[str], None]) -> tuple[str | None, str]:
    """The interpreter of a venv with smallpond 0.15 (built on first use), or why not."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.exists(python):
        return python, ""
    notify(f"building a virtual environment with smallpond==0.15.0 and duckdb==1.2.2 in {VENV} "
           "(downloads from the package index)")
    try:
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True, capture_output=True,
                       timeout=300)
        subprocess.run([python, "-m", "pip", "install", "-q", "smallpond==0.15.0",
                        "duckdb==1.2.2"], check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as error:
        shutil.rmtree(VENV, ignore_errors=True)
        detail = getattr(error, "stderr", b"") or b""
        return None, f"could not install smallpond 0.15: {error} {detail[-300:]!r}"
    return python, ""


def sp015_command(python: str, work: str, source: str, output: str, partitions: int,
                  runs: int = 0) -> list[str]:
    """The command line of a 0.15 sort (its script written into `work`); with `runs`, that
    many sorts in one process into output/run-K, each timed (the warm table)."""
    script = os.path.join(work, "sp015.py")
    if not os.path.exists(script):
        with open(script, "w") as handle:
            handle.write(SCRIPT)
    scratch = tempfile.mkdtemp(prefix="sp015-", dir=work)
    return [python, script, source, output, scratch, str(partitions), str(runs)]
