"""Progress of a running action: one line per stage, in a terminal or a notebook.

Events from the runner only update counters here (a lock and a few additions); drawing happens
on another thread, on a timer: rich's live display on stderr in a terminal, an HTML table
updated in place in Jupyter. So drawing never slows the scheduling loop, and both runners show
the same thing (they emit the same events).

On by default when stderr is a terminal or the code runs in a notebook, after the action has
run for half a second (quick actions print nothing). `smallpond.init(progress=False)` or
`SMALLPOND_PROGRESS=0` turns it off, `progress=True` / `SMALLPOND_PROGRESS=1` forces it on
(shown from the start; where stderr is not a terminal, the final state is printed once).
"""

from __future__ import annotations

import html
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from smallpond.runners.base import TaskEvent

__all__ = ["JobProgress", "StageProgress", "progress_mode", "start_progress", "human_bytes",
           "human_count", "human_seconds"]

logger = logging.getLogger(__name__)

SHOW_AFTER = 0.5  # seconds an action runs before its progress appears (auto mode)
_OFF = ("0", "false", "off", "no", "none")
_ON = ("1", "true", "on", "yes", "force")


# -- formatting -------------------------------------------------------------------------------
def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover - unreachable


def human_count(n: float) -> str:
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1000 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"  # pragma: no cover - unreachable


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f}s"
    minutes, seconds = divmod(int(s), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


# -- state ------------------------------------------------------------------------------------
@dataclass
class StageProgress:
    """Counters of one stage of the running action."""

    name: str
    total: int = 0
    done: int = 0  # run to completion in this action
    reused: int = 0  # committed earlier and reused
    running: int = 0
    failed: int = 0
    retries: int = 0
    rows: int = 0
    bytes: int = 0
    first_submit: float | None = None
    last_finish: float | None = None

    @property
    def complete(self) -> int:
        return self.done + self.reused

    def elapsed(self, now: float) -> float | None:
        if self.first_submit is None:
            return None
        end = self.last_finish if self.complete >= self.total and self.last_finish else now
        return max(0.0, end - self.first_submit)

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate tasks finished so far (None before the first one)."""
        left = self.total - self.complete
        elapsed = self.elapsed(now)
        if left <= 0:
            return 0.0
        if not self.done or elapsed is None:
            return None
        return elapsed / self.done * left


class JobProgress:
    """What an action has done so far, fed by TaskEvents from any thread."""

    def __init__(self, label: str, stage_order: list[str] | None = None):
        self.label = label
        self.started = time.time()
        self.ended: float | None = None
        self.status = "running"
        self._order = {name: i for i, name in enumerate(stage_order or [])}
        self._stages: dict[str, StageProgress] = {}
        self._lock = threading.Lock()

    def on_event(self, event: TaskEvent) -> None:
        with self._lock:
            stage = self._stages.get(event.stage)
            if stage is None:
                stage = self._stages[event.stage] = StageProgress(event.stage)
            kind = event.kind
            if kind == "reused":
                stage.total += 1
                stage.reused += 1
                stage.rows += event.rows
                stage.bytes += event.bytes
            elif kind == "pending":
                stage.total += 1
            elif kind == "submitted":
                stage.running += 1
                if stage.first_submit is None:
                    stage.first_submit = event.at
            elif kind == "finished":
                stage.running -= 1
                stage.done += 1
                stage.rows += event.rows
                stage.bytes += event.bytes
                stage.last_finish = event.at
            elif kind == "retried":
                stage.running -= 1
                stage.retries += 1
            elif kind == "failed":
                stage.running -= 1
                stage.failed += 1

    def finish(self, status: str) -> None:
        with self._lock:
            self.status = status
            self.ended = time.time()

    def stages(self) -> list[StageProgress]:
        """A consistent copy of the stage counters, in plan order."""
        with self._lock:
            copies = [replace(s) for s in self._stages.values()]
        return sorted(copies, key=lambda s: self._order.get(s.name, len(self._order)))

    def elapsed(self) -> float:
        return (self.ended or time.time()) - self.started

    # -- renderings -----------------------------------------------------------------------
    def rows(self) -> list[dict[str, str]]:
        """One dict of display strings per stage."""
        now = time.time()
        lines = []
        for s in self.stages():
            state = ("failed" if s.failed else "reused" if s.reused == s.total else
                     "done" if s.complete >= s.total else
                     "running" if s.running else "waiting")
            tasks = f"{s.complete}/{s.total}"
            notes = []
            if s.reused and s.reused != s.total:
                notes.append(f"{s.reused} reused")
            if s.retries:
                notes.append(f"{s.retries} retried")
            if s.failed:
                notes.append(f"{s.failed} failed")
            lines.append({
                "stage": s.name, "state": state, "tasks": tasks, "notes": ", ".join(notes),
                "fraction": f"{s.complete / s.total:.3f}" if s.total else "1",
                "rows": human_count(s.rows), "bytes": human_bytes(s.bytes),
                "elapsed": human_seconds(s.elapsed(now)),
                "eta": "" if state in ("done", "reused", "failed") else human_seconds(s.eta(now)),
            })
        return lines

    def header(self) -> str:
        from smallpond.report.stages import short

        return f"smallpond {short(self.label, 56)} · {self.status} · " \
               f"{human_seconds(self.elapsed())}"

    def text(self) -> str:
        """Plain text: a header and one line per stage."""
        out = [self.header()]
        for r in self.rows():
            eta = f" eta {r['eta']}" if r["eta"] and r["eta"] != "-" else ""
            notes = f" ({r['notes']})" if r["notes"] else ""
            out.append(f"  {r['stage']:<28} {r['state']:<7} {r['tasks']:>9} tasks{notes}  "
                       f"{r['rows']:>7} rows {r['bytes']:>9}  {r['elapsed']:>6}{eta}")
        return "\n".join(out)

    def html(self) -> str:
        """An HTML table with a progress bar per stage (for notebooks)."""
        cells = []
        for r in self.rows():
            notes = f" <small>({html.escape(r['notes'])})</small>" if r["notes"] else ""
            cells.append(
                f"<tr><td style='text-align:left'><code>{html.escape(r['stage'])}</code></td>"
                f"<td><progress value='{r['fraction']}' max='1' style='width:8em'></progress>"
                f"</td><td>{r['state']}</td><td>{r['tasks']}{notes}</td><td>{r['rows']}</td>"
                f"<td>{r['bytes']}</td><td>{r['elapsed']}</td><td>{r['eta']}</td></tr>")
        head = "".join(f"<th>{h}</th>" for h in
                       ("stage", "", "state", "tasks", "rows", "bytes", "elapsed", "eta"))
        return (f"<div class='smallpond-progress'><b>{html.escape(self.header())}</b>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(cells)}</tbody>"
                f"</table></div>")

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, padding=(0, 1), show_header=False)
        rows = self.rows()
        table.add_column(no_wrap=True, min_width=max((len(r["stage"]) for r in rows),
                                                     default=5))  # stage names stay whole
        for _ in range(6):
            table.add_column(no_wrap=True)
        for r in rows:
            notes = f" ({r['notes']})" if r["notes"] else ""
            # the last column: time left while it runs, else its state
            last = f"eta {r['eta']}" if r["state"] == "running" else r["state"]
            table.add_row(r["stage"], ProgressBar(total=1.0, completed=float(r["fraction"]),
                                                  width=10),
                          f"{r['tasks']}{notes}", f"{r['rows']} rows", r["bytes"], r["elapsed"],
                          last)
        return Group(Text(self.header(), style="italic", no_wrap=True, overflow="ellipsis"),
                     table)


# -- where to draw ----------------------------------------------------------------------------
def _in_notebook() -> bool:
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:  # IPython half-imported or broken: treat as no notebook
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_mode(setting: Any = None) -> tuple[str | None, bool]:
    """(where to draw: "terminal", "notebook" or None, whether it was forced on)."""
    if setting is None or setting == "auto":
        setting = os.environ.get("SMALLPOND_PROGRESS", "auto")
    value = str(setting).strip().lower()
    if setting is False or value in _OFF:
        return None, False
    forced = setting is True or value in _ON
    if _in_notebook():
        return "notebook", forced
    stream = sys.stderr
    try:
        tty = stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty and os.environ.get("TERM") != "dumb":
        return "terminal", forced
    return ("terminal", True) if forced else (None, False)


class _Display:
    """Draws a JobProgress on a timer thread until stopped."""

    interval = 0.25

    def __init__(self, progress: JobProgress, delay: float):
        self.progress = progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(delay,), daemon=True,
                                        name="smallpond-progress")
        self._thread.start()

    def _loop(self, delay: float) -> None:
        if self._stop.wait(delay):
            return  # finished before it was worth showing
        try:
            self._show()
            while not self._stop.wait(self.interval):
                self._draw()
            self._close()  # the final state, drawn here too: never on the caller's thread
        except Exception as error:  # a broken display must never fail the job
            logger.debug("progress display failed: %s", error)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _show(self) -> None: ...

    def _draw(self) -> None: ...

    def _close(self) -> None: ...


class _TerminalDisplay(_Display):
    def _show(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=sys.stderr, force_jupyter=False)
        self._live = Live(console=console, get_renderable=lambda: self.progress,
                          refresh_per_second=4, redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def _draw(self) -> None:
        pass  # rich refreshes the live display on its own thread

    def _close(self) -> None:
        self._live.stop()
        if not self._live.console.is_terminal:  # the final state was printed without an end
            self._live.console.line()


class _NotebookDisplay(_Display):
    interval = 0.5

    def _show(self) -> None:
        from IPython.display import HTML, display

        self._handle = display(HTML(self.progress.html()), display_id=True)

    def _draw(self) -> None:
        from IPython.display import HTML

        self._handle.update(HTML(self.progress.html()))

    def _close(self) -> None:
        self._draw()


class ProgressRun:
    """The progress of one action and its display (if any); `stop` at the end."""

    def __init__(self, progress: JobProgress, display: _Display | None):
        self.progress = progress
        self.display = display

    def on_event(self, event: TaskEvent) -> None:
        self.progress.on_event(event)

    def stop(self, status: str) -> None:
        self.progress.finish(status)
        if self.display is not None:
            self.display.stop()


def start_progress(label: str, stage_order: list[str], setting: Any = None) -> ProgressRun | None:
    """Counters plus a display where one is wanted; None when progress is off."""
    mode, forced = progress_mode(setting)
    if mode is None:
        return None
    progress = JobProgress(label, stage_order)
    delay = 0.0 if forced else SHOW_AFTER
    display = (_NotebookDisplay if mode == "notebook" else _TerminalDisplay)(progress, delay)
    return ProgressRun(progress, display)
