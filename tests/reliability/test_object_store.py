"""R10 object store (reads; object-store outputs are refused for now) and R12 for storage
options. Both runners.

A local S3 server (moto) sits behind a proxy that answers 503 SlowDown to a chosen share of
GET/HEAD/PUT requests (tests/reliability/s3.py). Inputs are read through s3fs with
`read_parquet(..., storage_options=...)`; retries with backoff are s3fs's and botocore's
(5 x 5 attempts per call by default); smallpond names the URL when they are exhausted.
Not covered: a writer killed mid-upload and dangling multipart uploads, since smallpond
writes nothing to object stores yet (an s3:// output is refused before anything runs).
"""

from __future__ import annotations

import io
import logging
import os
import time
import uuid

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smallpond.errors import InputError, OutputError, SmallpondError

from .helpers import (
    AGGREGATE,
    aggregate_input,
    kinds,
    leftovers,
    record_submissions,
    rows_of,
)

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from .s3 import LocalS3  # noqa: E402  (after the skips: it imports moto and boto3)

FILES, ROWS, ROW_GROUP = 4, 6_000, 1_000
CANARY = "sk-canary-r10-5d1e9b7c"


@pytest.fixture(scope="module")
def s3():
    server = LocalS3()
    yield server
    server.close()


@pytest.fixture
def bucket(s3):
    name = f"r10-{uuid.uuid4().hex[:12]}"
    s3.client.create_bucket(Bucket=name)
    s3.proxy.set(0.0)
    yield name
    s3.proxy.set(0.0)


def _put(s3, bucket: str, key: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=ROW_GROUP)
    s3.client.put_object(Bucket=bucket, Key=key, Body=sink.getvalue())


def _upload(s3, bucket: str, folder, prefix: str = "data", table: pa.Table | None = None):
    """The table as FILES Parquet files (several row groups each), in the bucket under
    `prefix` and in the local `folder`; returns (s3 glob, local glob)."""
    table = table if table is not None else aggregate_input(ROWS)
    os.makedirs(folder, exist_ok=True)
    step = -(-table.num_rows // FILES)
    for index in range(FILES):
        part = table.slice(index * step, step)
        pq.write_table(part, os.path.join(folder, f"part-{index}.parquet"),
                       row_group_size=ROW_GROUP)
        _put(s3, bucket, f"{prefix}/part-{index}.parquet", part)
    return f"s3://{bucket}/{prefix}/*.parquet", os.path.join(str(folder), "*.parquet")


def _job(sp, url: str, options: dict, partitions: int = 3):
    """Read, hash-shuffle by k, aggregate each partition."""
    df = sp.read_parquet(url, storage_options=options).repartition(partitions, hash_by="k")
    return sp.partial_sql(AGGREGATE, df)


def _local_aggregate(local_glob: str) -> list[tuple]:
    con = duckdb.connect()
    return sorted(con.execute(AGGREGATE.format(f"read_parquet('{local_glob}')")).fetchall())


def _names_s3(error: BaseException, bucket: str) -> bool:
    return f"s3://{bucket}/" in str(error) and str(getattr(error, "path", "")).startswith(
        f"s3://{bucket}/")


@pytest.mark.reliability_quick
def test_s3_read_matches_a_local_read(session, s3, bucket, tmp_path):
    """Differential: rows and a hash-shuffled aggregate over s3:// equal DuckDB and pyarrow
    over the same files read locally; the files' row groups split into several scans."""
    url, local = _upload(s3, bucket, tmp_path / "local")
    sp = session()
    df = sp.read_parquet(url, storage_options=s3.options())
    assert rows_of(df) == rows_of(pq.read_table(os.path.dirname(local)))
    split = df.repartition(5, by_rows=True)
    assert sorted(split.to_arrow()["id"].to_pylist()) == list(range(ROWS))
    assert rows_of(_job(sp, url, s3.options())) == _local_aggregate(local)


def test_s3_read_survives_20_percent_503s(session, s3, bucket, tmp_path):
    """A fifth of GET/HEAD requests answered 503 SlowDown: the same job gives the identical
    result (the S3 client retries with backoff) and nothing is left in scratch."""
    url, local = _upload(s3, bucket, tmp_path / "local")
    sp = session()
    s3.proxy.set(0.2, seed=10)
    started = time.monotonic()
    out = str(tmp_path / "out")
    _job(sp, url, s3.options()).write_parquet(out)
    seconds = time.monotonic() - started
    injected, forwarded = sum(s3.proxy.injected.values()), sum(s3.proxy.forwarded.values())
    print(f"R10 20% 503: {injected} injected of {injected + forwarded} requests "
          f"({dict(s3.proxy.injected)}), job {seconds:.1f} s")
    assert injected >= 3
    assert rows_of(pq.read_table(out)) == _local_aggregate(local)
    assert leftovers(sp) == []


def test_s3_that_keeps_failing_fails_typed_and_bounded(session, runner, s3, bucket, tmp_path):
    """Every request answered 503: the job fails with InputError naming the s3:// URL once
    the client's retries are spent (bounded: no hang), leaving no output and no staging.
    When the listing fails (planning, on the driver) and when the reads fail (in tasks)."""
    url, _ = _upload(s3, bucket, tmp_path / "local")
    sp = session()
    if runner == "local":  # (planning runs on the driver: the same on both runners)
        s3.proxy.set(1.0)
        started = time.monotonic()
        with pytest.raises(InputError) as info:
            sp.read_parquet(url, storage_options=s3.options())
        seconds = time.monotonic() - started
        print(f"R10 listing under 100% 503: failed after {seconds:.1f} s, "
              f"{sum(s3.proxy.injected.values())} 503s: {info.value}")
        assert _names_s3(info.value, bucket), info.value
        assert seconds < 120
    s3.proxy.set(0.0)
    job = _job(sp, url, s3.options())
    s3.proxy.set(1.0)
    out = tmp_path / "out"
    started = time.monotonic()
    with pytest.raises(SmallpondError) as info:
        job.write_parquet(str(out))
    seconds = time.monotonic() - started
    print(f"R10 reads under 100% 503 ({runner}): failed after {seconds:.1f} s, "
          f"{sum(s3.proxy.injected.values())} 503s: {type(info.value).__name__}: {info.value}")
    assert isinstance(info.value, InputError), repr(info.value)
    assert _names_s3(info.value, bucket), info.value
    assert seconds < 120
    assert not out.exists() or not os.listdir(out)
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out")] == []
    assert leftovers(sp) == []


@pytest.mark.reliability_quick
def test_a_changed_object_is_not_answered_from_cache(session, s3, bucket, tmp_path):
    """Same key, new content (a new ETag): a new session on the same data_root computes the
    new result instead of reusing task outputs keyed by the old object; an unchanged object
    is reused."""
    table = aggregate_input(ROWS)
    url, local = _upload(s3, bucket, tmp_path / "local", table=table)
    data_root = str(tmp_path / "data")
    first = session(data_root=data_root)
    assert rows_of(_job(first, url, s3.options())) == _local_aggregate(local)
    first.shutdown()

    changed = table.set_column(2, "v", pa.array([v + 1 for v in table["v"].to_pylist()]))
    url, local = _upload(s3, bucket, tmp_path / "changed", table=changed)
    second = session(data_root=data_root)
    assert rows_of(_job(second, url, s3.options())) == _local_aggregate(local)
    assert kinds(second.events).get("finished", 0) > 0

    third = session(data_root=data_root)
    assert rows_of(_job(third, url, s3.options())) == _local_aggregate(local)
    counts = kinds(third.events)
    assert counts.get("reused", 0) > 0 and counts.get("finished", 0) == 0, counts


@pytest.mark.reliability_quick
def test_an_object_store_output_is_refused_before_anything_runs(session, s3, bucket, tmp_path):
    url, _ = _upload(s3, bucket, tmp_path / "local")
    sp = session()
    target = f"s3://{bucket}/out"
    with pytest.raises(OutputError) as info:
        _job(sp, url, s3.options()).write_parquet(target)
    assert target in str(info.value) and info.value.path == target
    assert sp.events == []
    assert s3.keys(bucket, "out") == []
    assert s3.multipart_uploads(bucket) == []
    assert s3.keys(bucket) == [f"data/part-{i}.parquet" for i in range(FILES)]


@pytest.mark.reliability_quick
def test_a_canary_secret_in_storage_options_appears_nowhere(session, runner, s3, bucket,
                                                             tmp_path, monkeypatch, caplog):
    """R12: the secret key given in storage_options never reaches task arguments, plans,
    errors, events, task logs or files under data_root, for jobs that succeed and fail."""
    caplog.set_level(logging.DEBUG, logger="smallpond")
    url, local = _upload(s3, bucket, tmp_path / "local")
    options = s3.options(secret=CANARY)
    sp = session()
    shipped = record_submissions(sp, monkeypatch)
    job = _job(sp, url, options)
    texts = [job.explain(), repr(job)]
    job.write_parquet(str(tmp_path / "out"))
    assert rows_of(pq.read_table(str(tmp_path / "out"))) == _local_aggregate(local)

    def fails(batch):
        raise RuntimeError("failing on purpose")

    failures = []
    with pytest.raises(SmallpondError) as info:
        sp.read_parquet(url, storage_options=options).map_batches(fails).count()
    failures.append(info.value)
    with pytest.raises(InputError) as info:
        sp.read_parquet(f"s3://{bucket}/missing/*.parquet", storage_options=options)
    failures.append(info.value)
    s3.proxy.set(1.0)  # (one attempt per botocore call: s3fs's own 5 retries stay)
    with pytest.raises(InputError) as info:
        sp.read_parquet(url, storage_options={**options, "config_kwargs": {
            "retries": {"max_attempts": 1}}}).count()
    s3.proxy.set(0.0)
    failures.append(info.value)
    for error in failures:
        texts += [str(error), repr(error), str(error.__cause__), repr(error.__cause__)]
    texts += [repr(e) for e in sp.events]
    texts.append(sp.logs())
    texts.append(caplog.text)
    sp.shutdown()
    assert shipped
    assert not [b for b in shipped if CANARY.encode() in b]
    assert not [t for t in texts if CANARY in t]
    folders = [tmp_path]
    if runner == "ray":  # Ray's logs and spilled objects too (the options travel by ray.put)
        import ray

        node = getattr(ray._private.worker, "_global_node", None)
        if node is not None:
            folders.append(node.get_session_dir_path())
    for folder, _, files in (entry for top in folders for entry in os.walk(top)):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):  # (Ray's sockets)
                with open(path, "rb") as handle:
                    assert CANARY.encode() not in handle.read(), path
