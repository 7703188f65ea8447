"""The GraySort job, built from DataFrame operations and run as a task graph on any runner.

input (generated in parallel chunks, or read from .dat / Parquet)
  -> repartition(P, range_by="key")     sampled range partitioning (skew-safe)
  -> partial_sort("key")                per-partition sort
  -> graysort.to_dat kernel             binary records, part-NNNNN.dat in key order
then the output files are checked by parallel valsort summaries merged in file order.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import smallpond
from smallpond.config import check_partitions
from smallpond.errors import ConfigError, InputError, PlanError
from smallpond.io.files import FileSlice, expand_paths, file_identity, named_folders

if TYPE_CHECKING:  # imported where used: the record pipeline's driver needs none of them,
    import pyarrow as pa  # and `init()` should start the workers as early as possible

    from smallpond.dataframe import DataFrame
    from smallpond.session import Session

__all__ = ["GraySortResult", "run", "input_dataframe", "auto_partitions", "CHUNK_RECORDS"]

CHUNK_RECORDS = 1 << 20  # records per generated or read chunk: bounds a task's memory
RECORD = 100


@dataclass
class GraySortResult:
    """What a GraySort run did and whether valsort accepted its output."""

    records: int
    partitions: int
    output_files: list[str]
    phases: dict[str, float] = field(default_factory=dict)
    input_checksum: int | None = None
    output_checksum: int | None = None
    duplicates: int = 0
    valid: bool = False
    report: list[str] = field(default_factory=list)
    tasks_run: int = 0
    tasks_reused: int = 0

    def count_tasks(self, events) -> None:
        """Count the sort's tasks that ran now and those reused from an earlier run."""
        self.tasks_run = sum(e.kind == "finished" for e in events)
        self.tasks_reused = sum(e.kind == "reused" for e in events)

    @property
    def bytes(self) -> int:
        return self.records * RECORD

    @property
    def seconds(self) -> float:
        return sum(self.phases.values())

    def lines(self) -> list[str]:
        mb = self.bytes / 1e6
        out = [f"records: {self.records}  bytes: {self.bytes}  partitions: {self.partitions}"]
        out += [f"{name}: {seconds:.2f} s" for name, seconds in self.phases.items()]
        total = self.tasks_run + self.tasks_reused
        if self.tasks_reused:
            out.append(f"reused {self.tasks_reused}/{total} tasks from an earlier run")
        if total and not self.tasks_run:
            out.append(f"total: {self.seconds:.2f} s  (nothing was sorted now: no rate)")
        else:
            out.append(f"total: {self.seconds:.2f} s  {mb / max(self.seconds, 1e-9):.1f} MB/s")
        if self.input_checksum is not None:
            same = self.input_checksum == self.output_checksum
            out.append(f"checksum in {self.input_checksum:x} out {self.output_checksum:x} "
                       f"{'equal' if same else 'DIFFERENT'}")
        return out + self.report


def _generate_chunk(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    from smallpond.graysort.gensort import generate_records
    from smallpond.graysort.records import records_to_table

    parts = [records_to_table(generate_records(int(row["start"]), int(row["count"])))
             for row in table.to_pylist()]
    return pa.concat_tables(parts)


def _read_chunk(table: pa.Table) -> pa.Table:
    import numpy as np
    import pyarrow as pa

    from smallpond.graysort.records import records_to_table

    parts = []
    for row in table.to_pylist():
        with open(row["path"], "rb") as handle:
            handle.seek(int(row["offset"]) * RECORD)
            data = handle.read(int(row["count"]) * RECORD)
        parts.append(records_to_table(np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)))
    return pa.concat_tables(parts)


def _checksum_chunk(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    from smallpond.graysort.checksum import checksum_records
    from smallpond.graysort.kernels import table_to_records

    return pa.table({"records": [table.num_rows],
                     "checksum": [format(checksum_records(table_to_records(table)), "x")]})


def _chunks(total: int, start: int = 0) -> list[tuple[int, int]]:
    return [(start + lo, min(CHUNK_RECORDS, total - lo)) for lo in range(0, total, CHUNK_RECORDS)]


def input_dataframe(sp: Session, partitions: int, records: int | None = None,
                    input: str | None = None) -> tuple[DataFrame, int]:
    """The records to sort as a DataFrame of `partitions` partitions, and their count."""
    if (records is None) == (input is None):
        raise PlanError("give exactly one of records= and input=")
    if records is not None:
        if records <= 0:
            raise PlanError(f"records must be positive, got {records}")
        items = [{"start": s, "count": c} for s, c in _chunks(records)]
        source = sp.from_items(items).repartition(min(partitions, len(items)), by_rows=True)
        return source.map_batches(_generate_chunk, batch_size=1), records
    files = expand_paths(input, suffixes=(".dat", ".parquet"))
    if all(f.endswith(".parquet") for f in files):
        from smallpond.io.parquet import read_schema

        names = set(read_schema(files[0]).names)
        if not {"key", "value"} <= names:
            raise InputError(f"{files[0]!r} is not GraySort Parquet: it needs binary columns "
                             f"'key' (10 bytes) and 'value' (90 bytes), it has {sorted(names)}",
                             path=files[0])
        df = sp.read_parquet(files)
        return df.repartition(partitions), df.count()
    items = []
    for path in files:
        size = os.path.getsize(path)
        if size % RECORD:
            raise InputError(f"{path!r} is {size} bytes, not a whole number of "
                             f"{RECORD}-byte records", path=path)
        items += [{"path": path, "offset": s, "count": c} for s, c in _chunks(size // RECORD)]
    if not items:
        raise InputError(f"no records in {input!r}", path=str(input))
    source = sp.from_items(items).repartition(min(partitions, len(items)), by_rows=True)
    return source.map_batches(_read_chunk, batch_size=1), sum(i["count"] for i in items)


PARTITION_RECORDS = 1_250_000  # 125 MB: a sort task's buffers stay small and warm


def auto_partitions(records: int, workers: int, memory_per_task: int) -> int:
    """Four partitions per worker (better balance), partitions of at most PARTITION_RECORDS
    (a worker's sort buffers are as large as its partition, and fresh memory costs 1-2 s per
    GiB of page faults on our VMs), and more when a partition would not fit a task's budget:
    a sort task holds its partition and its order, plus slack."""
    per_partition = max(1, memory_per_task // (RECORD * 5 // 2))
    return max(4 * workers, -(-records // PARTITION_RECORDS), -(-records // per_partition))


def _sum_checksums(df: DataFrame) -> tuple[int, int]:
    rows = df.map_batches(_checksum_chunk).take_all()
    return sum(r["records"] for r in rows), sum(int(r["checksum"], 16) for r in rows)


def _validate(sp: Session, files: list[str]):
    from smallpond.dataframe import DataFrame
    from smallpond.graysort.valsort import Summary, merge
    from smallpond.logical.nodes import KernelMap, ReadOptions, Scan

    slices = tuple((FileSlice(f, format="dat"),) for f in files)
    scan = Scan(slices, ReadOptions("dat"), tuple(file_identity(f) for f in files))
    summaries = DataFrame(sp, KernelMap(scan, "graysort.summarize")).take_all()
    merged = merge([Summary(r["first_key"], r["last_key"], r["records"], int(r["checksum"], 16),
                            r["unordered"], r["duplicates"], r["first_unordered"])
                    for r in summaries])
    return merged


def _check_arguments(records, input, partitions, engine) -> None:
    if engine not in ("records", "dataframe"):
        raise PlanError(f"engine must be 'records' or 'dataframe', got {engine!r}")
    if (records is None) == (input is None):
        raise PlanError("give exactly one of records= and input=")
    if records is not None and (isinstance(records, bool) or not isinstance(records, int)
                                or records <= 0):
        raise PlanError(f"records must be a positive integer, got {records!r}")
    if partitions is not None:
        try:
            check_partitions(partitions)
        except ConfigError as error:
            raise PlanError(str(error)) from None
        if records is not None and partitions > records:
            raise PlanError(f"partitions ({partitions}) must not exceed records ({records})")


def run(output: str, records: int | None = None, input: str | None = None,
        partitions: int | None = None, session: Session | None = None, validate: bool = True,
        engine: str = "records", overwrite: bool = False, **init_options) -> GraySortResult:
    """Sort gensort records into `output`/part-NNNNN.dat and check them like valsort.

    `output` follows write_parquet's rules: an empty or new folder, or a previous smallpond
    output; `overwrite=True` replaces smallpond's own files in a folder (others are kept).
    It may not be, contain or lie inside the input or the data_root. Every argument is checked
    before anything is written.

    engine="records" runs the record pipeline (raw records between tasks, see pipeline.py);
    engine="dataframe" runs the same sort through generic DataFrame operations (Parquet
    intermediates, DuckDB); Parquet input always takes the DataFrame path.
    """
    from smallpond.graysort.pipeline import run_pipeline, source_ranges
    from smallpond.graysort.valsort import report_lines

    _check_arguments(records, input, partitions, engine)
    mode = "overwrite" if overwrite else "error"
    inputs: list[str] = []
    if input is not None:
        inputs = [*expand_paths(input, suffixes=(".dat", ".parquet")), *named_folders(input)]
    sp = session or smallpond.init(**init_options)
    try:
        from smallpond.io.output import check_output  # after init: workers start meanwhile

        output = check_output(output, mode, inputs, sp.config.data_root)
        parquet = input is not None and all(f.endswith(".parquet") for f in inputs
                                            if not os.path.isdir(f))
        phases: dict[str, float] = {}
        events_before = len(sp.events)
        start = time.perf_counter()
        if engine == "records" and not parquet:
            ranges, identities = source_ranges(records, input)
            partitions = partitions or sp.config.partitions or auto_partitions(
                sum(r[-1] for r in ranges), sp.config.num_executors, sp.config.memory_per_task)
            files, count, input_checksum, summary = run_pipeline(
                sp, output, ranges, identities, partitions, checksum=validate, mode=mode,
                inputs=inputs)
            input_records = count
            phases["sort + write"] = time.perf_counter() - start
        else:
            from smallpond.dataframe import DataFrame, compute_many
            from smallpond.io.output import write_output
            from smallpond.logical.nodes import KernelMap

            partitions = partitions or sp.config.partitions or 2 * sp.config.num_executors
            summary = None
            source, count = input_dataframe(sp, partitions, records, input)
            input_records, input_checksum = _sum_checksums(source) if validate \
                else (count, None)
            phases["input + checksum" if validate else "input"] = time.perf_counter() - start
            start = time.perf_counter()
            ordered = source.repartition(partitions, range_by="key").partial_sort("key")
            dat = DataFrame(sp, KernelMap(ordered._node, "graysort.to_dat"))
            parts = compute_many(sp, [dat])[0]
            files = write_output(parts, output, mode, sp.config.data_root, inputs,
                                 extension="dat", job_id=sp.job_id)
            phases["sort + write"] = time.perf_counter() - start

        result = GraySortResult(count, partitions, files, phases, input_checksum)
        result.count_tasks(sp.events[events_before:])
        if validate:
            start = time.perf_counter()
            summary = summary or _validate(sp, files)  # the pipeline's sort tasks made it
            phases["validate"] = time.perf_counter() - start
            result.output_checksum = summary.checksum
            result.duplicates = summary.duplicates
            result.report = report_lines(summary)
            result.valid = (summary.unordered == 0 and summary.records == input_records
                            and summary.checksum == input_checksum)
        return result
    finally:
        if session is None:
            sp.shutdown()
