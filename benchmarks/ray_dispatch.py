"""Ray tasks vs a pool of long-lived actors for dispatching smallpond tasks.

The Ray runner submits each smallpond task as a Ray task. This measures the alternative (one
actor per CPU, tasks sent to whichever actor is free) on the same no-op payload the runner
ships (a Task-sized argument and a TaskOutput-sized result), to show which costs less.

Run: python benchmarks/ray_dispatch.py [--tasks 400]
"""

from __future__ import annotations

import argparse
import statistics
import time

import ray

PAYLOAD = b"x" * 2048  # about what a pickled Task with a few FileSlices weighs


@ray.remote(num_cpus=1)
def run_as_task(payload: bytes) -> bytes:
    return payload[:256]


@ray.remote(num_cpus=1)
class Worker:
    def run(self, payload: bytes) -> bytes:
        return payload[:256]


def _latency(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        ray.get(call())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _throughput(submit, tasks: int, in_flight: int) -> float:
    started = time.perf_counter()
    pending = [submit(i) for i in range(min(in_flight, tasks))]
    sent = len(pending)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)
        if sent < tasks:
            pending.append(submit(sent))
            sent += 1
    return tasks / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        ray.get([run_as_task.remote(PAYLOAD) for _ in range(args.cpus * 4)])  # warm workers
        task_latency = _latency(lambda: run_as_task.remote(PAYLOAD), 100)
        task_rate = _throughput(lambda i: run_as_task.remote(PAYLOAD), args.tasks, args.cpus)
        # the actors hold every CPU while they live: measured after the tasks
        actors = [Worker.remote() for _ in range(args.cpus)]
        ray.get([a.run.remote(PAYLOAD) for a in actors])
        actor_latency = _latency(lambda: actors[0].run.remote(PAYLOAD), 100)
        actor_rate = _throughput(lambda i: actors[i % len(actors)].run.remote(PAYLOAD),
                                 args.tasks, args.cpus)
    finally:
        ray.shutdown()
    print(f"| dispatch | round trip (median) | throughput, {args.cpus} in flight |")
    print("|---|---|---|")
    print(f"| Ray task | {task_latency * 1e3:.2f} ms | {task_rate:.0f} tasks/s |")
    print(f"| actor pool | {actor_latency * 1e3:.2f} ms | {actor_rate:.0f} tasks/s |")


if __name__ == "__main__":
    main()
