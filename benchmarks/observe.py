"""What observing a job costs (run records, progress, capture). See smallpond/bench/observe.py.

Run: python benchmarks/observe.py --repeat 15
"""

import argparse

from smallpond.bench.observe import run_observe_benchmark

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args()
    print(run_observe_benchmark(args.repeat, args.tasks))
