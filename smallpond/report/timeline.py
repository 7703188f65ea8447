"""Tasks over time: an SVG chart (one row per worker) and Chrome trace-event JSON."""

from __future__ import annotations

import colorsys
import hashlib
from html import escape
from typing import Any

from smallpond.progress import human_bytes, human_count

__all__ = ["stage_color", "timeline_svg", "trace_events"]

_ROW = 22
_LEFT = 170
_WIDTH = 900


def stage_color(stage: str) -> str:
    """A stable color per stage kind + hash: the same stage looks the same everywhere."""
    hue = int(hashlib.sha256(stage.encode()).hexdigest()[:4], 16) / 0xFFFF
    r, g, b = colorsys.hls_to_rgb(hue, 0.62, 0.55)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _ran(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in record.get("tasks", ()) if t.get("started") and t.get("ended")
            and t.get("worker")]


def timeline_svg(record: dict[str, Any]) -> str:
    """Tasks per worker over time for one action (well-formed SVG; empty when nothing ran)."""
    tasks = _ran(record)
    if not tasks:
        return ""
    start = min(record.get("started") or 0, *(t["started"] for t in tasks))
    end = max(t["ended"] for t in tasks)
    span = max(end - start, 1e-3)
    workers: list[str] = []
    for task in sorted(tasks, key=lambda t: t["started"]):
        if task["worker"] not in workers:
            workers.append(task["worker"])
    height = _ROW * len(workers) + 40
    scale = _WIDTH / span
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_LEFT + _WIDTH + 20}" '
             f'height="{height}" font-family="sans-serif" font-size="11" '
             f'class="smallpond-timeline">']
    for row, worker in enumerate(workers):
        y = 10 + row * _ROW
        parts.append(f'<text x="4" y="{y + 14}">{escape(worker[-26:])}</text>')
        parts.append(f'<line x1="{_LEFT}" y1="{y + _ROW - 2}" x2="{_LEFT + _WIDTH}" '
                     f'y2="{y + _ROW - 2}" stroke="#eee"/>')
    for task in tasks:
        row = workers.index(task["worker"])
        x = _LEFT + (task["started"] - start) * scale
        width = max((task["ended"] - task["started"]) * scale, 1.0)
        seconds = task["ended"] - task["started"]
        tip = (f"{task['stage']}[{task['partition']}] {seconds:.3f} s, "
               f"{human_count(task['rows'])} rows, {human_bytes(task['bytes'])}, "
               f"peak {human_bytes(task['peak_rss'])}, on {task['worker']}")
        parts.append(f'<rect x="{x:.1f}" y="{10 + row * _ROW}" width="{width:.1f}" '
                     f'height="{_ROW - 4}" fill="{stage_color(task["stage"])}" '
                     f'stroke="#555" stroke-width="0.3"><title>{escape(tip)}</title></rect>')
    axis_y = 10 + len(workers) * _ROW + 14
    for k in range(6):
        x = _LEFT + k * _WIDTH / 5
        parts.append(f'<text x="{x:.0f}" y="{axis_y}" text-anchor="middle">'
                     f'{span * k / 5:.2f}s</text>')
    parts.append("</svg>")
    return "".join(parts)


def trace_events(records: list[dict[str, Any]], group: str = "worker") -> list[dict[str, Any]]:
    """Chrome trace events (chrome://tracing, ui.perfetto.dev) of every task that ran.

    group="worker": one process per host, one thread per worker process;
    group="stage": one process per stage, one thread per partition.
    """
    events = []
    for record in records:
        for task in _ran(record):
            host, _, pid = task["worker"].rpartition(":")
            if group == "worker":
                process, thread = host or task["worker"], int(pid) if pid.isdigit() else 0
            else:
                process, thread = task["stage"], int(task["partition"])
            events.append({
                "name": f"{task['stage']}[{task['partition']}]", "cat": task["stage"],
                "ph": "X", "ts": task["started"] * 1e6,
                "dur": (task["ended"] - task["started"]) * 1e6,
                "pid": process, "tid": thread,
                "args": {"action": record.get("action"), "rows": task["rows"],
                         "bytes": task["bytes"], "peak_rss": task["peak_rss"],
                         "attempts": task["attempts"], "worker": task["worker"],
                         "key": task["key"]},
            })
    return events
