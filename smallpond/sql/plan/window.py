"""Window functions: rows shuffled on the PARTITION BY keys all windows share, then computed
per partition; without shared keys the window runs in one partition."""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from smallpond.sql.plan.exprs import col, render, windows_in
from smallpond.sql.plan.joins import gather, shuffle
from smallpond.sql.plan.rel import Rel, quote

__all__ = ["plan_windows"]


def plan_windows(block, rel: Rel, resolve, replacements) -> tuple[Rel, list]:
    ctx = block.ctx
    sel = block.sel
    if sel.args.get("windows"):
        raise_unsupported("named WINDOW clauses")
    exprs = list(sel.expressions) + [sel.args[k].this if k == "qualify" else sel.args[k]
                                     for k in ("qualify", "order") if sel.args.get(k)]
    windows: list[exp.Window] = []
    for e in exprs:
        for w in windows_in(e):
            if not any(w == x for x in windows):
                windows.append(w)
    common: list[exp.Expression] | None = None
    for w in windows:
        parts = list(w.args.get("partition_by") or [])
        common = parts if common is None else [p for p in common if any(p == q for q in parts)]
    common = common or []
    if rel.n > 1:
        if common:
            extra, keys = [], []
            for p in common:
                text = render(p, resolve, replacements)
                parsed = sqlglot.parse_one(text, read="duckdb")
                if isinstance(parsed, exp.Column) and not parsed.table and \
                        parsed.name in rel.columns:
                    keys.append(parsed.name)
                else:
                    key = ctx.temp("__key")
                    extra.append(f"{text} AS {quote(key)}")
                    keys.append(key)
            if extra:
                rel = ctx.stage(f"SELECT *, {', '.join(extra)} FROM {{0}}", [rel],
                                "window keys", rel.partitioning, rows=rel.rows)
            if not rel.hashed_on(tuple(keys)):
                n = rel.n
                rel = shuffle(rel, tuple(keys), n)
                ctx.note(f"window: rows hash-shuffled on the PARTITION BY keys to {n} "
                         "partitions")
            else:
                ctx.note("window: input already partitioned on the PARTITION BY keys")
        else:
            rel = gather(rel)
            ctx.note("window: no PARTITION BY shared by every window: runs in one partition")
    names = [ctx.temp("__w") for _ in windows]
    items = [f"{render(w, resolve, replacements)} AS {quote(n)}" for w, n in zip(windows, names)]
    out = ctx.stage(f"SELECT *, {', '.join(items)} FROM {{0}}", [rel], "window",
                    rel.partitioning, rows=rel.rows)
    return out, [(w, col(n)) for w, n in zip(windows, names)]


def raise_unsupported(what: str) -> None:
    from smallpond.sql.plan.context import Unsupported

    raise Unsupported(what)
