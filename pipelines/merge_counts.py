"""The counts of ``backfill merge``: its summary, and the manifest's counts block with the balances that fail
(checked in the job: pipelines/io/finalize.py). Used by :mod:`pipelines.merge`."""

from __future__ import annotations

__all__ = ["summarise", "manifest_counts"]


def summarise(counts: dict, header: dict) -> dict:
    """The run's summary from the pipeline's counts: both balances computed."""
    base, events = counts.get("base", {}), counts.get("events", {})
    base_dead, event_dead = base.get("dead_letters", {}), events.get("dead_letters", {})
    base_in = base.get("rows_in", 0) + base_dead.get("ROW_MALFORMED", 0)
    events_in = events.get("rows_in", 0) + event_dead.get("ROW_MALFORMED", 0)
    out = {k: events.get(k, 0) for k in ("applied", "superseded", "duplicates")}
    return {
        **header,
        "base": {
            "rows_in": base_in,
            "lines_out": base.get("rows_out", 0),
            "dead_letters": sum(base_dead.values()),
            "dead_letter_reasons": dict(sorted(base_dead.items())),
            "balanced": base_in == base.get("rows_out", 0) + sum(base_dead.values()),
        },
        "events": {
            "rows_in": events_in,
            **out,
            "dead_letters": sum(event_dead.values()),
            "dead_letter_reasons": dict(sorted(event_dead.items())),
            "balanced": events_in == sum(out.values()) + sum(event_dead.values()),
        },
        "lines": counts.get("lines", {}),
        "vault": counts.get("vault", {}),
    }


def manifest_counts(counts: dict) -> tuple[dict, list[str]]:
    """The manifest's counts block and the balances that fail (checked in the job: pipelines/io/finalize.py)."""
    summary = summarise(counts, {})
    problems = [
        f"merge counts do not balance for the {side} ({summary[side]['rows_in']:,} in, "
        f"{summary[side]['dead_letters']:,} dead letters)"
        for side in ("base", "events")
        if not summary[side]["balanced"]
    ]
    return {k: summary[k] for k in ("base", "events", "lines", "vault")}, problems
