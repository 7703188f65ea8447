"""The DataFrame that `session.sql` returns: a DataFrame that also explains its SQL plan."""

from __future__ import annotations

from smallpond.dataframe import DataFrame
from smallpond.logical.optimizer import optimize

__all__ = ["SqlDataFrame"]


class SqlDataFrame(DataFrame):
    """The result of a SQL query; `explain()` starts with the distributed plan."""

    def __init__(self, session, node, plan):
        super().__init__(session, node)
        self.sql_plan = plan

    def explain(self, stage: str = "all") -> str:
        """The distributed plan (stages, shuffles, broadcasts, partitions, decisions), then
        the logical, optimized and physical plans. stage: distributed|logical|optimized|
        physical|all."""
        from smallpond.sql.explain import distributed_text

        plan = self.sql_plan
        text = distributed_text(optimize(self._node), plan.notes, plan.fallback, plan.seconds)
        if stage == "distributed":
            return text
        return text + "\n\n" + super().explain(stage)
