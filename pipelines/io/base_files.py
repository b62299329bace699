"""Subscriber-base and registration-event readers: Avro, Parquet or CSV files -> Arrow batches of strings.

``plan_splits`` expands paths and checks every file's header before a pipeline
starts; ``read_split`` (Beam-free, ``pipelines/io/base_reads.py``; re-exported
here) streams one split as ``(raw, bad)`` batches; the Beam layer is
``ReadSubscriberBase`` (and ``ReadRegistrationEvents``, over ``pipelines/io/events.py``'s
reader). Every contract column arrives as a string, so
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
  many workers, a byte range each, in the pipeline or in a step's worker processes: ``pipelines/io/ranges.py``
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

import apache_beam as beam
import pyarrow as pa

from pipelines.io.base_reads import ROWS_PER_SPLIT, read_split  # the reader itself, Beam-free
from pipelines.io.events import read_event_split
from pipelines.io.planning import InputInfo, Split, codec_name, plan_splits
from pipelines.io.ranges import BYTES_PER_SPLIT
from pipelines.io.split_large import SplitLargeFiles
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.deadletter import DeadLetterContext
from transforms.core.rows import malformed_table
from transforms.core.tags import DEAD_LETTER, RAW

__all__ = [
    "read_split",
    "ReadSplitFn",
    "ReadSubscriberBase",
    "ReadRegistrationEvents",
    "PlanInPipeline",
    "ROWS_PER_SPLIT",
]


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
    the bucket. The splits are the same; a bad file fails the job, not the launch. ``refuse_merged``: a
    merged base (a merge's output, or files with its columns) fails it too, in one line, as the launcher
    refuses it when it plans (``pipelines/scan_inputs.py``): the scan's base must be a raw export."""

    paths: tuple[str, ...]
    encoding: str = "utf-8"
    rows_per_split: int = ROWS_PER_SPLIT
    refuse_merged: bool = False

    def splits(self) -> list[Split]:
        if self.refuse_merged:
            from pipelines.scan_inputs import plan_raw_base

            return plan_raw_base(list(self.paths), rows_per_split=self.rows_per_split, encoding=self.encoding)[0]
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


class ReadRegistrationEvents(ReadSubscriberBase):
    """splits -> DoOutputsTuple: 'raw' (EVENT_SCHEMA batches) and 'dead_letter'
    (ROW_MALFORMED). Counters in namespace 'subreg': events_read, events_malformed.
    The base's reading (large CSV or Avro files in byte ranges) with the events' reader of one split."""

    def __init__(
        self,
        splits: list[Split],
        dl_ctx: DeadLetterContext,
        encoding: str = "utf-8",
        batch_size: int = 65_536,
        max_field_chars: int = 4096,
        bytes_per_split: int = BYTES_PER_SPLIT,
    ):
        codec_name(encoding)
        fn = ReadSplitFn(dl_ctx, encoding, batch_size, max_field_chars, read_event_split, "events", "event_id")
        super().__init__(list(splits), dl_ctx, encoding, batch_size, max_field_chars, bytes_per_split, read_fn=fn)
