"""The reliability figures: faults injected into real jobs on both runners (R1-R9, R7, R8).

Three tables, written to benchmarks/results/reliability-<time>.{json,md}:
- faults: fault, how it was injected, runner, outcome, seconds to detect and to recover,
  share of tasks re-run;
- GraySort (default 1 GB) with a worker SIGKILLed at 30/60/90% of its tasks on both runners:
  valsort's verdict and the checksum against a fault-free run;
- memory: a hash aggregate and a sort of data 4x the memory, at 256 MiB per task and inside
  a 512 MiB cgroup: peak memory per worker against the budget, spill, OOM kills.
Each part can run alone (`--parts`). Timings on a shared machine are noisy: compare rows of
one run, not runs of different days.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import asdict, dataclass

from smallpond.bench.common import machine_info, markdown_table, write_report
from smallpond.bench.faults import KillAtFraction, OutputWatcher, slow_once

__all__ = ["run_reliability_benchmark", "Timeline", "FaultRow", "PARTS"]

PARTS = ("graysort", "faults", "memory", "nodes")


@dataclass
class FaultRow:
    fault: str
    injected: str
    runner: str
    outcome: str
    detect_s: float | None = None
    recover_s: float | None = None
    rerun_share: float | None = None
    note: str = ""


class Timeline:
    """An event listener that keeps (time, event) pairs."""

    def __init__(self):
        self.events: list[tuple[float, object]] = []

    def __call__(self, event) -> None:
        self.events.append((time.time(), event))

    def first(self, kind: str, after: float = 0.0, key: str | None = None) -> float | None:
        for at, event in self.events:
            if event.kind == kind and at >= after and (key is None or event.key == key):
                return at
        return None

    def count(self, kind: str) -> int:
        return sum(event.kind == kind for _, event in self.events)

    def rerun_share(self) -> float:
        finished = {e.key for _, e in self.events if e.kind == "finished"}
        retried = {e.key for _, e in self.events if e.kind == "retried"}
        return len(retried) / max(1, len(finished))

    def recovery(self, fault_at: float) -> tuple[float | None, float | None]:
        """Seconds from the fault to the first retry, and to that task's success."""
        retried_at = self.first("retried", fault_at)
        if retried_at is None:
            return None, None
        key = next(e.key for at, e in self.events if e.kind == "retried" and at == retried_at)
        done = self.first("finished", retried_at, key)
        return retried_at - fault_at, (done - fault_at) if done else None


def _session(runner: str, root: str, **options):
    import smallpond

    if runner == "ray":
        options.setdefault("ray_address", _private_ray())
    else:
        options.setdefault("num_executors", 2)
    return smallpond.init(data_root=root, runner=runner, **options)


_RAY: dict[str, str] = {}


def _private_ray() -> str:
    """One local Ray for all the Ray rows (started once: it takes seconds)."""
    import ray

    if not ray.is_initialized():
        _RAY["temp"] = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _temp_dir=_RAY["temp"])
    return ray.get_runtime_context().gcs_address


# -- GraySort with a killed worker -------------------------------------------------------------
def graysort_kills(work: str, gb: float, runners, fractions, seeds) -> list[dict]:
    from smallpond.graysort import job
    from smallpond.graysort.gensort import write_gensort_file

    records = int(gb * 10_000_000)
    source = os.path.join(work, "graysort-input.dat")
    if not os.path.exists(source):
        write_gensort_file(source, records)
    rows = []
    for runner in runners:
        clean = _graysort_once(job, runner, work, source, None, 0)
        rows.append(clean)
        for fraction in fractions:
            for seed in seeds:
                row = _graysort_once(job, runner, work, source, fraction, seed)
                row["same_checksum_as_fault_free"] = row["checksum"] == clean["checksum"]
                rows.append(row)
    return rows


def _graysort_once(job, runner: str, work: str, source: str, fraction, seed: int) -> dict:
    name = f"{runner}-{fraction}-{seed}"
    root, output = os.path.join(work, f"root-{name}"), os.path.join(work, f"out-{name}")
    sp = _session(runner, root, max_retries=3)
    timeline = Timeline()
    listeners = [sp.on_event(timeline)]
    partitions = 2 * 4 * (sp.config.num_executors if runner == "local" else 2)
    killer = None
    if fraction is not None:
        killer = KillAtFraction(sp, 1 + 2 * partitions, fraction, seed)
        listeners.append(sp.on_event(killer))
    watcher = OutputWatcher(output)
    watcher.start()
    started = time.perf_counter()
    try:
        result = job.run(output, input=source, partitions=partitions, session=sp)
    finally:
        seconds = time.perf_counter() - started
        watcher.stop()
        for remove in listeners:
            remove()
        sp.shutdown()
    detect, recover = timeline.recovery(killer.killed[0][1]) if killer and killer.killed \
        else (None, None)
    row = {"runner": runner, "kill_at": fraction, "seed": seed, "valid": result.valid,
           "records": result.records, "checksum": f"{result.output_checksum:x}",
           "checksum_in_equals_out": result.input_checksum == result.output_checksum,
           "seconds": round(seconds, 2), "killed": bool(killer and killer.killed),
           "retried": timeline.count("retried"), "detect_s": detect, "recover_s": recover,
           "tasks": 1 + 2 * partitions, "unsafe_views": len(watcher.violations())}
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(output, ignore_errors=True)
    return row


# -- single faults -----------------------------------------------------------------------------
def _stalled_run(runner: str, work: str, fault: str, timeout: float) -> FaultRow:
    """A SIGSTOPped worker, or a task that never returns, among 8 tasks."""
    marker = os.path.join(work, f"{fault}-{runner}-pid")
    options = {"heartbeat_timeout": timeout} if fault == "sigstop" else {"task_timeout": timeout}
    sp = _session(runner, os.path.join(work, f"root-{fault}-{runner}"), **options)
    timeline = Timeline()
    sp.on_event(timeline)
    stopped: dict[str, float] = {}

    def stop_first_task():
        while not os.path.exists(marker) or not open(marker).read():
            time.sleep(0.01)
        time.sleep(0.5)
        stopped["at"] = time.time()
        if fault == "sigstop":
            os.kill(int(open(marker).read()), signal.SIGSTOP)

    thread = threading.Thread(target=stop_first_task, daemon=True)
    thread.start()
    df = sp.from_items(list(range(800))).repartition(8, by_rows=True)
    try:
        rows = df.map_batches(slow_once(marker, 3600, 0.3)).count()
        outcome = "identical result" if rows == 800 else f"WRONG: {rows} rows"
    except Exception as error:
        outcome = f"failed: {type(error).__name__}"
    finally:
        sp.shutdown()
    detect, recover = timeline.recovery(stopped.get("at", time.time()))
    how = (f"SIGSTOP of the worker running a task (heartbeat_timeout={timeout:g} s)"
           if fault == "sigstop" else f"a task sleeping forever (task_timeout={timeout:g} s)")
    name = "stopped worker (R9)" if fault == "sigstop" else "task never returns (R9)"
    return FaultRow(name, how, runner, outcome, _round(detect), _round(recover),
                    timeline.rerun_share())


def _injected_run(runner: str, work: str, probability: float) -> FaultRow:
    import duckdb

    table = duckdb.sql("SELECT range AS id, range % 97 AS k FROM range(200000)").to_arrow_table()
    query = "SELECT k, count(*) AS c, sum(id) AS s FROM {0} GROUP BY k"
    con = duckdb.connect()
    con.register("t", table)
    expected = sorted(con.execute(query.format("t")).fetchall())
    sp = _session(runner, os.path.join(work, f"root-inject-{runner}-{probability}"),
                  fault_inject_prob=probability, random_seed=5, max_retries=5)
    timeline = Timeline()
    sp.on_event(timeline)
    try:
        df = sp.from_arrow(table).repartition(24, by_rows=True).repartition(24, hash_by="k")
        got = sorted(tuple(r.values()) for r in sp.partial_sql(query, df).take_all())
        outcome = "identical result" if got == expected else "WRONG result"
    except Exception as error:
        outcome = f"failed: {type(error).__name__}"
    finally:
        sp.shutdown()
    tasks = timeline.count("finished")
    return FaultRow(f"random task failures {probability:.0%} (R5)",
                    f"fault_inject_prob={probability:g} over {tasks} tasks, max_retries=5",
                    runner, outcome, None, None, timeline.rerun_share(),
                    f"{timeline.count('retried')} retries")


def _disk_full_run(work: str) -> FaultRow:
    """The output's disk fills up; after space is freed the rerun reuses every task."""
    from smallpond.errors import DiskFullError

    mount = os.path.join(work, "small-disk")
    os.makedirs(mount, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount]).returncode:
        return FaultRow("output disk full (R7)", "1 MiB tmpfs", "local", "skipped: needs root")
    sp = _session("local", os.path.join(work, "root-disk"))
    timeline = Timeline()
    sp.on_event(timeline)
    try:
        df = sp.partial_sql("SELECT i, md5(i::VARCHAR) AS s FROM range(100000) t(i)")
        try:
            df.write_parquet(os.path.join(mount, "out"))
            outcome = "no error?"
        except DiskFullError as error:
            outcome = f"DiskFullError naming {error.mount}"
        failed_at = time.time()
        subprocess.run(["mount", "-o", "remount,size=64m", mount], check=True)
        before = timeline.count("finished")
        df.write_parquet(os.path.join(mount, "out"))
        rerun = timeline.count("finished") - before
        outcome += f"; rerun after freeing space re-ran {rerun} task(s)"
        return FaultRow("output disk full (R7)", "output on a 1 MiB tmpfs, then remounted "
                        "at 64 MiB", "local", outcome, None,
                        _round(time.time() - failed_at), rerun / max(1, before))
    finally:
        sp.shutdown()
        subprocess.run(["umount", "-l", mount])


MEMORY_HOG_SCRIPT = textwrap.dedent('''
    import sys, time, smallpond
    sp = smallpond.init(data_root=sys.argv[1], num_executors=1, max_retries=int(sys.argv[2]))

    def hog(table):
        block = bytearray(400 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return table

    started = time.monotonic()
    try:
        sp.from_items([1, 2, 3]).map_batches(hog).count()
    except smallpond.errors.SmallpondError as error:
        print(type(error).__name__, round(time.monotonic() - started, 1), error)
    sp.shutdown()
''')  # a task touching 400 MiB: run it in a smaller cgroup


def _oom_run(work: str) -> FaultRow:
    from smallpond.bench.cgroups import CgroupUnavailable, MemoryCgroup

    try:
        with MemoryCgroup(300 << 20) as group:
            done = group.run([sys.executable, "-c", MEMORY_HOG_SCRIPT,
                              os.path.join(work, "root-oom"), "2"], timeout=600)
            kills = group.stats().oom_kills
    except CgroupUnavailable as error:
        return FaultRow("task over the memory cap (R8)", "", "local", f"skipped: {error}")
    words = done.stdout.split() or ["no error", "?"]
    return FaultRow("task over the memory cap (R8)", "a task touching 400 MiB in a 300 MiB "
                    "cgroup", "local", f"{words[0]} after {kills} OOM kills (max_retries=2)",
                    None, _float(words[1]), None)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def fault_rows(work: str, runners, timeout: float) -> list[FaultRow]:
    rows = []
    for runner in runners:
        rows.append(_stalled_run(runner, work, "sigstop", timeout))
        rows.append(_stalled_run(runner, work, "hang", timeout))
        for probability in (0.05, 0.10):
            rows.append(_injected_run(runner, work, probability))
        rows.append(_driver_kill_run(runner, work))
    rows.append(_disk_full_run(work))
    rows.append(_oom_run(work))
    return rows


# -- driver kill (R4) --------------------------------------------------------------------------
DRIVER_KILL_SCRIPT = textwrap.dedent('''
    import json, sys, time
    import smallpond

    args = json.loads(sys.argv[1])
    options = {"runner": args["runner"], "job_id": "r4-job"}
    if args["runner"] == "ray":
        options["ray_num_cpus"] = 2
    else:
        options["num_executors"] = 2
    sp = smallpond.init(data_root=args["data_root"], **options)

    def slow_copy(table, pause=args["sleep"]):  # (not `args`: its paths change per run)
        import time
        time.sleep(pause)
        return table

    started = time.perf_counter()
    df = sp.read_parquet(args["input"]).repartition(args["mappers"], by_rows=True)
    df = df.map_batches(slow_copy).repartition(4, hash_by="k")
    sp.partial_sql(args["query"], df).write_parquet(args["output"])
    seconds = time.perf_counter() - started
    events = [(e.kind, e.key) for e in sp.events]
    sp.shutdown()
    json.dump({"events": events, "seconds": seconds}, open(args["report"], "w"))
''')


def committed_tasks(data_root: str) -> set[str]:
    try:
        return {n for n in os.listdir(os.path.join(data_root, "tasks"))
                if not n.startswith(".") and ".old." not in n}
    except FileNotFoundError:
        return set()


def start_driver(work: str, args: dict) -> subprocess.Popen:
    script = os.path.join(work, "r4-driver.py")
    with open(script, "w") as handle:
        handle.write(DRIVER_KILL_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONUNBUFFERED"] = "1"
    log = open(f"{args['report']}.log", "w")
    return subprocess.Popen([sys.executable, script, json.dumps(args)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=work, start_new_session=True)


def _driver_kill_run(runner: str, work: str) -> FaultRow:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = os.path.join(work, "r4-input")
    os.makedirs(source, exist_ok=True)
    for i in range(4):
        ids = pa.array(range(i * 4000, (i + 1) * 4000))
        pq.write_table(pa.table({"k": pa.compute.bit_wise_and(ids, 31), "v": ids}),
                       os.path.join(source, f"part-{i}.parquet"))
    root = os.path.join(work, f"root-r4-{runner}")
    args = {"runner": runner, "data_root": root, "input": source, "mappers": 12, "sleep": 0.4,
            "query": "SELECT k, count(*) AS c, sum(v) AS s FROM {0} GROUP BY k",
            "output": os.path.join(work, f"r4-out-{runner}"),
            "report": os.path.join(work, f"r4-{runner}.json")}
    total = 29  # tasks of this job: 1 split, 12 maps, 12 shuffles, 4 aggregates
    process = start_driver(work, args)
    deadline = time.monotonic() + 600
    while len(committed_tasks(root)) < total / 2 and process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = time.time()
    committed = committed_tasks(root)
    process = start_driver(work, args)
    process.wait(timeout=900)
    report = json.load(open(args["report"]))
    ran = {key for kind, key in report["events"] if kind == "finished"}
    outcome = "identical result, none of the committed tasks ran again" if not ran & committed \
        else "a committed task ran again"
    return FaultRow("driver SIGKILL at 50% (R4)", "SIGKILL of the driver process, same job "
                    "run again", runner, outcome, None, _round(time.time() - killed_at),
                    len(ran) / total, f"{len(committed)}/{total} committed at the kill")


# -- multi-node Ray ----------------------------------------------------------------------------
NODE_DRIVER = textwrap.dedent('''
    import json, sys, time
    import smallpond
    from smallpond.graysort import job

    args = json.loads(sys.argv[1])
    sp = smallpond.init(data_root=args["data_root"], ray_address=args["address"])
    timeline = []
    sp.on_event(lambda e: timeline.append((time.time(), e.kind, e.key, e.error)))
    result = job.run(args["output"], records=args["records"], partitions=8, session=sp)
    sp.shutdown()
    json.dump({"valid": result.valid, "timeline": timeline}, open(args["report"], "w"))
''')


def node_rows(work: str, records: int) -> list[FaultRow]:
    """Kill a Ray worker process, then a whole worker node, of a 3-node `ray start` cluster."""
    from smallpond.bench.raycluster import ENV, RAY, Cluster

    if not os.path.exists(RAY):
        return [FaultRow("Ray node killed (R2)", "", "ray cluster", "skipped: no `ray` command")]
    rows = []
    for fault in ("worker process", "node"):
        cluster = Cluster()
        try:
            cluster.start()
            rows.append(_node_fault(cluster, work, records, fault, ENV))
        finally:
            cluster.stop()
    return rows


def _node_fault(cluster, work: str, records: int, fault: str, env: dict) -> FaultRow:
    name = fault.replace(" ", "-")
    root = os.path.join(work, f"root-nodes-{name}")
    args = {"address": cluster.address, "data_root": root, "records": records,
            "output": os.path.join(work, f"nodes-out-{name}"),
            "report": os.path.join(work, f"nodes-{name}.json")}
    script = os.path.join(work, "node-driver.py")
    with open(script, "w") as handle:
        handle.write(NODE_DRIVER)
    with open(f"{args['report']}.log", "w") as log:
        process = subprocess.Popen([sys.executable, script, json.dumps(args)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    busy: list = []  # past half way, node_b runs one of our tasks: the fault hits work
    while process.poll() is None and time.monotonic() < deadline and not busy:
        if len(committed_tasks(root)) >= 9:
            busy = cluster.tasks_on("node_b")
        time.sleep(0.02)
    fault_at = time.time()
    if fault == "node":
        cluster.nodes["node_b"].kill()
    else:
        for victim in busy:
            with contextlib.suppress(Exception):
                victim.kill()
    process.wait(timeout=900)
    report = json.load(open(args["report"]))
    timeline = report["timeline"]
    retried = [(at, key) for at, kind, key, _ in timeline if kind == "retried"]
    done = [at for at, kind, key, _ in timeline
            if retried and kind == "finished" and key == retried[-1][1] and at > fault_at]
    job_end = timeline[-1][0] if timeline else fault_at
    return FaultRow(f"Ray {fault} killed (R2)", f"SIGKILL of a {fault} of a 3-node `ray "
                    f"start` cluster during GraySort {records / 1e7:g} GB", "ray cluster",
                    "valid sort" if report["valid"] else "INVALID sort",
                    _round(retried[0][0] - fault_at) if retried else None,
                    _round(done[0] - fault_at) if done else None,
                    len(retried) / 17, f"job ended {job_end - fault_at:.1f} s after the kill")


# -- memory ------------------------------------------------------------------------------------
def memory_rows(work: str, gib: float) -> list[dict]:
    from smallpond.bench.cgroups import CgroupUnavailable, MemoryCgroup
    from smallpond.bench.memory import make_dataset, run_in_group, run_job
    from smallpond.graysort.gensort import write_gensort_file

    data = make_dataset(os.path.join(work, "memory-data"), gib)
    rows = []
    for job in ("agg", "sort"):
        figures = run_job(job, data, os.path.join(work, f"mem-{job}"), 16,
                          data_root=os.path.join(work, "root-mem"), memory_per_task="256MB",
                          num_executors=2)
        rows.append({"setting": "256 MiB per task, 2 workers, no cap", **figures})
    dat = os.path.join(work, "memory-input.dat")
    if not os.path.exists(dat):
        write_gensort_file(dat, int(gib * 10_000_000))
    for job, source, partitions in (("agg", data, 32), ("sort", data, 32),
                                    ("graysort", dat, None)):
        try:
            with MemoryCgroup(512 << 20) as group:
                figures = run_in_group(group, job, source, os.path.join(work, f"cap-{job}"),
                                       partitions,
                                       data_root=os.path.join(work, f"root-cap-{job}"))
        except CgroupUnavailable as error:
            figures = {"job": job, "error": str(error)}
        rows.append({"setting": "512 MiB cgroup, defaults", **figures})
    return rows


# -- report ------------------------------------------------------------------------------------
def _round(value):
    return None if value is None else round(value, 1)


def _cell(value) -> str:
    return "-" if value is None else str(value)


def _mib(value) -> str:
    return "-" if not value else f"{value / 2**20:.0f}"


def _markdown(data: dict) -> str:
    out = [f"# Reliability figures ({data['machine']['time']}, {data['machine']['cpus']} "
           "cores; measured while other jobs shared the machine)", "",
           f"Command: `{data['command']}`", ""]
    if data.get("faults"):
        out += ["## Faults", "", markdown_table(
            ["fault", "how injected", "runner", "outcome", "detect s", "recover s",
             "tasks re-run", "note"],
            [[r["fault"], r["injected"], r["runner"], r["outcome"], _cell(r["detect_s"]),
              _cell(r["recover_s"]), "-" if r["rerun_share"] is None
              else f"{r['rerun_share']:.0%}", r["note"]] for r in data["faults"]]), ""]
    if data.get("graysort"):
        out += [f"## GraySort {data['gb']:g} GB with a worker SIGKILLed", "", markdown_table(
            ["runner", "kill at", "seed", "valsort", "checksum in = out", "= fault-free",
             "seconds", "retried", "detect s", "recover s", "unsafe output views"],
            [[r["runner"], "no fault" if r["kill_at"] is None else f"{r['kill_at']:.0%}",
              r["seed"], "valid" if r["valid"] else "INVALID", r["checksum_in_equals_out"],
              r.get("same_checksum_as_fault_free", "-"), r["seconds"], r["retried"],
              _cell(_round(r["detect_s"])), _cell(_round(r["recover_s"])), r["unsafe_views"]]
             for r in data["graysort"]]), ""]
    if data.get("memory"):
        out += ["## Data 4x the memory", "", markdown_table(
            ["setting", "job", "budget MiB", "workers", "partitions", "outcome", "seconds",
             "worker peak RSS MiB", "worker peak private MiB", "spill peak MiB",
             "cgroup peak MiB", "OOM kills"],
            [[r["setting"], r["job"], _mib(r.get("budget")), r.get("workers", "-"),
              r.get("partitions", "-"), r.get("error") or "ok", _round(r.get("seconds")),
              " / ".join(_mib(v) for v in r.get("worker_peak_rss", [])),
              " / ".join(_mib(v) for v in r.get("worker_peak_private", [])),
              _mib(r.get("spill_peak")), _mib(r.get("cgroup_peak")),
              r.get("oom_kills", "-")] for r in data["memory"]]),
            "", "RSS counts shared library pages (~100 MiB) in every worker; private is "
            "RssAnon, what a worker itself allocated.", ""]
    return "\n".join(out)


def run_reliability_benchmark(gb: float = 1.0, parts=PARTS, runners=("local", "ray"),
                              fractions=(0.3, 0.6, 0.9), seeds=(0,), timeout: float = 10.0,
                              memory_gib: float = 2.0,
                              results_dir: str = "benchmarks/results") -> str:
    work = tempfile.mkdtemp(prefix="smallpond-reliability-")
    command = " ".join(["python benchmarks/reliability.py", *sys.argv[1:]])
    data: dict = {"machine": machine_info(), "command": command, "gb": gb}
    try:
        if "faults" in parts:
            data["faults"] = [asdict(r) for r in fault_rows(work, runners, timeout)]
        if "nodes" in parts:
            data.setdefault("faults", []).extend(asdict(r) for r in node_rows(work, 10_000_000))
        if "graysort" in parts:
            data["graysort"] = graysort_kills(work, gb, runners, fractions, seeds)
        if "memory" in parts:
            data["memory"] = memory_rows(work, memory_gib)
    finally:
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        if _RAY.get("temp"):
            shutil.rmtree(_RAY["temp"], ignore_errors=True)
    markdown = _markdown(data)
    json_path, md_path = write_report(results_dir, f"reliability-{gb:g}gb", data, markdown)
    return f"{markdown}\n\nwritten: {json_path}, {md_path}"

