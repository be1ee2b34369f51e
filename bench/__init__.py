"""Benchmarks that print ratios measured in one run (``python -m bench [name ...]``).

Each ``bench/bench_<name>.py`` has a ``main()``; report figures with ``bench.common.report``.
"""
