"""Quickstart: generate a small dataset, then hash-partition it and aggregate per partition.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

import smallpond


def make_input(folder: str, files: int = 4, rows: int = 25_000) -> str:
    os.makedirs(folder, exist_ok=True)
    for i in range(files):
        ids = pa.array(range(i * rows, (i + 1) * rows))
        table = pa.table({"user": pa.compute.remainder(ids, 1000),
                          "amount": pa.compute.multiply(ids, 0.01)})
        pq.write_table(table, os.path.join(folder, f"events-{i}.parquet"))
    return folder


def main() -> None:
    work = tempfile.mkdtemp(prefix="smallpond-quickstart-")
    source = make_input(os.path.join(work, "input"))
    sp = smallpond.init(data_root=os.path.join(work, "data"))
    events = sp.read_parquet(source).repartition(4)           # 4 partitions, split by files
    by_user = events.repartition(8, hash_by="user")            # shuffle: 8 partitions by user
    totals = sp.partial_sql(
        "SELECT user, count(*) AS events, round(sum(amount), 2) AS total "
        "FROM {0} GROUP BY user ORDER BY user", by_user)
    totals.write_parquet(os.path.join(work, "totals"))
    result = sp.read_parquet(os.path.join(work, "totals")).to_arrow()
    print(totals.explain("physical"))
    print(f"{result.num_rows} users, {sum(result['events'].to_pylist())} events")
    print(result.sort_by("user").slice(0, 5).to_pandas().to_string(index=False))
    print(f"output: {os.path.join(work, 'totals')}")
    sp.shutdown()


if __name__ == "__main__":
    main()
