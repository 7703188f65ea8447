"""Logical plan -> TaskGraph: stages, partitions, shuffle layout and task keys."""
