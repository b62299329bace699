"""What a scan reports from its counts: summary.json, the manifest's counts block, the printed summary.

    summary = scan_summary(counts, header)        # summary.json (write_summary writes it)
    block, problems = manifest_counts(counts)     # the manifest's counts; problems when it does not balance
    print(format_summary(summary))

Beam-free: the Beam job (``pipelines/scan.py``) and the in-process scan
(``pipelines/scan_local.py``) share them; ``pipelines.scan`` re-exports them.
"""

from __future__ import annotations

from pipelines.io.planning import InputInfo
from pipelines.manifest import write_json

__all__ = ["scan_summary", "write_summary", "manifest_counts", "format_summary"]


def manifest_counts(counts: dict) -> tuple[dict, list[str]]:
    """The manifest's counts block and the balance that fails (checked in the job: pipelines/io/finalize.py)."""
    summary = scan_summary(counts, {})
    block = {k: summary[k] for k in ("rows_in", "classified", "dead_letters", "dead_letter_reasons", "balanced")}
    problems = (
        []
        if summary["balanced"]
        else [
            f"rows in ({summary['rows_in']:,}) != classified ({summary['classified']:,}) + dead letters "
            f"({summary['dead_letters']:,})"
        ]
    )
    return block, problems


def write_summary(counts: dict, path: str, header: dict, info: InputInfo | None = None) -> None:
    write_json(path, scan_summary(counts, header, info))


def scan_summary(counts: dict, header: dict, info: InputInfo | None = None) -> dict:
    """The run's summary.json from the pipeline's counts."""
    if info is not None:  # planned inside the pipeline (--estimated-rows): the columns are known only now
        header = {
            **header,
            "ignored_columns": info.ignored_columns,
            "missing_identity_columns": info.missing_identity_columns,
        }
    malformed = counts.get("dead_letter_reasons", {}).get("ROW_MALFORMED", 0)
    rows_in = counts.get("rows_in", 0) + malformed
    classified = counts.get("classified", 0)
    dead = counts.get("dead_letters", 0)
    summary = {
        **header,
        "rows_in": rows_in,
        "classified": classified,
        "dead_letters": dead,
        "balanced": rows_in == classified + dead,
        "dead_letter_reasons": counts.get("dead_letter_reasons", {}),
        "identity_status": {
            k: counts.get("identity_status", {}).get(k, 0) for k in ("COMPLETE", "MISSING", "INCOMPLETE", "INVALID")
        },
        "needs_registration": counts.get("needs_registration", 0),
        "needs_review": counts.get("needs_review", 0),
        "reasons": dict(sorted(counts.get("reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))),
        "flags": counts.get("flags", {}),
        "line_type": counts.get("line_type", {}),
        "subscriber_kind": counts.get("subscriber_kind", {}),
        "status": counts.get("status", {}),
    }
    return summary


def format_summary(summary: dict) -> str:
    status = summary["identity_status"]
    total = max(summary["classified"], 1)
    lines = [
        f"scan {summary['run_id']}: {summary['rows_in']:,} rows in -> {summary['classified']:,} classified + "
        f"{summary['dead_letters']:,} dead letters ({'balanced' if summary['balanced'] else 'NOT BALANCED'})",
        "  identity: " + ", ".join(f"{k} {v:,} ({100 * v / total:.1f}%)" for k, v in status.items()),
        f"  needs registration {summary['needs_registration']:,}; needs review {summary['needs_review']:,}",
    ]
    top = list(summary["reasons"].items())[:5]
    if top:
        lines.append("  top reasons: " + ", ".join(f"{k} {v:,}" for k, v in top))
    if summary["dead_letter_reasons"]:
        reasons = sorted(summary["dead_letter_reasons"].items())
        lines.append("  dead letters: " + ", ".join(f"{k} {v:,}" for k, v in reasons))
    return "\n".join(lines)
