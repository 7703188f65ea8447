"""Optimizer rules: each one a `Rule` with `apply(node) -> node` on a single node."""

from smallpond.logical.rules.base import Rule
from smallpond.logical.rules.combine_aggregate import CombineAggregate
from smallpond.logical.rules.fuse_sql import FuseSql
from smallpond.logical.rules.push_limit import PushLimit
from smallpond.logical.rules.push_projection import PushProjection

__all__ = ["Rule", "FuseSql", "PushLimit", "PushProjection", "CombineAggregate",
           "DEFAULT_RULES"]

DEFAULT_RULES: tuple[Rule, ...] = (PushLimit(), PushProjection(), CombineAggregate(), FuseSql())
