"""Benchmarks of rllib-k15 against the alternatives, measured side by side in the same run.

``python -m bench.run_all`` (``make bench``) runs them all; each runs alone too, e.g.
``python -m bench.engine_throughput --quick``. See ``bench/results/README.md``.
"""
