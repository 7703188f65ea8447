"""The reliability figures (faults, GraySort with killed workers, data 4x the memory).
See smallpond/bench/reliability.py.

Run: python benchmarks/reliability.py --gb 1     (as root: tmpfs and cgroup rows need it)
"""

import argparse

from smallpond.bench.reliability import PARTS, run_reliability_benchmark

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0, help="GraySort size")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated")
    parser.add_argument("--runners", default="local,ray")
    parser.add_argument("--seeds", default="0", help="comma-separated")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="heartbeat_timeout / task_timeout of the stall rows")
    parser.add_argument("--memory-gib", type=float, default=2.0)
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args()
    print(run_reliability_benchmark(
        args.gb, tuple(args.parts.split(",")), tuple(args.runners.split(",")),
        seeds=tuple(int(s) for s in args.seeds.split(",")), timeout=args.timeout,
        memory_gib=args.memory_gib, results_dir=args.results_dir))
