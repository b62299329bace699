"""CSV files streamed through pyarrow's reader, in bounded memory, with bad rows numbered.

CSV is parsed by pyarrow in blocks of ``CSV_BLOCK_BYTES`` (read ahead at most
``READ_AHEAD_BLOCKS`` blocks) and re-batched to ``batch_size`` rows. A row larger than a
block makes the reader start the file again with 4x larger blocks (rows
already yielded are skipped), up to ``CSV_MAX_BLOCK_BYTES``, past which the
file is refused. An unbalanced quote joins the following lines into its row,
as in any CSV reader: that row is then one BadRow (wrong field count), and each
line it swallowed one more, so that no line of the file goes uncounted. GB18030
files are transcoded to UTF-8 on the fly; undecodable bytes become
``transforms.core.rows.MARK`` so their rows are found per batch.
"""

from __future__ import annotations

import atexit
import codecs
import threading
import time
import weakref
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines.io.paths import open_read
from pipelines.io.planning import InputError, Split, encoding_error, map_columns, read_csv_header
from transforms.core.rows import MARK, BadRow, assemble_rows

__all__ = ["CSV_BLOCK_BYTES", "CSV_MAX_BLOCK_BYTES", "READ_AHEAD_BLOCKS", "BlockStream", "read_csv"]

CSV_BLOCK_BYTES = 4 << 20
READ_AHEAD_BLOCKS = 4  # CSV blocks read ahead of the consumer
CSV_MAX_BLOCK_BYTES = 256 << 20
codecs.register_error("subreg.mark", lambda e: (MARK, e.end))


class BlockStream:
    """The file-like object pyarrow's CSV reader pulls blocks from (on its I/O thread).

    ``head`` first, then the rest of ``raw``; when ``transcode``, decoded from
    ``codec`` and re-encoded as UTF-8 with undecodable bytes -> MARK. pyarrow
    reads ~32 blocks ahead of its consumer (not configurable): ``read`` waits
    until the consumer has taken a block (``took``), so at most READ_AHEAD_BLOCKS blocks are
    in flight; the wait is bounded, so it can slow a read but never deadlock.
    ``stop`` turns every later read into end-of-file, so an abandoned reader ends.
    """

    def __init__(self, head: bytes, raw, codec: str, transcode: bool):
        self._raw, self.closed, self._eof, self._stopped, self.reading = raw, False, False, False, 0
        self._ahead = READ_AHEAD_BLOCKS
        self._room = threading.Semaphore(READ_AHEAD_BLOCKS)
        _LIVE.add(self)
        self._dec = codecs.getincrementaldecoder(codec)("subreg.mark") if transcode else None
        self._buf = bytearray(self._tr(head))

    def _tr(self, data: bytes, final: bool = False) -> bytes:
        return data if self._dec is None else self._dec.decode(data, final).encode("utf-8")

    def took(self) -> None:
        self._room.release()

    def stop(self) -> None:
        self._stopped = True
        self._room.release(self._ahead)

    def read(self, n: int = -1) -> bytes:
        self.reading += 1
        try:
            return self._read(n)
        finally:
            self.reading -= 1

    def _read(self, n: int) -> bytes:
        self._room.acquire(timeout=5)
        if self._stopped:
            return b""
        while not self._eof and (n < 0 or len(self._buf) < n):
            chunk = self._raw.read(max(n, 1 << 20))
            self._eof = not chunk
            self._buf += self._tr(chunk, final=self._eof)
        n = len(self._buf) if n < 0 else min(n, len(self._buf))
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def close(self) -> None:
        self.closed = True


_LIVE: weakref.WeakSet[BlockStream] = weakref.WeakSet()


@atexit.register
def _stop_streams() -> None:
    """A reader still open at exit: end its read-ahead while threads may still run
    Python (after this, pyarrow's I/O thread entering Python aborts the interpreter)."""
    streams = list(_LIVE)
    for stream in streams:
        stream.stop()
    deadline = time.monotonic() + 2
    while any(st.reading for st in streams) and time.monotonic() < deadline:
        time.sleep(0.01)


def read_csv(split: Split, codec: str, batch_size: int, limit: int) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    """CSV through pyarrow's streaming reader, columns as binary, re-batched to batch_size."""
    return _CsvRead(split, codec, batch_size, limit).batches()


class _Range:
    """Bytes [start, end) of an open file, read as a stream of their own."""

    def __init__(self, f, start: int, end: int):
        self._f, self._left = f, end - start
        f.seek(start)

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n) if n > 0 else b""
        self._left -= len(data)
        return data


class _CsvRead:
    """One CSV split read, restarted (from the first row not yet yielded) when pyarrow gives up on a pass.

    utf-8 is parsed as raw bytes (fast path); pyarrow cannot hand a field-count
    error in a row with invalid UTF-8 to the handler (it decodes the row text
    strictly) and fails: then the file is read again, transcoded. A row larger
    than a block: read again, with larger blocks."""

    def __init__(self, split: Split, codec: str, batch_size: int, limit: int):
        self.split, self.path, self.codec, self.batch_size, self.limit = split, split.path, codec, batch_size, limit
        self.done_bad: set[int] = set()  # field-count rows already yielded (kept across restarts)
        self.resume = 1  # the first good row not yet yielded (rows here count from the split's first, 1)
        self.offset = split.first_row - 1  # added to every row number yielded
        self.last = 0  # the last row numbered, good or bad
        self.checked = split.first_row > 1  # the wrong-encoding rule reads the file's first batch only
        self.block, self.transcode = CSV_BLOCK_BYTES, codec != "utf-8"

    def batches(self) -> Iterator[tuple[pa.Table, list[BadRow]]]:
        while True:
            with open_read(self.path) as opened:
                names, rest = read_csv_header(opened, self.path, self.codec)
                mapping, _, _ = map_columns(self.path, names, self.split.contract)
                f, ranged = opened, self.split.byte_range is not None
                if ranged:  # whole records only (pipelines/io/ranges.py): no blank-only shortcut
                    f, rest = _Range(opened, *self.split.byte_range), b""
                while not (rest if ranged else rest.strip()):  # pyarrow refuses an empty stream: 0 rows
                    more = f.read(1 << 16)
                    if not more:
                        return self._check_count()
                    rest += more
                finished = yield from self._pass(f, names, mapping, rest)
                if finished:
                    return self._check_count()

    def _check_count(self) -> None:
        """A range holds the rows its scan counted (else its boundaries were wrong: never silently)."""
        rows = self.split.rows
        if rows is not None and self.last != rows:
            start, end = self.split.byte_range
            raise InputError(f"{self.path}: bytes {start}-{end} held {self.last} rows, not the {rows} counted")

    def _pass(self, f, names: list[str], mapping: dict[str, str], rest: bytes):
        """One pass over the file; True when it read to the end, False to start again."""
        self.names = names
        self.src = {c: f"c{names.index(s)}" for c, s in mapping.items()}
        cols = [f"c{i}" for i in range(len(names))]
        self.invalid: list[tuple[int, int, int]] = []  # (row, fields, line breaks) not yet yielded; never the text
        self.bad_nums: list[int] = []  # invalid rows >= next_row, ascending, for the numbering
        self.pending: list[pa.Table] = []  # numbered good rows (column "_row") not yet yielded
        self.next_row, skip = 1, self.resume
        stream = BlockStream(rest, f, self.codec, self.transcode)
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=cols, block_size=self.block, use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=self._invalid),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.binary() for c in cols},
                    strings_can_be_null=True,
                    null_values=[""],
                    include_columns=list(self.src.values()),
                ),
            )
            for batch in reader:
                stream.took()
                self._number(batch, skip)
                while sum(t.num_rows for t in self.pending) >= self.batch_size:
                    yield self._emit(self.batch_size)
        except pa.ArrowInvalid as e:  # its message may quote row text: never pass it on
            return self._restart(e)
        finally:
            stream.stop()
        held = sum(t.num_rows for t in self.pending)
        if held or self.invalid:
            yield self._emit(held)
        return True

    def _invalid(self, r) -> str:
        breaks = r.text.count("\n") + r.text.count("\r") - r.text.count("\r\n")  # counted: the text is not kept
        self.invalid.append((r.number, r.actual_columns, breaks))
        self.bad_nums.append(r.number)
        return "skip"

    def _bad_rows(self, row: int, found: int, breaks: int) -> list[BadRow]:
        """A row of the wrong field count; when it runs over line breaks (a quote not closed joined the lines
        after it into it: its fields were counted across them), one more per line it swallowed, never counted
        otherwise."""
        detail = f"expected {len(self.names)} fields, found {found}"
        if not breaks:
            return [BadRow(self.path, row, None, detail)]
        joined = f"{detail}: a quote in it is not closed and runs over {breaks:,} line break(s)"
        swallowed = f"a line read into data row {row} by a quote not closed in it"
        return [BadRow(self.path, row, None, joined)] + [BadRow(self.path, row, None, swallowed)] * breaks

    def _restart(self, e: Exception) -> bool:
        """After a failed pass: start again with larger blocks or transcoded, or refuse the file."""
        if "straddl" in str(e) and self.block < CSV_MAX_BLOCK_BYTES:
            self.block *= 4
            return False
        if "straddl" in str(e):
            raise InputError(
                f"{self.path}: a row near data row {self.offset + self.next_row} is longer than "
                f"{CSV_MAX_BLOCK_BYTES} bytes"
            ) from None
        if self.transcode:
            after = self.offset + self.next_row - 1
            raise InputError(f"{self.path}: CSV parse error after data row {after}") from None
        self.transcode = True
        return False

    def _number(self, batch: pa.RecordBatch, skip: int) -> None:
        """Number a batch's good rows and hold the ones not yielded before a restart."""
        # Good rows are the rows not reported invalid: the k-th good row
        # is next_row + k + (invalid rows before it), vectorised.
        k = np.arange(batch.num_rows)
        b = np.array(self.bad_nums, dtype=np.int64)
        rows = self.next_row + k + np.searchsorted(b - np.arange(len(b)) - self.next_row, k, side="right")
        self.next_row = int(rows[-1]) + 1 if len(rows) else self.next_row
        self.bad_nums[:] = [x for x in self.bad_nums if x >= self.next_row]
        table = pa.Table.from_batches([batch]).append_column("_row", pa.array(rows, pa.int64()))
        self.pending.append(table.filter(pa.array(rows >= skip)) if len(rows) and rows[0] < skip else table)

    def _emit(self, n: int) -> tuple[pa.Table, list[BadRow]]:
        raw, bad, rows = self.split.contract.schema.empty_table(), [], []
        if self.pending:
            table = pa.concat_tables(self.pending)
            head, tail = table.slice(0, n), table.slice(n)
            self.pending = [tail] if tail.num_rows else []
            rows = head.column("_row").to_numpy()
            data = {c: head.column(s).combine_chunks() for c, s in self.src.items()}
            raw, bad, undecodable = assemble_rows(
                data, rows + self.offset, self.path, self.codec, self.limit, self.transcode, self.split.contract
            )
            if not self.checked and len(rows):
                self.checked = True
                if undecodable * 2 > len(rows):
                    raise encoding_error(self.path, self.codec)
        self.resume = int(rows[-1]) + 1 if len(rows) else self.resume
        for num, found, breaks in self.invalid:
            if num not in self.done_bad:
                bad += self._bad_rows(num + self.offset, found, breaks)
        self.done_bad.update(num for num, _, _ in self.invalid)
        self.last = max([self.last, self.resume - 1, *(num for num, _, _ in self.invalid)])
        self.invalid.clear()
        return raw, sorted(bad, key=lambda b: b.source_row)
