"""The scan's data quality (the report's ``scan_quality`` table), as Great Expectations' Data Docs show a run.

    table = scan_quality(summary)     # summary: the scan's summary.json (its own counts, made in its job)

One row per (kind, code): the classified lines per **identity status**, the
lines per **reason** (a line counts under each of its reasons), per
cross-record **flag**, lines needing registration or review (**needs**), and
the rows the scan could not classify per **dead-letter reason**; with each
count's share of the classified lines (dead letters: of the rows read). The
counts are the scan's, made once by its job; nothing here reads a line.
"""

from __future__ import annotations

from typing import Mapping

import pyarrow as pa

__all__ = ["scan_quality", "QUALITY_SCHEMA", "KINDS"]

KINDS = ("identity_status", "reason", "flag", "needs", "dead_letter_reason")
QUALITY_SCHEMA = pa.schema(
    [("kind", pa.string()), ("code", pa.string()), ("lines", pa.int64()), ("share", pa.float64())]
)


def _rows(kind: str, counts: Mapping[str, int], total: int, order_by_count: bool = True) -> list[dict]:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if order_by_count else list(counts.items())
    return [
        {"kind": kind, "code": str(code), "lines": int(n), "share": round(n / total, 6) if total else None}
        for code, n in items
    ]


def scan_quality(summary: Mapping) -> pa.Table:
    """The data-quality rows of a scan's summary (empty when the summary is missing)."""
    classified, rows_in = int(summary.get("classified", 0)), int(summary.get("rows_in", 0))
    needs = {
        "needs_registration": summary.get("needs_registration", 0),
        "needs_review": summary.get("needs_review", 0),
    }
    rows = [
        *_rows("identity_status", summary.get("identity_status", {}), classified, order_by_count=False),
        *_rows("reason", summary.get("reasons", {}), classified),
        *_rows("flag", summary.get("flags", {}), classified),
        *_rows("needs", needs, classified, order_by_count=False),
        *_rows("dead_letter_reason", summary.get("dead_letter_reasons", {}), rows_in),
    ]
    return pa.Table.from_pylist(rows, schema=QUALITY_SCHEMA)
