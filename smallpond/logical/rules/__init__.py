"""Optimizer rules: each one a `Rule` with `apply(node) -> node` on a single node."""

from smallpond.logical.rules.base import Rule
from smallpond.logical.rules.fuse_sql import FuseSql
from smallpond.logical.rules.push_limit import PushLimit

__all__ = ["Rule", "FuseSql", "PushLimit", "DEFAULT_RULES"]

DEFAULT_RULES: tuple[Rule, ...] = (PushLimit(), FuseSql())
