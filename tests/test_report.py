"""Run records, the report (text, notebook, HTML page), logs, timeline and plan graph."""

from __future__ import annotations

import html.parser
import json
import os
import re
import xml.etree.ElementTree as ElementTree

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from smallpond.cli import main
from smallpond.planner.graph import Task, TaskGraph, TaskSlice
from smallpond.report.graph import PlanGraph, graphviz_available
from smallpond.report.record import JobRecorder, load_records
from smallpond.runners.base import TaskEvent


def _latest(sp) -> dict:
    return load_records(sp.config.data_root, sp.job_id)[-1]


def _job(sp, tag: str = "x"):
    df = sp.from_items([{"k": i % 5, "v": i, "tag": tag} for i in range(400)])
    shuffled = df.repartition(3, hash_by="k")
    return sp.partial_sql("SELECT k, count(*) AS n, sum(v) AS s FROM {0} GROUP BY k", shuffled)


def test_record_totals_equal_the_jobs_output(sp, tmp_path):
    seen: list[TaskEvent] = []
    remove = sp.on_event(seen.append)
    try:
        agg = _job(sp).recompute()
        assert agg.count() == 5
    finally:
        remove()
    record = _latest(sp)
    assert record["status"] == "success" and record["label"].startswith("count")
    assert record["output"]["rows"] == 5 and record["output"]["partitions"] == 3
    finished = [e for e in seen if e.kind == "finished"]
    assert record["totals"]["ran"] == len(finished) == len(record["tasks"])
    assert record["totals"]["rows"] == sum(e.rows for e in finished)
    assert record["totals"]["bytes"] == sum(e.bytes for e in finished)
    assert sum(s["rows"] for s in record["stages"]) == record["totals"]["rows"]
    assert sum(w["tasks"] for w in record["workers"]) == len(finished)
    by_stage = {s["name"]: s for s in record["stages"]}
    sql_stage = [s for name, s in by_stage.items() if name.startswith("partial_sql")][0]
    assert sql_stage["tasks"] == 3 and sql_stage["rows"] == 5
    assert all(t["worker"] and t["ended"] >= t["started"] for t in record["tasks"])
    # written output: the record's output rows are the rows in the files
    out = tmp_path / "out"
    _job(sp).write_parquet(str(out))
    record = _latest(sp)
    written = sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("part-*.parquet"))
    assert record["output"]["rows"] == written == 5
    assert record["totals"]["reused"] == record["totals"]["tasks"]  # all reused this time


def test_recorder_counts_retries_reuse_and_failures(tmp_path):
    graph = TaskGraph()
    a = graph.add(Task("k-a", "a", 0, "sql", {"sql": "SELECT 1"}, ()))
    b = graph.add(Task("k-b", "b", 0, "sql", {"sql": "SELECT * FROM {0}"},
                       ((TaskSlice(a.key),),)))
    graph.outputs = [(TaskSlice(b.key),)]
    recorder = JobRecorder(graph, str(tmp_path), "job", "count")
    for event in [TaskEvent("reused", "a", 0, "k-a", 7, 70), TaskEvent("pending", "b", 0, "k-b"),
                  TaskEvent("submitted", "b", 0, "k-b"), TaskEvent("retried", "b", 0, "k-b"),
                  TaskEvent("submitted", "b", 0, "k-b"),
                  TaskEvent("failed", "b", 0, "k-b", error="boom", logs="said hi\n")]:
        recorder.on_event(event)
    record = recorder.finish(None, RuntimeError("boom"))
    assert record["status"] == "failed" and "boom" in record["error"]
    assert record["totals"] == {**record["totals"], "tasks": 2, "reused": 1, "failed": 1,
                                "retries": 1, "rows": 7}
    assert [s["name"] for s in record["stages"]] == ["a", "b"]
    assert load_records(str(tmp_path), "job") == [record]
    logs = json.loads((tmp_path / "runs" / "job" / "logs" / "0001.json").read_text())
    assert logs["k-b"]["text"] == "said hi\n" and logs["k-b"]["status"] == "failed"


def test_logs_per_stage_and_partition(sp):
    def noisy(table):
        import logging
        import sys

        first = table.column("item")[0].as_py()
        print(f"partition starting at {first}")
        print("to stderr", file=sys.stderr)
        logging.getLogger("user").info("rows: %d", table.num_rows)
        return table

    df = sp.from_items(list(range(30))).repartition(3, by_rows=True).map_batches(noisy)
    assert df.recompute().count() == 30
    one = sp.logs(stage="batches", partition=1)
    assert "partition starting at 10" in one and "starting at 0\n" not in one
    assert "to stderr" in one and "INFO user: rows: 10" in one
    every = sp.logs(stage="batches")
    assert all(f"partition starting at {i}" in every for i in (0, 10, 20))
    assert sp.logs(stage="no-such-stage") == ""


def _parse_page(text: str) -> ElementTree.Element:
    parser = html.parser.HTMLParser()
    parser.feed(text)  # lenient HTML parse must not fail
    parser.close()
    assert text.startswith("<!DOCTYPE html>")
    return ElementTree.fromstring(text.split("\n", 1)[1])  # strict: well-formed markup


def test_html_report_is_valid_and_names_every_stage(sp, tmp_path):
    _job(sp).recompute().take_all()
    records = load_records(sp.config.data_root, sp.job_id)
    stages = {s["name"] for r in records for s in r["stages"]}
    target = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", sp.job_id, "--data-root",
                                       sp.config.data_root, "-o", str(target)])
    assert result.exit_code == 0, result.output
    root = _parse_page(target.read_text())
    text = "".join(root.itertext())
    assert all(stage in text for stage in stages)
    svg = "{http://www.w3.org/2000/svg}"
    rects = root.findall(f".//{svg}rect")
    ran = sum(r["totals"]["ran"] for r in records)
    assert len(rects) == ran  # one bar per task that ran, on its worker's row
    assert not root.findall(".//script")  # self-contained: no script, no network
    assert "http://" not in target.read_text().replace("http://www.w3.org/2000/svg", "")
    notebook = sp.report()._repr_html_()
    assert all(stage in notebook for stage in stages)
    assert "body {" not in notebook  # its styles stay inside the report in a notebook
    assert sp.job_id in str(sp.report())


def test_report_command_defaults_to_the_latest_job(sp):
    _job(sp).count()
    result = CliRunner().invoke(main, ["report", "--data-root", sp.config.data_root])
    assert result.exit_code == 0, result.output
    path = result.output.strip().splitlines()[-1].split("report: ", 1)[1]
    assert os.path.exists(path) and os.path.dirname(path).endswith(sp.job_id)
    missing = CliRunner().invoke(main, ["report", "nope", "--data-root", sp.config.data_root])
    assert missing.exit_code == 2 and "no run records of job 'nope'" in missing.output


def test_dump_timeline_has_every_task_that_ran(sp, tmp_path):
    _job(sp).recompute().count()
    exec_path, plan_path = sp.dump_timeline(str(tmp_path / "timeline"))
    ran = sum(r["totals"]["ran"] for r in load_records(sp.config.data_root, sp.job_id))
    by_worker = json.loads(open(exec_path).read())
    by_stage = json.loads(open(plan_path).read())
    assert len(by_worker) == len(by_stage) == ran
    assert all(e["ph"] == "X" and e["dur"] >= 0 and e["ts"] > 0 for e in by_worker)
    assert {e["pid"] for e in by_stage} == {e["cat"] for e in by_stage}


def _stats_in(text: str) -> bool:
    return re.search(r"\d+(\.\d)?s · \d+(\.\d[KMG])? rows", text) is not None


def test_graph_is_annotated_after_running(sp, monkeypatch):
    agg = _job(sp, "graph")  # a plan no other test ran in this session
    before = agg.graph()
    assert not _stats_in(str(before)) and "[ran " not in agg.explain("physical")
    agg.recompute().count()
    after = agg.graph()
    stage_names = {s["name"] for s in _latest(sp)["stages"]}
    assert all(name in str(after) for name in stage_names) and _stats_in(str(after))
    if graphviz_available():
        import graphviz

        assert isinstance(after, graphviz.Digraph)
        assert b"<svg" in after.pipe(format="svg")
    monkeypatch.setenv("SMALLPOND_GRAPHVIZ", "0")
    plain = agg.graph()
    assert isinstance(plain, PlanGraph)
    svg = ElementTree.fromstring(plain._repr_svg_())
    labels = "".join(svg.itertext())
    assert all(name in labels for name in stage_names) and _stats_in(labels)
    assert str(sp.graph()).startswith("digraph")
    physical = agg.explain("physical")
    assert all(f"stage {name}" in physical for name in stage_names)
    assert physical.count("[ran ") == len(stage_names)


@pytest.mark.skipif(not graphviz_available(), reason="graphviz (dot) not installed: .ci/run "
                    "installs it; the SVG fallback is tested above")
def test_dump_graph_renders_png_with_graphviz(sp, tmp_path):
    _job(sp).count()
    path = sp.dump_graph(str(tmp_path / "graph"))
    assert path.endswith(".png") and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_dump_graph_without_graphviz_writes_svg(sp, tmp_path, monkeypatch):
    monkeypatch.setenv("SMALLPOND_GRAPHVIZ", "0")
    _job(sp).count()
    path = sp.dump_graph(str(tmp_path / "graph"))
    assert path.endswith(".svg")
    ElementTree.parse(path)
    assert open(str(tmp_path / "graph")).read().startswith("digraph")


def test_failed_action_is_recorded_with_its_error(sp):
    df = sp.from_items([1, 2, 3])

    def broken(table: pa.Table) -> pa.Table:
        print("about to break")
        raise ValueError("broken on purpose")

    with pytest.raises(Exception, match="broken on purpose"):
        df.map_batches(broken).count()
    record = _latest(sp)
    assert record["status"] == "failed" and "broken on purpose" in record["error"]
    assert record["totals"]["failed"] == 1
    assert "about to break" in sp.logs(stage="batches")
