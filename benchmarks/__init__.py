"""Benchmarks kept out of the test suite: `python benchmarks/<name>.py` (see README.md)."""
