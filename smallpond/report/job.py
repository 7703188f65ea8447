"""Running one action with its observers: the run record, the progress display, listeners."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from smallpond.planner.graph import TaskGraph, TaskOutput
from smallpond.progress import start_progress
from smallpond.report.record import JobRecorder
from smallpond.report.stages import graph_stages, short
from smallpond.runners.base import TaskEvent

if TYPE_CHECKING:
    from smallpond.session import Session

__all__ = ["run_job", "action_label", "action_name", "stage_stats"]

logger = logging.getLogger(__name__)

_API_FILES = ("dataframe.py", "session.py")
_label: contextvars.ContextVar[str | None] = contextvars.ContextVar("smallpond_action",
                                                                    default=None)


@contextlib.contextmanager
def action_name(label: str) -> Iterator[None]:
    """Name the actions run inside (e.g. the rounds of one `head`)."""
    token = _label.set(label)
    try:
        yield
    finally:
        _label.reset(token)


def action_label(what: Any = None, depth: int = 2) -> str:
    """`<action> <what it computes>`: the outermost public DataFrame or Session method on the
    call stack and the plans it computes (or `what` when it is a string)."""
    if isinstance(what, str):
        return what
    if _label.get() is not None:
        return _label.get()
    name = "compute"
    frame = sys._getframe(depth)
    for _ in range(12):
        if frame is None:
            break
        code = frame.f_code
        if (os.path.basename(code.co_filename) in _API_FILES
                and not code.co_name.startswith("_") and code.co_name != "compute_many"):
            name = code.co_name  # keep walking: the outermost one is what the user called
        frame = frame.f_back
    targets = []
    for df in what or ():
        sink = getattr(df, "_sink", None)
        targets.append(f"to {sink[0]}" if sink else short(df._node.describe(), 48))
    return f"{name} {', '.join(targets)}".strip()


def stage_stats(session: Session) -> dict[str, dict[str, Any]]:
    """Stage name -> its figures in the latest action of this session that involved it."""
    stats = getattr(session, "_stage_stats", None)
    if stats is None:
        stats = session._stage_stats = {}
    return stats


def _settings(session: Session) -> dict[str, Any]:
    config = session.config
    return {"job_name": config.job_name, "runner": config.runner,
            "num_executors": config.num_executors, "memory_per_task": config.memory_per_task,
            "data_root": config.data_root}


def run_job(session: Session, graph: TaskGraph, force: frozenset[str] = frozenset(),
            what: Sequence[Any] | str | None = None) -> dict[str, TaskOutput]:
    """Run `graph` on the session's runner, recording it and drawing its progress (an
    action with no task to run, such as a count from Parquet footers, is not recorded)."""
    if not graph.tasks:
        return session.runner.run(graph, force, session._on_event)
    label = action_label(what, depth=3)
    stages = list(graph_stages(graph))
    recorder = JobRecorder(graph, session.config.data_root, session.job_id, label,
                           _settings(session))
    progress = start_progress(label, stages, session.progress)

    def emit(event: TaskEvent) -> None:
        recorder.on_event(event)
        if progress is not None:
            progress.on_event(event)
        # listeners get events without the captured text (Session.logs serves it)
        session._on_event(replace(event, logs="") if event.logs else event)

    try:
        outputs = session.runner.run(graph, force, emit)
    except BaseException as error:
        _finish(session, recorder, progress, None, error)
        raise
    _finish(session, recorder, progress, outputs, None)
    return outputs


def _finish(session: Session, recorder: JobRecorder, progress, outputs, error) -> None:
    try:
        record = recorder.finish(outputs, error)
        stats = stage_stats(session)
        for stage in record["stages"]:
            stats[stage["name"]] = stage
        if error is None:
            from smallpond.cache import after_action

            after_action(session, record)
    except Exception as failure:  # the job's own outcome matters more than its record
        logger.warning("could not write the run record of %s: %s", recorder.label, failure)
    finally:
        if progress is not None:
            progress.stop(recorder.record["status"] if recorder.record else
                          ("success" if error is None else "failed"))
