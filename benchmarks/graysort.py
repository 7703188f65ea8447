"""GraySort side by side with peers. See smallpond/bench/graysort.py.

Run: python benchmarks/graysort.py --gb 1 --runners local,ray
"""

import argparse

from smallpond.bench.graysort import run_graysort_benchmark

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--runners", default="local,ray")
    parser.add_argument("--peers", default="duckdb,polars,smallpond015")
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args()
    print(run_graysort_benchmark(args.gb, tuple(args.runners.split(",")),
                                 tuple(p for p in args.peers.split(",") if p),
                                 args.partitions, args.repeat, args.results_dir))
