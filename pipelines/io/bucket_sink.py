"""The Beam merge's base and vault written by line bucket: each bucket's three files from one attempt, published.

    written = outputs.buckets | "WriteBuckets" >> WriteLineBuckets(stage, n_buckets)   # pipelines/merge_beam.py

Line bucket B of N is written as the in-process merge writes it (``pipelines/io/line_buckets.py``
``write_bucket``: ``base/part-B-of-N.parquet`` and shard B of each vault table, each marked in its footer as
the bucket's), so the next merge, in process or on a cluster, reads them by bucket without a shuffle.

A runner may run a bucket's step more than once (a retried bundle, a backup task, a worker lost), and two
attempts of a bucket differ: the data keys of the lines sealed that day are drawn anew, so the keys of one
attempt do not open the values of another. Each attempt therefore writes its three files into a folder of its
own (``STAGE/_attempts/<random>/``), and passes on where. The runner hands on the output of exactly one
attempt per bucket; the last step (:func:`publish_attempts`, one element after all of them) moves those three
files of each bucket into place, checks that there is one attempt of every bucket, and removes the attempts'
folder with whatever failed attempts left in it. Nothing is in place until then, and the staged output
itself is switched in only after the job's counts balance (``pipelines/io/finalize.py``).
"""

from __future__ import annotations

import os
import uuid

import apache_beam as beam

from pipelines.common import UserError
from pipelines.io.line_buckets import bucket_paths, write_bucket
from pipelines.io.paths import is_uri, join_path
from pipelines.io.publish_guards import ATTEMPTS, delete, exists
from transforms.merge.composite import LineBucket

__all__ = ["WriteLineBuckets", "publish_attempts", "ATTEMPTS"]


@beam.typehints.with_input_types(LineBucket)
class _WriteAttemptFn(beam.DoFn):
    """One line bucket's tables -> its three files in a folder of this attempt's own; ``(bucket, folder)``."""

    def __init__(self, folder: str, n_buckets: int):
        self._folder, self._n = folder, n_buckets

    def process(self, element):
        bucket, base, keys, values = element
        attempt = join_path(self._folder, ATTEMPTS, uuid.uuid4().hex)
        write_bucket(attempt, bucket, self._n, base, keys, values)
        yield bucket, attempt


def _move(sources: list[str], targets: list[str]) -> None:
    """Each source file to its target. A source already moved (its target there, itself gone: the publishing
    step retried after a failure part of the way) is skipped, so the step can run again."""
    if sources and is_uri(sources[0]):
        from apache_beam.io.filesystems import FileSystems

        try:  # an object store: copied and deleted, in one batch
            FileSystems.rename(sources, targets)
        except Exception:  # some already moved by an earlier try of this step: move what is left
            pending = [(s, t) for s, t in zip(sources, targets) if exists(s) or not exists(t)]
            if pending:
                FileSystems.rename([s for s, _ in pending], [t for _, t in pending])
        return
    for source, target in zip(sources, targets):
        if not os.path.exists(source) and os.path.exists(target):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(source, target)


def publish_attempts(attempts: list[tuple[int, str]], folder: str, n_buckets: int) -> int:
    """Move the files of the one attempt of each bucket into place under ``folder``; remove the attempts'
    folder. Raises when a bucket has no attempt or two (the runner handed on one per bucket, or lost one)."""
    buckets = sorted(bucket for bucket, _ in attempts)
    if buckets != list(range(n_buckets)):
        raise UserError(
            f"the job wrote {len(set(buckets))} distinct line buckets of {n_buckets}, "
            f"{len(buckets)} attempts: nothing was published"
        )
    sources, targets = [], []
    for bucket, attempt in sorted(attempts):
        written, final = bucket_paths(attempt, bucket, n_buckets), bucket_paths(folder, bucket, n_buckets)
        sources += list(written.values())
        targets += [final[table] for table in written]
    _move(sources, targets)
    delete(join_path(folder, ATTEMPTS))
    return n_buckets


class WriteLineBuckets(beam.PTransform):
    """``LineBucket`` elements (one per bucket, every bucket) -> their files under ``folder``; returns a
    PCollection of one element (the buckets published), for the job's last step to wait on."""

    def __init__(self, folder: str, n_buckets: int):
        super().__init__()
        self._folder, self._n = folder, n_buckets

    def expand(self, buckets):
        return (
            buckets
            | "WriteAttempts" >> beam.ParDo(_WriteAttemptFn(self._folder, self._n))
            | "AllAttempts" >> beam.combiners.ToList()
            | "PublishAttempts" >> beam.Map(publish_attempts, self._folder, self._n)
        )
