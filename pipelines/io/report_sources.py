"""The report job's reads: projected columns of the step outputs, as Arrow batches, spread over the workers.

    p | ReadColumns(files, schema, "the classified lines")   # Parquet files -> batches of those columns
    p | ReadColumns(files, schema, "the notify history", optional=("variant",))   # absent: null
    p | ReadEventAgents([(path, encoding), ...])              # registration files -> event_id, agent_id, order
    p | ReadDeadLetters(files)                                # a merge's dead letters -> event_id, reason

Each file is cut into splits of row groups in the pipeline (only its footer
is read for that), the splits are spread (``Reshuffle``), and each split is
read batch by batch: no file is ever held whole. Only the columns named are
read from Parquet, never a token, mask or identity value. Registration files
in other formats (JSON Lines, CSV, Avro) hold plaintext identity and have no
columns to project: they are parsed by the merge's own readers
(``pipelines/io/events.py``) batch by batch and only ``event_id`` and
``agent_id`` are kept, before anything leaves the worker.
"""

from __future__ import annotations

import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.io.planning import InputError
from pipelines.io.report_reads import json_dead_letters
from transforms.compliance.report_agents import DEAD_LETTER_SCHEMA, event_agents
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)

__all__ = ["ReadColumns", "ReadEventAgents", "ReadDeadLetters", "ROWS_PER_SPLIT"]

ROWS_PER_SPLIT = 500_000
_BATCH = 65_536
# Registration files in text formats are parsed into Python objects a batch at a time (every field, identity
# included, until only event_id and agent_id are kept): small batches keep that transient memory small.
_EVENT_BATCH = 8_192
_ORDER_SHIFT = 40  # an event's order: its file's place in the list, then its row (under 2**40 rows a file)


def _row_group_splits(path: str, rows_per_split: int = ROWS_PER_SPLIT):
    """(path, row groups, first row) per split of one Parquet file (its footer only)."""
    try:
        with FileSystems.open(path) as handle:
            meta = pq.ParquetFile(handle).metadata
    except Exception as exc:  # the type only: a message may quote data
        raise InputError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    groups, rows, first = [], 0, 0
    for i in range(meta.num_row_groups):
        groups.append(i)
        rows += meta.row_group(i).num_rows
        if rows >= rows_per_split:
            yield path, tuple(groups), first
            groups, first, rows = [], first + rows, 0
    if groups or meta.num_row_groups == 0:
        yield path, tuple(groups), first


def _parquet_batches(path: str, groups: tuple, columns: list[str], optional: tuple[str, ...] = ()):
    """Batches of ``columns`` of some row groups; an ``optional`` column absent from the file is null."""
    with FileSystems.open(path) as handle:
        pf = pq.ParquetFile(handle)
        names = set(pf.schema_arrow.names)
        missing = [c for c in columns if c not in names and c not in optional]
        if missing:
            raise InputError(f"{path}: no {', '.join(missing)} column: not the file expected there")
        present = [c for c in columns if c in names]
        if not groups:
            return
        for batch in pf.iter_batches(batch_size=_BATCH, row_groups=list(groups), columns=present):
            table = pa.Table.from_batches([batch])
            for c in columns:
                if c not in names:
                    table = table.append_column(c, pa.nulls(batch.num_rows, pa.string()))
            yield table.select(columns)


@beam.typehints.with_output_types(pa.Table)
class _ReadColumnsFn(beam.DoFn):
    def __init__(self, schema: pa.Schema, what: str, optional: tuple[str, ...] = ()):
        self._schema, self._what, self._optional = schema, what, tuple(optional)

    def process(self, split):
        path, groups, _ = split
        try:
            for table in _parquet_batches(path, groups, self._schema.names, self._optional):
                yield table.cast(self._schema)
        except InputError:
            raise
        except Exception as exc:  # the type only: a message may quote data
            raise InputError(f"{path}: cannot read {self._what} ({type(exc).__name__})") from None


class ReadColumns(beam.PTransform):
    """Parquet files -> pa.Table batches of ``schema``'s columns (cast to it); an ``optional`` column a file
    lacks (written before the column existed) is null."""

    def __init__(self, files: list[str], schema: pa.Schema, what: str, optional: tuple[str, ...] = ()):
        super().__init__()
        self._files, self._schema, self._what, self._optional = list(files), schema, what, tuple(optional)

    def expand(self, pbegin):
        return (
            pbegin
            | "Files" >> beam.Create(self._files)
            | "Splits" >> beam.FlatMap(_row_group_splits)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadColumnsFn(self._schema, self._what, self._optional))
        )


def _event_splits(source: tuple[int, str, str]):
    """(index, path, encoding) -> the splits to read: row groups of a Parquet file, or the event reader's."""
    index, path, encoding = source
    if path.lower().endswith(".parquet"):
        for split in _row_group_splits(path):
            yield index, "parquet", split, encoding
        return
    from pipelines.io.events import plan_event_splits

    splits, _ = plan_event_splits([path], encoding=encoding)
    for split in splits:
        yield index, "events", split, encoding


@beam.typehints.with_output_types(pa.Table)
class _ReadEventAgentsFn(beam.DoFn):
    """One split of a registration file -> event_id, agent_id, order (file index, row); nothing else is kept."""

    def process(self, item):
        index, kind, split, encoding = item
        base = index << _ORDER_SHIFT
        if kind == "parquet":
            path, groups, first = split
            row = first
            for table in _parquet_batches(path, groups, ["event_id", "agent_id"], optional=("agent_id",)):
                order = pa.array(np.arange(base + row, base + row + table.num_rows, dtype=np.int64))
                row += table.num_rows
                yield event_agents(table, order)
            return
        from pipelines.io.events import read_event_split

        for raw, _bad in read_event_split(split, encoding, _EVENT_BATCH):  # malformed rows: the merge's dead letters
            order = pa.array(raw["_src_row"].to_numpy(zero_copy_only=False) + base, pa.int64())
            yield event_agents(raw.select(["event_id", "agent_id"]), order)


class ReadEventAgents(beam.PTransform):
    """Registration files the merges read, in their order -> batches of ``report_agents.EVENT_AGENT_SCHEMA``."""

    def __init__(self, sources: list[tuple[str, str]]):
        super().__init__()
        self._sources = [(i, path, encoding) for i, (path, encoding) in enumerate(sources)]

    def expand(self, pbegin):
        return (
            pbegin
            | "Files" >> beam.Create(self._sources)
            | "Splits" >> beam.FlatMap(_event_splits).with_output_types(typing.Any)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadEventAgentsFn())
        )


def _dead_letter_batches(path: str):
    """A dead-letter file (Parquet or JSON Lines) -> batches of event_id, reason."""
    if path.endswith(".parquet"):
        for split in _row_group_splits(path):
            for table in _parquet_batches(split[0], split[1], DEAD_LETTER_SCHEMA.names):
                yield table.cast(DEAD_LETTER_SCHEMA)
        return
    yield from json_dead_letters(lambda: FileSystems.open(path))


@beam.typehints.with_output_types(pa.Table)
class _ReadDeadLettersFn(beam.DoFn):
    def process(self, path: str):
        try:
            yield from _dead_letter_batches(path)
        except InputError:
            raise
        except Exception as exc:  # the type only: a message may quote data
            raise InputError(f"{path}: cannot read the merge's dead letters ({type(exc).__name__})") from None


class ReadDeadLetters(beam.PTransform):
    """A merge's dead-letter files -> batches of event_id, reason."""

    def __init__(self, files: list[str]):
        super().__init__()
        self._files = list(files)

    def expand(self, pbegin):
        return (
            pbegin
            | "Files" >> beam.Create(self._files)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(_ReadDeadLettersFn())
        )
