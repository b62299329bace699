"""The Beam job's daily merge: the previous base and vault read by line bucket vs through the shuffle.

``python -m bench.run daily_beam`` (and ``make bench-all``): the merge's Beam job, the engine of the
distributed runners, here on Beam's local runner with two worker processes (``--direct_num_workers 2
--direct_running_mode multi_processing``), over 200,000 lines (``--quick``: 20,000). A first merge by the
Beam job (its files cut by line bucket and marked), then the next day's merge over its base and vault with a
later day's events (one for every eighth line), alternating with the same merge given ``--shuffle-buckets``
as many buckets (every input through the shuffle, as the Beam job did before it wrote by bucket). Their
merged base files must be the same bytes. Reported, no target: on a cluster the runner's shuffle of the
whole base and vault is what reading by bucket saves, which a local runner only approximates.
"""

from __future__ import annotations

import os

from bench.bench_merge import NEXT_DAY, _digest
from bench.compare import Side, compare, output_folder
from bench.core import AS_OF, Check, Context, Section, checked, ensure_base, label, register
from bench.inputs import ensure_next_day, ensure_registrations, read_json
from bench.measure import measure, python_env

__all__ = ["bench_daily_beam"]

BEAM = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
BY_BUCKET, SHUFFLED = "Beam job, next day, read by bucket", "Beam job, next day, through the shuffle"


def _first(ctx: Context, lines: int, keys: str) -> str:
    """The first merge by the Beam job (the merge benchmark's registrations: half the lines needing one); its
    output folder."""
    base = ensure_base(ctx, f"base_{label(lines)}", lines)
    events = ensure_registrations(ctx, lines)
    out = ctx.work("daily_beam_first")
    command = [ctx.backfill, "merge", "--base", base, "--registrations", events, "--keys", keys, "--out", out]
    checked(measure([*command, "--as-of", AS_OF, *BEAM], env=python_env()), "the Beam job's first merge")
    return out


@register("daily_beam")
def bench_daily_beam(ctx: Context) -> Section:
    lines = ctx.lines(200_000)
    keys = os.path.join(ctx.work("daily_beam_keys"), "keys.json")
    checked(measure([ctx.backfill, "keys", "init", "--keys", keys], env=python_env()), "keys init")
    first = _first(ctx, lines, keys)
    buckets = read_json(os.path.join(first, "manifest.json"))["shuffle"]["buckets"]
    events = ensure_next_day(ctx, lines)

    def side(name: str, folder: str, extra: list[str]) -> Side:
        out = ctx.work(folder)
        command = [ctx.backfill, "merge", "--merged", first, "--registrations", events, "--keys", keys]
        command += ["--out", out, "--as-of", NEXT_DAY, *BEAM, *extra]
        return Side(
            name,
            command,
            output_folder(out),
            lambda m: {**read_json(os.path.join(out, "manifest.json")), "digest": _digest(os.path.join(out, "base"))},
        )

    sides = [
        side(BY_BUCKET, "daily_beam_by_bucket", []),
        side(SHUFFLED, "daily_beam_shuffled", ["--shuffle-buckets", str(buckets)]),
    ]
    stats = compare(sides, runs=ctx.runs, warmup=ctx.warmup, settle=not ctx.quick)
    direct, shuffled = stats[BY_BUCKET], stats[SHUFFLED]
    rows = direct.result["counts"]["base"]["rows_in"]
    same = direct.result["digest"] == shuffled.result["digest"]
    read = ", ".join(direct.result["shuffle"]["read_by_bucket"]) or "none"
    note = (
        f"Beam job on the local runner, 2 worker processes, {buckets} line buckets; read by bucket: {read}. "
        f"{rows / direct.seconds:,.0f} vs {rows / shuffled.seconds:,.0f} base lines/s, "
        f"{direct.cpu_seconds:,.1f} vs {shuffled.cpu_seconds:,.1f} CPU s: through the shuffle takes "
        f"{shuffled.seconds / direct.seconds:.2f}x the time; merged base files {'identical' if same else 'DIFFERENT'}."
    )
    table = [
        direct.row(f"the next day's Beam merge of {rows:,} lines, read by bucket", rows, "whole command"),
        shuffled.row(f"the same, every input through the shuffle (--shuffle-buckets {buckets})", rows, "whole command"),
    ]
    checks = [
        Check(
            "the Beam job's next-day base: read by bucket = through the shuffle", "yes" if same else "NO", "yes", same
        ),
        Check(
            "the Beam job read the base and vault by bucket",
            read,
            "base, vault_keys, vault_values",
            read == "base, vault_keys, vault_values",
        ),  # fmt: skip
    ]
    details = {"by_bucket": direct.results, "shuffled": shuffled.results}
    return Section(
        "daily_beam", "The Beam job's daily merge: read by bucket vs shuffle", table, checks, [note], details
    )
