"""Where GraySort's time goes. See smallpond/bench/graysort_profile.py.

Run: python benchmarks/graysort_profile.py --gb 1
"""

import argparse

from smallpond.bench.graysort_profile import run_graysort_profile

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args()
    print(run_graysort_profile(args.gb, args.partitions, args.results_dir))
