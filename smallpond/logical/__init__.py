"""Logical plan: immutable nodes and the rule-based optimizer."""
