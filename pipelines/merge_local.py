"""The batch merge on this machine without Beam: the Beam job's steps as tasks of a pool of worker processes.

    counts = run_in_process(job, ctx, workers=2, every=30)

``backfill merge`` on a local runner runs here unless told otherwise (Beam's
local worker options, ``--spill off`` or a remote runner take the Beam job,
``pipelines/merge.py``). The passes are the job's shuffles, in order, each a
set of tasks (``pipelines/merge_tasks.py``) run by ``workers`` processes
forked from this one (``--workers``; 1: this process runs them):

1. every base split, event split and previous vault shard is read (events
   checked, with their body digests) and spilled, a part per bucket (sealed,
   in a private folder: ``transforms/core/spill_files.py``); but a previous
   merge's base and vault tables already cut by line bucket (this engine's
   own outputs: ``pipelines/io/line_buckets.py``) are not: bucket B's task of
   pass 4 (and 3) reads their file B itself;
2. each event_id bucket sends the first copy of each id on, and finds the
   contested ids (two bodies or more); a copy of an id that a line of a
   previous merged base carries, on another line, is EVENT_ID_CONFLICT (those
   ids were read in pass 1: two columns of each base split, by event_id bucket);
3. only when some id is contested: each line bucket judges its contested
   copies against their lines, and each event_id bucket decides who takes
   each contested id;
4. each line bucket is merged (``merge_bucket``: tokens, masks, the vault
   sealed) and written: its file of the merged base, its shard of each vault
   table, its dead letters.

This process holds references to spilled parts, never rows; a worker holds
one split or one bucket at a time, so memory stays flat in the base's size.
Each worker process loads the keyset from its path once (the pool's
initializer), as the Beam DoFns do in ``setup()``. The counts are added up
here and checked (``pipelines/io/finish.py``) before anything is published.
"""

from __future__ import annotations


from pipelines.merge_tasks import Settings, event_task, merge_task, read_task, start_worker, take_task, verdict_task
from pipelines.io.ranges import split_large_files
from pipelines.io.task_files import empty_dead_letters
from pipelines.progress_text import InProcessProgress
from pipelines.task_pool import TaskPool, by_bucket
from transforms.core.counts import merge_counts
from transforms.core.spill_folders import spill_area

__all__ = ["run_in_process"]


def _sources(pool: TaskPool, job) -> list[tuple]:
    """Every read task's (kind, index, source): event splits (a large CSV or Avro file cut into byte ranges,
    each a split: ``pipelines/io/ranges.py``), base splits, the previous vault's shards.

    The event splits go first: an event split costs about three times a base split of as many rows (every
    event checked, its body digested) and is often one file in one piece; started last, it would leave the
    other workers idle until it ends (2M base + 343k events, two workers: the read pass ends about half a
    second sooner)."""
    encoding = job.args.encoding
    events = split_large_files(job.event_splits, encoding, pool.run)
    sources = [("events", i, split) for i, split in enumerate(events)]
    if "base" not in job.direct:
        base = split_large_files(job.base_splits, encoding, pool.run)
        sources += [("base", i, split) for i, split in enumerate(base)]
    if job.kind == "merged":  # the event ids its lines carry, by event_id bucket (a read of two columns)
        sources += [("held", i, split) for i, split in enumerate(job.base_splits)]
    for kind, table in (("vault_keys", "keys"), ("vault_values", "values")):
        if kind not in job.direct:
            sources += [(kind, i, path) for i, path in enumerate((job.vault or {}).get(table, []))]
    return sources


def _contested(pool: TaskPool, contested: dict, base: dict) -> tuple[list, dict]:
    """Pass 3: the contested copies judged by line bucket, then taken by event_id bucket; (results, takers)."""
    if not contested:
        return [], {}
    judged = pool.run(verdict_task, ((b, contested[b], base.get(b, [])) for b in sorted(contested)))
    by_event = by_bucket(pair for refs in judged for pair in refs)
    taken = pool.run(take_task, ((b, by_event[b]) for b in sorted(by_event)))
    return taken, by_bucket(pair for t in taken for pair in t["takers"])


def _passes(pool: TaskPool, job, prog: InProcessProgress) -> dict:
    """The four passes (module docstring); returns the run's counts."""
    sources = _sources(pool, job)

    def read(result: dict) -> None:
        prog.done += result["rows"]

    def merged_one(result: dict) -> None:
        prog.done += result["read"]  # base rows its task read straight from a file of its bucket
        prog.add("merged", result["lines"])

    reads = pool.run(read_task, sources, read)
    parts = {
        kind: by_bucket(pair for (k, _, _), r in zip(sources, reads) if k == kind for pair in r["parts"])
        for kind in ("base", "events", "held", "vault_keys", "vault_values")
    }
    parts.update(job.direct)  # files already cut by line bucket: each read by its bucket's task
    events = parts["events"]
    split = pool.run(event_task, ((b, events[b], parts["held"].get(b, [])) for b in sorted(events)))
    firsts = by_bucket(pair for s in split for pair in s["firsts"])
    taken, takers = _contested(pool, by_bucket(pair for s in split for pair in s["contested"]), parts["base"])
    merged = pool.run(
        merge_task,
        (
            (
                b,
                parts["base"].get(b, []),
                firsts.get(b, []) + takers.get(b, []),
                parts["vault_keys"].get(b, []),
                parts["vault_values"].get(b, []),
            )
            for b in range(job.n_buckets)
        ),
        merged_one,
    )
    counts: dict = {}
    for result in reads + split + taken + merged:
        merge_counts(counts, result["counts"])
    return counts


def run_in_process(job, ctx, workers: int, every: float) -> dict:
    """Merge ``job``'s inputs into its staged folder (base/, vault/, dead_letter/); returns the counts."""
    prog = InProcessProgress(f"merge {job.run_id}", job.base_info.estimated_rows, every, ("read", "merged"))
    with spill_area("merge") as spill, prog.running():
        settings = Settings(
            policy=job.policy,
            as_of=job.as_of,
            ctx=ctx,
            keys_path=job.args.keys,
            base_kind=job.kind,
            n_buckets=job.n_buckets,
            spill=spill,
            stage=job.stage,
            encoding=job.args.encoding,
            batch_size=job.args.batch_size,
        )
        with TaskPool(workers, start_worker, (settings,)) as pool:
            counts = _passes(pool, job, prog)
    empty_dead_letters(job.stage)
    return counts
