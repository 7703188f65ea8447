"""Joins across partitions: co-partitioned inputs joined in place, a small side broadcast to
every partition of the other, or both sides hash-shuffled on the equality keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from smallpond.logical.nodes import Broadcast, Repartition, Scan, SqlQuery, Stage
from smallpond.logical.sqlinfo import is_rowwise
from smallpond.sql.plan.context import PlanContext
from smallpond.sql.plan.exprs import and_all
from smallpond.sql.plan.rel import ANY, INTEGER_TYPES, Partitioning, Rel, quote

__all__ = ["Joined", "join_rels", "choose_strategy", "broadcast", "shuffle", "gather",
           "hash_compatible", "RECOMPUTE_BYTES"]

KIND_SQL = {"inner": "JOIN", "left": "LEFT JOIN", "full": "FULL JOIN", "semi": "SEMI JOIN",
            "anti": "ANTI JOIN", "cross": "CROSS JOIN"}
RECOMPUTE_BYTES = 32 << 20  # a scan this small is re-read by every partition it is sent to
STAGE_BYTES = 8 << 20  # a stage round costs about what moving this many bytes costs
SHUFFLE_COST = 3.0  # bytes read by a broadcast that cost what one shuffled byte costs


@dataclass
class Joined:
    """Rows of several FROM items joined so far, and where each (alias, column) lives."""

    rel: Rel
    columns: dict[tuple[str, str], str]
    aliases: set[str]
    base_rows: float = 1.0
    nullable: set[str] = field(default_factory=set)


def hash_compatible(left: str, right: str) -> bool:
    """Whether equal values of these types hash alike (DuckDB hashes integers by value)."""
    return left == right or (left in INTEGER_TYPES and right in INTEGER_TYPES)


def shuffle(rel: Rel, keys: tuple[str, ...], n: int) -> Rel:
    """Rows hash-partitioned on `keys` into n partitions."""
    if n == 1:
        return gather(rel)
    return rel.with_(node=Repartition(rel.node, n, "hash", hash_by=keys),
                     partitioning=Partitioning.hashed(keys))


def gather(rel: Rel) -> Rel:
    """All partitions as one (no data moves: the next task reads every part)."""
    if rel.n == 1:
        return rel
    return rel.with_(node=Broadcast(rel.node, 1), partitioning=ANY)


def broadcast(rel: Rel, n: int) -> Rel:
    """Every one of n partitions gets all rows of `rel`. A small scan is re-read by each
    partition (its filter runs there) instead of running as a stage of its own."""
    node = rel.node
    if n == 1:
        return gather(rel)
    if (isinstance(node, SqlQuery) and node.sources and 0 < rel.scan_bytes <= RECOMPUTE_BYTES
            and all(isinstance(s, Scan) for s in node.sources)
            and (node.num_partitions == 1 or is_rowwise(node.sql))):
        moved = SqlQuery(tuple(Broadcast(s, n) for s in node.sources), node.sql,
                         name=node.name, copartitioned=len(node.sources) > 1,
                         settings=node.settings)
        return rel.with_(node=moved, partitioning=ANY)
    return rel.with_(node=Broadcast(node, n), partitioning=ANY)


def _plain(expr: exp.Expression) -> str | None:
    return expr.name if isinstance(expr, exp.Column) and not expr.table else None


def _key_types(ctx: PlanContext, rel: Rel, exprs: list[exp.Expression]) -> list[str]:
    types = []
    for e in exprs:
        name = _plain(e)
        if name is not None and name in rel.columns:
            types.append(rel.type_of(name))
        else:
            bound = ctx.binder.bind(f"SELECT {e.sql(dialect='duckdb')} FROM {{0}}",
                                    [list(zip(rel.columns, rel.types))])
            types.append(bound[0][1])
    return types


def _prepare(ctx: PlanContext, rel: Rel, exprs: list[exp.Expression],
             targets: list[str]) -> tuple[Rel, tuple[str, ...]]:
    """Key columns for hashing: plain columns where their type hashes like the target's,
    else computed columns (cast to the target type)."""
    own = _key_types(ctx, rel, exprs)
    extra, columns = [], []
    for e, have, want in zip(exprs, own, targets):
        name = _plain(e)
        if name is not None and name in rel.columns and hash_compatible(have, want):
            columns.append(name)
            continue
        column = ctx.temp("__key")
        text = e.sql(dialect="duckdb")
        if not hash_compatible(have, want):
            text = f"TRY_CAST({text} AS {want})"
        extra.append(f"{text} AS {quote(column)}")
        columns.append(column)
    if extra:
        rel = ctx.stage(f"SELECT *, {', '.join(extra)} FROM {{0}}", [rel], "join keys",
                        rel.partitioning, rel.rows)
    return rel, tuple(columns)


def _aligned(left: Rel, right: Rel, keys: list[tuple[exp.Expression, exp.Expression]]) -> bool:
    """Both sides already hash-partitioned alike on corresponding key columns."""
    if left.n != right.n or left.n == 1:
        return False
    pairs = {(_plain(a), _plain(b)) for a, b in keys}
    for lk in left.partitioning.keysets:
        for rk in right.partitioning.keysets:
            if len(lk) == len(rk) and all(
                    (a, b) in pairs and hash_compatible(left.type_of(a), right.type_of(b))
                    for a, b in zip(lk, rk)):
                return True
    return False


def _hashed_on_keys(rel: Rel, side: list[exp.Expression]) -> tuple[str, ...] | None:
    """The key set `rel` is hashed on, made of these join key columns (None: not hashed so)."""
    if rel.n == 1:
        return None
    return rel.partitioning.matching([_plain(e) for e in side if _plain(e)])


def choose_strategy(ctx: PlanContext, left: Rel, right: Rel, kind: str,
                    lcols: list[str | None], rcols: list[str | None],
                    aligned: bool = False) -> tuple[str, float]:
    """How to join, and what it costs in bytes moved: in place when aligned; else the
    cheapest of broadcasting a side (read whole by each partition of the other) and hash
    shuffling what is not already hashed on the keys (a byte through a shuffle costs about
    SHUFFLE_COST bytes of broadcast reading)."""
    if left.n == 1 and right.n == 1:
        return "local", 0.0
    if aligned:
        return "aligned", 0.0
    if not lcols:
        if kind == "full":
            return "gather", left.est_bytes + right.est_bytes
        if kind in ("inner", "cross") and (left.est_bytes < right.est_bytes or left.n == 1):
            return "broadcast_left", left.est_bytes * right.n
        return "broadcast_right", right.est_bytes * left.n
    limit = ctx.settings.broadcast_limit
    options = []
    # a broadcast keeps the other side's partitions: never into fewer (that loses parallelism)
    if kind in ("inner", "left", "semi", "anti") and right.est_bytes <= limit and \
            left.n >= right.n:
        options.append(("broadcast_right", right.est_bytes * left.n))
    if kind == "inner" and left.est_bytes <= limit and right.n >= left.n:
        options.append(("broadcast_left", left.est_bytes * right.n))
    lhashed = left.n > 1 and left.partitioning.matching([c for c in lcols if c]) is not None
    rhashed = right.n > 1 and right.partitioning.matching([c for c in rcols if c]) is not None
    moved = (0.0 if lhashed else left.est_bytes) + (0.0 if rhashed else right.est_bytes)
    if kind == "full" and (lhashed or rhashed):
        moved = left.est_bytes + right.est_bytes
    options.append(("hash", SHUFFLE_COST * moved + STAGE_BYTES))
    return min(options, key=lambda option: option[1])


def join_rels(ctx: PlanContext, left: Rel, right: Rel, kind: str,
              keys: list[tuple[exp.Expression, exp.Expression]],
              residual: exp.Expression | None, keep: list[str], label: str,
              rows: float | None = None) -> Rel:
    """Join two planned relations; `keys` are (left, right) equality expressions over their
    physical columns, `residual` any further condition, `keep` the output columns."""
    if kind == "right":
        return join_rels(ctx, right, left, "left", [(b, a) for a, b in keys], residual, keep,
                         label, rows)
    strategy, _ = choose_strategy(ctx, left, right, kind, [_plain(a) for a, _ in keys],
                                  [_plain(b) for _, b in keys],
                                  keys and _aligned(left, right, keys))

    lk, rk = [a for a, _ in keys], [b for _, b in keys]
    partitioning = ANY
    if strategy == "gather":
        left, right = gather(left), gather(right)
        ctx.note(f"join {label}: {kind} join without equality keys runs in one partition")
    elif strategy == "broadcast_right":
        right, partitioning = _broadcast_to(ctx, right, left, kind, label)
    elif strategy == "broadcast_left":
        left, partitioning = _broadcast_to(ctx, left, right, kind, label)
    elif strategy == "aligned":
        ctx.note(f"join {label}: inputs already hash-partitioned on the keys "
                 f"({left.n} partitions), no shuffle")
        partitioning = ANY if kind == "full" else (
            left.partitioning.merged(right.partitioning) if kind == "inner"
            else left.partitioning)
    elif strategy == "hash":
        left, right = _reduce_sides(ctx, left, right, lk, rk, kind, label)
        left, right, partitioning = _hash_join_inputs(ctx, left, right, lk, rk, kind, label)
    else:
        partitioning = ANY

    if kind in ("semi", "anti"):
        keep = [c for c in keep if c in left.columns]
    keep = [c for c in keep if c in left.columns or c in right.columns]
    conditions = [exp.EQ(this=a.copy(), expression=b.copy()) for a, b in keys]
    if residual is not None:
        conditions.append(residual)
    condition = and_all(conditions)
    types = {**dict(zip(right.columns, right.types)), **dict(zip(left.columns, left.types))}
    known = [(c, types[c]) for c in keep]
    if keep:
        select = ", ".join(quote(c) for c in keep)
    else:
        marker = ctx.temp("__row")
        select, known = f"TRUE AS {quote(marker)}", [(marker, "BOOLEAN")]
    if kind == "cross" and condition is None:
        sql = f"SELECT {select} FROM {{0}} CROSS JOIN {{1}}"
    else:
        join = "JOIN" if kind == "cross" else KIND_SQL[kind]
        text = condition.sql(dialect="duckdb") if condition is not None else "TRUE"
        sql = f"SELECT {select} FROM {{0}} {join} {{1}} ON {text}"
    partitioning = partitioning.within(keep)
    if rows is None:
        rows = _rows(kind, left, right, bool(keys))
    return ctx.stage(sql, [left, right], f"{kind} join", partitioning, rows=rows,
                     columns=known)


def _broadcast_to(ctx, small: Rel, big: Rel, kind: str, label: str):
    """`small` read whole by each partition of `big`; the join keeps big's partitioning."""
    ctx.note(f"join {label}: broadcast {_side(small)} to {big.n} partition(s) "
             f"({kind} join, est {_mb(small.est_bytes)})")
    return broadcast(small, big.n), big.partitioning


REDUCE_RATIO = 4.0  # reduce a side to the other's keys when it is this much larger


def _reduce_sides(ctx, left, right, lk, rk, kind, label):
    """Semi-join reduction: before a large side is shuffled, keep only its rows whose keys
    occur on the small side (whose distinct keys every map task reads whole). Rows without
    such a key cannot match, and the join keeps them only when that side is preserved."""
    limit = ctx.settings.broadcast_limit
    # which sides may lose their unmatched rows: inner both; semi/anti/left the right one
    may_reduce_right = kind in ("inner", "semi", "anti", "left")
    may_reduce_left = kind in ("inner", "semi")
    if may_reduce_right and _hashed_on_keys(right, rk) is None and \
            right.est_bytes >= REDUCE_RATIO * left.est_bytes and left.est_bytes <= limit:
        right, left = _reduce(ctx, right, rk, left, lk, label)
    elif may_reduce_left and _hashed_on_keys(left, lk) is None and \
            left.est_bytes >= REDUCE_RATIO * right.est_bytes and right.est_bytes <= limit:
        left, right = _reduce(ctx, left, lk, right, rk, label)
    return left, right


def shared(rel: Rel) -> Rel:
    """`rel` computed once for several consumers (not fused into each of them)."""
    if isinstance(rel.node, (SqlQuery,)):
        return rel.with_(node=Stage(rel.node))
    return rel


def _reduce(ctx, big: Rel, big_keys, small: Rel, small_keys, label: str
            ) -> tuple[Rel, Rel]:
    small = shared(small)
    names = [ctx.temp("__rk") for _ in small_keys]
    items = ", ".join(f"{e.sql(dialect='duckdb')} AS {quote(n)}"
                      for e, n in zip(small_keys, names))
    keys = ctx.stage(f"SELECT DISTINCT {items} FROM {{0}}", [small], "join key filter",
                     ANY, rows=small.rows, partial=True)
    condition = " AND ".join(f"{e.sql(dialect='duckdb')} = {quote(n)}"
                             for e, n in zip(big_keys, names))
    ctx.note(f"join {label}: the larger side keeps only rows whose keys occur on the smaller "
             f"(est {big.est_bytes / 2**20:.1f} MB vs {small.est_bytes / 2**20:.1f} MB) "
             "before it is shuffled")
    return ctx.stage(f"SELECT * FROM {{0}} SEMI JOIN {{1}} ON {condition}",
                     [big, broadcast(keys, big.n)], "key filter", big.partitioning,
                     rows=min(big.rows, small.rows * 4),
                     columns=list(zip(big.columns, big.types))), small


def _shuffle_like(ctx, fixed: Rel, keyset, fixed_keys, moving: Rel, moving_keys, label) -> Rel:
    """`moving` hash-shuffled the way `fixed` already is (on `keyset`, its key columns)."""
    order = [fixed_keys.index(next(e for e in fixed_keys if _plain(e) == k)) for k in keyset]
    moved = _side(moving)
    moving, columns = _prepare(ctx, moving, [moving_keys[i] for i in order],
                               [fixed.type_of(k) for k in keyset])
    ctx.note(f"join {label}: hash join, {moved} shuffled to the {fixed.n} partitions "
             f"{_side(fixed)} is already hashed into")
    return shuffle(moving, columns, fixed.n)


def _hash_join_inputs(ctx, left, right, lk, rk, kind, label):
    """Shuffle what is not already partitioned on the keys, to a common partition count."""
    lset, rset = _hashed_on_keys(left, lk), _hashed_on_keys(right, rk)
    if lset is not None:
        right = _shuffle_like(ctx, left, lset, lk, right, rk, label)
    elif rset is not None:
        left = _shuffle_like(ctx, right, rset, rk, left, lk, label)
    else:
        n = ctx.partitions_for(left.est_bytes + right.est_bytes)
        ltypes, rtypes = _key_types(ctx, left, lk), _key_types(ctx, right, rk)
        targets = [a if hash_compatible(a, b) else ctx.binder.common_type(a, b)
                   for a, b in zip(ltypes, rtypes)]
        left, lcols = _prepare(ctx, left, lk, targets)
        right, rcols = _prepare(ctx, right, rk, targets)
        left, right = shuffle(left, lcols, n), shuffle(right, rcols, n)
        ctx.note(f"join {label}: hash join, both sides shuffled to {n} partition(s)"
                 if n > 1 else f"join {label}: small inputs joined in one partition")
    if left.n == 1 or kind == "full":
        return left, right, ANY
    if kind == "inner":
        return left, right, left.partitioning.merged(right.partitioning)
    return left, right, left.partitioning


def _rows(kind: str, left: Rel, right: Rel, keyed: bool) -> float:
    if kind in ("semi", "anti"):
        return left.rows * 0.5
    if kind == "left":
        return max(left.rows, 1.0)
    if kind == "full":
        return left.rows + right.rows
    if not keyed:
        return left.rows * right.rows
    return max(left.rows, right.rows)


def _side(rel: Rel) -> str:
    return rel.node.name if isinstance(rel.node, SqlQuery) else rel.node.label.lower()


def _mb(size: float) -> str:
    return f"{size / 2**20:.1f} MB"
