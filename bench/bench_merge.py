"""The merge benchmark (``python -m bench.run merge``).

Input (issue 14): the 2,000,000-line base (``bench-data/base_2m.parquet``)
and registrations for half the lines its scan found needing one
(``bench-data/registrations_half_2m.parquet``, :func:`bench.inputs.ensure_registrations`:
each such line drawn once, seed 7, with COMPLETE identities of the line's
subscriber kind and the usual faults: 1 % bad timestamps, 0.5 % bad
channels, 1 % placeholder names, 0.5 % unknown lines, 2 % repeated events).

Four sides run alternating, whole processes, median of 3
(:func:`bench.compare.compare`):

* ``backfill merge`` with its defaults (in process, one worker process per CPU);
* the same with ``--workers 1`` (this process alone) and ``--workers 2``;
* the bare loop of the same cryptographic calls over the base's values
  (``python -m bench.crypto --bare``, :func:`bench.crypto.bare_crypto`).

Targets (issue 14): at least 150,000 base lines/s for the whole command
(defaults); within 2x the bare loop's process (defaults); two worker
processes at least 1.5x faster than one (``--workers 2`` vs ``--workers 1``).

That is a campaign's first merge: a raw base, every line's identity sealed.
Then, reported beside it (no target): the next day's merge with its
defaults, over the first one's output (``--merged``: its merged base and
vault) with a later day's events (:func:`bench.inputs.ensure_next_day`, one
for every eighth line): what a campaign's daily merge costs, where only the
lines that register are sealed and the others' vault rows are carried;
alternating with the same merge given ``--shuffle-buckets`` (every input
through the shuffle, as before the previous base and vault were read by
line bucket), whose merged base files must be the same bytes.
Median of 3 after one warm-up, then one run for its memory.
"""

from __future__ import annotations

import hashlib
import json
import os

from bench.compare import Side, compare, output_folder, rate_check, ratio_check
from bench.core import AS_OF, Check, Context, Row, Section, checked, ensure_base, label, register
from bench.events import EVENTS, make_events
from bench.inputs import ensure_next_day, ensure_registrations, read_json
from bench.measure import measure, python_env

__all__ = ["bench_merge", "make_events", "EVENTS", "TARGET_RATE", "TARGET_VS_BARE", "TARGET_TWO_WORKERS"]

TARGET_RATE = 150_000  # base lines/s, whole command
TARGET_VS_BARE = 2.0
TARGET_TWO_WORKERS = 1.5
DEFAULT, ONE, TWO, BARE = "merge, defaults", "merge, 1 worker", "merge, 2 workers", "bare crypto loop"
DAILY, NEXT_DAY = "merge, the next day", "2026-12-01"
SHUFFLED = "merge, the next day, through the shuffle"
FIRST_OUT = "merge_default"  # the defaults side's output folder: the next day merges over it


def _sides(ctx: Context, base: str, events: str, keys: str) -> list[Side]:
    def merge(name: str, folder: str, extra: list[str]) -> Side:
        out = ctx.work(folder)
        command = [ctx.backfill, "merge", "--base", base, "--registrations", events, "--keys", keys]
        command += ["--out", out, "--as-of", AS_OF, *extra]
        return Side(name, command, output_folder(out), lambda m: read_json(os.path.join(out, "manifest.json")))

    bare = Side(
        BARE,
        [ctx.python, "-m", "bench.crypto", "--bare", base],
        after=lambda m: json.loads(m.output.strip().splitlines()[-1]),
    )
    sides = [merge(DEFAULT, FIRST_OUT, []), merge(ONE, "merge_1w", ["--workers", "1"])]
    return sides + [merge(TWO, "merge_2w", ["--workers", "2"]), bare]


def _checks(stats: dict, rows: int) -> list[Check]:
    default, one, two, bare = stats[DEFAULT], stats[ONE], stats[TWO], stats[BARE]
    runs = (default, one, two, stats[DAILY], stats[SHUFFLED])
    balanced = all(mf["counts"][s]["balanced"] for st in runs for mf in st.results for s in ("base", "events"))
    return [
        rate_check("merge, base lines/s, whole command", default, rows, "lines", TARGET_RATE, step="merge_rate"),
        ratio_check(
            "merge / bare crypto loop, whole processes", default, bare, at_most=TARGET_VS_BARE, step="merge_bare"
        ),
        ratio_check("merge, one worker / two workers", one, two, at_least=TARGET_TWO_WORKERS, step="workers_merge"),
        Check("counts balance (base and events, every run)", "yes" if balanced else "NO", "yes", balanced),
    ]


def _notes(stats: dict, manifest: dict, events: str) -> list[str]:
    default, one, two, bare = stats[DEFAULT], stats[ONE], stats[TWO], stats[BARE]
    loop = bare.result
    vault = manifest["counts"].get("vault", {})
    return [
        f"input: {os.path.basename(events)}, {manifest['counts']['events']['rows_in']:,} events: registrations for "
        "half the lines the scan found needing one (each drawn once), with 1 % bad timestamps, 0.5 % bad channels, "
        "1 % placeholder names, 0.5 % unknown lines and 2 % repeated events.",
        f"CPU: the merge used {default.cpu_seconds:,.1f} CPU s (defaults), {one.cpu_seconds:,.1f} (1 worker) "
        f"and {two.cpu_seconds:,.1f} (2 workers); "
        f"the bare loop's process {bare.cpu_seconds:,.1f}, of which the loop alone {loop['cpu_seconds']:,.1f} "
        f"(HMAC {loop['hmac_seconds']:.1f} s, AES-GCM {loop['aead_seconds']:.1f} s; the rest reads the values).",
        f"the merge sealed {vault.get('values_sealed', 0):,} values of {vault.get('lines_sealed', 0):,} lines; "
        f"the bare loop seals {loop['values_sealed']:,} values of {loop['lines']:,} lines and MACs "
        f"{loop['values_tokenized']:,} values.",
        f"events: {json.dumps(manifest['counts']['events'], ensure_ascii=False)}",
    ]


def _daily(ctx: Context, lines: int, keys: str, buckets: int) -> dict:
    """The next day's merge over the first merge's output (the defaults side's folder, left by its last run):
    with its defaults (the previous base and vault read by line bucket) and, alternating, the same merge with
    ``--shuffle-buckets`` as many buckets (every input through the shuffle, as before the marks)."""
    events = ensure_next_day(ctx, lines)
    first = os.path.join(ctx.out_dir, "work", FIRST_OUT)  # not ctx.work: that would empty it

    def side(name: str, folder: str, extra: list[str]) -> Side:
        out = ctx.work(folder)
        command = [ctx.backfill, "merge", "--merged", first, "--registrations", events]
        command += ["--keys", keys, "--out", out, "--as-of", NEXT_DAY, *extra]
        return Side(
            name,
            command,
            output_folder(out),
            lambda m: {
                **read_json(os.path.join(out, "manifest.json")),
                "base_digest": _digest(os.path.join(out, "base")),
            },
        )

    sides = [
        side(DAILY, "merge_daily", []),
        side(SHUFFLED, "merge_daily_shuffled", ["--shuffle-buckets", str(buckets)]),
    ]
    return compare(sides, runs=ctx.runs, warmup=ctx.warmup, settle=not ctx.quick)


def _digest(folder: str) -> str:
    """sha256 over the names and bytes of a folder's files, in name order."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        digest.update(name.encode())
        with open(os.path.join(folder, name), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _daily_row(daily) -> tuple[Row, str]:
    """The next day's row, and a note with its rate (reported, no target)."""
    manifest = daily.result
    counts, vault = manifest["counts"], manifest["counts"].get("vault", {})
    rows, events = counts["base"]["rows_in"], counts["events"]["rows_in"]
    what = f"the next day's merge: {rows:,}-line merged base and vault, {events:,} new events"
    note = (
        f"the next day's merge (no target): {rows / daily.seconds:,.0f} base lines/s ({daily.seconds:,.1f} s, "
        f"{daily.cpu_seconds:,.1f} CPU s, median of {daily.n}); {counts['events'].get('applied', 0):,} events "
        f"applied, {vault.get('lines_sealed', 0):,} lines sealed ({vault.get('values_sealed', 0):,} values), "
        f"{vault.get('keys_copied', 0):,} lines' vault rows carried ({vault.get('values_copied', 0):,} value rows); "
        f"read by line bucket without a shuffle: {', '.join(manifest['shuffle'].get('read_by_bucket', [])) or 'none'}."
    )
    return daily.row(what, rows, "whole command"), note


@register("merge")
def bench_merge(ctx: Context) -> Section:
    lines = ctx.lines(2_000_000)
    base = ensure_base(ctx, f"base_{label(lines)}", lines)
    events = ensure_registrations(ctx, lines)
    keys = os.path.join(ctx.work("merge_keys"), "keys.json")
    checked(measure([ctx.backfill, "keys", "init", "--keys", keys], env=python_env()), "keys init")
    stats = compare(_sides(ctx, base, events, keys), runs=ctx.runs, warmup=ctx.warmup, settle=not ctx.quick)
    manifest = stats[DEFAULT].result
    days = _daily(ctx, lines, keys, manifest["shuffle"]["buckets"])
    daily, shuffled = days[DAILY], days[SHUFFLED]
    rows = manifest["counts"]["base"]["rows_in"]
    size = f"{rows:,} lines"
    daily_row, daily_note = _daily_row(daily)
    day_rows, buckets = daily.result["counts"]["base"]["rows_in"], manifest["shuffle"]["buckets"]
    shuffled_row = shuffled.row(
        f"the same, every input through the shuffle (--shuffle-buckets {buckets})", day_rows, "whole command"
    )
    same = daily.result["base_digest"] == shuffled.result["base_digest"]
    daily_note += (
        f" Through the shuffle (--shuffle-buckets {buckets}, alternating): "
        f"{shuffled.seconds:,.1f} s, {shuffled.cpu_seconds:,.1f} CPU s, {shuffled.seconds / daily.seconds:.2f}x "
        f"the time read by bucket; merged base files {'identical' if same else 'DIFFERENT'}."
    )
    table: list[Row] = [
        stats[DEFAULT].row(f"merge {size}, defaults", rows, "whole command"),
        stats[ONE].row(f"merge {size}, 1 worker process", rows, "whole command"),
        stats[TWO].row(f"merge {size}, 2 worker processes", rows, "whole command"),
        stats[BARE].row(f"bare crypto loop over {size}", stats[BARE].result["lines"], "whole process"),
        daily_row,
        shuffled_row,
    ]
    details = {"merge": manifest, "merge_1_worker": stats[ONE].result, "merge_2_workers": stats[TWO].result}
    details["bare"], details["next_day"], details["next_day_shuffled"] = (
        stats[BARE].results,
        daily.results,
        shuffled.results,
    )
    notes = _notes(stats, manifest, events) + [daily_note]
    checks = _checks({**stats, **days}, rows) + [
        Check("the next day's merged base: read by bucket = through the shuffle", "yes" if same else "NO", "yes", same)
    ]
    return Section("merge", "Merge: speed", table, checks, notes, details)
