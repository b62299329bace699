"""Reads and writes of ``backfill notify``: inputs checked before launch, the file sink, the history.

Inputs (all through Beam's FileSystems, so ``gs://`` works):

* ``--scan SCAN_OUT`` (old name ``--classified``): ``SCAN_OUT/classified/*.parquet`` from ``backfill scan``,
  read by row group (only the columns the planner needs).
* ``--merged PATH`` (old name ``--registered``): the merged base of ``backfill merge`` (its ``--out``
  folder, its ``base/`` folder, a file or a glob; Parquet, hive partitions
  included), or a plain Parquet or CSV list of line ids.
* ``OUT/history/jobs/`` and ``OUT/history/receipts/``: what earlier runs handed over.
* ``--suppress FILE``: do-not-SMS numbers, one a line (``#`` comments allowed).

Outputs: ``OUT/jobs/{sms,call,announcement}/*.avro``. Each file is written
under ``OUT/_tmp/RUN/`` and renamed into place whole; only then are its jobs
added to ``OUT/history/jobs/`` (also written and renamed whole). File names
are a hash of their job ids, so a retried bundle rewrites the same file.
"""

from __future__ import annotations

import hashlib
import io
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.common import UserError
from schemas import avro_schema
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.metrics import counter
from transforms.scan.normalize import normalize_msisdn
from transforms.notify.planner import PLAN_COLUMNS
from transforms.notify.encode import write_avro
from transforms.notify.jobs import history_rows

__all__ = [
    "classified_splits",
    "registered_splits",
    "history_splits",
    "read_suppress",
    "ReadTables",
    "WriteJobFiles",
    "write_history",
    "write_whole",
    "HISTORY_JOBS",
    "HISTORY_RECEIPTS",
]

HISTORY_JOBS = ("history", "jobs")
HEADERLESS = -2  # the row group of a CSV list of line ids without a header
HISTORY_RECEIPTS = ("history", "receipts")


def matching_paths(pattern: str) -> list[str]:
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # an unreachable bucket or a bad pattern: no files
        return []


def _splits(files: list[str], columns: list[str] | None) -> list[tuple[str, int, tuple | None]]:
    out = []
    for path in files:
        if path.endswith(".csv"):
            out.append((path, -1, tuple(columns) if columns else None))
            continue
        with FileSystems.open(path) as handle:
            meta = pq.ParquetFile(handle).metadata
        out += [(path, i, tuple(columns) if columns else None) for i in range(meta.num_row_groups)]
    return out


def _schema_of(path: str) -> list[str]:
    with FileSystems.open(path) as handle:
        if path.endswith(".csv"):
            return pacsv.open_csv(handle).schema.names
        return pq.ParquetFile(handle).schema_arrow.names


def classified_splits(scan_out: str) -> tuple[list, int]:
    """Row groups of the scan's classified lines, and their row count; refuses what is not a scan output."""
    folder = FileSystems.join(scan_out.rstrip("/"), "classified")
    files = matching_paths(FileSystems.join(folder, "*.parquet"))
    if not files:
        raise UserError(f"--scan {scan_out}: no classified lines (expected {folder}/*.parquet from backfill scan)")
    rows = 0
    for path in files:
        try:
            with FileSystems.open(path) as handle:
                parquet = pq.ParquetFile(handle)
                names, rows = parquet.schema_arrow.names, rows + parquet.metadata.num_rows
        except Exception as exc:
            raise UserError(f"--scan {scan_out}: {path} is not readable Parquet ({type(exc).__name__})") from None
        missing = [c for c in PLAN_COLUMNS if c not in names]
        if missing:
            raise UserError(f"--scan {scan_out}: {path} is not a scan output (missing column(s) {', '.join(missing)})")
    if rows == 0:
        raise UserError(f"--scan {scan_out}: the scan output holds no lines")
    return _splits(files, list(PLAN_COLUMNS)), rows


def registered_splits(path: str) -> tuple[list, int]:
    """Row groups (or CSV files) of the lines registered since the scan."""
    base = path.rstrip("/")
    candidates = [FileSystems.join(base, "base"), base]
    files: list[str] = []
    for root in candidates:
        if root.endswith((".parquet", ".csv")) or any(ch in root for ch in "*?["):
            files = matching_paths(root)
        else:
            files = [f for f in matching_paths(FileSystems.join(root, "**")) if f.endswith((".parquet", ".csv"))]
        if files:
            break
    if not files:
        raise UserError(f"--merged {path}: no Parquet or CSV files found")
    rows, splits = 0, []
    for f in files:
        try:
            names = _schema_of(f)
        except Exception as exc:
            raise UserError(f"--merged {path}: {f} is not readable ({type(exc).__name__})") from None
        if f.endswith(".csv") and "line_id" not in names and len(names) == 1:
            splits.append((f, HEADERLESS, ("line_id",)))  # a bare list of line ids, one a line
            continue
        if "line_id" not in names:
            raise UserError(f"--merged {path}: {f} has no line_id column")
        columns = ["line_id", "identity_status"] if "identity_status" in names else ["line_id"]
        splits += _splits([f], columns)
        if not f.endswith(".csv"):
            with FileSystems.open(f) as handle:
                rows += pq.ParquetFile(handle).metadata.num_rows
    return splits, rows


def history_splits(out: str, kind: tuple[str, str]) -> list:
    files = matching_paths(FileSystems.join(out.rstrip("/"), *kind, "*.parquet"))
    return _splits(files, None)


def read_suppress(path: str) -> pa.Array:
    """Do-not-SMS numbers, normalised like the scan's msisdn."""
    try:
        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"--suppress {path}: not UTF-8 text") from None
    except Exception as exc:
        raise UserError(f"--suppress {path}: cannot be read ({type(exc).__name__})") from None
    values = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    numbers = normalize_msisdn(pa.array([v for v in values if v], pa.string()))
    return pc.unique(numbers.filter(pc.is_valid(numbers)))


def _read_split(split) -> pa.Table:
    path, group, columns = split
    with FileSystems.open(path) as handle:
        if group < 0:
            read = pacsv.ReadOptions(column_names=["line_id"]) if group == HEADERLESS else None
            options = pacsv.ConvertOptions(
                column_types={c: pa.string() for c in ("line_id", "identity_status")},
                include_columns=list(columns) if columns else None,
            )
            return pacsv.read_csv(handle, read_options=read, convert_options=options)
        data = handle.read() if "://" in path else None
        source = pa.BufferReader(data) if data is not None else path
        table = pq.ParquetFile(source).read_row_group(group, columns=list(columns) if columns else None)
    return table


class ReadTables(beam.PTransform):
    """Read planned splits (file, row group, columns) as Arrow tables, one per split."""

    def __init__(self, splits: list, label: str | None = None):
        super().__init__(label)
        self._splits = splits

    def expand(self, pbegin):
        return (
            pbegin | "Splits" >> beam.Create(self._splits) | "Read" >> beam.Map(_read_split).with_output_types(pa.Table)
        )


def content_name(table: pa.Table, prefix: str, suffix: str) -> str:
    """A file name from the job ids it holds: the same jobs give the same name."""
    ids = table.column("job_id").combine_chunks()
    digest = hashlib.blake2b(digest_size=10)
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset : ids.offset + len(ids) + 1]
    digest.update((offsets - offsets[0]).tobytes())
    digest.update(memoryview(ids.buffers()[2])[offsets[0] : offsets[-1]])
    digest = digest.hexdigest()
    return f"{prefix}-{digest}-{table.num_rows}{suffix}"


def write_whole(data, tmp: str, final: str) -> None:
    """Write ``data`` (bytes, or a function of a file handle) to ``tmp`` and rename it to ``final``.

    Readers never see half a file."""
    with FileSystems.create(tmp) as handle:
        if callable(data):
            data(handle)
        else:
            handle.write(data)
    if "://" not in final:
        os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
    elif FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([tmp], [final])


def write_history(table: pa.Table, out: str, run_id: str) -> None:
    """Add durable jobs to ``OUT/history/jobs/`` (one Parquet file, written whole)."""
    if table.num_rows == 0:
        return
    sink = io.BytesIO()
    pq.write_table(
        table, sink, use_dictionary=["region", "channel", "campaign_id", "run_id", "variant"], write_statistics=False
    )
    name = content_name(table, "history", ".parquet")
    write_whole(
        sink.getvalue(), FileSystems.join(out, "_tmp", run_id, name), FileSystems.join(out, *HISTORY_JOBS, name)
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
        name = content_name(table, self._prefix, ".avro")
        schema = avro_schema(f"notify_{self._channel}_job")
        final = FileSystems.join(self._out, "jobs", self._channel, name)
        tmp = FileSystems.join(self._out, "_tmp", self._run, f"{self._channel}-{name}")
        write_whole(lambda handle: write_avro(handle, table, schema, name), tmp, final)
        write_history(history_rows(table, self._run), self._out, self._run)  # only now: the jobs are durable
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
