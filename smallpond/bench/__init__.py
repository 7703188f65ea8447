"""Benchmark logic behind `smallpond bench` (benchmarks/ keeps thin scripts)."""
