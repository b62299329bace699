"""Launchers of the subscriber-backfill steps (``python -m pipelines.<step>``, ``backfill <step>``)."""

from pipelines.startup import keep_freed_memory, skip_pandas_probe

__version__ = "0.1.0"  # the package version (setup.py reads it); --version prints the installed one

keep_freed_memory()  # before pyarrow is loaded: freed pages kept, not faulted in again
skip_pandas_probe()  # before any step module builds an array: half a second of each command's start
