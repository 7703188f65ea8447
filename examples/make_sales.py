"""Make the small sales dataset that the SQL job examples in examples/jobs/ read.

Run: python examples/make_sales.py /tmp/sales
Then: smallpond run examples/jobs/revenue_by_region.sql -p data=/tmp/sales -p out=/tmp/daily
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REGIONS = ["north", "south", "east", "west"]


def make_sales(folder: str, files: int = 4, rows_per_file: int = 250_000) -> str:
    """sales/part-*.parquet (order_id, customer_id, day, amount) and customers.parquet."""
    rng = np.random.default_rng(42)
    os.makedirs(os.path.join(folder, "sales"), exist_ok=True)
    customers = 5_000
    pq.write_table(pa.table({
        "customer_id": np.arange(customers),
        "name": [f"customer {i:04d}" for i in range(customers)],
        "region": [REGIONS[i % len(REGIONS)] for i in range(customers)],
    }), os.path.join(folder, "customers.parquet"))
    for part in range(files):
        first = part * rows_per_file
        pq.write_table(pa.table({
            "order_id": np.arange(first, first + rows_per_file),
            "customer_id": rng.integers(0, customers, rows_per_file),
            "day": np.datetime64("2026-01-01") + rng.integers(0, 90, rows_per_file),
            "amount": np.round(rng.gamma(2.0, 20.0, rows_per_file), 2),
        }), os.path.join(folder, "sales", f"part-{part}.parquet"), row_group_size=50_000)
    return folder


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sales-data"
    print(f"wrote {make_sales(target)}")
