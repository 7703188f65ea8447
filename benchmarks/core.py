"""Engine overheads + 1 GB hash repartition/aggregate vs DuckDB. See smallpond/bench/core.py.

Run: python benchmarks/core.py --gb 1.0
"""

import argparse

from smallpond.bench.core import run_core_benchmark

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--partitions", type=int, default=None)
    args = parser.parse_args()
    print(run_core_benchmark(args.gb, args.partitions))
