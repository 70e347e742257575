"""Benchmarks for Tailor: learning quality, load and scale, each runnable as ``python -m benchmarks.<name>``."""
