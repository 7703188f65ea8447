"""R8 and the memory budget: the default per-task budget comes from the cgroup limit (v1 and
v2) when it is lower than the machine's RAM, and jobs several times larger than memory
complete within a cgroup cap; a task that cannot fit fails with OutOfMemoryError, never hangs.

Capped runs create their own cgroup under this process's (root, cgroup v1 `memory` here) and
remove it; they skip where that is impossible. The heavy cases (2 GiB of data in a 512 MiB
cap) run with the full suite; `benchmarks/reliability.py` reports their figures.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import duckdb
import pyarrow.parquet as pq
import pytest

from smallpond.bench.cgroups import CgroupUnavailable, MemoryCgroup
from smallpond.bench.memory import make_dataset, run_in_group
from smallpond.bench.reliability import MEMORY_HOG_SCRIPT
from smallpond.graysort.gensort import write_gensort_file
from smallpond.limits import cgroup_memory

CAP = 512 << 20


@pytest.fixture
def capped():
    """`with capped(limit) as group:` a memory cgroup of our own, or a skip saying why."""
    def make(limit: int = CAP) -> MemoryCgroup:
        try:
            return MemoryCgroup(limit).__enter__()
        except CgroupUnavailable as error:
            pytest.skip(f"{error} (CI runs as root with the cgroup v1 memory controller)")
    made = []

    def enter(limit: int = CAP):
        group = make(limit)
        made.append(group)
        return group

    yield enter
    for group in made:
        group.__exit__(None, None, None)


# -- cgroup files, as the kernel shows them (no cgroup needed) --------------------------------
def _fake(tmp_path, mountinfo: str, cgroup: str, files: dict[str, str]) -> str:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    (proc / "self" / "cgroup").write_text(cgroup)
    for path, text in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return str(proc)


@pytest.mark.reliability_quick
def test_cgroup_v2_limit_is_the_lowest_on_the_way_up(tmp_path):
    sys_root = tmp_path / "sys"
    proc = _fake(tmp_path, f"30 23 0:26 / {sys_root} rw - cgroup2 cgroup2 rw\n",
                 "0::/jobs/job-1\n", {
                     "sys/jobs/memory.max": str(768 << 20),
                     "sys/jobs/job-1/memory.max": "max",
                     "sys/jobs/job-1/memory.current": str(300 << 20),
                     "sys/jobs/job-1/memory.stat": f"anon 1\ninactive_file {100 << 20}\n",
                     "sys/jobs/job-1/memory.events": "low 0\noom 2\noom_kill 3\n"})
    memory = cgroup_memory(proc)
    assert memory.version == 2 and memory.limit == 768 << 20
    assert memory.usage == 200 << 20 and memory.available == 568 << 20
    from smallpond.limits import oom_kills

    assert oom_kills(proc) == 3


@pytest.mark.reliability_quick
def test_cgroup_v1_in_a_container_and_unlimited(tmp_path):
    mount = tmp_path / "memory"
    info = (f"35 31 0:32 /docker/abc {mount} rw - cgroup cgroup rw,memory\n"
            f"36 31 0:33 / {tmp_path / 'cpu'} rw - cgroup cgroup rw,cpu\n")
    proc = _fake(tmp_path, info, "4:memory:/docker/abc\n1:cpu:/docker/abc\n", {
        "memory/memory.limit_in_bytes": str(1 << 30),
        "memory/memory.usage_in_bytes": str(200 << 20),
        "memory/memory.stat": f"hierarchical_memory_limit {1 << 30}\n"
                              f"total_inactive_file {50 << 20}\n"})
    memory = cgroup_memory(proc)
    assert memory.version == 1 and memory.limit == 1 << 30 and memory.usage == 150 << 20
    (mount / "memory.limit_in_bytes").write_text("9223372036854771712")
    (mount / "memory.stat").write_text("hierarchical_memory_limit 9223372036854771712\n")
    assert cgroup_memory(proc) is None  # no limit: the machine's RAM decides


CONFIG = textwrap.dedent('''
    import json
    from smallpond.config import resolve_config
    c = resolve_config(data_root="/tmp/unused")
    print(json.dumps({"budget": c.memory_per_task, "workers": c.num_executors,
                      "source": c.memory_source}))
''')


@pytest.mark.reliability_quick
def test_the_default_budget_comes_from_the_cgroup(capped):
    group = capped()
    done = group.run([sys.executable, "-c", CONFIG], timeout=120)
    figures = json.loads(done.stdout)
    assert figures["source"] == "cgroup"
    assert figures["budget"] * figures["workers"] < CAP // 2, figures
    outside = json.loads(__import__("subprocess").run([sys.executable, "-c", CONFIG],
                                                      capture_output=True, text=True).stdout)
    assert outside["source"] == "machine" or outside["budget"] > figures["budget"]


@pytest.mark.reliability_quick
def test_a_task_killed_for_memory_is_an_out_of_memory_error(capped, tmp_path):
    group = capped(300 << 20)
    done = group.run([sys.executable, "-c", MEMORY_HOG_SCRIPT, str(tmp_path / "data"), "1"],
                     timeout=300)
    assert "OutOfMemoryError" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "OOM killer" in done.stdout and "hog" in done.stdout and "2 times" in done.stdout
    assert group.stats().oom_kills == 2


# -- jobs 4x a 512 MiB cap (full suite) --------------------------------------------------------
@pytest.fixture(scope="module")
def big_data(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("r8") / "data"), 2.0)


def _job(group, job: str, data: str, output: str, partitions: int | None, data_root: str,
         **options) -> dict:
    figures = run_in_group(group, job, data, output, partitions, data_root=data_root,
                           **options)
    print(f"R8 {job}: {figures}")
    return figures


@pytest.mark.parametrize("job", ["agg", "sort"])
def test_aggregate_and_sort_of_4x_the_cap(capped, big_data, tmp_path, job):
    group = capped()
    output = str(tmp_path / "out")
    figures = _job(group, job, big_data, output, 32, str(tmp_path / "root"))
    assert figures["error"] is None and figures["oom_kills"] == 0, figures
    assert figures["budget_source"] == "cgroup" and not figures["retried"]
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    if job == "agg":
        got = con.execute(f"SELECT count(*), sum(c), sum(total) FROM '{output}/*.parquet'")\
            .fetchall()
        want = con.execute(f"SELECT count(DISTINCT k), count(*), sum(id) "
                           f"FROM '{big_data}/*.parquet'").fetchall()
        assert got == want
    else:
        _check_sorted(output, big_data)


def _check_sorted(output: str, data: str) -> None:
    files = sorted(os.path.join(output, n) for n in os.listdir(output) if n.endswith("t"))
    previous, rows = None, 0
    for path in files:  # parts concatenate in (k, id) order
        table = pq.read_table(path, columns=["k", "id"])
        keys = list(zip(table["k"].to_pylist(), table["id"].to_pylist()))
        assert keys == sorted(keys) and (previous is None or not keys or previous <= keys[0])
        previous, rows = (keys[-1] if keys else previous), rows + len(keys)
    assert rows == duckdb.sql(f"SELECT count(*) FROM '{data}/*.parquet'").fetchall()[0][0]


def test_graysort_of_4x_the_cap(capped, tmp_path):
    path = str(tmp_path / "input.dat")
    write_gensort_file(path, 20_000_000)
    group = capped()
    figures = _job(group, "graysort", path, str(tmp_path / "sorted"), None,
                   str(tmp_path / "root"))
    assert figures["error"] is None and figures["valid"], figures
    assert figures["oom_kills"] == 0, figures


def test_a_forced_single_partition_spills_or_fails_typed(capped, big_data, tmp_path):
    """4x the cap in ONE partition: DuckDB sorts it spilling (a task budget of a thread per
    128 MiB and a temp table for large row-group inputs let it), or the job ends in
    OutOfMemoryError with nothing written; never a hang, never a loop of OOM kills."""
    group = capped()
    output = str(tmp_path / "out")
    figures = _job(group, "sort", big_data, output, 1, str(tmp_path / "root"))
    if figures["error"] is None:
        assert figures["oom_kills"] == 0, figures
        _check_sorted(output, big_data)
    else:
        assert figures["error"].startswith("OutOfMemoryError"), figures
        assert not os.path.exists(output)


@pytest.mark.parametrize("job", ["agg", "sort"])
def test_4x_the_task_budget_completes_at_256_mib_per_task(big_data, tmp_path, job):
    """No cap: 2 workers at 256 MiB each on 2 GiB (4x their 512 MiB together)."""
    from smallpond.bench.memory import run_job

    figures = run_job(job, big_data, str(tmp_path / "out"), 16,
                      data_root=str(tmp_path / "root"), memory_per_task="256MB",
                      num_executors=2)
    print(f"256 MiB {job}: {figures}")
    assert figures["error"] is None and not figures["retried"], figures
    assert figures["budget"] == 256 << 20
