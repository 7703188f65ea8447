"""R1 and R2 (on this machine's Ray): GraySort with a worker SIGKILLed at 30%, 60% and 90% of
its tasks, several seeds, on both runners.

Each run must give exactly the bytes of an independent sort of the same records (so record
count, checksum and order are equal, ties included), valsort must accept it, a reader watching
the output folder must never see a temporary file or part of the result without the rest, and
the kill costs one task re-run. The multi-node kills (a worker process, a whole node) are in
test_ray_nodes.py. `benchmarks/reliability.py` runs the same at 1 GB.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from smallpond.bench.faults import KillAtFraction, OutputWatcher
from smallpond.graysort import job as graysort
from smallpond.graysort.gensort import write_gensort_file

RECORDS = 200_000
PARTITIONS = 8


def sorted_records(path: str) -> bytes:
    """The records of a gensort file in key order, sorted here with numpy."""
    records = np.fromfile(path, dtype=np.uint8).reshape(-1, 100)
    keys = np.ascontiguousarray(records[:, :10]).view("S10").ravel()
    return records[np.argsort(keys, kind="stable")].tobytes()


@pytest.fixture(scope="module")
def gensort_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gensort")
    made = {}

    def make(seed: int, records: int = RECORDS) -> tuple[str, bytes]:
        if (seed, records) not in made:
            path = str(folder / f"input-{seed}-{records}.dat")
            write_gensort_file(path, records, start=seed * 10**9)
            made[seed, records] = path, sorted_records(path)
        return made[seed, records]

    return make


@pytest.mark.parametrize("seed, fraction", [
    pytest.param(seed, fraction, marks=[pytest.mark.reliability_quick]
                 if (seed, fraction) == (0, 0.6) else [])
    for seed in (0, 1, 2) for fraction in (0.3, 0.6, 0.9)])
def test_graysort_with_a_worker_killed(session, runner, gensort_inputs, tmp_path, seed,
                                       fraction):
    # Ray's tasks of 200k records end in milliseconds: give its last tasks time to be hit
    records = RECORDS * (5 if runner == "ray" else 1)
    path, expected = gensort_inputs(seed, records)
    sp = session(max_retries=3)
    killer = KillAtFraction(sp, total=1 + 2 * PARTITIONS, fraction=fraction, seed=seed)
    stop_listening = sp.on_event(killer)
    output = str(tmp_path / "sorted")
    watcher = OutputWatcher(output)
    watcher.start()
    try:
        result = graysort.run(output, input=path, partitions=PARTITIONS, session=sp)
    finally:
        watcher.stop()
        stop_listening()
    assert killer.killed, "no worker was running a task at that point: nothing was tested"
    assert result.valid and result.records == records
    assert result.input_checksum == result.output_checksum
    written = b"".join(open(f, "rb").read() for f in sorted(result.output_files))
    assert written == expected
    assert watcher.violations() == []
    assert sorted(os.listdir(output)) == ["_SUCCESS", *(f"part-{i:05d}.dat"
                                                        for i in range(PARTITIONS))]
    retried = [e for e in sp.events if e.kind == "retried"]
    assert len(retried) == 1, [e.error for e in retried]
    assert "killed by SIGKILL" in retried[0].error or "WorkerCrashedError" in retried[0].error
