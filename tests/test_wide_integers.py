"""Integer results wider than 64 bits (DuckDB's HUGEINT: `sum` of a BIGINT) stay exact: DuckDB
writes HUGEINT to Parquet as DOUBLE, so smallpond stores them as DECIMAL(38,0), the type DuckDB
itself hands to Arrow."""

from __future__ import annotations

import duckdb
import pyarrow as pa


def test_sums_beyond_2_to_the_53_are_exact(sp):
    rows = pa.table({"k": [1, 1, 2, 2, 2], "x": [2**62, 2**62, 2**62, 2**62 - 1, 7]})
    df = sp.from_arrow(rows)
    relation = duckdb.sql("SELECT k, sum(x) AS s FROM rows GROUP BY k ORDER BY k")
    want = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
    want = want()
    got = sp.partial_sql("SELECT k, sum(x) AS s FROM {0} GROUP BY k ORDER BY k", df).to_arrow()
    assert got.schema.field("s").type == want.schema.field("s").type == pa.decimal128(38, 0)
    assert got.to_pylist() == want.to_pylist()
    sp.register("wide", df)
    sp.sql("SET smallpond.partitions = 3")
    via_sql = sp.sql("SELECT k, sum(x) AS s, 9007199254740993::HUGEINT AS h FROM wide "
                     "GROUP BY k ORDER BY k").to_arrow()
    assert via_sql.column("s").to_pylist() == want.column("s").to_pylist()
    assert via_sql.column("h").to_pylist() == [9007199254740993] * 2
    sp.sql("RESET smallpond.partitions")
