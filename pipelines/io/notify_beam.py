"""The Beam job's reads and writes of ``backfill notify``: splits read as Arrow tables, job files written.

    tables = p | ReadTables(splits)                                  # one table per (file, row group, columns)
    tallies = jobs | WriteJobFiles(out, prefix, run_id)              # {"sms": pcoll, ...} -> files + history

The files are those of :mod:`pipelines.io.notify_files` (``stage_job_files`` then ``place``), which the
in-process engine (``pipelines/notify_local.py``) writes too; only this module imports Beam.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.io.notify_files import place, read_split, stage_job_files
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.metrics import counter

__all__ = ["ReadTables", "WriteJobFiles"]


class ReadTables(beam.PTransform):
    """Read planned splits (file, row group, columns) as Arrow tables, one per split."""

    def __init__(self, splits: list, label: str | None = None):
        super().__init__(label)
        self._splits = splits

    def expand(self, pbegin):
        return (
            pbegin | "Splits" >> beam.Create(self._splits) | "Read" >> beam.Map(read_split).with_output_types(pa.Table)
        )


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(dict)
class _WriteJobsFn(beam.DoFn):
    """Write one Avro file per job table, then its history; two tables at a time.

    Encoding and writing are mostly Arrow kernels and file writes, which
    release the GIL: a small thread pool (made in setup()) overlaps one
    table's write with the next one's encoding. finish_bundle waits for every
    write, so a bundle only succeeds once all its files and history are whole.
    """

    def __init__(self, out: str, channel: str, prefix: str, run_id: str, threads: int = 2):
        self._out, self._channel, self._prefix, self._run, self._threads = out, channel, prefix, run_id, threads
        self._files = counter(f"files_{channel}")

    def setup(self):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix=f"write-{self._channel}")

    def start_bundle(self):
        self._pending = []

    def _write(self, table: pa.Table) -> int:
        for tmp, final in stage_job_files(table, self._channel, self._out, self._prefix, self._run):
            place(tmp, final)  # the jobs file first; only then its history: the jobs are durable
        return table.num_rows

    def process(self, table: pa.Table):
        self._pending.append(self._pool.submit(self._write, table))

    def finish_bundle(self):
        rows = [future.result() for future in self._pending]  # re-raises a failed write
        self._pending = []
        if rows:
            self._files.inc(len(rows))
            tally = {"files": {self._channel: len(rows)}, "handed_over": {self._channel: sum(rows)}}
            yield WindowedValue(tally, 0, [GlobalWindow()])

    def teardown(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True)


class WriteJobFiles(beam.PTransform):
    """Write each channel's job tables as Avro files and record them in the history; yields tallies."""

    def __init__(self, out: str, prefix: str, run_id: str):
        super().__init__()
        self._out, self._prefix, self._run = out, prefix, run_id

    def expand(self, jobs: dict):
        written = [
            pcoll
            | f"Write{channel.title()}Jobs" >> beam.ParDo(_WriteJobsFn(self._out, channel, self._prefix, self._run))
            for channel, pcoll in sorted(jobs.items())
        ]
        return tuple(written) | "FlattenWrites" >> beam.Flatten()
