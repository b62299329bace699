"""Registration-event readers: Avro, Parquet, CSV or JSON Lines -> Arrow batches of strings.

    splits, info = plan_event_splits(["events/2026-12-01/"])
    read = p | "ReadEvents" >> ReadRegistrationEvents(splits, dl_ctx)
    read.raw          # pa.Table batches: EVENT_SCHEMA (every field a string, + _src_file, _src_row)
    read.dead_letter  # ROW_MALFORMED dead letters: file, row and (when readable) event_id

The contract is ``schemas/registration_event.avsc``. Avro, Parquet and CSV go
through the base readers (``pipelines/io/base_files.py``) with the event contract,
so their rules hold here too: every field a string, CSV encodings, a field
over ``max_field_chars`` characters or with a control character makes the row
malformed (a megabyte name is a dead letter, not a crash). A file without an
``event_id`` or ``line_id`` column is refused with a one-line error; a missing
optional column is null on every row (the merge then dead-letters the events
that need it).

JSON Lines (``.jsonl``, ``.ndjson``, ``.json``): one object per line, read
here. ``source_row`` is the line number; blank lines are skipped. A line that
is not valid UTF-8, not JSON, or not an object, or that holds an object, an
array or a boolean as a contract field, is malformed; numbers become their
text; keys beyond the contract are ignored; an absent key is null.
"""

from __future__ import annotations

from typing import Iterator

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from pipelines.io.base_files import ReadSplitFn, read_split
from pipelines.io.planning import InputError, InputInfo, Split, codec_name, plan_splits
from pipelines.io.ranges import BYTES_PER_SPLIT
from pipelines.io.split_large import SplitLargeFiles
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.deadletter import DeadLetterContext
from transforms.core.rows import EVENTS, BadRow, parse_json_lines
from transforms.core.tags import DEAD_LETTER, RAW

__all__ = ["EVENTS", "EVENT_SCHEMA", "plan_event_splits", "read_event_split", "ReadRegistrationEvents"]

EVENT_SCHEMA = EVENTS.schema


def plan_event_splits(
    paths: list[str], encoding: str = "utf-8", rows_per_split: int = 500_000
) -> tuple[list[Split], InputInfo]:
    """Expand event paths (files, globs, folders), check each file, cut splits."""
    return plan_splits(paths, rows_per_split=rows_per_split, encoding=encoding, contract=EVENTS)


def _read_jsonl(split: Split, batch_size: int, limit: int) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    with FileSystems.open(split.path) as handle:
        pending: list[tuple[int, bytes]] = []
        for number, line in enumerate(handle, start=1):
            if line.strip():
                pending.append((number, line))
            if len(pending) >= batch_size:
                yield parse_json_lines(pending, split.path, limit)
                pending = []
        if pending:
            yield parse_json_lines(pending, split.path, limit)


def read_event_split(
    split: Split, encoding: str = "utf-8", batch_size: int = 65_536, max_field_chars: int = 4096
) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    """Yield (raw, bad) per batch of one split of event files."""
    if split.fmt != "jsonl":
        yield from read_split(split, encoding, batch_size, max_field_chars)
        return
    try:
        yield from _read_jsonl(split, batch_size, max_field_chars)
    except InputError:
        raise
    except Exception as exc:  # the type only: a message may quote the data
        raise InputError(f"{split.path}: cannot read ({type(exc).__name__})") from None


class ReadRegistrationEvents(beam.PTransform):
    """splits -> DoOutputsTuple: 'raw' (EVENT_SCHEMA batches) and 'dead_letter'
    (ROW_MALFORMED). Counters in namespace 'subreg': events_read, events_malformed.
    A large CSV or Avro file is read in byte ranges by many workers, as the base is (``SplitLargeFiles``)."""

    def __init__(
        self,
        splits: list[Split],
        dl_ctx: DeadLetterContext,
        encoding: str = "utf-8",
        batch_size: int = 65_536,
        max_field_chars: int = 4096,
        bytes_per_split: int = BYTES_PER_SPLIT,
    ):
        super().__init__()
        codec_name(encoding)
        self._encoding, self._bytes = encoding, bytes_per_split
        self._splits, self._fn = (
            list(splits),
            ReadSplitFn(dl_ctx, encoding, batch_size, max_field_chars, read_event_split, "events", "event_id"),
        )

    def expand(self, pbegin):
        return (
            pbegin
            | "Splits" >> beam.Create(self._splits)
            | "SplitLargeFiles" >> SplitLargeFiles(self._encoding, self._bytes)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER, main=RAW)
        )
