"""Large CSV and Avro files read by many workers: byte ranges, their record boundaries, their first rows.

    splits = split_large_files(splits, "utf-8", pool.run)    # this machine: scans run by a TaskPool
    splits | "SplitLargeFiles" >> SplitLargeFiles("utf-8")   # a Beam job (pipelines/io/split_large.py)

A CSV or Avro file of at least twice ``bytes_per_split`` bytes is cut into
ranges of about that size (:func:`cut_ranges`). Each range is then scanned on
its own worker (:func:`scan_range`): an Avro range from the first block
after its start (found by the sync marker), a CSV range from the first line
break after its start, as far as the first record boundary past its end
(``pipelines/io/csv_lines.py``), counting the records it holds. The scans of
a file meet by its path (a GroupByKey) and are chained from the top of the
file (:func:`number_ranges`): the first range starts after the header, each
next one where the previous one's records end, and its first row is the
count of the records before it, so rows keep their numbers from the top of
the file and every record is read exactly once.

A CSV range that starts inside a quoted field (a value with a line break
across the cut) is scanned from the wrong place at first; where the previous
range's records end is then one of the line starts its own scan met (the
scans agree again after the quoted field), and the range starts there. When
the scans do not meet within the first line starts (an unbalanced quote that
runs on for megabytes), the file is not split: it is read as one split, as
before, and a warning names it.
"""

from __future__ import annotations

import dataclasses
import logging

from typing import Callable

from pipelines.io.avro_blocks import avro_header, scan_blocks
from pipelines.io.csv_lines import LineScan, first_line_start, scan_lines
from pipelines.io.paths import open_read
from pipelines.io.planning import InputError, Split, codec_name, read_csv_header

__all__ = [
    "BYTES_PER_SPLIT",
    "RangeScan",
    "cut_ranges",
    "number_ranges",
    "scan_range",
    "scan_checked",
    "split_large_files",
    "range_count",
]

log = logging.getLogger("backfill.read")

BYTES_PER_SPLIT = 64 << 20
SPLIT_FORMATS = ("csv", "avro")
_LIMIT = 256 << 20  # bytes a scan reads past its range to find where its last record ends (as csv_stream's rows)


@dataclasses.dataclass(frozen=True)
class RangeScan:
    """One range's scan: the range (a split from :func:`cut_ranges`) and what its scan found."""

    split: Split
    found: LineScan


def cut_ranges(split: Split, bytes_per_split: int = BYTES_PER_SPLIT) -> list[Split]:
    """The byte ranges of a whole CSV or Avro split of at least twice ``bytes_per_split`` bytes; else [split]."""
    size = split.size or 0
    if split.fmt not in SPLIT_FORMATS or split.byte_range is not None or size < 2 * max(1, bytes_per_split):
        return [split]
    n = size // max(1, bytes_per_split)
    edges = [size * i // n for i in range(n + 1)]
    return [dataclasses.replace(split, byte_range=(a, b)) for a, b in zip(edges[:-1], edges[1:])]


def scan_range(split: Split, encoding: str = "utf-8", limit: int = _LIMIT) -> LineScan:
    """Scan one range of a file cut by :func:`cut_ranges` (see the module docstring)."""
    start, stop = split.byte_range
    size = split.size
    with open_read(split.path) as f:
        if split.fmt == "avro":
            header_end, sync = avro_header(f, split.path)
            return scan_blocks(f, split.path, start, stop, size, header_end, sync)
        rest = read_csv_header(f, split.path, codec_name(encoding))[1]
        data_start = f.tell() - len(rest)
        if start <= data_start:
            begin = data_start
        else:
            f.seek(start - 1)
            begin = first_line_start(f, start, size, limit)
            if begin is None:
                return LineScan(((start, 0),), 0, None)
        f.seek(begin)
        return scan_lines(f, begin, stop, size, limit)


def number_ranges(scans: list[RangeScan]) -> list[Split]:
    """The splits of one file from the scans of all its ranges: exact byte ranges, first rows and row counts;
    the whole file as one split when two scans do not meet."""
    scans = sorted(scans, key=lambda s: s.split.byte_range)
    whole = dataclasses.replace(scans[0].split, byte_range=None, first_row=1, rows=None)
    edges = [e for s in scans for e in s.split.byte_range]
    if edges[0] != 0 or edges[-1] != whole.size or edges[1:-1:2] != edges[2:-1:2] or not scans[0].found.starts:
        raise ValueError(f"{whole.path}: the scanned ranges do not cover the file")
    at, row, splits = scans[0].found.starts[0][0], 1, []
    for scan in scans:
        stop = scan.split.byte_range[1]
        if at >= stop:  # a record from an earlier range runs over this one: it holds none
            continue
        before = dict(scan.found.starts).get(at)
        if before is None or scan.found.end is None:
            log.warning("%s: read as one split (records could not be matched across byte %d)", whole.path, at)
            return [whole]
        rows = scan.found.rows - before
        if rows:
            splits.append(dataclasses.replace(scan.split, byte_range=(at, scan.found.end), first_row=row, rows=rows))
        at, row = scan.found.end, row + rows
    return splits


def scan_checked(split: Split, encoding: str) -> LineScan:
    """:func:`scan_range`, failing in one line: an unreadable file named with the error's type only (its
    message may quote the data)."""
    try:
        return scan_range(split, encoding)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{split.path}: cannot read ({type(e).__name__})") from None


def split_large_files(
    splits: list[Split], encoding: str, run: Callable, bytes_per_split: int | None = None
) -> list[Split]:
    """The splits, every large CSV or Avro file cut into byte ranges that hold whole records and know their
    first row: what ``SplitLargeFiles`` does in a Beam job, with the ranges scanned by ``run(fn, calls)``
    (a :class:`pipelines.task_pool.TaskPool`'s ``run``: results in the calls' order)."""
    size = bytes_per_split or BYTES_PER_SPLIT  # looked up now: a test may make the ranges small
    cut = [cut_ranges(s, size) for s in splits]
    ranges = [r for pieces in cut if len(pieces) > 1 for r in pieces]
    found = iter(run(scan_checked, [(r, encoding) for r in ranges]))
    out: list[Split] = []
    for pieces in cut:
        out += number_ranges([RangeScan(r, next(found)) for r in pieces]) if len(pieces) > 1 else pieces
    return out


def range_count(splits: list[Split], bytes_per_split: int | None = None) -> int:
    """How many splits :func:`split_large_files` reads at most (the ranges of the large files, the rest)."""
    return sum(len(cut_ranges(s, bytes_per_split or BYTES_PER_SPLIT)) for s in splits)
