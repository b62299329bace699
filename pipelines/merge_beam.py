"""The Beam job of ``backfill merge``: the pipeline built and run (a remote runner, Beam's local worker
options, ``--spill off``); on a local runner otherwise the merge runs in process (``pipelines/merge_local.py``).

    run_beam(job, pub, ctx, header, manifest)    # from pipelines.merge
    outputs = build_pipeline(p, ...)             # exposed for tests
"""

from __future__ import annotations

import contextlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.common import write_dead_letters
from pipelines.io.base_files import ReadRegistrationEvents
from pipelines.io.finalize import Finalize
from pipelines.io.bucket_sink import WriteLineBuckets
from pipelines.io.line_buckets import BucketFiles
from pipelines.io.merged_beam import read_base_and_vault
from pipelines.manifest import write_json
from pipelines.merge_counts import manifest_counts, summarise
from pipelines.progress import NO_PROGRESS, progress
from transforms.core.deadletter import DeadLetterContext
from transforms.core.shuffle import spill_area
from transforms.merge.composite import MergeCompletedRegistrations

__all__ = ["build_pipeline", "run_beam"]


def build_pipeline(
    p: beam.Pipeline,
    *,
    base_splits,
    kind,
    event_splits,
    vault,
    policy,
    as_of,
    ctx,
    keys_path,
    n_buckets,
    spill_dir,
    encoding,
    batch_size,
    direct=None,
    progress=NO_PROGRESS,
):
    """Wire the merge; returns the MergeOutputs (exposed for tests). ``direct``: the inputs already cut by
    line bucket (``{table: {bucket: [Shard]}}``, ``pipelines/merge_plan.py`` ``plan_buckets``)."""
    files = BucketFiles(direct, batch_size) if direct else None  # read by each bucket's own step, not here
    inputs = read_base_and_vault(p, kind, base_splits, vault, direct or {}, ctx, encoding, batch_size)
    if "base" in inputs:
        progress.count(inputs["base"], "read")
    events = p | "ReadEvents" >> ReadRegistrationEvents(event_splits, ctx, encoding=encoding, batch_size=batch_size)
    inputs.update(events=events.raw, events_dead_letter=events.dead_letter)
    return inputs | "MergeCompletedRegistrations" >> MergeCompletedRegistrations(
        policy, as_of, ctx, keys_path, n_buckets, base_kind=kind, spill_dir=spill_dir, files=files
    )


def run_beam(job, pub, ctx: DeadLetterContext, header: dict, manifest: dict) -> None:
    """The Beam job: base/, vault/, dead_letter/, summary.json and, its balances checked in the job, the manifest."""
    out, summary_path = job.stage, job.summary_path
    # The spill carries raw rows and events: sealed under a per-run key, in a private local folder (0700)
    # that a later run removes if this one dies (transforms/core/shuffle.py), never under OUT.
    # a base read by each bucket's own step (job.direct) has no read phase of its own
    phases = dict.fromkeys(("merged",) if "base" in job.direct else ("read", "merged"), job.base_info.estimated_rows)
    with (
        spill_area("merge") if job.spill else contextlib.nullcontext() as spill_dir,
        progress("merge", job.run_id, phases, job.options, job.args.progress_seconds) as prog,
    ):
        with beam.Pipeline(options=job.options) as p:
            outputs = build_pipeline(
                p,
                base_splits=job.base_splits,
                kind=job.kind,
                event_splits=job.event_splits,
                vault=job.vault,
                policy=job.policy,
                as_of=job.as_of,
                ctx=ctx,
                keys_path=job.args.keys,
                n_buckets=job.n_buckets,
                spill_dir=spill_dir,
                encoding=job.args.encoding,
                batch_size=job.args.batch_size,
                direct=job.direct,
                progress=prog,
            )
            prog.count(outputs.base, "merged")
            written = [
                outputs.buckets | "WriteBuckets" >> WriteLineBuckets(out, job.n_buckets),
                write_dead_letters(outputs.dead_letter, FileSystems.join(out, "dead_letter", "part")),
                outputs.counts | "WriteSummary" >> beam.Map(lambda c: write_json(summary_path, summarise(c, header))),
            ]
            outputs.counts | "Finalize" >> Finalize(
                pub, manifest, manifest_counts, after=written, started=job.timer.started
            )
