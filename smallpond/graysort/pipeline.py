"""The GraySort record pipeline as a task graph: bounds -> M range mappers -> P sorters.

    graysort.bounds   one task: samples keys at random positions of the whole input and picks
                      P-1 boundary keys (sampled range partitioning: skewed keys balance)
    graysort.map      per input split: produce records (gensort or a .dat range) chunk by chunk,
                      checksum them, write them grouped by destination with an index
    graysort.reduce   per output partition: read its ranges from every mapper, sort, write
Runs on any runner with the engine's commit, retries and resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from smallpond.errors import InputError, IntegrityError
from smallpond.graysort.records import RECORD_SIZE
from smallpond.io.files import expand_paths, file_identity
from smallpond.io.output import write_output
from smallpond.planner.graph import Task, TaskGraph, TaskSlice, task_key
from smallpond.runners.execute import load_committed
from smallpond.session import Session

__all__ = ["source_ranges", "split_ranges", "plan_pipeline", "run_pipeline"]

SAMPLES_PER_PARTITION = 1024


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
                  mappers: int, seed: int = 0, checksum: bool = True,
                  ) -> tuple[TaskGraph, list[Task], list[Task]]:
    graph = TaskGraph()
    bounds_params = {"ranges": ranges, "n": partitions, "samples": SAMPLES_PER_PARTITION,
                     "seed": seed, "identities": identities}
    bounds = graph.add(Task(task_key("graysort.bounds", bounds_params, []), "graysort-bounds", 0,
                            "graysort.bounds", bounds_params, ()))
    maps = []
    for i, group in enumerate(split_ranges(ranges, mappers)):
        params = {"ranges": group, "n": partitions, "identities": identities}
        if not checksum:  # (absent when on: task keys of earlier runs stay valid)
            params["checksum"] = False
        inputs = ((TaskSlice(bounds.key),),)
        maps.append(graph.add(Task(task_key("graysort.map", params, [bounds.key]),
                                   "graysort-map", i, "graysort.map", params, inputs)))
    reduces = []
    for j in range(partitions):
        inputs = (tuple(TaskSlice(m.key, j) for m in maps),)
        params = {"partition": j}
        tokens = [f"{m.key}:{j}" for m in maps]
        reduces.append(graph.add(Task(task_key("graysort.reduce", params, tokens),
                                      "graysort-sort", j, "graysort.reduce", params, inputs)))
    graph.outputs = [(TaskSlice(r.key),) for r in reduces]
    return graph, maps, reduces


def run_pipeline(sp: Session, output: str, ranges: list[list], identities: list[str],
                 partitions: int, mappers: int | None = None, checksum: bool = True,
                 mode: str = "error", inputs: Sequence[str] = (),
                 ) -> tuple[list[str], int, int | None]:
    """Run the pipeline and commit output/part-NNNNN.dat (write `mode` as write_parquet's);
    return files, records, and the input's checksum (None when `checksum` is off: the mappers
    then skip computing it)."""
    graph, maps, reduces = plan_pipeline(ranges, identities, partitions, mappers or partitions,
                                         checksum=checksum)
    outputs = sp.run_graph(graph, what="graysort")
    parts = [outputs[r.key].slices(None) for r in reduces]
    movable = {outputs[r.key].path(f): outputs[r.key].directory
               for r in reduces for f in outputs[r.key].files}
    files = write_output(parts, output, mode, sp.config.data_root, inputs, extension="dat",
                         movable=movable, job_id=sp.job_id)
    records = total = 0
    for m in maps:
        # a resumed job may reuse committed sort tasks and never need the mappers again
        done = outputs.get(m.key) or load_committed(sp.config.data_root, m.key)
        if done is None:
            raise IntegrityError(f"the output of {m.describe()} is missing from "
                                 f"{sp.config.tasks_dir}; run again with recompute")
        with open(os.path.join(done.directory, "meta.json")) as handle:
            meta = json.load(handle)
        records += meta["records"]
        total += int(meta["checksum"] or "0", 16)
    return files, records, total if checksum else None
