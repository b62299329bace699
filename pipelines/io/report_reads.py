"""The in-process report's reads (Beam-free): the columns it needs of the step outputs, batch by batch.

    for table in column_batches(files, SCAN_SCHEMA, "the classified lines"):        # cast to the schema
    for table in event_agent_batches([(path, encoding), ...]):                       # event_id, agent_id, order
    for table in dead_letter_batches(files):                                         # event_id, reason

The same columns, casts and checks as the Beam job's reads
(``report_sources.py``), through Arrow's file systems: only the columns
named are read from Parquet (never a token, mask or identity value), one
batch at a time, so no file is ever held whole. Registration files in text
formats (JSON Lines, CSV, Avro) are parsed by the merge's own readers
(``pipelines/io/events.py``, imported only then) and only ``event_id`` and
``agent_id`` are kept. A file that cannot be read is a one-line error naming it.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from pipelines.common import UserError
from pipelines.io.report_files import filesystem
from transforms.compliance.report_agents import DEAD_LETTER_SCHEMA, event_agents

__all__ = ["column_batches", "event_agent_batches", "dead_letter_batches", "json_dead_letters", "BATCH_ROWS"]

BATCH_ROWS = 262_144
_EVENT_BATCH = 8_192  # text registration files: every field is parsed (identity included) until two are kept
_ORDER_SHIFT = 40  # an event's order: its file's place in the list, then its row (as the Beam job's reads)


def _open(path: str):
    fs, where = filesystem(path)
    return fs.open_input_file(where)


def _parquet_batches(path: str, columns: list[str], optional: tuple[str, ...] = ()) -> Iterator[pa.Table]:
    """Batches of ``columns`` of one Parquet file; an ``optional`` column the file lacks is null."""
    try:
        handle = _open(path)
        pf = pq.ParquetFile(handle)
    except Exception as exc:  # the type only: a message may quote data
        raise UserError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    with handle:
        names = set(pf.schema_arrow.names)
        missing = [c for c in columns if c not in names and c not in optional]
        if missing:
            raise UserError(f"{path}: no {', '.join(missing)} column: not the file expected there")
        present = [c for c in columns if c in names]
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=present):
            table = pa.Table.from_batches([batch])
            for c in columns:
                if c not in names:
                    table = table.append_column(c, pa.nulls(batch.num_rows, pa.string()))
            yield table.select(columns)


def column_batches(files: list[str], schema: pa.Schema, what: str, optional: tuple[str, ...] = ()):
    """Parquet files -> tables of ``schema``'s columns (cast to it), file after file."""
    for path in files:
        try:
            for table in _parquet_batches(path, schema.names, optional):
                yield table.cast(schema)
        except UserError:
            raise
        except Exception as exc:  # the type only: a message may quote data
            raise UserError(f"{path}: cannot read {what} ({type(exc).__name__})") from None


def event_agent_batches(sources: list[tuple[str, str]]) -> Iterator[pa.Table]:
    """Registration files the merges read, in their order -> ``EVENT_AGENT_SCHEMA`` batches."""
    for index, (path, encoding) in enumerate(sources):
        base = index << _ORDER_SHIFT
        if path.lower().endswith(".parquet"):
            row = 0
            for table in _parquet_batches(path, ["event_id", "agent_id"], optional=("agent_id",)):
                order = pa.array(np.arange(base + row, base + row + table.num_rows, dtype=np.int64))
                row += table.num_rows
                yield event_agents(table, order)
            continue
        from pipelines.io.events import plan_event_splits, read_event_split  # the merge's text readers

        splits, _ = plan_event_splits([path], encoding=encoding)
        for split in splits:
            for raw, _bad in read_event_split(split, encoding, _EVENT_BATCH):  # malformed: the merge's dead letters
                order = pa.array(raw["_src_row"].to_numpy(zero_copy_only=False) + base, pa.int64())
                yield event_agents(raw.select(["event_id", "agent_id"]), order)


def json_dead_letters(open_file: Callable[[], object]) -> Iterator[pa.Table]:
    """A JSON Lines dead-letter file -> batches of event_id, reason. ``open_file()`` opens it for binary reading
    (Arrow's or Beam's file systems; called twice: an empty file holds no dead letter)."""
    with open_file() as handle:
        if not handle.read(1):
            return
    options = pajson.ParseOptions(explicit_schema=DEAD_LETTER_SCHEMA, unexpected_field_behavior="ignore")
    with open_file() as handle:
        reader = pajson.open_json(handle, parse_options=options, read_options=pajson.ReadOptions(block_size=1 << 22))
        for batch in reader:
            yield pa.Table.from_batches([batch]).select(DEAD_LETTER_SCHEMA.names).cast(DEAD_LETTER_SCHEMA)


def _dead_letters(path: str) -> Iterator[pa.Table]:
    if path.endswith(".parquet"):
        for table in _parquet_batches(path, DEAD_LETTER_SCHEMA.names):
            yield table.cast(DEAD_LETTER_SCHEMA)
        return
    yield from json_dead_letters(lambda: _open(path))


def dead_letter_batches(files: list[str]) -> Iterator[pa.Table]:
    """A merge's dead-letter files (Parquet or JSON Lines) -> batches of event_id, reason."""
    for path in files:
        try:
            yield from _dead_letters(path)
        except UserError:
            raise
        except Exception as exc:  # the type only: a message may quote data
            raise UserError(f"{path}: cannot read the merge's dead letters ({type(exc).__name__})") from None
