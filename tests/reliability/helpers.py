"""Small helpers the reliability tests share."""

from __future__ import annotations

import os
import pickle

__all__ = ["kinds", "leftovers"]


def kinds(events, since: int = 0) -> dict[str, int]:
    """How many events of each kind since index `since`."""
    counts: dict[str, int] = {}
    for event in events[since:]:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return counts


def leftovers(sp) -> list[str]:
    """Files and folders an attempt left in the session's scratch area (should be none)."""
    found = []
    for folder in ("staging", "spill", "heartbeats"):
        path = os.path.join(sp.config.scratch_dir, folder)
        if os.path.isdir(path):
            found += [os.path.join(folder, name) for name in os.listdir(path)]
    return found


def aggregate_input(rows: int):
    """A table with a skew-free key `k` (97 values) and values `v`."""
    import duckdb

    return duckdb.sql(f"SELECT range AS id, (hash(range) % 97)::BIGINT AS k, range % 1000 AS v "
                      f"FROM range({rows})").to_arrow_table()


AGGREGATE = "SELECT k, count(*) AS c, sum(v) AS s, min(id) AS lo FROM {0} GROUP BY k"


def aggregate_job(sp, table, mappers: int = 8, reducers: int = 8):
    """A two-stage job: split by rows, hash shuffle by k, aggregate each partition."""
    df = sp.from_arrow(table).repartition(mappers, by_rows=True).repartition(reducers,
                                                                              hash_by="k")
    return sp.partial_sql(AGGREGATE, df)


def rows_of(df_or_table) -> list[tuple]:
    table = df_or_table if hasattr(df_or_table, "to_pylist") else df_or_table.to_arrow()
    return sorted(tuple(row.values()) for row in table.to_pylist())


def expected_aggregate(table) -> list[tuple]:
    import duckdb

    con = duckdb.connect()
    con.register("t", table)
    return sorted(con.execute(AGGREGATE.format("t")).fetchall())


def record_submissions(sp, monkeypatch) -> list[bytes]:
    """Every (task, inputs, settings) the session's runner is given from now on, pickled as
    they would travel to a worker (what a secret must never be part of)."""
    shipped: list[bytes] = []
    submit = sp.runner.submit

    def recording_submit(task, inputs, settings):
        shipped.append(pickle.dumps((task, inputs, settings)))
        return submit(task, inputs, settings)

    monkeypatch.setattr(sp.runner, "submit", recording_submit)
    return shipped
