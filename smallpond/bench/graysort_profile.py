"""Where GraySort's time goes: per-stage task time from the job's own events, and a profile of
one map task and one sort task, grouped by what bounds them (generation, checksum, routing,
sorting, gathering, disk reads and writes, and the Python around them).
"""

from __future__ import annotations

import cProfile
import os
import pstats
import shutil
import tempfile
import time
from collections import defaultdict

import numpy as np

from smallpond.bench.common import machine_info, markdown_table, write_report

__all__ = ["run_graysort_profile"]

# (group, substrings of "file:function" in the profile); the first match wins
GROUPS = [
    ("gensort (generate records)", ("gensort.py", "lcg.py")),
    ("checksum (CRC-32)", ("checksum.py",)),
    ("route to partitions (searchsorted)", ("searchsorted", "destinations", "bincount")),
    ("sort keys (argsort)", ("argsort", "lexsort", "key_prefix_u64", "key_suffix_u16",
                             "sort_order")),
    ("gather records (take)", ("'take'", "method 'take'", "_take_dispatcher")),
    ("write to disk", ("tofile", "method 'write'", "'write'")),
    ("read from disk", ("readinto",)),
]


def _stage_times(events) -> dict[str, dict]:
    stages: dict[str, dict] = defaultdict(lambda: {"tasks": 0, "seconds": 0.0, "max": 0.0})
    for event in events:
        if event.kind == "finished":
            entry = stages[event.stage]
            entry["tasks"] += 1
            entry["seconds"] += event.elapsed
            entry["max"] = max(entry["max"], event.elapsed)
    return dict(stages)


def _group(profile: pstats.Stats) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for (filename, _, function), (_, _, tottime, _, _) in profile.stats.items():
        label = f"{os.path.basename(filename)}:{function}"
        group = next((name for name, needles in GROUPS if any(n in label for n in needles)),
                     "other (Python, allocation, json, commit)")
        totals[group] += tottime
    return dict(totals)


def _profile_task(kernel, params, inputs, ctx) -> tuple[float, dict[str, float], list]:
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    files = kernel(params, inputs, ctx)
    profiler.disable()
    wall = time.perf_counter() - started
    return wall, _group(pstats.Stats(profiler)), files


def _profile_kernels(records: int, partitions: int, work: str) -> dict[str, tuple]:
    """Run the bounds task, every map task and the first sort task in this process; profile
    the first two maps (cold, then warm) and the sort task."""
    from smallpond.graysort.pipeline_kernels import run_bounds, run_map, run_reduce
    from smallpond.io.files import FileSlice
    from smallpond.kernels.context import TaskContext

    def context(name: str) -> TaskContext:
        folder = os.path.join(work, name)
        os.makedirs(folder, exist_ok=True)
        return TaskContext(folder, os.path.join(work, "spill"), 1 << 30, 1)

    bounds_ctx = context("bounds")
    run_bounds({"ranges": [["gen", 0, records]], "n": partitions, "samples": 1024, "seed": 0},
               [], bounds_ctx)
    bounds = [FileSlice(os.path.join(bounds_ctx.output_dir, "bounds.key"))]
    per_map = records // partitions
    results, pieces = {}, []
    for m in range(partitions):
        ctx = context(f"map{m}")
        params = {"ranges": [["gen", m * per_map, per_map]], "n": partitions}
        seconds, groups, files = _profile_task(run_map, params, [bounds], ctx)
        if m == 0:  # imports, numba's cached code and fresh buffers: paid once per worker
            results["first map task of a worker (cold)"] = (seconds, groups)
        elif m == 1:
            results["map task (warm worker)"] = (seconds, groups)
        first_bucket = files[0]["buckets"].get(0, ())
        pieces.append(FileSlice(os.path.join(ctx.output_dir, "part.dat"), format="dat",
                                row_groups=tuple(first_bucket)))
    seconds, groups, _ = _profile_task(run_reduce, {"partition": 0}, [pieces], context("sort0"))
    results["sort task (warm worker)"] = (seconds, groups)
    return results


def _disk_write_rate(work: str, megabytes: int = 512) -> float:
    block = np.random.default_rng(0).integers(0, 255, 1 << 24, dtype=np.uint8)
    path = os.path.join(work, "disk-probe")
    started = time.perf_counter()
    with open(path, "wb") as out:
        for _ in range(megabytes // 16):
            block.tofile(out)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - started
    os.remove(path)
    return megabytes * 1.048576 / seconds


def run_graysort_profile(gigabytes: float = 1.0, partitions: int | None = None,
                         results_dir: str = "benchmarks/results") -> str:
    """Profile a GraySort of `gigabytes` on the embedded runner; write and return a report."""
    import smallpond
    from smallpond.graysort import run

    records = int(gigabytes * 1e7)
    work = tempfile.mkdtemp(prefix="smallpond-graysort-profile-")
    try:
        sp = smallpond.init(data_root=os.path.join(work, "root"), runner="local")
        try:
            sp.from_items([1]).count()  # workers up before the clock starts
            started = time.perf_counter()
            result = run(os.path.join(work, "out"), records=records, partitions=partitions,
                         session=sp, validate=False)
            wall = time.perf_counter() - started
            stages = _stage_times(sp.events)
            workers = sp.config.num_executors
        finally:
            sp.shutdown()
        shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
        shutil.rmtree(os.path.join(work, "root"), ignore_errors=True)
        kernels = _profile_kernels(records, result.partitions, os.path.join(work, "kernels"))
        disk = _disk_write_rate(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    busy = sum(s["seconds"] for s in stages.values())
    lines = [f"# GraySort profile, {gigabytes:g} GB, {result.partitions} partitions, "
             f"{workers} workers ({machine_info()['cpus']} cores)", "",
             f"job wall time {wall:.2f} s ({records * 100 / 1e6 / wall:.0f} MB/s); task time "
             f"{busy:.2f} s summed over workers = {busy / (wall * workers):.0%} of "
             f"{workers} workers x wall; disk write with fsync {disk:.0f} MB/s", "",
             markdown_table(["stage", "tasks", "task seconds (sum)", "longest task"],
                            [[name, s["tasks"], f"{s['seconds']:.2f}", f"{s['max']:.2f}"]
                             for name, s in stages.items()])]
    data = {"machine": machine_info(), "gigabytes": gigabytes, "wall": wall, "stages": stages,
            "disk_write_mb_s": disk, "kernels": {}}
    for name, (seconds, groups) in kernels.items():
        rows = sorted(groups.items(), key=lambda item: -item[1])
        lines += ["", f"## {name}: {seconds:.3f} s (profiled in one process)", "",
                  markdown_table(["where", "seconds", "share"],
                                 [[g, f"{t:.3f}", f"{t / seconds:.0%}"] for g, t in rows])]
        data["kernels"][name] = {"seconds": seconds, "groups": groups}
    markdown = "\n".join(lines)
    write_report(results_dir, f"graysort-profile-{gigabytes:g}gb", data, markdown)
    return markdown
