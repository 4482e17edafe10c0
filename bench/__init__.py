"""Benchmarks of the device path against the obvious alternatives (`python -m bench`; see BENCHMARKS.md).

Not tests: figures go to tables and bench/results/*.json, never into assertions.
"""
