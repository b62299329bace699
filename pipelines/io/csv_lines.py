"""Where CSV records start, found in bytes as pyarrow's CSV parser would find them, without parsing the fields.

A range of a CSV file is read by its own worker (``pipelines/io/ranges.py``);
it must start and end on the record boundaries that a reader of the whole
file would see, and know how many records it holds (rows are numbered from
the top of the file). :func:`scan_lines` walks bytes from a line start and
reports the line starts it meets, as pyarrow's parser (``newlines_in_values``,
``"`` quotes, ``""`` inside quotes, ``,``) would:

* a quote opens a quoted field only at the start of a field; inside, ``""``
  is a quote and a single ``"`` closes the field, after which the field goes
  on unquoted (later quotes in it are plain characters);
* outside quotes, ``\\n``, ``\\r\\n`` and a lone ``\\r`` end a record; inside
  quotes they are part of the value;
* a line that starts with ``\\r`` or ``\\n`` is empty: it is skipped, it is
  no record.

Fast path: when every quote of a piece sits where well-formed CSV puts it
(opening at a field start, doubled inside, closing before ``,``, a line end
or the end of the file), "inside quotes" is the parity of the quotes before
a byte, found with numpy. A piece with any other quote goes through the exact
state machine (a loop per field). The bytes are never decoded: in UTF-8 and
GB18030 no byte of a multi-byte character is ``"``, ``,``, ``\\r`` or ``\\n``.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

__all__ = ["LineScan", "PIECE_BYTES", "first_line_start", "scan_lines"]

PIECE_BYTES = 1 << 20
QUOTE, COMMA, CR, LF = 0x22, 0x2C, 0x0D, 0x0A
LINE_START, FIELD_START, IN_FIELD, IN_QUOTED = range(4)
_FIELD_END = re.compile(rb"[,\r\n]")
_KEEP_STARTS = 256  # line starts remembered from the beginning of a scan (where it meets the previous range)


@dataclasses.dataclass(frozen=True)
class LineScan:
    """What one scan found. ``starts``: the first line starts met (the scan's start first), each with the records
    before it in the scan; ``rows``: records starting before ``stop``; ``end``: the first line start at or after ``stop`` (the end of
    the file when none), None when none came within the scan's limit."""

    starts: tuple[tuple[int, int], ...]
    rows: int
    end: int | None


def _read_full(f, n: int) -> bytes:
    parts, have = [], 0
    while have < n:
        chunk = f.read(n - have)
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


def first_line_start(f, at: int, size: int, limit: int) -> int | None:
    """The first position >= ``at`` (>= 1) that follows a line break (``\\n``, or ``\\r`` not before ``\\n``), or
    the end of the file; ``f`` is positioned at ``at - 1``. None when there is none within ``limit`` bytes."""
    pos, data = at - 1, b""  # pos: the offset of data[0]
    while True:
        chunk = _read_full(f, PIECE_BYTES)
        data += chunk
        b = np.frombuffer(data, np.uint8)
        hit = np.flatnonzero((b[:-1] == LF) | ((b[:-1] == CR) & (b[1:] != LF)))
        if len(hit):
            return pos + int(hit[0]) + 1
        if not chunk or pos + len(data) >= size:
            return size
        if pos + len(data) - at > limit:
            return None
        pos, data = pos + len(data) - 1, data[-1:]


def _fast(b: np.ndarray, inside: bool, prev: int, final: bool) -> tuple[np.ndarray, bool] | None:
    """(line starts in ``b``, inside quotes at its end) by quote parity; None when a quote is not where
    well-formed CSV puts it (the exact machine decides then). A piece never starts after nor ends with a quote
    unless it is the last (``scan_lines`` keeps trailing quotes for the next piece)."""
    n = len(b)
    q = np.flatnonzero(b == QUOTE)
    lf, cr = np.flatnonzero(b == LF), np.flatnonzero(b == CR)
    alone = (b[np.minimum(cr + 1, n - 1)] != LF) | (cr + 1 >= n)  # \r\n ends at its \n
    breaks = np.union1d(lf, cr[alone]) if len(cr) else lf
    if len(q):
        parity = (np.arange(len(q)) + inside) & 1  # 1: the quote is met inside quotes
        gap = np.diff(q) != 1
        starts, ends = np.r_[True, gap], np.r_[gap, True]
        before = np.where(q > 0, b[np.maximum(q - 1, 0)], prev)
        after = b[np.minimum(q + 1, n - 1)]

        def separator(x):
            return (x == COMMA) | (x == LF) | (x == CR)

        at_end = q + 1 >= n
        opens_badly = starts & (parity == 0) & ~separator(before)
        closes_badly = ends & (parity == 1) & ~(separator(after) & ~at_end | at_end & final)
        if opens_badly.any() or closes_badly.any():
            return None
        breaks = breaks[((np.searchsorted(q, breaks) + inside) & 1) == 0]
        inside = bool((len(q) + inside) & 1)
    elif inside:
        breaks = breaks[:0]
    return breaks + 1, inside


def _exact(data: bytes, state: int) -> tuple[list[int], int]:
    """(line starts in ``data``, state at its end): pyarrow's parser, one field at a time."""
    i, n, starts = 0, len(data), []
    while i < n:
        c = data[i]
        if state == LINE_START:
            if c == CR or c == LF:  # an empty line
                i += 2 if c == CR and i + 1 < n and data[i + 1] == LF else 1
                starts.append(i)
                continue
            state = FIELD_START
        if state == FIELD_START:
            if data[i] == QUOTE:
                state, i = IN_QUOTED, i + 1
                continue
            state = IN_FIELD
        if state == IN_FIELD:
            m = _FIELD_END.search(data, i)
            if m is None:
                return starts, IN_FIELD
            i = m.end()
            if data[i - 1] == COMMA:
                state = FIELD_START
                continue
            if data[i - 1] == CR and i < n and data[i] == LF:
                i += 1
            state = LINE_START
            starts.append(i)
            continue
        j = data.find(b'"', i)  # IN_QUOTED
        if j < 0:
            return starts, IN_QUOTED
        if j + 1 < n and data[j + 1] == QUOTE:
            i = j + 2
        else:
            state, i = IN_FIELD, j + 1
    return starts, state


class _Tally:
    """Line starts met by a scan, in order: the first few, the records before ``stop``, the first at/after it."""

    def __init__(self, start: int, stop: int):
        self.stop, self.rows, self.starts, self.end = stop, 0, [(start, 0)], None
        self.pending = start  # a line start whose first byte (empty line or record) is not read yet

    def add(self, base: int, b: np.ndarray, rel: np.ndarray, final: bool) -> None:
        """Line starts ``rel`` within the piece ``b`` at ``base`` (the pending one, if any, is at rel 0 or before)."""
        points = rel if self.pending is None else np.r_[self.pending - base, rel]
        self.pending = None
        if len(points) and points[-1] >= len(b) and not final:
            self.pending, points = base + int(points[-1]), points[:-1]
        inside = points < len(b)
        first = np.where(inside, b[np.minimum(points, len(b) - 1)], LF) if len(b) else np.full(len(points), LF)
        record = inside & (first != LF) & (first != CR)
        at = base + points
        before = at < self.stop
        if len(self.starts) < _KEEP_STARTS:  # the scan's start is always the first
            counts = self.rows + np.r_[0, np.cumsum(record)[:-1]]
            keep = before & (at != self.starts[0][0])
            room = _KEEP_STARTS - len(self.starts)
            self.starts += [(int(a), int(c)) for a, c in zip(at[keep][:room], counts[keep][:room])]
        self.rows += int(record[before].sum())
        if not before.all():
            self.end = int(at[~before][0])


def scan_lines(f, start: int, stop: int, size: int, limit: int) -> LineScan:
    """Scan from ``start`` (a line start; ``f`` positioned there) to the first line start at or after ``stop``,
    reading at most ``limit`` bytes past ``stop``."""
    tally, inside, prev = _Tally(start, stop), False, LF
    base, carry = start, b""
    while True:
        chunk = _read_full(f, PIECE_BYTES)
        data = carry + chunk
        final = not chunk or base + len(data) >= size
        keep = len(data) if final else len(data.rstrip(b'"\r'))  # a piece never ends inside "" or \r\n
        if keep == 0 and not final:
            carry = data
            continue
        data, carry = data[:keep], data[keep:]
        b = np.frombuffer(data, np.uint8)
        found = _fast(b, inside, prev, final)
        if found is None:
            rel, state = _exact(data, _state_of(inside, prev))
            found = (np.asarray(rel, np.int64), state == IN_QUOTED)
        rel, inside = found
        tally.add(base, b, rel, final)
        prev, base = (int(b[-1]) if len(b) else prev), base + len(data)
        if tally.end is not None or final:
            end = tally.end if tally.end is not None else size
            return LineScan(tuple(tally.starts), tally.rows, end if end - stop <= limit else None)
        if base - stop > limit:
            return LineScan(tuple(tally.starts), tally.rows, None)


def _state_of(inside: bool, prev: int) -> int:
    if inside:
        return IN_QUOTED
    if prev in (LF, CR):
        return LINE_START
    return FIELD_START if prev == COMMA else IN_FIELD
