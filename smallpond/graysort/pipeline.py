"""The GraySort record pipeline as a task graph: bounds -> M range mappers -> P sorters.

    graysort.bounds   one task: samples keys at random positions of the whole input and picks
                      P-1 boundary keys (sampled range partitioning: skewed keys balance)
    graysort.map      per input split: checksum its records and route them by destination
                      (record positions, or the records themselves: pipeline_kernels.py)
    graysort.reduce   per output partition: collect its records, sort, write, and summarize
                      what it wrote like valsort; the job merges the summaries
Runs on any runner with the engine's commit, retries and resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from smallpond.errors import InputError, IntegrityError
from smallpond.io.files import expand_paths, file_identity
from smallpond.planner.graph import Task, TaskGraph, TaskSlice, task_key
from smallpond.runners.execute import load_committed

if TYPE_CHECKING:  # the driver imports numpy and pyarrow only once its workers are starting
    from smallpond.graysort.valsort import Summary
    from smallpond.session import Session

__all__ = ["source_ranges", "split_ranges", "plan_pipeline", "run_pipeline",
           "choose_shuffle", "PRELOAD"]

SAMPLES_PER_PARTITION = 1024
RECORD_SIZE = 100


def source_ranges(records: int | None, input: str | None) -> tuple[list[list], list[str]]:
    """The input as record ranges, plus the identities of the files read."""
    if records is not None:
        return [["gen", 0, int(records)]], []
    ranges, identities = [], []
    for path in expand_paths(input, suffixes=(".dat",)):
        size = os.path.getsize(path)
        if size % RECORD_SIZE:
            raise InputError(f"{path!r} is {size} bytes, not a whole number of "
                             f"{RECORD_SIZE}-byte records", path=path)
        if size:
            ranges.append(["dat", path, 0, size // RECORD_SIZE])
            identities.append(file_identity(path))
    if not ranges:
        raise InputError(f"no records in {input!r}", path=str(input))
    return ranges, identities


def split_ranges(ranges: Sequence[list], parts: int) -> list[list[list]]:
    """Cut the concatenated ranges into `parts` contiguous groups of nearly equal size."""
    total = sum(r[-1] for r in ranges)
    cuts = [total * k // parts for k in range(parts + 1)]
    groups: list[list[list]] = [[] for _ in range(parts)]
    offset = 0
    for spec in ranges:
        count = spec[-1]
        for k in range(parts):
            lo, hi = max(cuts[k], offset), min(cuts[k + 1], offset + count)
            if hi > lo:
                skip = lo - offset
                groups[k].append([*spec[:-2], spec[-2] + skip, hi - lo])
        offset += count
    return [g for g in groups if g]


def plan_pipeline(ranges: list[list], identities: list[str], partitions: int,
                  mappers: int, seed: int = 0, checksum: bool = True, shuffle: str = "records",
                  ) -> tuple[TaskGraph, list[Task], list[Task]]:
    """The task graph. `shuffle` is "index" (map tasks write record positions; sort tasks
    gather from the mapped input: .dat input on this machine) or "records"."""
    if shuffle not in ("index", "records"):
        raise ValueError(f"shuffle must be 'index' or 'records', got {shuffle!r}")
    if shuffle == "index" and any(r[0] != "dat" for r in ranges):
        raise ValueError("the index shuffle needs .dat input")
    graph = TaskGraph()
    bounds_params = {"ranges": ranges, "n": partitions, "samples": SAMPLES_PER_PARTITION,
                     "seed": seed, "identities": identities}
    bounds = graph.add(Task(task_key("graysort.bounds", bounds_params, []), "graysort-bounds", 0,
                            "graysort.bounds", bounds_params, ()))
    maps = []
    for i, group in enumerate(split_ranges(ranges, mappers)):
        params = {"ranges": group, "n": partitions, "identities": identities,
                  "shuffle": shuffle, "checksum": checksum}
        inputs = ((TaskSlice(bounds.key),),)
        maps.append(graph.add(Task(task_key("graysort.map", params, [bounds.key]),
                                   "graysort-map", i, "graysort.map", params, inputs)))
    sources = {m.key: m.params["ranges"] for m in maps} if shuffle == "index" else None
    reduces = []
    for j in range(partitions):
        inputs = (tuple(TaskSlice(m.key, j) for m in maps),)
        params = {"partition": j, "shuffle": shuffle, "summary": checksum}
        if sources is not None:
            params["sources"] = sources
        tokens = [f"{m.key}:{j}" for m in maps]
        reduces.append(graph.add(Task(task_key("graysort.reduce", params, tokens),
                                      "graysort-sort", j, "graysort.reduce", params, inputs)))
    graph.outputs = [(TaskSlice(r.key),) for r in reduces]
    return graph, maps, reduces


def choose_shuffle(sp: Session, ranges: list[list]) -> str:
    """"index" when every worker maps the same input pages: the embedded runner (one machine)
    with .dat input that the page cache can hold (sort tasks read it at random)."""
    if sp.config.runner != "local" or any(r[0] != "dat" for r in ranges):
        return "records"
    import psutil

    size = sum(r[-1] for r in ranges) * RECORD_SIZE
    return "index" if size <= psutil.virtual_memory().available // 2 else "records"


PRELOAD = ("smallpond.graysort.kernels", "smallpond.graysort.checksum:warm",
           "smallpond.graysort.radix:warm")


def run_pipeline(sp: Session, output: str, ranges: list[list], identities: list[str],
                 partitions: int, mappers: int | None = None, checksum: bool = True,
                 mode: str = "error", inputs: Sequence[str] = (), shuffle: str | None = None,
                 ) -> tuple[list[str], int, int | None, Summary | None]:
    """Run the pipeline and commit output/part-NNNNN.dat (write `mode` as write_parquet's);
    return files, records, the input's checksum and valsort's summary of the output, merged
    from the sort tasks (both None when `checksum` is off: the tasks then skip them)."""
    runner = sp.runner
    if hasattr(runner, "preload"):  # workers import the kernels (and compile) before forking
        runner.preload(PRELOAD)
    shuffle = shuffle or choose_shuffle(sp, ranges)
    graph, maps, reduces = plan_pipeline(ranges, identities, partitions, mappers or partitions,
                                         checksum=checksum, shuffle=shuffle)
    from smallpond.graysort.valsort import merge, summary_from_json  # while workers start
    from smallpond.io.output import write_output

    try:
        outputs = sp.run_graph(graph, what="graysort")
    finally:
        if shuffle == "index" and hasattr(runner, "call_in_workers"):
            runner.call_in_workers(["smallpond.graysort.sources:release_files"])
    # the metas first: committing may move the sort tasks' files and remove their folders
    summary = merge(summary_from_json(_meta(sp, outputs, r)["summary"]) for r in reduces) \
        if checksum else None
    records = total = 0
    for m in maps:
        meta = _meta(sp, outputs, m)
        records += meta["records"]
        total += int(meta["checksum"] or "0", 16)
    parts = [[s for s in outputs[r.key].slices(None) if s.path.endswith(".dat")]
             for r in reduces]
    movable = {outputs[r.key].path(f): outputs[r.key].directory
               for r in reduces for f in outputs[r.key].files if f.name.endswith(".dat")}
    files = write_output(parts, output, mode, sp.config.data_root, inputs, extension="dat",
                         movable=movable, job_id=sp.job_id)
    return files, records, total if checksum else None, summary


def _meta(sp: Session, outputs: dict, task: Task) -> dict:
    # a resumed job may reuse committed sort tasks and never need the mappers again
    done = outputs.get(task.key) or load_committed(sp.config.data_root, task.key)
    if done is None:
        raise IntegrityError(f"the output of {task.describe()} is missing from "
                             f"{sp.config.tasks_dir}; run again with recompute")
    with open(os.path.join(done.directory, "meta.json")) as handle:
        return json.load(handle)
