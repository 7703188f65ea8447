"""The run report of a job: text, a notebook view and a self-contained HTML page.

The page needs no network and no script: inline CSS, one SVG timeline per action (tasks per
worker over time, a tooltip per task) and a stage table. The markup is well-formed XML, so any
browser and any XML parser read it.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

from smallpond.progress import human_bytes, human_count, human_seconds
from smallpond.report.record import load_records
from smallpond.report.stages import short
from smallpond.report.timeline import stage_color, timeline_svg

__all__ = ["Report", "load_report"]

_PAGE_CSS = "body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }"
# scoped to the report, so that a notebook's own page keeps its look
_CSS = """
.smallpond-report table.sp { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; }
.smallpond-report table.sp th, .smallpond-report table.sp td {
  border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
.smallpond-report table.sp th { background: #f4f4f4; }
.smallpond-report table.sp td.l, .smallpond-report table.sp th.l { text-align: left; }
.smallpond-report span.swatch { display: inline-block; width: 0.8em; height: 0.8em;
  margin-right: 0.4em; }
.smallpond-report .failed { color: #b00020; }
.smallpond-report details { margin: 0.6em 0; }
.smallpond-report summary { cursor: pointer; font-weight: 600; }
.smallpond-report code { font-size: 12px; }
"""

_STAGE_COLUMNS = ("stage", "does", "tasks", "ran", "reused", "failed", "retries", "rows",
                  "bytes", "wall", "task time", "peak memory")


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def _stage_rows(record: dict[str, Any]) -> str:
    rows = []
    for s in record.get("stages", ()):
        swatch = f'<span class="swatch" style="background:{stage_color(s["name"])}"></span>'
        cells = [
            f'<td class="l">{swatch}<code>{escape(s["name"])}</code></td>',
            f'<td class="l">{escape(short(s["label"], 60))}</td>',
            f"<td>{s['tasks']}</td>", f"<td>{s['ran']}</td>", f"<td>{s['reused']}</td>",
            f'<td class="{"failed" if s["failed"] else ""}">{s["failed"]}</td>',
            f"<td>{s['retries']}</td>", f"<td>{human_count(s['rows'])}</td>",
            f"<td>{human_bytes(s['bytes'])}</td>", f"<td>{human_seconds(s['seconds'])}</td>",
            f"<td>{human_seconds(s['task_seconds'])}</td>",
            f"<td>{human_bytes(s['peak_rss']) if s['peak_rss'] else '-'}</td>"]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f'<th class="{"l" if c in ("stage", "does") else ""}">{c}</th>'
                   for c in _STAGE_COLUMNS)
    return f'<table class="sp"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>' \
           f"</table>"


def _worker_rows(record: dict[str, Any]) -> str:
    workers = record.get("workers") or []
    if not workers:
        return ""
    rows = "".join(
        f'<tr><td class="l"><code>{escape(w["worker"])}</code></td><td>{w["tasks"]}</td>'
        f"<td>{human_seconds(w['busy_seconds'])}</td><td>{human_bytes(w['peak_rss'])}</td></tr>"
        for w in workers)
    return ('<table class="sp"><thead><tr><th class="l">worker</th><th>tasks</th><th>busy</th>'
            f"<th>peak memory</th></tr></thead><tbody>{rows}</tbody></table>")


def _summary_line(record: dict[str, Any]) -> str:
    totals = record["totals"]
    output = record.get("output") or {}
    parts = [f"{record['status']}", human_seconds(record["seconds"]),
             f"{totals['tasks']} tasks ({totals['ran']} ran, {totals['reused']} reused"
             + (f", {totals['failed']} failed" if totals["failed"] else "")
             + (f", {totals['retries']} retries" if totals["retries"] else "") + ")"]
    if output:
        parts.append(f"output {human_count(output['rows'])} rows, "
                     f"{human_bytes(output['bytes'])} in {output['partitions']} partitions")
    return " · ".join(parts)


def _action_html(record: dict[str, Any], open_: bool) -> str:
    title = f"#{record['action']} {escape(short(record['label'], 90))}"
    error = (f'<p class="failed">{escape(record["error"])}</p>' if record.get("error") else "")
    svg = timeline_svg(record)
    timeline = (f"<p>Tasks per worker over time (hover a task for its figures):</p>{svg}"
                if svg else "<p>No task ran: every output was reused.</p>")
    opened = ' open="open"' if open_ else ""
    return (f"<details{opened}><summary>{title} — "
            f"{escape(_summary_line(record))}</summary>{error}{timeline}"
            f"{_stage_rows(record)}{_worker_rows(record)}</details>")


class Report:
    """The records of one job's actions, rendered as text, notebook HTML or an HTML page."""

    def __init__(self, job_id: str, records: list[dict[str, Any]], data_root: str = ""):
        self.job_id = job_id
        self.records = records
        self.data_root = data_root

    @property
    def totals(self) -> dict[str, int]:
        keys = ("tasks", "ran", "reused", "failed", "retries", "rows", "bytes")
        return {k: sum(r["totals"][k] for r in self.records) for k in keys}

    def _header(self) -> dict[str, Any]:
        first = self.records[0] if self.records else {}
        return {"runner": first.get("runner", "?"), "workers": first.get("num_executors", "?"),
                "memory": first.get("memory_per_task"), "data_root": first.get("data_root",
                                                                            self.data_root)}

    def __str__(self) -> str:
        head = self._header()
        lines = [f"job {self.job_id}: {len(self.records)} action(s) on {head['runner']} "
                 f"with {head['workers']} workers"]
        for record in self.records:
            lines.append(f"#{record['action']} {short(record['label'], 70)}")
            lines.append(f"    {_summary_line(record)}")
            for s in record["stages"]:
                lines.append(f"    {s['name']:<28} {s['tasks']:>4} tasks ({s['reused']} reused)"
                             f" {human_count(s['rows']):>7} rows {human_bytes(s['bytes']):>9} "
                             f"{human_seconds(s['seconds']):>7}")
            if record.get("error"):
                lines.append(f"    error: {record['error']}")
        return "\n".join(lines)

    __repr__ = __str__

    def body(self) -> str:
        """The report as an HTML fragment (what a notebook shows)."""
        head = self._header()
        memory = human_bytes(head["memory"]) if head["memory"] else "?"
        intro = (f"<p>{len(self.records)} action(s) on <b>{escape(str(head['runner']))}</b> "
                 f"with {head['workers']} workers, {memory} per task; data_root "
                 f"<code>{escape(str(head['data_root']))}</code>; started "
                 f"{_when(self.records[0]['started'] if self.records else None)}.</p>")
        last = len(self.records) - 1
        actions = "".join(_action_html(r, i == last) for i, r in enumerate(self.records))
        return f'<div class="smallpond-report">{intro}{actions}</div>'

    def _repr_html_(self) -> str:
        return f"<style>{_CSS}</style><h3>smallpond job {escape(self.job_id)}</h3>{self.body()}"

    def to_html(self) -> str:
        """A self-contained HTML page (no script, no network)."""
        title = f"smallpond job {escape(self.job_id)}"
        return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>'
                f"<title>{title}</title><style>{_PAGE_CSS}{_CSS}</style></head><body>"
                f"<h1>{title}</h1>{self.body()}</body></html>\n")

    def save(self, path: str) -> str:
        """Write the HTML page to `path`; return the path."""
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_html())
        return path


def load_report(data_root: str, job_id: str) -> Report:
    """The report of a job from its records under data_root/runs/<job_id>/."""
    return Report(job_id, load_records(data_root, job_id), data_root)
