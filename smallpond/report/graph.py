"""A plan's stages as a graph: graphviz when it is installed, a plain SVG drawing otherwise.

Each box is a stage (what it does, how many tasks); once the stage ran in this session, the box
also shows its wall time, rows, bytes and peak memory. `graph()` returns a `graphviz.Digraph`
when the graphviz package and its `dot` program are installed (as smallpond 0.15 did), else a
`PlanGraph` with the same `source` / `render` / `pipe` basics and an SVG drawn here.
"""

from __future__ import annotations

import os
import shutil
from html import escape
from typing import Any

from smallpond.planner.graph import TaskGraph
from smallpond.progress import human_bytes, human_count, human_seconds
from smallpond.report.stages import StageInfo, graph_stages, short
from smallpond.report.timeline import stage_color

__all__ = ["PlanGraph", "plan_graph", "graphviz_available"]

_BOX_W, _BOX_H, _GAP_X, _GAP_Y = 270, 70, 30, 46


def graphviz_available() -> bool:
    """The graphviz package and its `dot` program are both installed."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        return False
    return shutil.which("dot") is not None


def _lines(info: StageInfo, stats: dict[str, Any] | None) -> list[str]:
    lines = [info.name, short(info.label, 40), f"{info.tasks} task{'s' if info.tasks != 1 else ''}"]
    if stats:
        reused = f", {stats['reused']} reused" if stats.get("reused") else ""
        lines[2] += f" ({stats['ran']} ran{reused})"
        memory = f" · peak {human_bytes(stats['peak_rss'])}" if stats.get("peak_rss") else ""
        lines.append(f"{human_seconds(stats['seconds'])} · {human_count(stats['rows'])} rows · "
                     f"{human_bytes(stats['bytes'])}{memory}")
    return lines


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class PlanGraph:
    """Stages and their dependencies, annotated with the figures of executed stages."""

    def __init__(self, stages: dict[str, StageInfo], stats: dict[str, dict[str, Any]]):
        self.stages = stages
        self.stats = stats

    @property
    def source(self) -> str:
        """Graphviz DOT text."""
        out = ["digraph smallpond {", "  rankdir=TB;",
               '  node [shape=box, style="rounded,filled", fontname="sans-serif", '
               'fontsize=10];']
        for name, info in self.stages.items():
            label = "\\n".join(_lines(info, self.stats.get(name))).replace('"', '\\"')
            out.append(f'  {_dot_quote(name)} [label="{label}", '
                       f'fillcolor="{stage_color(name)}"];')
            for dep in info.deps:
                out.append(f"  {_dot_quote(dep)} -> {_dot_quote(name)};")
        out.append("}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.source

    def to_graphviz(self):
        """The same graph as a graphviz.Digraph."""
        import graphviz

        dot = graphviz.Digraph("smallpond", graph_attr={"rankdir": "TB"},
                               node_attr={"shape": "box", "style": "rounded,filled",
                                          "fontname": "sans-serif", "fontsize": "10"})
        for name, info in self.stages.items():
            dot.node(name, "\n".join(_lines(info, self.stats.get(name))),
                     fillcolor=stage_color(name))
            for dep in info.deps:
                dot.edge(dep, name)
        return dot

    # -- a plain SVG drawing: stages in layers by their longest path from a source ----------
    def _layout(self) -> dict[str, tuple[float, float]]:
        layer: dict[str, int] = {}
        for name, info in self.stages.items():  # topological order
            layer[name] = 1 + max((layer[d] for d in info.deps if d in layer), default=-1)
        rows: dict[int, list[str]] = {}
        for name, depth in layer.items():
            rows.setdefault(depth, []).append(name)
        width = max((len(r) for r in rows.values()), default=1)
        positions = {}
        for depth, names in rows.items():
            offset = (width - len(names)) * (_BOX_W + _GAP_X) / 2
            for i, name in enumerate(names):
                positions[name] = (10 + offset + i * (_BOX_W + _GAP_X),
                                   10 + depth * (_BOX_H + _GAP_Y))
        return positions

    def svg(self) -> str:
        positions = self._layout()
        if not positions:
            return '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
        width = max(x for x, _ in positions.values()) + _BOX_W + 10
        height = max(y for _, y in positions.values()) + _BOX_H + 10
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
                 f'height="{height:.0f}" font-family="sans-serif" font-size="10">',
                 '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
                 'markerWidth="6" markerHeight="6" orient="auto">'
                 '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
        for name, info in self.stages.items():
            x, y = positions[name]
            for dep in info.deps:
                if dep in positions:
                    dx, dy = positions[dep]
                    parts.append(f'<line x1="{dx + _BOX_W / 2:.0f}" y1="{dy + _BOX_H:.0f}" '
                                 f'x2="{x + _BOX_W / 2:.0f}" y2="{y:.0f}" stroke="#555" '
                                 f'marker-end="url(#arrow)"/>')
        for name, info in self.stages.items():
            x, y = positions[name]
            parts.append(f'<rect x="{x:.0f}" y="{y:.0f}" rx="6" width="{_BOX_W}" '
                         f'height="{_BOX_H}" fill="{stage_color(name)}" stroke="#444"/>')
            for i, line in enumerate(_lines(info, self.stats.get(name))):
                weight = ' font-weight="bold"' if i == 0 else ""
                parts.append(f'<text x="{x + _BOX_W / 2:.0f}" y="{y + 15 + i * 14:.0f}" '
                             f'text-anchor="middle"{weight}>{escape(line)}</text>')
        parts.append("</svg>")
        return "".join(parts)

    def _repr_svg_(self) -> str:
        return self.svg()

    def pipe(self, format: str = "svg") -> bytes:
        if format != "svg":
            raise ValueError("without graphviz only format='svg' can be drawn")
        return self.svg().encode()

    def render(self, filename: str, format: str = "svg", **_: Any) -> str:
        """Write the DOT text to `filename` and the drawing next to it; return the drawing."""
        with open(filename, "w") as handle:
            handle.write(self.source)
        path = f"{filename}.{format}"
        with open(path, "wb") as handle:
            handle.write(self.pipe(format))
        return path


def plan_graph(graph: TaskGraph, stats: dict[str, dict[str, Any]] | None = None,
               prefer_graphviz: bool = True):
    """The stages of `graph` as a graphviz.Digraph (when installed) or a PlanGraph."""
    plan = PlanGraph(graph_stages(graph), stats or {})
    if prefer_graphviz and graphviz_available() and os.environ.get("SMALLPOND_GRAPHVIZ") != "0":
        return plan.to_graphviz()
    return plan
