"""Looking at data: the first rows of a DataFrame, and DataFrames and Sessions in notebooks.

`head(n)` computes only what n rows need: the limit is pushed into every partition's query, and
partitions are computed in order, first partition 0 alone, then more (about four times as many
each round) only while fewer than n rows were found; tasks of earlier rounds are reused.
Representations never run a task: a DataFrame shows its rows only when its result is already
committed (read from those files), or when asked (`show`, `head`).
"""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from smallpond.io.arrow import to_large
from smallpond.io.files import FileSlice
from smallpond.io.parquet import iter_slice_batches
from smallpond.logical.nodes import Limit, PartitionSlice
from smallpond.logical.optimizer import optimize
from smallpond.planner.graph import TaskSlice
from smallpond.planner.planner import Planner
from smallpond.progress import human_bytes, human_count
from smallpond.runners.base import resolve_parts
from smallpond.runners.execute import load_committed

if TYPE_CHECKING:
    from smallpond.dataframe import DataFrame
    from smallpond.session import Session

__all__ = ["head", "show", "committed_parts", "dataframe_html", "session_html",
           "table_text", "table_html"]

PREVIEW_ROWS = 10


def head(df: DataFrame, n: int) -> pa.Table:
    """The first `n` rows, computing as few partitions as it takes."""
    from smallpond.dataframe import DataFrame
    from smallpond.report.job import action_label, action_name

    label = action_label([df]).replace("compute", "head", 1)
    limited = optimize(Limit(df._node, n))
    source = limited.source if isinstance(limited, Limit) else None
    total = source.num_partitions if source is not None else 1
    upto = 1
    while True:
        node = limited if upto >= total else Limit(PartitionSlice(source, 0, upto), n)
        with action_name(f"{label} ({n} rows, partitions 0-{upto - 1} of {total})"):
            table = DataFrame(df.session, node, recompute=df._recompute).to_arrow()
        if table.num_rows >= n or upto >= total:
            return table
        if table.num_rows:  # about how many partitions n rows take, with a margin
            wanted = math.ceil(1.5 * n * upto / table.num_rows)
            upto = min(total, max(upto + 1, min(wanted, upto * 4)))
        else:
            upto = min(total, upto * 4)


def table_text(table: pa.Table, max_width: int = 40) -> str:
    """Rows as an aligned text table."""
    if table.num_columns == 0:
        return f"({table.num_rows} rows, no columns)"
    frame = table.to_pandas()
    return frame.to_string(index=False, max_colwidth=max_width)


def table_html(table: pa.Table, max_width: int = 60) -> str:
    """Rows as an HTML table (values escaped)."""
    head = "".join(f"<th>{escape(name)}<br/><small>{escape(str(field.type))}</small></th>"
                   for name, field in zip(table.column_names, table.schema))
    body = []
    for row in table.to_pylist():
        cells = "".join(f"<td>{escape(_cut(repr(v) if isinstance(v, bytes) else str(v), max_width))}"
                        f"</td>" for v in row.values())
        body.append(f"<tr>{cells}</tr>")
    return (f'<table class="smallpond-rows"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def show(df: DataFrame, n: int) -> None:
    """Print the first `n` rows (an HTML table in a notebook)."""
    from smallpond.progress import _in_notebook

    table = head(df, n)
    if _in_notebook():
        from IPython.display import HTML, display

        display(HTML(table_html(table)))
    else:
        print(table_text(table))


def committed_parts(df: DataFrame) -> list[list[FileSlice]] | None:
    """The files of each output partition when every task they come from has committed
    (nothing runs); None otherwise."""
    from smallpond.dataframe import _raw

    planner = Planner(df.session.scope)  # the same task keys as the actions
    parts = planner.add_output(optimize(df._node), materialize=not _raw(df._node))
    data_root = df.session.config.data_root
    outputs = {}
    for key in {s.task for part in parts for s in part if isinstance(s, TaskSlice)}:
        done = load_committed(data_root, key)
        if done is None:
            return None
        outputs[key] = done
    return resolve_parts(parts, outputs)


def _first_rows(parts: list[list[FileSlice]], n: int) -> pa.Table | None:
    batches: list[pa.RecordBatch] = []
    rows = 0
    for part in parts:
        for batch in iter_slice_batches(part):
            batches.append(batch.slice(0, n - rows))
            rows += batches[-1].num_rows
            if rows >= n:
                break
        if rows >= n:
            break
    if not batches:
        return None
    return to_large(pa.Table.from_batches(batches))


def dataframe_html(df: DataFrame) -> str:
    """Schema, plan summary, and the first rows once the result is committed."""
    from smallpond.planner.display import plan_tree

    schema, problem = df._schema_or_problem()
    if schema is not None:
        columns = "".join(f"<tr><td><code>{escape(f.name)}</code></td>"
                          f"<td>{escape(str(f.type))}</td></tr>" for f in schema)
        schema_html = (f'<table class="smallpond-schema"><thead><tr><th>column</th>'
                       f"<th>type</th></tr></thead><tbody>{columns}</tbody></table>")
    else:
        schema_html = f"<p><i>{escape(problem)}</i></p>"
    n = df.num_partitions
    rows_html = ("<p><i>Not computed yet: <code>df.show()</code> or <code>df.head()</code> "
                 "computes the first rows (only the partitions they need).</i></p>")
    try:
        committed = committed_parts(df)
    except Exception:  # a plan that cannot be planned yet (missing file...): no rows to show
        committed = None
    if committed is not None:
        table = _first_rows(committed, PREVIEW_ROWS)
        if table is not None:
            rows_html = (f"<p>Computed; the first {table.num_rows} rows:</p>"
                         f"{table_html(table)}")
        else:
            rows_html = "<p>Computed: no rows.</p>"
    plan = escape(plan_tree(df._node))
    return (f'<div class="smallpond-dataframe"><b>DataFrame</b> · {n} partition'
            f'{"s" if n != 1 else ""}{schema_html}'
            f"<details><summary>plan</summary><pre>{plan}</pre></details>{rows_html}</div>")


def session_html(session: Session) -> str:
    """Runner, data_root, workers, memory budget, job and what ran so far."""
    config = session.config
    ran = sum(e.kind == "finished" for e in session.events)
    reused = sum(e.kind == "reused" for e in session.events)
    items: list[tuple[str, Any]] = [
        ("runner", config.runner + (f" at {config.ray_address}" if config.ray_address else "")),
        ("data_root", config.data_root), ("workers", config.num_executors),
        ("memory per task", human_bytes(config.memory_per_task)),
        ("job id", session.job_id), ("tasks so far", f"{human_count(ran)} ran, "
                                                     f"{human_count(reused)} reused")]
    rows = "".join(f"<tr><th style='text-align:left'>{escape(k)}</th><td style='text-align:left'>"
                   f"<code>{escape(str(v))}</code></td></tr>" for k, v in items)
    return f'<div class="smallpond-session"><b>smallpond Session</b><table>{rows}</table></div>'
