"""Benchmarks of subscriber-backfill (``make bench``, ``python -m bench.run [NAME]``).

``bench.naive`` is the per-row baseline the columnar scan must beat, and the
oracle of ``tests/test_scan_oracle.py``; ``bench.run`` times everything.
"""
