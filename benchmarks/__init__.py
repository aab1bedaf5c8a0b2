"""Benchmarks: `python -m benchmarks [name ...]` (or `make bench`) prints their figures."""
