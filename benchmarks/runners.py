"""Embedded runner vs Ray runner on the same jobs. See smallpond/bench/runners.py.

Run: python benchmarks/runners.py --gb 1.0
"""

import argparse

from smallpond.bench.runners import run_runners_benchmark

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0, help="input size (GB of rows)")
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=10, help="trivial-job repetitions")
    parser.add_argument("--runners", default="local,ray")
    parser.add_argument("--sort", choices=["range", "hash"], default="range",
                        help="repartition before partial_sort: sampled ranges or hash")
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args()
    print(run_runners_benchmark(args.gb, args.partitions, args.results_dir, args.repeat,
                                tuple(r for r in args.runners.split(",") if r), args.sort))
