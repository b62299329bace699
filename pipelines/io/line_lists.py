"""A list of line_ids (``backfill incident --lines FILE``), checked before the run and read in it.

The file is one line_id a line, or a CSV whose header has a ``line_id``
column (any case; other columns ignored): the form is told by its first
non-blank line (a comma, or the word ``line_id``). Ids are trimmed, blank ones
skipped, repeats kept (the scope counts them). UTF-8, with or without a BOM;
a ``.gz`` file is read through its compression.

:func:`inspect_line_list` reads only the head of the file, in the launcher:
the form, the column, a file that cannot be read, is not UTF-8, has no
``line_id`` column or (when the head is the whole file) holds no id are
one-line errors before anything runs. :class:`ReadLineIds` streams the file
in the job, one worker, block by block (a leaked list may hold millions of
ids: it is never held whole): ``pa.Table`` batches of ``line_id`` and the
counts ``{"listed": {"rows": N, "unreadable": M}}`` (CSV rows whose number of
cells does not match the header are counted, never shown: a leaked list may
hold identity values).
"""

from __future__ import annotations

import csv
import dataclasses
import io

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from apache_beam.io.filesystems import FileSystems

from pipelines.common import UserError
from pipelines.io.planning import InputError
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.special_files import special_file
from transforms.core.tags import COUNTS

__all__ = ["LineList", "inspect_line_list", "ReadLineIds"]

_HEAD = 1 << 20
_BLOCK = 1 << 22
_IDS = pa.schema([("line_id", pa.string())])


@dataclasses.dataclass(frozen=True)
class LineList:
    path: str
    column: str | None  # the CSV column holding the ids; None for one id a line
    size: int  # bytes, for the run's plan

    @property
    def estimated_rows(self) -> int:
        return max(1, self.size // 12)


def _head(path: str) -> tuple[bytes, int]:
    if kind := special_file(path):  # a named pipe would block for ever, /dev/zero never ends
        raise UserError(f"--lines {path}: is {kind}, not a list of line_ids")
    try:
        with FileSystems.open(path) as handle:
            head = handle.read(_HEAD + 1)
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    except Exception as exc:  # the type only: a message may quote data
        raise UserError(f"--lines {path} cannot be read ({type(exc).__name__})") from None
    return head, size


def inspect_line_list(path: str) -> LineList:
    """The form of a line list from its head (see the module docstring); one-line errors."""
    head, size = _head(path)
    whole = len(head) <= _HEAD
    try:
        text = (head if whole else head[: head.rfind(b"\n") + 1]).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"--lines {path} is not UTF-8 text") from None
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows:
        if whole:
            raise UserError(f"--lines {path} holds no line_id")
        return LineList(path, None, size)
    first = rows[0].strip()
    if "," not in first and first.lower() != "line_id":
        return LineList(path, None, size)
    names = next(csv.reader([rows[0]]))
    column = next((c for c in names if c and c.strip().lower() == "line_id"), None)
    if column is None:
        raise UserError(f"--lines {path} is a CSV without a line_id column")
    if whole and not any((row.get(column) or "").strip() for row in csv.DictReader(io.StringIO("\n".join(rows)))):
        raise UserError(f"--lines {path} holds no line_id")
    return LineList(path, column, size)


def _kept(ids: pa.Array) -> pa.Array:
    trimmed = pc.utf8_trim_whitespace(ids)
    return trimmed.filter(pc.not_equal(trimmed, ""))


def _plain_blocks(handle):
    """Blocks of whole lines, decoded."""
    rest, first = b"", True
    while True:
        block = handle.read(_BLOCK)
        data = rest + block
        cut = len(data) if not block else data.rfind(b"\n") + 1
        rest, data = data[cut:], data[:cut]
        if data:
            yield data.decode("utf-8-sig" if first else "utf-8")
            first = False
        if not block:
            return


def _csv_batches(handle, column: str, skipped: list[int]):
    def skip(_row) -> str:  # the row's text is never looked at: it may be identity
        skipped[0] += 1
        return "skip"

    reader = pacsv.open_csv(
        handle,
        read_options=pacsv.ReadOptions(block_size=_BLOCK),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
        convert_options=pacsv.ConvertOptions(
            include_columns=[column], column_types={column: pa.string()}, strings_can_be_null=False
        ),
    )
    for batch in reader:
        yield batch.column(0)


def _batches(listing: LineList, skipped: list[int]):
    """The listed ids, trimmed and non-blank, as arrays; one-line errors."""
    path = listing.path
    try:
        with FileSystems.open(path) as handle:
            if listing.column is None:
                for text in _plain_blocks(handle):
                    yield _kept(pa.array(text.splitlines(), pa.string()))
            else:
                for ids in _csv_batches(handle, listing.column, skipped):
                    yield _kept(ids)
    except UnicodeDecodeError:
        raise InputError(f"--lines {path} is not UTF-8 text") from None
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc) or "utf8" in str(exc).lower():
            raise InputError(f"--lines {path} is not UTF-8 text") from None
        raise InputError(f"--lines {path} cannot be read as a CSV (ArrowInvalid)") from None
    except Exception as exc:  # the type only: a message may quote data
        raise InputError(f"--lines {path} cannot be read ({type(exc).__name__})") from None


@beam.typehints.with_output_types(pa.Table, counts=dict)
class _ReadLineIdsFn(beam.DoFn):
    def __init__(self, batch_rows: int):
        self._batch_rows = batch_rows

    def process(self, listing: LineList):
        rows, skipped = 0, [0]
        for ids in _batches(listing, skipped):
            rows += len(ids)
            for start in range(0, len(ids), self._batch_rows):
                yield pa.table([ids.slice(start, self._batch_rows)], schema=_IDS)
        yield beam.pvalue.TaggedOutput(COUNTS, {"listed": {"rows": rows, "unreadable": skipped[0]}})


class ReadLineIds(beam.PTransform):
    """A :class:`LineList` -> ``line_id`` batches of at most ``batch_rows`` (main output ``ids``) and its
    counts (``counts``)."""

    def __init__(self, listing: LineList, batch_rows: int = 65_536):
        super().__init__()
        self._listing, self._batch_rows = listing, max(1, int(batch_rows))

    def expand(self, pbegin):
        return (
            pbegin
            | "List" >> beam.Create([self._listing])
            | "Read" >> beam.ParDo(_ReadLineIdsFn(self._batch_rows)).with_outputs(COUNTS, main="ids")
        )
