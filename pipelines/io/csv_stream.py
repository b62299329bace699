"""CSV files streamed through pyarrow's reader, in bounded memory, with bad rows numbered.

CSV is parsed by pyarrow in blocks of ``CSV_BLOCK_BYTES`` (read ahead at most
``READ_AHEAD_BLOCKS`` blocks) and re-batched to ``batch_size`` rows. A row larger than a
block makes the reader start the file again with 4x larger blocks (rows
already yielded are skipped), up to ``CSV_MAX_BLOCK_BYTES``, past which the
file is refused. An unbalanced quote joins the following lines into its row,
as in any CSV reader: that row is then one BadRow (wrong field count). GB18030
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
from apache_beam.io.filesystems import FileSystems

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
    path = split.path
    done_bad: set[int] = set()  # field-count rows already yielded (kept across restarts)
    # resume: the first good row not yet yielded. utf-8 is parsed as raw bytes (fast
    # path); pyarrow cannot hand a field-count error in a row with invalid UTF-8 to
    # the handler (it decodes the row text strictly) and fails: then the file is
    # read again, transcoded. A row larger than a block: read again, larger blocks.
    resume, block, checked, transcode = 1, CSV_BLOCK_BYTES, False, codec != "utf-8"
    while True:
        with FileSystems.open(path) as f:
            names, rest = read_csv_header(f, path, codec)
            mapping, _, _ = map_columns(path, names, split.contract)
            while not rest.strip():  # pyarrow refuses an empty stream: header only = 0 rows
                more = f.read(1 << 16)
                if not more:
                    return
                rest += more
            src = {c: f"c{names.index(s)}" for c, s in mapping.items()}
            cols = [f"c{i}" for i in range(len(names))]
            invalid: list[tuple[int, int]] = []  # (row, fields) not yet yielded; never the row text
            bad_nums: list[int] = []  # invalid rows >= next_row, ascending, for the numbering
            pending: list[pa.Table] = []  # numbered good rows (column "_row") not yet yielded
            next_row, skip = 1, resume

            def handler(r) -> str:
                invalid.append((r.number, r.actual_columns))
                bad_nums.append(r.number)
                return "skip"

            def emit(n: int) -> tuple[pa.Table, list[BadRow]]:
                nonlocal pending, resume, checked
                raw, bad, rows = split.contract.schema.empty_table(), [], []
                if pending:
                    table = pa.concat_tables(pending)
                    head, tail = table.slice(0, n), table.slice(n)
                    pending = [tail] if tail.num_rows else []
                    rows = head.column("_row").to_numpy()
                    data = {c: head.column(s).combine_chunks() for c, s in src.items()}
                    raw, bad, undecodable = assemble_rows(data, rows, path, codec, limit, transcode, split.contract)
                if not checked and len(rows):
                    checked = True
                    if undecodable * 2 > len(rows):
                        raise encoding_error(path, codec)
                resume = int(rows[-1]) + 1 if len(rows) else resume
                bad += [BadRow(path, num, None, f"expected {len(names)} fields, found {found}")
                        for num, found in invalid if num not in done_bad]
                done_bad.update(num for num, _ in invalid)
                invalid.clear()
                return raw, sorted(bad, key=lambda b: b.source_row)

            stream, reader = BlockStream(rest, f, codec, transcode), None
            try:
                reader = pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(column_names=cols, block_size=block, use_threads=False),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler),
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.binary() for c in cols}, strings_can_be_null=True,
                        null_values=[""], include_columns=list(src.values())))
                for batch in reader:
                    stream.took()
                    # Good rows are the rows not reported invalid: the k-th good row
                    # is next_row + k + (invalid rows before it), vectorised.
                    k = np.arange(batch.num_rows)
                    b = np.array(bad_nums, dtype=np.int64)
                    rows = next_row + k + np.searchsorted(b - np.arange(len(b)) - next_row, k, side="right")
                    next_row = int(rows[-1]) + 1 if len(rows) else next_row
                    bad_nums[:] = [x for x in bad_nums if x >= next_row]
                    table = pa.Table.from_batches([batch]).append_column("_row", pa.array(rows, pa.int64()))
                    pending.append(table.filter(pa.array(rows >= skip)) if len(rows) and rows[0] < skip else table)
                    while sum(t.num_rows for t in pending) >= batch_size:
                        yield emit(batch_size)
            except pa.ArrowInvalid as e:  # its message may quote row text: never pass it on
                if "straddl" in str(e) and block < CSV_MAX_BLOCK_BYTES:
                    block *= 4
                    continue
                if "straddl" in str(e):
                    raise InputError(f"{path}: a row near data row {next_row} is longer than "
                                     f"{CSV_MAX_BLOCK_BYTES} bytes") from None
                if transcode:
                    raise InputError(f"{path}: CSV parse error after data row {next_row - 1}") from None
                transcode = True
                continue
            finally:
                stream.stop()
            held = sum(t.num_rows for t in pending)
            if held or invalid:
                yield emit(held)
            return
