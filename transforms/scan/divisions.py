"""GB/T 2260 administrative divisions: the table, its names, and vectorised lookups.

The table is policy data (``code_tables.divisions`` of the policy, docs/policy.md
"Code tables"): python-stdnum's packaged table of current and historical codes
(``stdnum/cn/loc.dat``, read through ``stdnum.numdb``), the CSV files the policy
lists (the default ships ``schemas/gbt2260_supplement.csv``: the codes of the
yearly MCA and NBS lists that python-stdnum lacks, docs/regulation.md §2.8) and
the policy's inline ``extra`` codes. A division table is kept as one text of
``code<TAB>name`` lines, sorted: compact in the pickled policy, and turned into
numpy or Arrow lookups once per process.

    text = division_text(stdnum=True, csv_files=[data], extra={})
    divisions_known(text)[110105]      # True: a numpy bool table indexed by the six-digit value
    region_names(pa.array(["110105"]), text)   # ["北京市朝阳区"]
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "stdnum_divisions",
    "parse_stdnum_divisions",
    "stdnum_cache_text",
    "stdnum_loc_digest",
    "STDNUM_CACHE",
    "csv_divisions",
    "division_text",
    "division_codes",
    "divisions_known",
    "full_names",
    "region_names",
    "DivisionTableError",
]

_CODE = re.compile(r"^[0-9]{6}$")
_YEARS = re.compile(r"^\[[^\]]*\]")
# Prefecture-level entries that only group counties (市辖区, 县, 省直辖县级行政单位, ...): not part of a name.
_GROUPINGS = frozenset({"市辖区", "县", "省直辖县级行政单位", "省直辖行政单位", "自治区直辖县级行政单位"})


class DivisionTableError(ValueError):
    """A division table that cannot be used; ``str()`` is one line and names the row, never a value."""


def _latest_name(value: str) -> str:
    """python-stdnum writes a code's names over time as ``[-1991]东郊区,[1992-]东丽区``: the last one."""
    return _YEARS.sub("", value.split(",")[-1]).strip()


STDNUM_CACHE = "stdnum_cn_loc.json"  # in schemas/: stdnum_divisions() of the loc.dat whose sha256 it names


@functools.lru_cache(maxsize=1)
def stdnum_divisions() -> dict[str, str]:
    """code -> latest name of every code in python-stdnum's ``cn/loc`` table: from the copy parsed once and
    shipped in ``schemas/`` when it was parsed from the very ``loc.dat`` installed (its sha256; 2 ms instead of
    50 at every start), else parsed now (:func:`parse_stdnum_divisions`)."""
    cached = _cached_divisions()
    return cached if cached is not None else parse_stdnum_divisions()


def stdnum_loc_digest() -> str | None:
    """sha256 of the installed python-stdnum's ``cn/loc.dat`` (None: not found)."""
    from importlib import resources

    try:
        return hashlib.sha256(resources.files("stdnum").joinpath("cn/loc.dat").read_bytes()).hexdigest()
    except (ImportError, OSError):
        return None


def _cached_divisions() -> dict[str, str] | None:
    from importlib import resources

    import schemas

    try:
        cached = json.loads(resources.files(schemas).joinpath(STDNUM_CACHE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    digest = stdnum_loc_digest()
    return dict(cached["divisions"]) if digest is not None and cached.get("loc_sha256") == digest else None


def parse_stdnum_divisions() -> dict[str, str]:
    """code -> latest name of every code in python-stdnum's ``cn/loc`` table (its own parser reads it)."""
    from stdnum import numdb

    out: dict[str, str] = {}
    for _, low, high, _, children in numdb.get("cn/loc").prefixes:
        for province in range(int(low), int(high) + 1):
            for length, lo, hi, props, _ in children:
                for county in range(int(lo), int(hi) + 1):
                    out[f"{province:02d}{county:0{length}d}"] = _latest_name(props.get("county", ""))
    return out


def stdnum_cache_text() -> str:
    """The text of ``schemas/`` :data:`STDNUM_CACHE` for the installed python-stdnum (written again when it
    changes: ``tests/test_report_caches.py`` says so)."""
    table = {"loc_sha256": stdnum_loc_digest(), "divisions": parse_stdnum_divisions()}
    return json.dumps(table, ensure_ascii=False, indent=0) + "\n"  # in the order parsed


def csv_divisions(data: bytes, where: str) -> dict[str, str]:
    """code -> name of a CSV division table (UTF-8, a header row with ``code`` and ``name``)."""
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error):
        raise DivisionTableError(f"{where}: not a UTF-8 CSV file") from None
    if rows and not {"code", "name"} <= set(rows[0]):
        raise DivisionTableError(f"{where}: the header must name the columns code and name")
    out = {}
    for number, row in enumerate(rows, start=2):
        code, name = (row.get("code") or "").strip(), (row.get("name") or "").strip()
        if not _CODE.match(code) or "\t" in name or "\n" in name:
            raise DivisionTableError(f"{where}: row {number} is not a six-digit code with a name")
        out[code] = name
    return out


def division_text(stdnum: bool, csv_files: list[dict[str, str]], extra: dict[str, str]) -> str:
    """The table as ``code<TAB>name`` lines, sorted; a later source's name replaces an earlier one's."""
    table = dict(stdnum_divisions()) if stdnum else {}
    for part in (*csv_files, extra):
        table.update(part)
    return "".join(f"{code}\t{table[code]}\n" for code in sorted(table))


@functools.lru_cache(maxsize=4)
def division_codes(text: str) -> pa.Array:
    """The table's codes, sorted, as an Arrow string array (for ``is_in`` / ``index_in``)."""
    return pa.array([line[:6] for line in text.splitlines()], pa.string())


@functools.lru_cache(maxsize=4)
def divisions_known(text: str) -> np.ndarray:
    """A bool table of 1,000,000 entries, true at the six-digit value of each code of the table."""
    known = np.zeros(1_000_000, bool)
    raw = np.frombuffer("".join(line[:6] for line in text.splitlines()).encode("ascii"), np.uint8)
    digits = raw.reshape(-1, 6).astype(np.int64) - 48
    known[digits @ (10 ** np.arange(5, -1, -1))] = True
    return known


@functools.lru_cache(maxsize=4)
def full_names(text: str) -> dict[str, str]:
    """code -> the name as an announcement gives it: province, prefecture and county (北京市朝阳区)."""
    short = dict(line.split("\t", 1) for line in text.splitlines())

    def part(code: str) -> str:
        name = short.get(code, "")
        return "" if name in _GROUPINGS else name

    out = {}
    for code, name in short.items():
        province, prefecture = code[:2] + "0000", code[:4] + "00"
        parts = [part(province)] if code != province else []
        if code not in (province, prefecture) and prefecture != province:
            parts.append(part(prefecture))
        parts.append(name)
        out[code] = "".join(p for p in parts if p)
    return out


@functools.lru_cache(maxsize=4)
def _name_array(text: str) -> pa.Array:
    names = full_names(text)
    return pa.array([names[code] or None for code in division_codes(text).to_pylist()], pa.string())


def region_names(codes: pa.Array, text: str) -> pa.Array:
    """The full name of each six-digit code (null when the code or its name is unknown): ``index_in`` into
    the sorted codes, then ``take``; no Python per row."""
    codes = codes.combine_chunks() if isinstance(codes, pa.ChunkedArray) else codes
    at = pc.index_in(codes.cast(pa.string()), value_set=division_codes(text))
    return _name_array(text).take(at)
