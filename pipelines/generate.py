"""Synthetic subscriber base for the Decree 25 backfill (``backfill generate``).

    backfill generate --lines 10000000 --seed 7 --out bench-data/base.parquet
    python -m pipelines.generate --lines 200000 --seed 1 --out /tmp/base.csv --encoding gb18030

Rows come in blocks of ``BLOCK_ROWS``; block ``b`` is drawn from a numpy RNG
seeded with ``(seed, b)``, so row ``i`` depends only on ``(seed, i)`` and any
range of rows is made, chunk by chunk, without the rest. Everything is
vectorised: numpy byte matrices for numbers (check characters from
``transforms.checkdigits``), Arrow dictionary ``take`` and element-wise joins
for text. Cross-record cases (duplicated line_ids, one document on 6-8 lines,
one document under two names, organisations with many lines) live inside a
block. The shares below are the intended ones; ``generate_truth`` gives the
intended identity class of each row (shared/domain.md and DESIGN.md rules).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import io
import sys
import time
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import _generate_data as D
from schemas import avro_schema, field_names
from transforms.checkdigits import USCC_CHARSET, gb11714, mod11_10, mod11_2, uscc_mod31

__all__ = ["generate_table", "generate_truth", "write_base", "main", "BLOCK_ROWS"]

BLOCK_ROWS = 50_000  # changing it changes every base: the RNG is per (seed, block)
# Shares of all lines (enum values, identity class); documents within a kind.
KINDS = {"INDIVIDUAL": 0.94, "ORGANIZATION": 0.06}
LINE_TYPES = {"MOBILE": 0.86, "FIXED": 0.08, "DATA_CARD": 0.06}
STATUSES = {"ACTIVE": 0.82, "SUSPENDED": 0.07, "TERMINATED": 0.11}
IDENTITY = {"COMPLETE": 0.62, "MISSING": 0.11, "INCOMPLETE": 0.15, "INVALID": 0.12}
PERSON_DOCS = {"RESIDENT_ID": 0.90, "HOUSEHOLD_REGISTER": 0.02, "TEMP_RESIDENT_ID": 0.01,
               "MILITARY_ID": 0.01, "ARMED_POLICE_ID": 0.005, "HK_MACAO_TRAVEL_PERMIT": 0.015,
               "TAIWAN_TRAVEL_PERMIT": 0.01, "HMT_RESIDENCE_PERMIT": 0.01, "FOREIGN_PASSPORT": 0.015,
               "FOREIGN_PERMANENT_RESIDENT_ID": 0.005}
ORG_DOCS = {"USCC": 0.70, "BUSINESS_LICENSE": 0.12, "ORG_CODE": 0.08,
            "PUBLIC_INSTITUTION_CERT": 0.06, "SOCIAL_GROUP_CERT": 0.04}
# What makes an INVALID line invalid (exactly one defect per line).
PERSON_INVALID = {"checksum": 0.20, "birth_date": 0.10, "region": 0.06, "first_generation": 0.10,
                  "permit_as_resident_id": 0.05, "number_format": 0.04, "name_placeholder": 0.12,
                  "name_too_short": 0.05, "address_placeholder": 0.12, "doc_not_accepted": 0.08,
                  "doc_unknown": 0.04, "org_doc_for_person": 0.04}
ORG_INVALID = {"org_uscc_checksum": 0.20, "org_embedded_check": 0.08, "org_code_reserved": 0.05,
               "org_license_checksum": 0.07, "org_person_doc": 0.08, "org_name_placeholder": 0.12,
               "org_name_too_short": 0.06, "org_address_placeholder": 0.12,
               "org_doc_not_accepted": 0.07, "org_handler_invalid": 0.15}
RAW_LABEL = 0.5           # doc_type written as an operator label instead of the code
HANDLER_ONLY = 0.35       # of INCOMPLETE organisation lines: only handler fields missing
BLANKS = {None: 0.6, "": 0.15, " ": 0.15, "\u3000": 0.05, "  ": 0.05}  # absent values
DUPLICATE_LINE_ID, EMPTY_LINE_ID = 0.002, 0.0001
BAD_ENUM, BAD_DATE = 0.0002, 0.0002  # dead letters
DIRTY_ENUM = 0.03         # per enum column: lower-case / padded / title-case
MSISDN_FORMATTED = 0.08   # +86, 0086, spaces, hyphens, (area code)
IOT_DATA_CARD = 0.2       # of DATA_CARD lines: 13-digit IoT numbers
NO_AGENT, AGENTS = 0.25, 300
OTHER_BIRTHPLACE = 0.2    # citizen numbers whose address code is not the line's region
MINORITY_NAME, LOOKALIKE_DOT, LATIN_FOREIGN = 0.02, 0.3, 0.75
ZONED_TIMESTAMP = 0.1     # updated_at with "+08:00"
DIRT = {"fullwidth_digits": 0.01, "zero_width": 0.005, "ideographic_space": 0.005,
        "edge_spaces": 0.015, "double_space": 0.01, "grouped_number": 0.005,
        "lower_x": 0.3, "fullwidth_x": 0.05}  # the last two: of numbers ending in X
LINE_LIMIT_GROUPS, NAME_CONFLICTS, ORG_SHARED = 2, 6, 0.3  # per block; ORG_SHARED of orgs

DOCS = list(PERSON_DOCS) + list(ORG_DOCS)
K = {d: i for i, d in enumerate(DOCS)}
INVALID = list(PERSON_INVALID) + list(ORG_INVALID)
COLUMNS = field_names("subscriber_base")
SCHEMA = pa.schema([pa.field(c, pa.string()) for c in COLUMNS])
_EPOCH = np.datetime64("1970-01-01", "D")
_day = lambda s: int((np.datetime64(s, "D") - _EPOCH).astype(np.int64))  # noqa: E731
ACTIVATED_FROM, DATA_END, UPDATED_FROM, UPDATED_END = (
    _day("2003-01-01"), _day("2025-12-31"), _day("2024-01-01"), _day("2026-01-31"))
BORN_FROM, BORN_TO = _day("1935-01-02"), _day("2009-12-31")  # ages 16-90 in 2026
_CITIZEN = [K["RESIDENT_ID"], K["HOUSEHOLD_REGISTER"], K["TEMP_RESIDENT_ID"]]


def _mat(strings: list[str]) -> np.ndarray:
    return np.frombuffer("".join(strings).encode(), np.uint8).reshape(len(strings), -1)


_A = lambda values: pa.array(values, pa.string())  # noqa: E731
_REGION_MAT = _mat([r[0] for r in D.REGIONS])
_REGION_CODE = _A([r[0] for r in D.REGIONS])
_REGION_ADDR = _A([r[1] + r[2] + r[3] for r in D.REGIONS])
_ORG_CITY = _A([r[2] or r[1] for r in D.REGIONS])
_AREA = np.array([r[4].ljust(4, "0") for r in D.REGIONS], "S4").view(np.uint8).reshape(-1, 4)
_AREA_LEN = np.array([len(r[4]) for r in D.REGIONS])
_XJ = np.array([i for i, r in enumerate(D.REGIONS) if r[0].startswith("65")])
_LABELS = _A([lab for d in DOCS for lab in D.DOC_LABELS[d]])
_LABEL_OFF = np.cumsum([0] + [len(D.DOC_LABELS[d]) for d in DOCS])[:-1]
_LABEL_CNT = np.array([len(D.DOC_LABELS[d]) for d in DOCS])
_SURNAME_P = {s: 1.0 / (i + 4) ** 1.1 for i, s in enumerate(D.SURNAMES)}
_GIVEN = _A(D.GIVEN_CHARS + [""])
_NO = _A([f"{i}号" for i in range(1, 1000)])
_BLD = _A([""] * 30 + [f"{i}栋" for i in range(1, 31)] + [f"{i}号楼" for i in range(1, 21)])
_UNIT = _A(["", ""] + [f"{i}单元" for i in range(1, 7)])
_ROOM = _A([""] * 40 + [f"{f}{r:02d}室" for f in range(1, 34) for r in range(1, 7)])
_CHECK11 = np.frombuffer(b"0123456789X", np.uint8)
_USCC_B = np.frombuffer(USCC_CHARSET.encode(), np.uint8)


def _draw(rng: np.random.Generator, n: int, shares) -> np.ndarray:
    """Category index per row, by share (a dict of shares or an array of weights)."""
    cum = np.cumsum(list(shares.values()) if isinstance(shares, dict) else shares)
    return np.searchsorted(cum / cum[-1], rng.random(n), side="right")


def _pick(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    return np.flatnonzero(rng.random(n) < share)


def _choose(rng: np.random.Generator, values: list | pa.Array, k: int) -> pa.Array:
    values = values if isinstance(values, pa.Array) else _A(values)
    return values.take(rng.integers(len(values), size=k))


def _strings(mat: np.ndarray, lens: np.ndarray | None = None) -> pa.Array:
    """ASCII rows of a uint8 matrix (first ``lens[i]`` bytes of row i) as strings."""
    n, w = mat.shape
    lens = np.full(n, w) if lens is None else lens
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lens, out=offsets[1:])
    data = np.ascontiguousarray(mat[np.arange(w) < lens[:, None]])
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _digits(mat: np.ndarray, col: int, values, width: int) -> None:
    v = np.asarray(values, np.int64)
    for j in range(width - 1, -1, -1):
        mat[:, col + j] = 48 + v % 10
        v = v // 10


def _rand_digits(rng: np.random.Generator, k: int, w: int) -> np.ndarray:
    return (48 + rng.integers(0, 10, (k, w))).astype(np.uint8)


def _other(rng: np.random.Generator, chars: np.ndarray, alphabet: np.ndarray) -> np.ndarray:
    """A character of ``alphabet`` different from each of ``chars``."""
    pos = np.argmax(alphabet[None, :] == chars[:, None], axis=1)
    return alphabet[(pos + rng.integers(1, len(alphabet), len(chars))) % len(alphabet)]


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _cut(values: pa.Array, at: int) -> tuple[pa.Array, pa.Array]:
    return pc.utf8_slice_codeunits(values, 0, at), pc.utf8_slice_codeunits(values, at)


def _ymd(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = days.astype("M8[D]")
    month = d.astype("M8[M]")
    return (d.astype("M8[Y]").astype(np.int64) + 1970, month.astype(np.int64) % 12 + 1,
            (d - month).astype(np.int64) + 1)


class _Col:
    """A string column under construction: a base array plus row patches; one take at the end."""

    def __init__(self, base: pa.Array) -> None:
        self.parts, self.size, self.idx = [base], len(base), np.arange(len(base))

    def put(self, rows: np.ndarray, values: pa.Array) -> None:
        if len(rows):
            self.idx[rows] = self.size + np.arange(len(rows))
            self.parts.append(values)
            self.size += len(values)

    def get(self, rows: np.ndarray) -> pa.Array:
        return pa.chunked_array(self.parts, pa.string()).take(self.idx[rows]).combine_chunks()

    def done(self, rowmap: np.ndarray) -> pa.Array:
        return pa.concat_arrays(self.parts).take(self.idx[rowmap])


def _citizen(addr6: np.ndarray, y, m, d, seq) -> np.ndarray:
    """18-character citizen numbers (domain.md 2.1): address, birth date, sequence, MOD 11-2."""
    mat = np.empty((len(addr6), 18), np.uint8)
    mat[:, :6] = addr6
    for col, values, width in ((6, y, 4), (10, m, 2), (12, d, 2), (14, seq, 3)):
        _digits(mat, col, values, width)
    mat[:, 17] = mod11_2(mat[:, :17])
    return mat


def _org_body(rng: np.random.Generator, k: int) -> np.ndarray:
    """GB 11714 bodies: ``MA`` + 6 characters of the USCC set (new) or 8 digits (old)."""
    body = _USCC_B[rng.integers(0, 31, (k, 8))]
    new = rng.random(k) < 0.6
    body[new, :2] = (ord("M"), ord("A"))
    body[~new] = _rand_digits(rng, int((~new).sum()), 8)
    body[~new, 0] = 49 + rng.integers(0, 9, int((~new).sum()))
    return body


def _uscc(rng: np.random.Generator, head: np.ndarray, addr6: np.ndarray) -> np.ndarray:
    """Unified social credit codes (domain.md 2.4) with a valid embedded org code."""
    mat = np.empty((len(head), 18), np.uint8)
    mat[:, :2], mat[:, 2:8], mat[:, 8:16] = head, addr6, _org_body(rng, len(head))
    mat[:, 16] = gb11714(mat[:, 8:16])
    mat[:, 17] = uscc_mod31(mat[:, :17])
    return mat


def _han_names(rng: np.random.Generator, k: int) -> pa.Array:
    sur = _A(list(_SURNAME_P)).take(_draw(rng, k, _SURNAME_P))
    two = rng.random(k) < 0.7
    g2 = np.where(two, rng.integers(0, len(D.GIVEN_CHARS), k), len(D.GIVEN_CHARS))
    return _join(sur, _GIVEN.take(rng.integers(0, len(D.GIVEN_CHARS), k)), _GIVEN.take(g2))


def _numbers(rng, n, dk, inv, ri, org) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Document numbers as a byte matrix + lengths; also the address region of each row."""
    I = {name: INVALID.index(name) for name in INVALID}
    is_ = lambda *names: np.isin(inv, [I[x] for x in names])  # noqa: E731
    DM, DL = np.zeros((n, 20), np.uint8), np.zeros(n, np.int64)
    ari = np.where(rng.random(n) < OTHER_BIRTHPLACE, rng.integers(0, len(D.REGIONS), n), ri)
    y, m, d = _ymd(rng.integers(BORN_FROM, BORN_TO, n))
    y = np.where(is_("first_generation") & (y >= 2000), y - 28, y)  # 28 years keeps Feb 29
    bad = is_("birth_date")
    bd = np.array(D.BAD_BIRTH_DATES)[rng.integers(0, len(D.BAD_BIRTH_DATES), n)]
    y, m, d = (np.where(bad, bd[:, j], v) for j, v in enumerate((y, m, d)))
    addr6 = _REGION_MAT[ari].copy()
    nat = rng.integers(0, len(D.NATIONALITIES), n)
    nat_num = _mat([x[1] for x in D.NATIONALITIES])[nat]
    new_fprid = (dk == K["FOREIGN_PERMANENT_RESIDENT_ID"]) & (rng.random(n) < 0.5)
    permit = is_("permit_as_resident_id")
    as_fprid = permit & (rng.random(n) < 0.4)
    hmt = (dk == K["HMT_RESIDENCE_PERMIT"]) | (permit & ~as_fprid)
    addr6[hmt] = _mat(D.HMT_PERMIT_CODES)[rng.integers(0, 3, int(hmt.sum()))]
    fp = new_fprid | as_fprid
    addr6[fp, 0], addr6[fp, 1:3], addr6[fp, 3:6] = ord("9"), _REGION_MAT[ri[fp], :2], nat_num[fp]
    reg = is_("region")
    addr6[reg] = _mat(D.BAD_ADDRESS_CODES)[rng.integers(0, len(D.BAD_ADDRESS_CODES), int(reg.sum()))]
    citizen = np.isin(dk, _CITIZEN) | hmt | fp
    DM[citizen, :18] = _citizen(addr6[citizen], y[citizen], m[citizen], d[citizen],
                                rng.integers(0, 1000, int(citizen.sum())))
    DL[citizen] = 18
    r = np.flatnonzero((dk == K["FOREIGN_PERMANENT_RESIDENT_ID"]) & ~new_fprid)  # 3 letters + 12 digits
    old = np.zeros((len(r), 15), np.uint8)
    old[:, :3], old[:, 3:7] = _mat([x[0] for x in D.NATIONALITIES])[nat[r]], _REGION_MAT[ri[r], :4]
    for col, values in ((7, y[r] % 100), (9, m[r]), (11, d[r])):
        _digits(old, col, values, 2)
    old[:, 13] = 48 + rng.integers(0, 10, len(r))
    vals = np.where(old[:, :14] >= 65, old[:, :14].astype(np.int64) - 55, old[:, :14] - 48)
    old[:, 14] = 48 + (vals @ np.resize([7, 3, 1], 14)) % 10  # ICAO 7-3-1 (not enforced)
    DM[r, :15], DL[r] = old, 15
    r = np.flatnonzero(dk == K["HK_MACAO_TRAVEL_PERMIT"])  # H/M + 8 (+ 2 renewal) digits
    DM[r, 0], DM[r, 1:11] = np.where(rng.random(len(r)) < 0.7, 72, 77), _rand_digits(rng, len(r), 10)
    renewal = rng.random(len(r)) < 0.4
    DM[r[renewal], 9] = 48
    DL[r] = np.where(renewal, 11, 9)
    r = np.flatnonzero(dk == K["TAIWAN_TRAVEL_PERMIT"])  # 8 digits, or 10 + "(X)"
    DM[r, :10] = _rand_digits(rng, len(r), 10)
    form = rng.integers(0, 5, len(r))
    DM[r, 10], DM[r, 11], DM[r, 12] = 40, 65 + rng.integers(0, 26, len(r)), 41
    DL[r] = np.select([form < 3, form == 3], [8, 10], 13)
    r = np.flatnonzero(dk == K["FOREIGN_PASSPORT"])  # 9 chars: digits, or 1-2 letters + digits
    DM[r, :9] = _rand_digits(rng, len(r), 9)
    letters = rng.integers(0, 3, len(r))
    for j in range(2):
        sel = r[letters > j]
        DM[sel, j] = 65 + rng.integers(0, 26, len(sel))
    DL[r] = 9
    head = np.select([dk == K["PUBLIC_INSTITUTION_CERT"], dk == K["SOCIAL_GROUP_CERT"],
                      rng.random(n) < 0.15], [12, 51, 92], 91)
    legacy = rng.random(n) < 0.3
    r = np.flatnonzero((dk == K["USCC"]) | (np.isin(dk, [K["BUSINESS_LICENSE"], K["PUBLIC_INSTITUTION_CERT"],
                                                        K["SOCIAL_GROUP_CERT"]]) & ~legacy))
    hm = np.empty((len(r), 2), np.uint8)
    _digits(hm, 0, head[r], 2)
    DM[r, :18], DL[r] = _uscc(rng, hm, _REGION_MAT[ri[r]]), 18
    r = np.flatnonzero((dk == K["BUSINESS_LICENSE"]) & (legacy | is_("org_license_checksum")))
    DM[r, :6], DM[r, 6:14] = _REGION_MAT[ri[r]], _rand_digits(rng, len(r), 8)
    DM[r, 14], DL[r] = mod11_10(DM[r, :14]), 15
    for kind, width in ((K["PUBLIC_INSTITUTION_CERT"], 12), (K["SOCIAL_GROUP_CERT"], 10)):
        r = np.flatnonzero((dk == kind) & legacy)  # legacy certificate numbers
        DM[r, :6], DM[r, 6:width], DL[r] = _REGION_MAT[ri[r]], _rand_digits(rng, len(r), width - 6), width
    r = np.flatnonzero(dk == K["ORG_CODE"])  # XXXXXXXX-C or XXXXXXXXC
    body = _org_body(rng, len(r))
    pdy = is_("org_code_reserved")[r]
    body[pdy, :3] = _mat(["PDY"])
    body[pdy, 3:] = _rand_digits(rng, int(pdy.sum()), 5)
    hyphen = rng.random(len(r)) < 0.5
    DM[r, :8], DM[r, 8], DM[r, 9] = body, np.where(hyphen, 45, gb11714(body)), gb11714(body)
    DL[r] = np.where(hyphen, 10, 9)
    # Defects of INVALID lines (one each).
    r = np.flatnonzero(is_("checksum", "org_license_checksum"))
    for width, alphabet in ((18, _CHECK11), (15, _CHECK11[:10])):
        sel = r[DL[r] == width]
        DM[sel, width - 1] = _other(rng, DM[sel, width - 1], alphabet)
    r = np.flatnonzero(is_("org_uscc_checksum"))
    DM[r, 17] = _other(rng, DM[r, 17], _USCC_B)
    r = np.flatnonzero(is_("org_embedded_check"))
    DM[r, 16] = _other(rng, DM[r, 16], _CHECK11)
    DM[r, 17] = uscc_mod31(DM[r, :17])
    r = np.flatnonzero(is_("first_generation"))
    DM[r, 6:15], DL[r] = DM[r, 8:17].copy(), 15
    r = np.flatnonzero(is_("number_format"))
    sheet = r[rng.random(len(r)) < 0.5]  # spreadsheet damage: 1.10105E+17
    DL[r], DL[sheet] = 17, 11
    DM[sheet, 2:7], DM[sheet, 1], DM[sheet, 7:11] = DM[sheet, 1:6], ord("."), _mat(["E+17"])
    x = (DL == 18) & (DM[:, 17] == ord("X")) & ~org & (rng.random(n) < DIRT["lower_x"])
    DM[x, 17] = ord("x")
    return DM, DL, ari, np.flatnonzero((DL == 18) & (DM[:, 17] == ord("X")))


def _identity(rng, n, org, quality, ri) -> tuple[dict[str, _Col], np.ndarray, np.ndarray, np.ndarray]:
    """doc_type, doc_number, name, address and the handler's fields; also doc kind, defect."""
    dk0 = np.where(org, _draw(rng, n, ORG_DOCS) + len(PERSON_DOCS), _draw(rng, n, PERSON_DOCS))
    inv = np.where(quality == 3, np.where(org, _draw(rng, n, ORG_INVALID) + len(PERSON_INVALID),
                                           _draw(rng, n, PERSON_INVALID)), -1)
    is_ = lambda *names: np.isin(inv, [INVALID.index(x) for x in names])  # noqa: E731
    dk = np.where(is_("checksum", "birth_date", "region", "first_generation", "number_format")
                  & ~np.isin(dk0, _CITIZEN), K["RESIDENT_ID"], dk0)
    for names, kind in ((("permit_as_resident_id", "org_person_doc"), "RESIDENT_ID"),
                        (("org_doc_for_person", "org_uscc_checksum", "org_embedded_check"), "USCC"),
                        (("org_code_reserved",), "ORG_CODE"), (("org_license_checksum",), "BUSINESS_LICENSE")):
        dk = np.where(is_(*names), K[kind], dk)
    DM, DL, ari, x_rows = _numbers(rng, n, dk, inv, ri, org)
    num = _Col(_strings(DM, DL))
    r = np.flatnonzero(np.isin(dk, [K["MILITARY_ID"], K["ARMED_POLICE_ID"]]))  # 南字第12345678号
    pre = np.where(dk[r] == K["MILITARY_ID"], rng.integers(0, len(D.MILITARY_PREFIXES), len(r)),
                   len(D.MILITARY_PREFIXES))
    num.put(r, _join(_A(D.MILITARY_PREFIXES + ["武"]).take(pre), "字第",
                     _strings(_rand_digits(rng, len(r), 8)), "号"))
    raw = rng.random(n) < RAW_LABEL
    dtype = _Col(_LABELS.take(_LABEL_OFF[dk] + np.where(
        raw, 1 + (rng.random(n) * (_LABEL_CNT[dk] - 1)).astype(np.int64), 0)))
    r = np.flatnonzero(is_("first_generation") & raw)
    dtype.put(r, pa.repeat(D.FIRST_GENERATION_LABEL, len(r)))
    for name, values in (("doc_not_accepted", D.NOT_ACCEPTED_PERSON), ("doc_unknown", D.UNKNOWN_LABELS),
                         ("org_doc_not_accepted", D.NOT_ACCEPTED_ORG)):
        r = np.flatnonzero(is_(name))
        dtype.put(r, _choose(rng, values, len(r)))
    name = _Col(_han_names(rng, n))
    r = np.flatnonzero(~org & (rng.random(n) < MINORITY_NAME))
    dots = np.where(rng.random(len(r)) < LOOKALIKE_DOT, rng.integers(1, 4, len(r)), 0)
    name.put(r, _join(_choose(rng, D.MINORITY_FIRST, len(r)), _A(["\u00b7"] + D.DOT_LOOKALIKES).take(dots),
                      _choose(rng, D.MINORITY_SECOND, len(r))))
    r = np.flatnonzero(np.isin(dk, [K["FOREIGN_PASSPORT"], K["FOREIGN_PERMANENT_RESIDENT_ID"]])
                       & ~org & (rng.random(n) < LATIN_FOREIGN))
    name.put(r, _join(_choose(rng, D.LATIN_GIVEN, len(r)), " ", _choose(rng, D.LATIN_FAMILY, len(r))))
    r = np.flatnonzero(org)
    city, k = _ORG_CITY.take(ri[r]), len(r)
    name.put(r, pc.if_else(pa.array(dk0[r] == K["PUBLIC_INSTITUTION_CERT"]),
                           _join(city, _choose(rng, D.INSTITUTIONS, k)),
                           pc.if_else(pa.array(dk0[r] == K["SOCIAL_GROUP_CERT"]),
                                      _join(city, _choose(rng, D.SOCIAL_GROUPS, k)),
                                      _join(city, _choose(rng, D.TRADE_NAMES, k), _choose(rng, D.INDUSTRIES, k),
                                            _choose(rng, D.LEGAL_FORMS, k)))))
    for defect, values in (("name_placeholder", D.PLACEHOLDER_PERSON_NAMES), ("name_too_short", D.SURNAMES[:60]),
                           ("org_name_placeholder", D.PLACEHOLDER_ORG_NAMES), ("org_name_too_short", D.TRADE_NAMES)):
        r = np.flatnonzero(is_(defect))
        name.put(r, _choose(rng, values, len(r)))
    where = _REGION_ADDR.take(np.where(np.isin(dk, _CITIZEN), ari, ri))  # the document's address
    addr = _Col(_join(where, _choose(rng, D.ROADS, n), _choose(rng, _NO, n), _choose(rng, _BLD, n),
                      _choose(rng, _UNIT, n), _choose(rng, _ROOM, n)))
    r = np.flatnonzero(~org & (rng.random(n) < 0.15))  # rural: town + village + group
    addr.put(r, _join(where.take(r), _choose(rng, D.TOWNS, len(r)), _choose(rng, D.VILLAGES, len(r)),
                      _choose(rng, [f"{i}组" for i in range(1, 13)], len(r))))
    r = np.flatnonzero(is_("address_placeholder", "org_address_placeholder"))
    addr.put(r, _choose(rng, D.BAD_ADDRESSES, len(r)))
    h = np.flatnonzero(org)  # the handling person of an organisation (Art. 8)
    hmat = _citizen(_REGION_MAT[np.where(rng.random(len(h)) < 0.8, ri[h], rng.integers(0, len(ri), len(h)) % len(D.REGIONS))],
                    *_ymd(rng.integers(BORN_FROM, BORN_TO, len(h))), rng.integers(0, 1000, len(h)))
    bad = is_("org_handler_invalid")[h]
    hmat[bad, 17] = _other(rng, hmat[bad, 17], _CHECK11)
    hraw = rng.random(len(h)) < RAW_LABEL
    cols = {c: _Col(pa.nulls(n, pa.string())) for c in ("handler_doc_type", "handler_doc_number", "handler_name")}
    cols["handler_doc_type"].put(h, _LABELS.take(np.where(hraw, 1 + rng.integers(0, _LABEL_CNT[0] - 1, len(h)), 0)))
    cols["handler_doc_number"].put(h, _strings(hmat))
    cols["handler_name"].put(h, _han_names(rng, len(h)))
    main = {"doc_type": dtype, "doc_number": num, "name": name, "address": addr}
    blank = lambda col, rows: col.put(rows, _A(list(BLANKS)).take(_draw(rng, len(rows), BLANKS)))  # noqa: E731
    handler_only = (quality == 2) & org & (rng.random(n) < HANDLER_ONLY)
    bits, hbits = rng.integers(1, 15, n), rng.integers(1, 8, n)  # never all four / none
    for j, col in enumerate(main.values()):
        blank(col, np.flatnonzero((quality == 1) | ((quality == 2) & ~handler_only & (bits >> j & 1 == 1))))
    for j, col in enumerate(cols.values()):
        blank(col, np.flatnonzero(((quality == 1) & org) | (handler_only & (hbits >> j & 1 == 1))))
    _dirty(rng, n, main, x_rows, np.flatnonzero(DL == 18))
    return {**main, **cols}, dk, inv


def _dirty(rng, n, c: dict[str, _Col], x_rows: np.ndarray, rows18: np.ndarray) -> None:
    """Characters the scan must normalise away (domain.md section 5)."""
    def apply(col: _Col, rows: np.ndarray, fn) -> None:
        col.put(rows, fn(col.get(rows), len(rows)))

    def insert(at: int, what):
        return lambda v, k: _join(*_cut(v, at)[:1], what(k) if callable(what) else what, _cut(v, at)[1])

    def fullwidth(v, k):
        for digit in range(10):
            v = pc.replace_substring(v, str(digit), chr(0xFF10 + digit))
        return v
    zero_width = lambda k: _choose(rng, ["\u200b", "\ufeff"], k)  # noqa: E731
    apply(c["doc_number"], _pick(rng, n, DIRT["fullwidth_digits"]), fullwidth)
    apply(c["doc_number"], x_rows[rng.random(len(x_rows)) < DIRT["fullwidth_x"]],
          lambda v, k: pc.replace_substring(v, "X", "\uff38"))
    apply(c["doc_number"], rows18[rng.random(len(rows18)) < DIRT["grouped_number"]],
          lambda v, k: _join(pc.utf8_slice_codeunits(v, 0, 6), " ", pc.utf8_slice_codeunits(v, 6, 14), " ",
                             pc.utf8_slice_codeunits(v, 14)))
    apply(c["doc_number"], _pick(rng, n, DIRT["zero_width"]), insert(6, zero_width))
    apply(c["name"], _pick(rng, n, DIRT["zero_width"]), insert(1, zero_width))
    apply(c["name"], _pick(rng, n, DIRT["ideographic_space"]), lambda v, k: _join(v, "\u3000"))
    apply(c["address"], _pick(rng, n, DIRT["ideographic_space"]), insert(3, "\u3000"))
    apply(c["address"], _pick(rng, n, DIRT["double_space"]), insert(6, "  "))
    for col in c.values():
        pattern = rng.integers(0, 4, n)
        rows = _pick(rng, n, DIRT["edge_spaces"])
        apply(col, rows, lambda v, k: _join(_A([" ", "", " ", "  "]).take(pattern[:k]), v,
                                            _A(["", " ", " ", ""]).take(pattern[:k])))


def _msisdn(rng, n, ltype, ri) -> _Col:
    """Mobile 1[3-9]x, data cards 145/147/149 and 13-digit IoT, fixed 0 + area code + 7-8 digits."""
    M, L = np.zeros((n, 13), np.uint8), np.full(n, 11)
    M[:, 3:] = _rand_digits(rng, n, 10)
    fixed, data = ltype == 1, ltype == 2
    _digits(M, 0, np.where(data, np.array(D.DATA_CARD_PREFIXES)[rng.integers(0, 3, n)],
                           np.array(D.MOBILE_PREFIXES)[rng.integers(0, len(D.MOBILE_PREFIXES), n)]), 3)
    iot = np.flatnonzero(data & (rng.random(n) < IOT_DATA_CARD))
    M[iot, :5], L[iot] = _mat(D.IOT_PREFIXES)[rng.integers(0, 2, len(iot))], 13
    f = np.flatnonzero(fixed)
    alen = _AREA_LEN[ri[f]]
    M[f, :4] = _AREA[ri[f]]
    M[f, alen] = 50 + rng.integers(0, 7, len(f))  # local numbers start with 2-8
    L[f] = alen + np.where((alen == 3) | (rng.random(len(f)) < 0.6), 8, 7)
    col = _Col(_strings(M, L))
    r = _pick(rng, n, MSISDN_FORMATTED)
    mob = r[~fixed[r] & (L[r] == 11)]
    form, v = rng.integers(0, 6, len(mob)), col.get(mob)
    sep = _A(["", "", "", "", " ", "-"]).take(form)
    col.put(mob, _join(_A(["+86", "0086", "+86 ", "86", "", ""]).take(form), pc.utf8_slice_codeunits(v, 0, 3),
                       sep, pc.utf8_slice_codeunits(v, 3, 7), sep, pc.utf8_slice_codeunits(v, 7)))
    fr = r[fixed[r]]
    form, v, three = rng.integers(0, 3, len(fr)), col.get(fr), pa.array(_AREA_LEN[ri[fr]] == 3)
    area = pc.if_else(three, pc.utf8_slice_codeunits(v, 0, 3), pc.utf8_slice_codeunits(v, 0, 4))
    rest = pc.if_else(three, pc.utf8_slice_codeunits(v, 3), pc.utf8_slice_codeunits(v, 4))
    area = pc.if_else(pa.array(form == 1), pc.utf8_slice_codeunits(area, 1), area)  # +86 drops the trunk 0
    col.put(fr, _join(_A(["", "+86", "("]).take(form), area, _A(["-", "", ")"]).take(form), rest))
    return col


def _lines(rng, n, first, codes, ri, bad_enum, bad_date) -> tuple[dict[str, _Col], np.ndarray, np.ndarray]:
    """Line-level columns; also updated_at in seconds and the rows with an empty line_id."""
    lid = np.empty((n, 11), np.uint8)
    lid[:, 0] = ord("L")
    _digits(lid, 1, first + 1 + np.arange(n), 10)
    cols = {"line_id": _Col(_strings(lid))}
    empty = _pick(rng, n, EMPTY_LINE_ID)
    cols["line_id"].put(empty, pa.repeat("", len(empty)))
    which = rng.integers(0, 3, len(bad_enum))
    for j, (field, shares, bad) in enumerate((("line_type", LINE_TYPES, D.BAD_LINE_TYPES),
                                              ("subscriber_kind", KINDS, D.BAD_KINDS),
                                              ("status", STATUSES, D.BAD_STATUSES))):
        variants = _A([x for v in shares for x in (v, v.lower(), f" {v.lower()} ", v.title(), f"{v} ", f" {v}")])
        dirty = np.where(rng.random(n) < DIRTY_ENUM, rng.integers(1, 6, n), 0)
        cols[field] = _Col(variants.take(codes[field] * 6 + dirty))
        cols[field].put(bad_enum[which == j], _choose(rng, bad, int((which == j).sum())))
    dates = lambda days: pa.array(days.astype(np.int32), pa.date32()).cast(pa.string())  # noqa: E731
    act = rng.integers(ACTIVATED_FROM, DATA_END + 1, n)
    term = act + 1 + (rng.random(n) * (DATA_END - act)).astype(np.int64)
    gone = codes["status"] == 2
    cols["activated_on"] = _Col(dates(act))
    cols["activated_on"].put(bad_date, _choose(rng, D.BAD_DATES, len(bad_date)))
    cols["terminated_on"] = _Col(pc.if_else(pa.array(gone), dates(term), pa.scalar(None, pa.string())))
    base = np.maximum(np.where(gone, term, act), UPDATED_FROM)
    secs = (base + rng.random(n) * (UPDATED_END - base)).astype(np.int64) * 86400 + rng.integers(0, 86400, n)
    cols["region"] = _Col(_REGION_CODE.take(ri))
    agents = _A([f"AG{i:05d}" for i in range(1, AGENTS + 1)]).take(_draw(rng, n, 1.0 / np.arange(10, AGENTS + 10)))
    cols["agent_id"] = _Col(pc.if_else(pa.array(rng.random(n) < NO_AGENT), pa.scalar(None, pa.string()), agents))
    cols["msisdn"] = _msisdn(rng, n, codes["line_type"], ri)
    return cols, secs, empty


def _block(seed: int, block: int, truth: bool = False) -> pa.Table:
    """Rows ``block * BLOCK_ROWS ...`` of the base (or, with ``truth``, their intended verdicts)."""
    rng = np.random.default_rng([seed, block])
    n, first = BLOCK_ROWS, block * BLOCK_ROWS
    codes = {f: _draw(rng, n, s) for f, s in (("subscriber_kind", KINDS), ("line_type", LINE_TYPES),
                                               ("status", STATUSES), ("identity", IDENTITY))}
    org, quality, status = codes["subscriber_kind"] == 1, codes["identity"], codes["status"]
    ri = rng.integers(0, len(D.REGIONS), n)
    xj = ~org & (rng.random(n) < MINORITY_NAME)  # Xinjiang lines, where most dotted names are
    ri[xj] = _XJ[rng.integers(0, len(_XJ), int(xj.sum()))]
    dup = _pick(rng, n, DUPLICATE_LINE_ID)[1:]
    src = np.arange(n)
    src[dup] = dup - 1 - (rng.random(len(dup)) * np.minimum(dup, 2000)).astype(np.int64)
    src = src[src[src]]  # a duplicate of a duplicate copies the original
    bad_enum, bad_date = _pick(rng, n, BAD_ENUM), _pick(rng, n, BAD_DATE)
    cols, secs, empty = _lines(rng, n, first, codes, ri, bad_enum, bad_date)
    ident, dk, inv = _identity(rng, n, org, quality, ri)
    maps = {c: np.arange(n) for c in ("doc_type", "doc_number", "name", "address")}
    busy = np.zeros(n, bool)
    busy[np.concatenate([dup, src[dup], bad_enum, bad_date])] = True
    cand = rng.permutation(np.flatnonzero((quality == 0) & ~org & (dk == K["RESIDENT_ID"]) & (status != 2) & ~busy))
    flag, pos = np.zeros(n, np.int64), 0
    for g in range(LINE_LIMIT_GROUPS + NAME_CONFLICTS):  # one-ID-five-cards; DOC_NAME_CONFLICT
        limit = g < LINE_LIMIT_GROUPS
        group = cand[pos: pos + int(rng.integers(6, 9) if limit else rng.integers(2, 4))]
        pos += len(group)
        for c in (maps if limit else ("doc_type", "doc_number")):
            maps[c][group] = group[0]
        flag[group] = 1 if limit else 2
    oc = np.flatnonzero((quality == 0) & org & ~busy)  # organisations hold many lines
    follow = rng.random(len(oc)) < ORG_SHARED
    if follow.any() and not follow.all():
        lead = oc[~follow][rng.integers(0, int((~follow).sum()), int(follow.sum()))]
        for m in maps.values():
            m[oc[follow]] = lead
    if truth:
        dead = np.zeros(n, np.int64)
        dead[src[dup]], dead[empty], dead[bad_enum], dead[bad_date] = 1, 2, 3, 4
        return pa.table({
            "row": pa.array(first + np.arange(n)),
            "identity_class": _A(list(IDENTITY)).take(quality[src]),
            "defect": _A(INVALID + [None]).take(np.where(inv < 0, len(INVALID), inv)[src]),
            "doc_kind": _A(DOCS).take(dk[maps["doc_number"]][src]),
            "cross_record": _A([None, "DOC_LINE_LIMIT", "DOC_NAME_CONFLICT"]).take(flag[src]),
            "dead_letter": _A([None, "DUPLICATE_LINE_ID", "LINE_ID_MISSING", "BAD_ENUM", "BAD_DATE"]).take(dead),
        })
    secs = secs[src]
    secs[dup] += rng.integers(3600, 60 * 86400, len(dup))  # the re-export is the later one
    stamp = pc.replace_substring(pa.array(secs, pa.timestamp("s")).cast(pa.string()), " ", "T")
    out = {c: col.done(maps[c][src] if c in maps else src) for c, col in {**cols, **ident}.items()}
    out["updated_at"] = pc.if_else(pa.array(rng.random(n) < ZONED_TIMESTAMP), _join(stamp, "+08:00"), stamp)
    return pa.table([out[c] for c in COLUMNS], schema=SCHEMA)


def _check(lines: int, seed: int, start: int = 0) -> None:
    for label, value in (("lines", lines), ("seed", seed), ("start", start)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{label} must be a non-negative integer")
    if seed >= 2 ** 63:
        raise ValueError("seed must be below 2**63")


def _rows(lines: int, seed: int, start: int, truth: bool) -> Iterator[pa.Table]:
    """Rows start .. start+lines-1, block by block."""
    row, stop = start, start + lines
    while row < stop:
        block = row // BLOCK_ROWS
        offset = row - block * BLOCK_ROWS
        take = min(BLOCK_ROWS - offset, stop - row)
        yield _block(seed, block, truth).slice(offset, take)
        row += take


def generate_table(lines: int, seed: int, start: int = 0) -> pa.Table:
    """Rows ``start .. start+lines-1`` of the base for ``seed``; every contract column a string."""
    _check(lines, seed, start)
    parts = list(_rows(lines, seed, start, False))
    return pa.concat_tables(parts) if parts else SCHEMA.empty_table()


def generate_truth(lines: int, seed: int, start: int = 0) -> pa.Table:
    """The intended verdict of each row of ``generate_table(lines, seed, start)`` (for tests).

    Columns: row, identity_class (COMPLETE | MISSING | INCOMPLETE | INVALID), defect (of an
    INVALID line), doc_kind (the document the number was made for), cross_record
    (DOC_LINE_LIMIT | DOC_NAME_CONFLICT, as planted; chance collisions of random
    numbers are not listed) and dead_letter (DUPLICATE_LINE_ID on the older copy,
    LINE_ID_MISSING, BAD_ENUM, BAD_DATE).
    """
    _check(lines, seed, start)
    return pa.concat_tables(list(_rows(lines, seed, start, True))) if lines else None


FORMATS = {".parquet": "parquet", ".avro": "avro", ".csv": "csv"}
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "gb18030": "gb18030"}
_DICTIONARY_COLUMNS = ["line_type", "subscriber_kind", "status", "activated_on", "terminated_on", "region",
                       "agent_id", "doc_type", "handler_doc_type"]


def _format(path: str) -> str:
    for ext, fmt in FORMATS.items():
        if path.lower().endswith(ext):
            return fmt
    raise ValueError(f"unknown output format of {path!r}: use .parquet, .avro or .csv")


def _chunks(lines: int, seed: int, chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of ``chunk_rows`` rows (the last may be shorter; one empty table for 0 lines)."""
    pending, have = [], 0
    for part in _rows(lines, seed, 0, False):
        while len(part):
            piece = part.slice(0, chunk_rows - have)
            part = part.slice(len(piece))
            pending.append(piece)
            have += len(piece)
            if have == chunk_rows:
                yield pa.concat_tables(pending)
                pending, have = [], 0
    if pending or not lines:
        yield pa.concat_tables(pending) if pending else SCHEMA.empty_table()


def write_base(path: str, lines: int, seed: int, encoding: str = "utf-8", chunk_rows: int = 250_000) -> int:
    """Write the base as Parquet, Avro or CSV (by extension), chunk by chunk; returns rows written."""
    import fastavro
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from apache_beam.io.filesystemio import CompressionTypes  # noqa: F401  (gs:// support)
    from apache_beam.io.filesystems import FileSystems

    _check(lines, seed)
    fmt, enc = _format(path), ENCODINGS.get(str(encoding).lower())
    if enc is None:
        raise ValueError(f"unknown encoding {encoding!r}: use utf-8 or gb18030")
    if enc != "utf-8" and fmt != "csv":
        raise ValueError("--encoding applies to .csv output only")
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError("chunk_rows must be a positive integer")
    written = 0
    with FileSystems.create(path, mime_type="application/octet-stream",
                            compression_type="uncompressed") as f:
        chunks = _chunks(lines, seed, chunk_rows)
        if fmt == "parquet":
            with pq.ParquetWriter(f, SCHEMA, compression="snappy", use_dictionary=_DICTIONARY_COLUMNS) as w:
                for chunk in chunks:
                    w.write_table(chunk, row_group_size=max(len(chunk), 1))
                    written += len(chunk)
        elif fmt == "avro":
            def records() -> Iterator[dict]:
                nonlocal written
                for chunk in chunks:
                    for s in range(0, len(chunk), 10_000):
                        yield from chunk.slice(s, 10_000).to_pylist()
                    written += len(chunk)
            schema = fastavro.parse_schema(copy.deepcopy(avro_schema("subscriber_base")))
            marker = hashlib.sha256(f"subscriber-backfill:{seed}".encode()).digest()[:16]
            fastavro.writer(f, schema, records(), codec="deflate", sync_marker=marker)
        else:
            for i, chunk in enumerate(chunks):
                buf = io.BytesIO()
                pacsv.write_csv(chunk, buf, pacsv.WriteOptions(include_header=i == 0))
                data = buf.getvalue()
                f.write(data if enc == "utf-8" else data.decode("utf-8").encode("gb18030"))
                written += len(chunk)
    return written


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        raise _UsageError(message)


def main(argv: list[str] | None = None) -> int:
    """``backfill generate --lines N --seed S --out PATH [--encoding utf-8|gb18030]``."""
    parser = _Parser(prog="backfill generate",
                     description="Write a realistic synthetic subscriber base (Parquet, Avro or CSV by extension).")
    parser.add_argument("--lines", type=int, required=True, help="number of lines (rows)")
    parser.add_argument("--seed", type=int, required=True, help="random seed; the same seed gives the same file")
    parser.add_argument("--out", required=True, help="output path ending .parquet, .avro or .csv (gs:// works)")
    parser.add_argument("--encoding", default="utf-8", help="CSV encoding: utf-8 (default) or gb18030")
    try:
        args = parser.parse_args(argv)
        if args.lines < 0:
            raise _UsageError("--lines must be 0 or more")
        if not 0 <= args.seed < 2 ** 63:
            raise _UsageError("--seed must be between 0 and 2**63-1")
        _format(args.out)
        enc = ENCODINGS.get(args.encoding.lower())
        if enc is None:
            raise _UsageError(f"unknown --encoding {args.encoding!r}: use utf-8 or gb18030")
        if enc != "utf-8" and _format(args.out) != "csv":
            raise _UsageError("--encoding applies to .csv output only")
    except (_UsageError, ValueError) as exc:
        print(f"backfill generate: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        written = write_base(args.out, args.lines, args.seed, enc)
    except KeyboardInterrupt:
        print("backfill generate: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, never a traceback
        reason = (str(exc).splitlines() or [""])[0][:300]
        print(f"backfill generate: error: cannot write {args.out}: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    print(f"wrote {written} lines to {args.out} in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
