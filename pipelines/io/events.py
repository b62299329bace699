"""Registration-event readers: Avro, Parquet, CSV or JSON Lines -> Arrow batches of strings.

    splits, info = plan_event_splits(["events/2026-12-01/"])
    read = p | "ReadEvents" >> ReadRegistrationEvents(splits, dl_ctx)   # pipelines/io/base_files.py
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
text; an absent key is null. A key is a contract field under its own name or
an export's (``schemas/column_aliases.yaml``, as a CSV header: 登记流水号 is
``event_id``, compared trimmed, ignoring case and full-width forms); other
keys are ignored; a field under two keys makes the line malformed (a CSV
file with one column under two names is refused whole).
"""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from pipelines.io.base_reads import read_split
from pipelines.io.paths import open_read
from pipelines.io.planning import InputError, InputInfo, Split, plan_splits
from transforms.core.rows import EVENTS, BadRow, parse_json_lines

__all__ = ["EVENTS", "EVENT_SCHEMA", "plan_event_splits", "read_event_split"]

EVENT_SCHEMA = EVENTS.schema


def plan_event_splits(
    paths: list[str], encoding: str = "utf-8", rows_per_split: int = 500_000
) -> tuple[list[Split], InputInfo]:
    """Expand event paths (files, globs, folders), check each file, cut splits."""
    return plan_splits(paths, rows_per_split=rows_per_split, encoding=encoding, contract=EVENTS)


def _read_jsonl(split: Split, batch_size: int, limit: int) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    with open_read(split.path) as handle:
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
