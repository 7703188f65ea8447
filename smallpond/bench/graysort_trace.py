"""One cold `smallpond graysort --input IN --output OUT --data-root ROOT`, with timestamps.

    python -m smallpond.bench.graysort_trace IN OUT ROOT TRACE.json

Does what the command does (graysort.run, validation on) and writes a timeline for
graysort_profile.py: the process's creation, the end of imports, init, each worker's hello,
every task event, the task phases from the tasks' meta.json, the commit and the shutdown.
"""

from __future__ import annotations

import time

_FIRST_LINE = time.time()  # before any import of ours: the interpreter's own start-up ends here

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def main(source: str, output: str, root: str, trace_path: str) -> None:
    marks = {"first_line": _FIRST_LINE}
    import smallpond
    from smallpond.graysort.job import run  # what the CLI imports

    marks["imported"] = time.time()
    sp = smallpond.init(data_root=root)
    marks["initialized"] = time.time()
    events, tasks = [], {}

    def record(event) -> None:
        events.append([time.time(), event.kind, event.stage, event.partition, event.elapsed])
        meta = os.path.join(root, "tasks", event.key, "meta.json")
        if event.kind == "finished" and os.path.exists(meta):
            # read now: committing the output moves the sort tasks' files and folders away
            with open(meta) as handle:
                tasks[event.key] = json.load(handle).get("timings", {})

    sp.on_event(record)
    runner = sp.runner
    server = runner._server.started_at if hasattr(runner, "_server") else None
    result = run(output, input=source, session=sp)
    marks["finished"] = time.time()
    workers = [w.ready_at for w in [*runner._idle, *runner._busy.values()]
               if getattr(w, "ready_at", None)] if hasattr(runner, "_idle") else []
    cpu = _process_cpu(runner)
    sp.shutdown()
    marks["shut_down"] = time.time()
    # the parent's clock just before it spawned us (psutil's create_time is coarser)
    spawned = os.environ.get("SMALLPOND_TRACE_SPAWNED")
    if spawned is None:
        import psutil

        spawned = psutil.Process().create_time()
    marks["process_created"] = float(spawned)
    with open(trace_path, "w") as handle:
        json.dump({"marks": marks, "events": events, "workers_ready": workers,
                   "server_created": server, "cpu": cpu,
                   "tasks": tasks, "phases": result.phases, "valid": result.valid,
                   "partitions": result.partitions}, handle)


def _process_cpu(runner) -> dict:
    """CPU seconds so far of the driver, the fork server and each worker."""
    import psutil

    def seconds(pid: int) -> float:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    cpu = {"driver": seconds(os.getpid())}
    if hasattr(runner, "_server"):
        cpu["fork server"] = seconds(runner._server.process.pid)
        cpu["workers"] = sum(seconds(pid) for pid in runner.worker_pids)
    return cpu


if __name__ == "__main__":
    main(*sys.argv[1:5])
