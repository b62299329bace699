"""Dates and timestamps of operator exports, parsed and checked vectorised.

Accepted: ``YYYY-MM-DD``, ``YYYY/MM/DD``, ``YYYY.MM.DD``, ``YYYYMMDD``, ``YYYY年M月D日``, each
optionally followed by ``T`` or a space and ``HH:MM[:SS[.ffffff]]`` and a
zone (``Z`` or ``+08:00``); a time without a zone is UTC (docs/contract.md,
"Registration events"). Arrow's own ``strptime`` rolls 1900-02-29 over to
1900-03-01, so the calendar is checked here, with numpy, instead.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.scan.normalize import clean_text

__all__ = ["parse_dates", "parse_timestamps", "days_in_month", "is_real_date"]

_PATTERN = (
    r"^(?P<y>\d{4})(?:[-/.](?P<m1>\d{1,2})[-/.](?P<d1>\d{1,2})|(?P<m2>\d{2})(?P<d2>\d{2}))"
    r"(?:[T ](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<f>\d{1,9}))?)?)?"
    r" ?(?P<z>Z|[+-]\d{2}:?\d{2})?$"
)


_CHINESE_DATE = r"^(\d{4})年(\d{1,2})月(\d{1,2})日"


def days_in_month(year: np.ndarray, month: np.ndarray) -> np.ndarray:
    """Gregorian month lengths; month must be in 1..12."""
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    lengths = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 1, 12) - 1]
    return lengths + ((month == 2) & leap)


def is_real_date(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """A day of the Gregorian calendar in years 1-9999. The proleptic year 0 ("0000-01-01", a junk
    value of database exports) is not one: no reader of the outputs could turn it into a date."""
    ok = (year >= 1) & (year <= 9999) & (month >= 1) & (month <= 12) & (day >= 1)
    return ok & (day <= days_in_month(year, month))


def to_days(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 for valid (year, month, day); garbage elsewhere."""
    m = np.clip(month, 1, 12)
    d = np.clip(day, 1, 31)
    months = (year.astype(np.int64) - 1970) * 12 + (m - 1)
    first = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    return first + (d - 1)


def _group(struct: pa.StructArray, name: str) -> pa.Array:
    """One capture group; groups that did not take part ('') become null."""
    col = pc.struct_field(struct, name)
    return pc.if_else(pc.equal(pc.fill_null(col, ""), ""), pa.scalar(None, pa.string()), col)


def _ints(struct: pa.StructArray, name: str, fill: int = 0) -> np.ndarray:
    return pc.fill_null(_group(struct, name).cast(pa.int64()), fill).to_numpy()


def _has(struct: pa.StructArray, name: str) -> np.ndarray:
    return _group(struct, name).is_valid().to_numpy(zero_copy_only=False)


_DIGIT_POSITIONS = {
    # width: (digit positions, {position: allowed separator bytes})
    10: ((0, 1, 2, 3, 5, 6, 8, 9), {4: b"-/.", 7: b"-/."}),
    19: ((0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18), {4: b"-", 7: b"-", 10: b"T ", 13: b":", 16: b":"}),
    20: ((0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18), {4: b"-", 7: b"-", 10: b"T ", 13: b":", 16: b":", 19: b"Z"}),
    25: (
        (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24),
        {4: b"-", 7: b"-", 10: b"T ", 13: b":", 16: b":", 19: b"+-", 22: b":"},
    ),
}


def _fixed_rows(text: pa.Array, lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose value is exactly ``width`` bytes long, and their bytes as a ``(width, rows)``
    uint8 matrix (one contiguous row per byte position), gathered straight from the Arrow buffers."""
    rows = np.flatnonzero(lengths == width)
    if not len(rows):
        return rows, np.zeros((width, 0), np.uint8)
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + len(text) + 1]
    buf = np.frombuffer(text.buffers()[2], np.uint8)
    starts = offsets[rows]
    matrix = np.empty((width, len(rows)), np.uint8)
    for j in range(width):  # one gather per position: cheaper than one two-dimensional gather
        np.take(buf, starts + j, out=matrix[j])
    return rows, matrix


def _fast_fixed(text: pa.Array):
    """The common fixed layouts parsed straight from bytes (no regex).

    ``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM:SS`` with nothing, ``Z`` or ``+HH:MM``
    after it. Returns (hit, parts): parts rows are y, m, d, H, M, S and the
    zone offset in minutes; other rows go through the general regex. Only the
    rows of each width are gathered and parsed.
    """
    n = len(text)
    hit = np.zeros(n, bool)
    parts = np.zeros((7, n), np.int64)
    lengths = pc.fill_null(pc.binary_length(text), -1).to_numpy()
    for width, (digit_pos, seps) in _DIGIT_POSITIONS.items():
        rows, matrix = _fixed_rows(text, lengths, width)
        if not len(rows):
            continue
        ok = ((matrix[list(digit_pos)] - np.uint8(48)) < 10).all(axis=0)  # uint8 wrap-around: one compare
        for pos, allowed in seps.items():
            column = matrix[pos]
            sep_ok = column == allowed[0]
            for other in allowed[1:]:
                sep_ok |= column == other
            ok &= sep_ok
        if not ok.any():
            continue
        if not ok.all():
            rows, matrix = rows[ok], matrix[:, ok]
        d = matrix.astype(np.int16) - 48
        hit[rows] = True

        def two(i):
            return d[i] * 10 + d[i + 1]

        found = {0: d[0] * 1000 + d[1] * 100 + two(2), 1: two(5), 2: two(8)}
        if width >= 19:
            found.update({3: two(11), 4: two(14), 5: two(17)})
        if width == 25:
            sign = np.where(matrix[19] == ord("-"), -1, 1)
            found[6] = sign * (two(20) * 60 + two(23))
        for k, value in found.items():
            parts[k, rows] = value
    return hit, parts


def _western(text: pa.Array) -> pa.Array:
    """``2026年11月30日`` (the Chinese writing of a date, with a time after it or not) as ``2026-11-30``."""
    return pc.replace_substring_regex(text, _CHINESE_DATE, r"\1-\2-\3")


def _date_parts(groups: pa.StructArray):
    y = _ints(groups, "y", 1970)
    m = np.where(_has(groups, "m1"), _ints(groups, "m1", 1), _ints(groups, "m2", 1))
    d = np.where(_has(groups, "d1"), _ints(groups, "d1", 1), _ints(groups, "d2", 1))
    return y, m, d


def _components(values):
    """(present, matched, y, m, d, H, M, S, frac_us, offset_min) for every row."""
    text = clean_text(values)
    present = text.is_valid().to_numpy(zero_copy_only=False)
    hit, parts = _fast_fixed(text)
    n = len(text)
    frac = np.zeros(n, np.int64)
    matched = hit.copy()
    rest = present & ~hit
    if rest.any():
        # The general regex, only for rows in other layouts.
        mask = pa.array(rest)
        groups = pc.extract_regex(_western(text.filter(mask)), _PATTERN)
        ok = groups.is_valid().to_numpy(zero_copy_only=False)
        y, m, d = _date_parts(groups)
        hh, mm, ss = _ints(groups, "H"), _ints(groups, "M"), _ints(groups, "S")
        f = _group(groups, "f")
        micros = pc.fill_null(pc.utf8_slice_codeunits(pc.utf8_rpad(f, 6, "0"), 0, 6).cast(pa.int64()), 0).to_numpy()
        zone = pc.replace_substring(pc.fill_null(_group(groups, "z"), "Z"), ":", "")
        # "Z" -> "+0000"; then sign, hours and minutes are fixed positions.
        zone = pc.if_else(pc.equal(zone, "Z"), "+0000", zone)
        sign = np.where(pc.starts_with(zone, "-").to_numpy(zero_copy_only=False), -1, 1)
        zh = pc.utf8_slice_codeunits(zone, 1, 3).cast(pa.int64()).to_numpy()
        zm = pc.utf8_slice_codeunits(zone, 3, 5).cast(pa.int64()).to_numpy()
        idx = np.flatnonzero(rest)
        for row, value in zip(parts, (y, m, d, hh, mm, ss, sign * (zh * 60 + zm))):
            row[idx] = value
        frac[idx] = micros
        matched[idx] = ok
    return present, matched, parts, frac


def parse_dates(values) -> tuple[pa.Array, np.ndarray]:
    """(date32 array, bad) where ``bad`` marks present values that are not dates."""
    present, matched, parts, _ = _components(values)
    y, m, d, hh, mm, ss, _ = parts
    good = matched & is_real_date(y, m, d) & (hh < 24) & (mm < 60) & (ss < 60)
    days = np.where(good, to_days(y, m, d), 0).astype(np.int32)
    out = pa.array(days, pa.int32(), mask=~good).cast(pa.date32())
    return out, present & ~good


def parse_timestamps(values) -> tuple[pa.Array, np.ndarray]:
    """(timestamp[us, UTC] array, bad) where ``bad`` marks present values that are not times."""
    present, matched, parts, micros = _components(values)
    y, m, d, hh, mm, ss, offset_min = parts
    good = matched & is_real_date(y, m, d) & (hh < 24) & (mm < 60) & (ss < 60) & (np.abs(offset_min) <= 14 * 60)
    seconds = to_days(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss - offset_min * 60
    us = np.where(good, seconds * 1_000_000 + micros, 0)
    out = pa.array(us, pa.int64(), mask=~good).cast(pa.timestamp("us", tz="UTC"))
    return out, present & ~good
