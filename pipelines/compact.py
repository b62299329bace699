"""backfill compact: fold the streaming merge's deltas into a new base snapshot.

    backfill compact --base base.parquet --deltas out/stream/deltas --keys secure/keys.json --out out/base-1201 \\
        [--vault DIR] [--as-of 2026-12-01] [--policy FILE] [--encoding gb18030] [--shuffle-buckets N] \\
        [--spill auto|on|off] [Beam flags...]

``--base`` is the base the streaming merge ran on: a raw base (its lines are
tokenized and sealed as the batch merge does) or a previous merge's
``OUT/base`` (with its ``--vault``; ``--merged OUT`` says both). ``--deltas`` is the streaming merge's
``OUT/deltas`` (or its ``OUT``); only committed windows count. Per line the
latest registration wins (``registered_at``, a tie to the larger event_id)
over the base and every delta, so the result is the batch merge's base for
the same events. Writes ``OUT/base/`` (Parquet, schemas/merged_line.avsc),
``OUT/vault/`` (the base's vault rows, with a registered line's rows taken
from its winning window), ``OUT/dead_letter/`` (base rows that could not be
used) and ``OUT/manifest.json`` (base rows in = lines out + dead letters;
delta rows read = lines registered + older ones), written by the job itself
once the balances hold.

A Beam pipeline (``transforms/merge/compact.py``): one bucketed shuffle by
line brings each line's base row, vault rows and delta rows together, so no
process holds the base. Run it on a quiet moment or on a copy: windows
committed while it reads are left for the next compaction.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.common import ArgumentParser, add_batch_flags, run_main, runner_name, write_dead_letters
from pipelines.compact_plan import Job, inputs, prepare
from pipelines.flags import add_merged, add_progress_flag
from pipelines.io.deltas import ReadWindows
from pipelines.io.finalize import Finalize
from pipelines.io.bucket_sink import WriteLineBuckets
from pipelines.io.line_buckets import BucketFiles
from pipelines.io.merged_beam import read_base_and_vault
from pipelines.io.publish import publishing
from pipelines.keys_session import register_vault
from pipelines.manifest import keys_block, policy_block, read_json
from pipelines.progress import NO_PROGRESS, progress
from pipelines.merge import ROWS_PER_BUCKET
from transforms.core.deadletter import DeadLetterContext
from transforms.core.shuffle import spill_area
from transforms.merge.compact import CompactDeltas

__all__ = ["parser", "build_pipeline", "summarise", "run", "main", "format_summary", "OUTPUTS"]

log = logging.getLogger("backfill.compact")
OUTPUTS = ("base", "vault", "dead_letter", "manifest.json")  # what a compaction writes into OUT


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill compact", description=__doc__.splitlines()[0])
    add_merged(
        p,
        base_help="the base the streaming merge ran on (raw, or merged with --vault); repeatable",
        vault_help="the vault of a merged --base",
    )
    p.add_argument("--deltas", required=True, help="the streaming merge's OUT/deltas (or its OUT)")
    p.add_argument(
        "--base-changed",
        action="store_true",
        help="the base is another export of the subscriber base than the streaming merge ran on (a newer one): "
        "go on with a warning instead of refusing",
    )
    p.add_argument("--keys", required=True, help="keyset file (mode 0600)")
    p.add_argument("--out", required=True, help="output folder")
    add_batch_flags(p)
    add_progress_flag(p)
    for action in p._actions:
        if "--as-of" in action.option_strings:
            action.help = "date the checks are made against (default: the streaming merge's, from its manifest)"
    return p


def build_pipeline(p: beam.Pipeline, job: Job, ctx: DeadLetterContext, spill_dir: str | None, progress=NO_PROGRESS):
    """Wire the compaction's reads and its transform; returns the MergeOutputs (exposed for tests)."""
    args = job.args
    inputs_ = read_base_and_vault(
        p, job.kind, job.base_splits, job.vault, job.direct, ctx, args.encoding, args.batch_size
    )
    if "base" in inputs_:
        progress.count(inputs_["base"], "read")
    windows = p | "ReadWindows" >> ReadWindows(job.windows, job.keyset.keyset_id, args.deltas, args.batch_size)
    inputs_.update(
        delta=windows["delta"],
        delta_keys=windows["delta_keys"],
        delta_values=windows["delta_values"],
        deltas_counts=windows["counts"],
    )
    files = BucketFiles(job.direct, args.batch_size) if job.direct else None
    return inputs_ | "CompactDeltas" >> CompactDeltas(
        job.policy, job.as_of, ctx, args.keys, job.n_buckets, base_kind=job.kind, spill_dir=spill_dir, files=files
    )


def summarise(counts: dict) -> tuple[dict, list[str]]:
    """The manifest's counts block and the balances that fail (checked in the job: pipelines/io/finalize.py)."""
    base, deltas, vault = counts.get("base", {}), counts.get("deltas", {}), counts.get("vault", {})
    dead = base.get("dead_letters", {})
    rows_in = base.get("rows_in", 0) + dead.get("ROW_MALFORMED", 0)  # the reader's dead rows never reach a bucket
    lines_out, dead_letters = base.get("rows_out", 0), sum(dead.values())
    delta_rows = deltas.get("rows_read", 0)
    registered, older = deltas.get("lines_registered", 0), deltas.get("superseded_or_unknown", 0)
    block = {
        "base": {
            "rows_in": rows_in,
            "lines_out": lines_out,
            "dead_letters": dead_letters,
            "dead_letter_reasons": dict(sorted(dead.items())),
            "balanced": rows_in == lines_out + dead_letters,
        },
        "deltas": {
            "windows": deltas.get("windows", 0),
            "delta_rows": delta_rows,
            "lines_registered": registered,
            "superseded_or_unknown": older,
            "balanced": delta_rows == registered + older == deltas.get("delta_rows", 0),
        },
        "vault": {k: vault.get(k, 0) for k in ("keys", "values", "lines_sealed", "values_sealed")},
    }
    problems = []
    if not block["base"]["balanced"]:
        problems.append(
            f"compact counts do not balance for the base ({rows_in:,} rows in, {lines_out:,} lines out, "
            f"{dead_letters:,} dead letters)"
        )
    if not block["deltas"]["balanced"]:
        problems.append(
            f"compact counts do not balance for the deltas ({delta_rows:,} rows read, {registered:,} lines "
            f"registered, {older:,} older or unknown)"
        )
    return block, problems


def _manifest(job: Job) -> dict:
    """What the manifest says that is known before the run; the job adds the counts (Finalize)."""
    return {
        "step": "compact",
        "run_id": job.run_id,
        "started": job.started,
        "as_of": job.as_of.isoformat(),
        "policy": policy_block(job.policy),
        "keys": keys_block(job.keyset),
        "inputs": {
            "base": job.base_info.files,
            "base_kind": job.kind,
            "vault": job.args.vault,
            "deltas": job.deltas,
            "windows": [FileSystems.split(w)[1] for w in job.windows],
        },
        "outputs": {name: FileSystems.join(job.out, name) for name in ("base", "vault", "dead_letter")},
        "runner": runner_name(job.options),
        "shuffle": {"buckets": job.n_buckets, "spill": job.spill, "read_by_bucket": sorted(job.direct)},
        "timings": {"plan_seconds": round(time.time() - job.timer.started, 3)},
    }


def _run_pipeline(job: Job, pub) -> None:
    """Compact; write base/, vault/, dead_letter/ and (balances checked in the job) manifest.json into the
    staged folder."""
    ctx, stage = DeadLetterContext("compact", job.run_id, job.started), pub.stage
    # The spill carries raw rows: sealed under a per-run key, in a private local folder (0700) that a later
    # run removes if this one dies (transforms/core/shuffle.py), never under OUT.
    phases = dict.fromkeys(
        ("compacted",) if "base" in job.direct else ("read", "compacted"), job.base_info.estimated_rows
    )
    with (
        spill_area("compact") if job.spill else contextlib.nullcontext() as spill_dir,
        progress("compact", job.run_id, phases, job.options, job.args.progress_seconds) as prog,
    ):
        with beam.Pipeline(options=job.options) as p:
            outputs = build_pipeline(p, job, ctx, spill_dir, prog)
            prog.count(outputs.base, "compacted")
            written = [
                outputs.buckets | "WriteBuckets" >> WriteLineBuckets(stage, job.n_buckets),
                write_dead_letters(outputs.dead_letter, FileSystems.join(stage, "dead_letter", "part")),
            ]
            outputs.counts | "Finalize" >> Finalize(
                pub, _manifest(job), summarise, after=written, started=job.timer.started
            )


def run(argv=None) -> dict:
    """Run a compaction; returns its manifest (written by the job).

    The run writes beside OUT and switches its output in at the end (pipelines/io/publish.py): the previous
    output stays whole and readable until then, and stays as it was if the run fails, is killed or does not
    balance."""
    job = prepare(argv, parser(), ROWS_PER_BUCKET)
    log.info(
        "compact %s: %s base (%s file(s), ~%s rows), %s window(s), %s bucket(s)%s, runner %s, as of %s",
        job.run_id,
        job.kind,
        f"{len(job.base_info.files):,}",
        f"{job.base_info.estimated_rows:,}",
        f"{len(job.windows):,}",
        f"{job.n_buckets:,}",
        f" ({', '.join(sorted(job.direct))} read by bucket, no shuffle)" if job.direct else "",
        runner_name(job.options),
        job.as_of,
    )
    # Known to the keyset before it exists: a shred re-wraps its data keys rather than retire them under it.
    register_vault(job.args.keys, FileSystems.join(job.out, "vault"), by="compact", run_id=job.run_id)
    with publishing(job.out, "compact", job.run_id, inputs=inputs(job.args, job.deltas), produces=OUTPUTS) as pub:
        _run_pipeline(job, pub)
        manifest = read_json(pub.written("manifest.json"))  # written by the job, balances checked there
    return manifest


def format_summary(m: dict) -> str:
    b, d = m["counts"]["base"], m["counts"]["deltas"]
    return (
        f"compact {m['run_id']}: base {b['rows_in']:,} rows in -> {b['lines_out']:,} lines + "
        f"{b['dead_letters']:,} dead letters ({'balanced' if b['balanced'] else 'NOT BALANCED'})\n"
        f"  {d['windows']:,} window(s), {d['delta_rows']:,} delta rows -> {d['lines_registered']:,} lines "
        f"registered ({d['superseded_or_unknown']:,} older than the line's registration or for a line not in this base)"
    )


def main(argv=None) -> int:
    def body(argv):
        print(format_summary(run(argv)))
        return 0

    return run_main("backfill compact", body, argv)


if __name__ == "__main__":
    sys.exit(main())
