"""Launchers of the subscriber-backfill steps (``python -m pipelines.<step>``, ``backfill <step>``)."""

__version__ = "0.1.0"  # the package version (setup.py reads it); --version prints the installed one
