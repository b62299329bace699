"""Subscriber-base readers: Avro, Parquet or CSV files -> Arrow batches of strings.

``plan_splits`` expands paths and checks every file's header before a pipeline
starts; ``read_split`` streams one split as ``(raw, bad)`` batches; the Beam
layer is ``ReadSubscriberBase``. Every contract column arrives as a string, so
no msisdn or document number loses its leading zeros to type inference. An
operator who already stored msisdn as an integer column in Parquet or Avro has
lost those zeros before we see the file: we cast ``1065529988`` back to text as
is and cannot recover the ``0``.

Rules decided here (and relied on downstream):

* Row numbers (``_src_row``, dead-letter ``source_row``) are 1-based data-row
  numbers, header excluded. CSV counts records, not lines: a quoted field with
  newlines is one row, and blank lines are not rows.
* CSV: an empty field is null (as in Parquet/Avro); nothing else is a null marker.
* Encodings (CSV only): ``utf-8`` (BOM tolerated) or ``gb18030`` (``gbk`` and
  ``gb2312`` are read as their superset gb18030). A file is refused with an
  ``InputError`` naming ``--encoding`` when its header does not decode, or when
  more than half of the first rows do not (the first 1 MiB of lines at plan time,
  the first batch at read time), or when it is read as gb18030 but is plainly
  UTF-8 (non-ASCII and valid UTF-8). Other undecodable rows are BadRows.
* A contract column of a type that is not text or a plain value (a list, a
  struct, a map, a union, fixed-size binary) refuses the file with a one-line
  ``InputError`` naming the file and the column: at plan time from the Parquet
  or Avro schema, and again when a batch is read.
* No message quotes a value of the file: a CSV whose first row names no
  contract column is refused as having no header row, and a column outside
  the contract is named by position unless its name is plainly a name
  (``planning.shown_column``).
* A row is malformed (one BadRow, first problem found) when its field count
  differs from the header, a contract field does not decode, is longer than
  ``max_field_chars`` characters, or holds a C0 control character other than
  tab, CR and LF. Columns beyond the contract are never checked.
* CSV is parsed by pyarrow in blocks of ``CSV_BLOCK_BYTES`` (read ahead at most
  ``_AHEAD`` blocks) and re-batched to ``batch_size`` rows. A row larger than a
  block makes the reader start the file again with 4x larger blocks (rows
  already yielded are skipped), up to ``CSV_MAX_BLOCK_BYTES``, past which the
  file is refused. An unbalanced quote joins the following lines into its row,
  as in any CSV reader: that row is then one BadRow (wrong field count).
* A CSV or Avro file of at least twice ``BYTES_PER_SPLIT`` bytes is read by
  many workers, a byte range each, in the pipeline: ``pipelines/io/ranges.py``
  finds the ranges' record boundaries (CSV: quote-aware; Avro: sync markers)
  and first rows, so rows keep the numbers a read of the whole file gives.
  Parquet is split by row groups when planned.
* Directories and globs select only ``*.parquet``, ``*.avro`` and ``*.csv`` files;
  a named file with another extension is refused.
* A :class:`Contract` says which columns are read (all as strings), which a
  file must have and which extensions are selected: the subscriber base's
  (``BASE``) is the default; ``pipelines.io.events`` reads registration events
  with its own, which also selects JSON Lines (checked here by ``plan_splits``,
  read by that module).
"""

from __future__ import annotations

import dataclasses
import sys
from itertools import islice
from typing import Iterator

import apache_beam as beam
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.io.avro_blocks import RangeStream, avro_header
from pipelines.io.csv_stream import read_csv
from pipelines.io.planning import InputError, InputInfo, Split, codec_name, map_columns, plan_splits
from pipelines.io.ranges import BYTES_PER_SPLIT, SplitLargeFiles
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.deadletter import DeadLetterContext
from transforms.core.rows import BadRow, ColumnTypeError, assemble_rows, column_type_error, malformed_table
from transforms.core.tags import DEAD_LETTER, RAW

__all__ = ["read_split", "ReadSplitFn", "ReadSubscriberBase", "PlanInPipeline", "ROWS_PER_SPLIT"]

# Rows per split of a Parquet base (whole row groups): small enough that two or more local worker
# processes get even shares of a few-million-line base, large enough that a split is many batches.
ROWS_PER_SPLIT = 250_000


def _read_parquet(split: Split, batch_size: int, limit: int) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    with FileSystems.open(split.path) as f:
        pf = pq.ParquetFile(f)
        mapping, _, _ = map_columns(split.path, pf.schema_arrow.names, split.contract, "parquet")
        groups = None if split.row_groups is None else list(split.row_groups)
        row = split.first_row
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=list(mapping.values())):
            rows = np.arange(row, row + batch.num_rows, dtype=np.int64)
            row += batch.num_rows
            # Parquet strings are not validated on read: view them as binary so the
            # cast back to string checks the UTF-8 (rows that fail become BadRows).
            data = {c: _as_binary(batch.column(s)) for c, s in mapping.items()}
            raw, bad, _ = assemble_rows(data, rows, split.path, "utf-8", limit, contract=split.contract)
            yield raw, bad


def _as_binary(arr: pa.Array) -> pa.Array:
    return arr.view(pa.binary()) if pa.types.is_string(arr.type) else arr


def _read_avro(split: Split, batch_size: int, limit: int) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    with FileSystems.open(split.path) as f:
        stream = f
        if split.byte_range is not None:  # the header, then the range's blocks (pipelines/io/ranges.py)
            header_end, _ = avro_header(f, split.path)
            f.seek(0)
            stream = RangeStream(f.read(header_end), f, *split.byte_range)
        reader = fastavro.reader(stream)
        names = [fl["name"] for fl in reader.writer_schema.get("fields", [])]
        mapping, _, _ = map_columns(split.path, names, split.contract, "avro")
        row, records = split.first_row, iter(reader)
        while True:
            try:
                chunk = list(islice(records, batch_size))
            except Exception as e:
                raise InputError(f"{split.path}: corrupt Avro data after row {row - 1} ({type(e).__name__})") from None
            if not chunk:
                if split.rows is not None and row - split.first_row != split.rows:
                    raise InputError(f"{split.path}: bytes {split.byte_range} held {row - split.first_row} rows")
                return
            # fastavro hands out one dict per record: building columns is per-row
            # Python that cannot be avoided; one list comprehension per column.
            data = {c: _column([r.get(s) for r in chunk], split.path, c) for c, s in mapping.items()}
            rows = np.arange(row, row + len(chunk), dtype=np.int64)
            row += len(chunk)
            yield assemble_rows(data, rows, split.path, "utf-8", limit, contract=split.contract)[:2]


def _column(values: list, path: str, name: str) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed union branches
        if any(isinstance(v, (list, tuple, dict)) for v in values):  # a list or a record is not text
            raise column_type_error(path, name, "lists or records") from None
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def read_split(
    split: Split, encoding: str = "utf-8", batch_size: int = 65_536, max_field_chars: int = 4096
) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    """Yield (raw, bad) per batch; see the module docstring for the rules."""
    codec = codec_name(encoding)
    if split.byte_range is not None and split.rows is None:
        raise ValueError(f"{split.path}: a cut byte range is read once SplitLargeFiles has found its records")
    readers = {
        "csv": lambda: read_csv(split, codec, batch_size, max_field_chars),
        "parquet": lambda: _read_parquet(split, batch_size, max_field_chars),
        "avro": lambda: _read_avro(split, batch_size, max_field_chars),
    }
    if split.fmt not in readers:
        raise InputError(f"{split.path}: unknown format {split.fmt!r}")
    return _guarded(readers[split.fmt](), split.path)


def _guarded(
    batches: Iterator, path: str, _error=InputError, _typed=ColumnTypeError, _finalizing=sys.is_finalizing
) -> Iterator:
    """Any failure -> one-line InputError (type only: messages may quote data).
    Defaults are bound early: an abandoned reader may be closed during shutdown."""
    try:
        yield from batches
    except Exception as e:
        if _finalizing():  # a reader abandoned until exit: nothing left to report to
            return
        if isinstance(e, _error):
            raise
        if isinstance(e, _typed):  # its text names the file and the column, never a value
            raise _error(str(e)) from None
        raise _error(f"{path}: cannot read ({type(e).__name__})") from None


@beam.typehints.with_output_types(pa.Table, dead_letter=pa.Table)
class ReadSplitFn(beam.DoFn):
    """Read one split as Arrow batches; bad rows to the 'dead_letter' output.

    Args:
      read: ``read_split`` for the base, ``read_event_split`` for events.
      counter_prefix: the Beam counters' prefix (``rows`` -> rows_read, rows_malformed).
      key_field: the dead-letter field that carries ``BadRow.key`` (events: "event_id").
    """

    def __init__(
        self,
        ctx: DeadLetterContext,
        encoding: str,
        batch_size: int,
        max_field_chars: int,
        read=None,
        counter_prefix: str = "rows",
        key_field: str | None = None,
    ):
        self._ctx, self._encoding = ctx, encoding
        self._batch_size, self._limit = batch_size, max_field_chars
        self._reader, self._key_field = read or read_split, key_field
        self._read = beam.metrics.Metrics.counter("subreg", f"{counter_prefix}_read")
        self._malformed = beam.metrics.Metrics.counter("subreg", f"{counter_prefix}_malformed")

    def process(self, split: Split):
        for raw, bad in self._reader(split, self._encoding, self._batch_size, self._limit):
            self._read.inc(raw.num_rows + len(bad))
            if raw.num_rows:
                yield raw
            if bad:
                self._malformed.inc(len(bad))
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, malformed_table(self._ctx, bad, self._key_field))


@dataclasses.dataclass(frozen=True)
class PlanInPipeline:
    """Input paths that the pipeline's first step plans (``plan_splits`` on a
    worker) instead of the launcher: for a launcher that reads no input file,
    such as an offline Dataflow dry run or a launcher without read access to
    the bucket. The splits are the same; a bad file fails the job, not the launch."""

    paths: tuple[str, ...]
    encoding: str = "utf-8"
    rows_per_split: int = ROWS_PER_SPLIT

    def splits(self) -> list[Split]:
        return plan_splits(list(self.paths), rows_per_split=self.rows_per_split, encoding=self.encoding)[0]

    def info(self) -> InputInfo:
        return plan_splits(list(self.paths), rows_per_split=self.rows_per_split, encoding=self.encoding)[1]


class ReadSubscriberBase(beam.PTransform):
    """splits (or a PlanInPipeline) -> DoOutputsTuple: 'raw' (pa.Table per batch,
    RAW_SCHEMA) and 'dead_letter' (dead-letter tables, reason ROW_MALFORMED).
    Counters in namespace 'subreg': rows_read (every data row, raw or malformed), rows_malformed.

    A CSV or Avro file of at least twice ``bytes_per_split`` bytes is read in byte ranges by many workers
    (``pipelines/io/ranges.py``); ``read_fn`` replaces the ReadSplitFn (a test's, that also counts per worker)."""

    def __init__(
        self,
        splits: list[Split],
        dl_ctx: DeadLetterContext,
        encoding: str = "utf-8",
        batch_size: int = 65_536,
        max_field_chars: int = 4096,
        bytes_per_split: int = BYTES_PER_SPLIT,
        read_fn: ReadSplitFn | None = None,
    ):
        super().__init__()
        codec_name(encoding)
        self._splits = splits if isinstance(splits, PlanInPipeline) else list(splits)
        self._fn = read_fn or ReadSplitFn(dl_ctx, encoding, batch_size, max_field_chars)
        self._encoding, self._bytes = encoding, bytes_per_split

    def expand(self, pbegin):
        if isinstance(self._splits, PlanInPipeline):
            splits = (
                pbegin | "Paths" >> beam.Create([self._splits]) | "PlanSplits" >> beam.FlatMap(PlanInPipeline.splits)
            )
        else:
            splits = pbegin | "Splits" >> beam.Create(self._splits)
        return (
            splits
            | "SplitLargeFiles" >> SplitLargeFiles(self._encoding, self._bytes)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER, main=RAW)
        )
