"""TPC-H SF1 per query and in total: smallpond vs DuckDB vs Polars. See smallpond/bench/tpch.py.

Run: python benchmarks/tpch.py --sf 1   (or: smallpond bench tpch --sf 1)
"""

import argparse

from smallpond.bench.tpch import parse_queries, run_tpch_benchmark

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sf", type=float, default=1.0)
    parser.add_argument("--data", default=None, help="folder with <table>.parquet")
    parser.add_argument("--systems", default="smallpond,duckdb,polars")
    parser.add_argument("--queries", default="1-22")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=None)
    args = parser.parse_args()
    print(run_tpch_benchmark(args.sf, args.data, tuple(args.systems.split(",")),
                             parse_queries(args.queries), args.repeat, args.partitions))
