"""The scan on this machine without Beam: the Beam job's steps as tasks of a pool of worker processes.

    counts = run_in_process(job, pub, header, workers=2)

``backfill scan`` on a local runner runs here unless told otherwise (worker
options of Beam's local runner, ``--spill off``, ``--estimated-rows`` or a dry
run take the Beam job, ``pipelines/scan.py``): starting Beam and its local
runner costs seconds and one core, where this engine keeps every core busy
with the base's own work. The passes are the job's shuffles, in order, each
a set of tasks (``pipelines/scan_tasks.py``) run by ``workers`` processes
forked from this one (``--workers``; 1: this process runs them):

0. a large CSV or Avro file is cut into byte ranges, each scanned for where
   its records start (``pipelines/io/ranges.py``): every range is a split;
1. each split is read and classified; its rows and its key tables are
   spilled (sealed, a private folder: ``transforms/core/spill_files.py``);
2. each line bucket drops its duplicate lines (the latest row wins);
3. each document bucket flags one document under two names, or on more lines
   than the policy allows;
4. each split's rows get their drops and flags and become one Parquet file.

This process holds references to spilled parts, never rows; a worker holds
one split's key table, one bucket or one batch at a time, so memory stays
flat in the base's size. The counts are added up here, checked
(rows in = classified + dead letters) before anything is published, and the
manifest says ``in-process`` and the number of workers.
"""

from __future__ import annotations

import secrets

import numpy as np

from pipelines.io.ranges import range_count, split_large_files
from pipelines.io.task_files import empty_dead_letters
from pipelines.progress_text import InProcessProgress
from pipelines.task_pool import TaskPool, by_bucket
from pipelines.scan_tasks import Settings, dedup_task, flag_task, read_task, start_worker, write_task
from transforms.core.counts import merge_counts
from transforms.core.spill_folders import spill_area

__all__ = ["run_in_process"]


def _batch_owners(reads: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Every batch id, sorted, and the split that holds it."""
    batches = np.array([b for r in reads for b in r["batches"]], np.int64)
    splits = np.array([i for i, r in enumerate(reads) for _ in r["batches"]], np.int32)
    order = np.argsort(batches, kind="stable")
    return batches[order], splits[order]


def _passes(pool: TaskPool, splits: list, prog: InProcessProgress, encoding: str) -> dict:
    """The four passes (module docstring); returns the run's counts."""
    counts: dict = {}
    splits = split_large_files(splits, encoding, pool.run)

    def read(result: dict) -> None:
        prog.done += result["counts"].get("rows_in", 0)

    reads = pool.run(read_task, enumerate(splits), read)
    owners = _batch_owners(reads)
    keys = by_bucket(pair for r in reads for pair in r["keys"])
    deduped = pool.run(dedup_task, ((b, keys[b], *owners) for b in sorted(keys)))
    docs = by_bucket(pair for d in deduped for pair in d["docs"])
    flags = pool.run(flag_task, ((docs[d], *owners) for d in sorted(docs)))
    exceptions = by_bucket([pair for d in deduped for pair in d["drops"]] + [pair for f in flags for pair in f])
    written = pool.run(
        write_task,
        ((i, len(reads), r["rows"], exceptions.get(i, [])) for i, r in enumerate(reads)),
        lambda counted: prog.add("classified", counted.get("classified", 0)),
    )
    for part in [r["counts"] for r in reads] + [d["counts"] for d in deduped] + written:
        merge_counts(counts, part)
    return counts


def run_in_process(job, ctx, workers: int, every: float) -> dict:
    """Classify ``job``'s splits into its staged folder (classified/, dead_letter/); returns the counts."""
    stage = job.stage
    # no more workers than splits (a large CSV or Avro file is read in byte ranges: each one a split)
    workers = job.workers = max(1, min(workers, range_count(job.splits) or 1))
    prog = InProcessProgress(f"scan {job.run_id}", job.info.estimated_rows, every, ("read", "classified"))
    with spill_area("scan") as spill, prog.running():
        settings = Settings(
            policy=job.policy,
            as_of=job.as_of,
            ctx=ctx,
            salt=secrets.token_hex(16),  # the run's key of the cross-record hashes: in memory only
            n_buckets=job.n_buckets,
            spill=spill,
            stage=stage,
            encoding=job.args.encoding,
            batch_size=job.args.batch_size,
        )
        with TaskPool(workers, start_worker, (settings,)) as pool:
            counts = _passes(pool, job.splits, prog, job.args.encoding)
    empty_dead_letters(stage)
    return counts
