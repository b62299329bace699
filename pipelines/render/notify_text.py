"""What ``backfill notify`` prints: the dry run's tables and samples, a run's one-paragraph result.

Pure formatting of the run's manifest and the jobs summary (counts by
channel, region and send day; a few rendered samples per template, with masked
numbers only). Nothing here reads or writes files.
"""

from __future__ import annotations

__all__ = ["format_dry_run", "format_result", "format_receipts"]


def _n(value) -> str:
    return f"{int(value):,}"


def _lines(counts: dict) -> str:
    o = counts.get("outcomes", {})
    parts = [
        f"targeted {_n(counts.get('targeted', 0))}",
        f"registered since {_n(o.get('registered', 0))}",
        f"already sent {_n(o.get('already_sent', 0))}",
        f"recently notified {_n(o.get('recently_notified', 0))}",
        f"on do-not-SMS list {_n(counts.get('suppressed_lines', 0))}",
        f"invalid numbers {_n(o.get('invalid_number', 0))}",
        f"failed before {_n(o.get('sms_failed', 0) + o.get('call_failed', 0))}",
        f"channel not in wave {_n(o.get('not_in_wave', 0))}",
    ]
    return "lines: " + "; ".join(parts)


def _jobs(counts: dict) -> str:
    jobs = counts.get("jobs", {})
    fallback = counts.get("call_fallback", {})
    calls = f"{_n(jobs.get('call', 0))} calls"
    if sum(fallback.values()):
        calls += (
            f" ({_n(fallback.get('SMS_FAILED', 0))} after a failed SMS, {_n(fallback.get('SMS_SUPPRESSED', 0))} "
            "do-not-SMS)"
        )
    done = counts.get("announcements_already_sent", 0)
    announcements = f"{_n(jobs.get('announcement', 0))} announcements" + (f" ({_n(done)} sent before)" if done else "")
    return (
        f"jobs: {_n(jobs.get('sms', 0))} SMS, {calls}, {announcements}; "
        f"{_n(counts.get('to_announcement', 0))} lines reached by no SMS or call; "
        f"SMS segments {_n(counts.get('segments', 0))}, estimated cost {counts.get('cost', 0.0):,.2f}"
    )


def _variants(manifest: dict) -> list[str]:
    """The wave's A/B split, when it has one: each variant's weight and jobs by channel."""
    by = manifest["counts"].get("variants") or {}
    split = manifest["campaign"].get("variants") or []
    if not split:
        return []
    parts = [
        f"{v['name']} (weight {v['weight']:g}) {_n(by.get(v['name'], {}).get('sms', 0))} SMS, "
        f"{_n(by.get(v['name'], {}).get('call', 0))} calls"
        for v in split
    ]
    return ["variants: " + "; ".join(parts)]


def _table(header: list[str], rows: list[list], right: set[int]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]

    def fmt(row):
        return "  " + "  ".join(
            str(x).rjust(w) if i in right else str(x).ljust(w) for i, (x, w) in enumerate(zip(row, widths))
        )

    return [fmt(header)] + [fmt(r) for r in rows]


def format_dry_run(manifest: dict, summary: dict, show_regions: int = 20) -> str:
    c, counts = manifest["campaign"], manifest["counts"]
    out = [
        "DRY RUN: nothing written, nothing sent.",
        f"campaign {c['campaign_id']} wave {c['wave']} ({', '.join(c['channels'])}), first send day "
        f"{c['first_day']}, time zone {c['timezone']}, allowed {c['allowed_hours']}, locale {c['locale']}",
        _lines(counts),
        _jobs(counts),
        *_variants(manifest),
        "",
    ]
    rows = summary.get("rows", {})
    by_day: dict[tuple[str, str], list] = {}
    by_region: dict[str, dict] = {}
    for key, (jobs, segments, cost) in rows.items():
        channel, region, day = key.split("|")
        acc = by_day.setdefault((channel, day), [0, 0, 0.0])
        acc[0], acc[1], acc[2] = acc[0] + jobs, acc[1] + segments, acc[2] + cost
        by_region.setdefault(region, {}).setdefault((channel, day), [0, 0, 0.0])
        r = by_region[region][(channel, day)]
        r[0], r[1], r[2] = r[0] + jobs, r[1] + segments, r[2] + cost
    out.append("jobs by channel and send day:")
    out += _table(
        ["channel", "send day", "jobs", "segments", "cost"],
        [
            [ch, d, _n(v[0]), _n(v[1]) if ch == "sms" else "-", f"{v[2]:,.2f}" if ch == "sms" else "-"]
            for (ch, d), v in sorted(by_day.items())
        ],
        {2, 3, 4},
    )
    ranked = sorted(by_region, key=lambda r: (-sum(v[0] for v in by_region[r].values()), r))
    shown = ranked if show_regions <= 0 else ranked[:show_regions]
    out += [
        "",
        f"jobs by channel, region and send day ({_n(len(shown))} of {_n(len(ranked))} regions, most jobs first):",
    ]
    table = [
        [region, ch, d, _n(v[0]), _n(v[1]) if ch == "sms" else "-", f"{v[2]:,.2f}" if ch == "sms" else "-"]
        for region in shown
        for (ch, d), v in sorted(by_region[region].items())
    ]
    out += _table(["region", "channel", "send day", "jobs", "segments", "cost"], table, {3, 4, 5})
    if len(shown) < len(ranked):
        out.append(f"  ... {_n(len(ranked) - len(shown))} more regions (--show-regions 0 shows all)")
    out += ["", "samples (numbers masked):"]
    for channel, samples in sorted(summary.get("samples", {}).items()):
        for s in samples:
            who = s.get("msisdn_masked") or f"region {s.get('region')}"
            out.append(f"  [{channel}] {s['job_id'][:12]} {who}: {s.get('text') or s.get('script')}")
    return "\n".join(out)


def format_result(manifest: dict) -> str:
    c, counts = manifest["campaign"], manifest["counts"]
    where = manifest["outputs"].get("topic") or manifest["outputs"].get("jobs")
    handed = sum(counts.get("handed_over", {}).values())
    out = [
        f"notify {manifest['run_id']}: campaign {c['campaign_id']} wave {c['wave']}, first send day {c['first_day']}",
        "  " + _lines(counts),
        "  " + _jobs(counts),
        *("  " + v for v in _variants(manifest)),
        f"  handed over {_n(handed)} job(s) to {where} ({'balanced' if counts.get('balanced') else 'NOT BALANCED'})",
    ]
    publish = manifest.get("timings", {}).get("publish")
    if publish:
        out.append(
            f"  published {_n(publish['messages'])} in {publish['seconds']:.1f} s "
            f"({publish['messages_per_second']:,.0f}/s)"
        )
    if manifest.get("receipts"):
        out.append("  " + format_receipts(manifest["receipts"]))
    return "\n".join(out)


def format_receipts(r: dict) -> str:
    status = ", ".join(f"{k} {_n(v)}" for k, v in sorted(r.get("status", {}).items())) or "none"
    return (
        f"receipts: {_n(r['receipts_in'])} in -> {_n(r['recorded'])} recorded ({status}), "
        f"{_n(r['duplicates'])} duplicates, {_n(r['dead_letters'])} dead letters"
    )
