"""Benchmarks run by `nox -s bench`: figures and ratios against baselines measured in the same run."""
