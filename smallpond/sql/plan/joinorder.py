"""The order of an inner-join group: greedy on estimated rows (GOO), costs from join
strategies. A mixin of the SELECT block planner (it needs the block's conditions)."""

from __future__ import annotations

from sqlglot import exp

from smallpond.sql.plan.exprs import has_subquery
from smallpond.sql.plan.joins import Joined, choose_strategy

__all__ = ["JoinOrdering", "equi"]


class JoinOrdering:
    """Join ordering for `Block` (uses its `_applicable`, `_join`, `_aliases_of`, `ctx`,
    `column_ndv`)."""

    def _resolve_group(self, current: Joined | None, group: list[Joined], step: int
                       ) -> Joined:
        """Join an inner-join group greedily (GOO): each time, the two connected inputs whose
        join gives the fewest estimated rows (from distinct values of the keys), so that small
        dimension tables meet each other and filter the large input before it joins anything
        else. The larger input of a pair is the left (probe) side."""
        items = ([current] if current else []) + group
        while len(items) > 1:
            best = None
            for i in range(len(items)):
                for j in range(i + 1, len(items)):
                    a, b = items[i], items[j]
                    if b.rel.est_bytes > a.rel.est_bytes:
                        a, b = b, a
                    aliases = a.aliases | b.aliases
                    conds = [c for c in self._applicable(aliases, step)
                             if c.aliases & a.aliases and c.aliases & b.aliases]
                    pairs = [p for p in (equi(c.expr, a.aliases, b.aliases, self._aliases_of)
                                         for c in conds) if p]
                    rows = self._join_rows(a, b, pairs)
                    score = (0 if pairs else 1, rows, self._cost(a, b, pairs))
                    if best is None or score < best[0]:
                        best = (score, a, b, conds, rows)
            _, left, right, conds, rows = best
            items = [x for x in items if x is not left and x is not right]
            for c in conds:
                c.applied = True
            kind = "inner" if conds else "cross"
            items.append(self._join(left, right, kind, [c.expr for c in conds], rows))
        return items[0]

    def _key_ndv(self, side: Joined, exprs: list[exp.Expression]) -> float:
        """Distinct values of a join key on one side (at most its rows)."""
        total = 1.0
        for e in exprs:
            estimate = self.column_ndv(e) if isinstance(e, exp.Column) and e.table else None
            total *= estimate if estimate is not None else side.rel.rows
        return max(1.0, min(total, side.rel.rows))

    def _join_rows(self, left: Joined, right: Joined, pairs) -> float:
        """Estimated rows of an inner join: |L| x |R| / the larger key's distinct values."""
        if not pairs:
            return left.rel.rows * right.rel.rows
        lk = self._key_ndv(left, [a for a, _ in pairs])
        rk = self._key_ndv(right, [b for _, b in pairs])
        return max(1.0, left.rel.rows * right.rel.rows / max(lk, rk))

    def _cost(self, done: Joined, candidate: Joined, pairs) -> float:
        """Bytes moved by the cheapest way to join these two (see choose_strategy)."""
        if not pairs:
            return done.rel.est_bytes * candidate.rel.est_bytes
        lcols = [self._physical(done, a) for a, _ in pairs]
        rcols = [self._physical(candidate, b) for _, b in pairs]
        return choose_strategy(self.ctx, done.rel, candidate.rel, "inner", lcols, rcols)[1]

    @staticmethod
    def _physical(side: Joined, expr: exp.Expression) -> str | None:
        if isinstance(expr, exp.Column) and expr.table:
            return side.columns.get((expr.table.lower(), expr.name.lower()))
        return None


def equi(cond: exp.Expression, left: set[str], right: set[str], aliases_of):
    """(left side, right side) of `a = b` where each side reads only one input, else None."""
    if not isinstance(cond, exp.EQ) or has_subquery(cond):
        return None
    a, b = cond.this, cond.expression
    la, lb = aliases_of(a), aliases_of(b)
    if not la or not lb:
        return None
    if la <= left and lb <= right:
        return a, b
    if lb <= left and la <= right:
        return b, a
    return None
