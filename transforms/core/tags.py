"""Names of the tagged outputs that every step's DoFns share, defined once.

    beam.ParDo(fn).with_outputs(DEAD_LETTER, COUNTS, main=...)
    yield beam.pvalue.TaggedOutput(DEAD_LETTER, table)

A step's own outputs (``doc_keys`` of the scan, ``announced`` of notify) are
named beside the DoFns that yield them.
"""

from __future__ import annotations

__all__ = ["COUNTS", "DEAD_LETTER", "KEYS", "RAW", "ROWS"]

DEAD_LETTER = "dead_letter"  # dead-letter tables (schemas/dead_letter.avsc)
COUNTS = "counts"  # small nested dicts of counts, summed into the manifest
RAW = "raw"  # raw batches of a reader: every contract column as a string
ROWS = "rows"  # rows held for a later stage of the same step
KEYS = "keys"  # bucketed keys of a shuffle
