"""Reproducible performance measurements of the model build, each beside its baseline.

Run them all with ``python -m benchmarks.run --data ../shared/data/sentiment140`` (``make bench``);
each module also runs alone (``python -m benchmarks.generation_speedup --help``).
"""
