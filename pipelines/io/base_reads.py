"""One split of a subscriber base read as Arrow batches of strings, without Beam: ``read_split``.

    for raw, bad in read_split(split, encoding, batch_size, max_field_chars): ...

Parquet and Avro are read here, CSV by :mod:`pipelines.io.csv_stream`; the rules
(row numbers, nulls, encodings, malformed rows, refused column types) are in
:mod:`pipelines.io.base_files`, whose Beam transforms call this reader, as the
in-process scan (``pipelines/scan_tasks.py``) does directly. Any failure is a
one-line :class:`~pipelines.io.planning.InputError` naming the file, never a value.
"""

from __future__ import annotations

import sys
from itertools import islice
from typing import Iterator

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.io.avro_blocks import RangeStream, avro_header
from pipelines.io.csv_stream import read_csv
from pipelines.io.paths import open_read
from pipelines.io.planning import InputError, Split, codec_name, map_columns
from transforms.core.rows import BadRow, ColumnTypeError, assemble_rows, column_type_error

__all__ = ["read_split", "ROWS_PER_SPLIT"]

# Rows per split of a Parquet base (whole row groups): small enough that two or more local worker
# processes get even shares of a few-million-line base, large enough that a split is many batches.
ROWS_PER_SPLIT = 250_000


def _read_parquet(split: Split, batch_size: int, limit: int) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    with open_read(split.path) as f:
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
    with open_read(split.path) as f:
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
