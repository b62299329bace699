"""Synthetic subscriber base for the Decree 25 backfill (``backfill generate``).

    backfill generate --lines 10000000 --seed 7 --out bench-data/base.parquet
    python -m dev.generate --lines 200000 --seed 1 --out /tmp/base.csv --encoding gb18030

Rows come in blocks of ``BLOCK_ROWS``; block ``b`` is drawn from a numpy RNG
seeded with ``(seed, b)``, so row ``i`` depends only on ``(seed, i)`` and any
range of rows is made block by block with bounded memory. All of it is
vectorised: numpy byte matrices for numbers (check characters from
``transforms.scan.checkdigits``), Arrow ``take`` from dictionaries and pools
(``_generate_data``) for text. Cross-record cases (re-exported line_ids, one
document on 6-8 lines, one document under two names, organisations with many
lines) stay inside a block. The shares below are intended shares;
``generate_truth`` gives the intended verdict of each row (rules:
shared/DESIGN.md, shared/domain.md). ``write_base`` makes blocks in
``THREADS`` threads while it encodes Parquet (snappy, dictionary pages for
low-cardinality columns, no statistics), Avro (fastavro, deflate) or CSV.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import copy
import functools
import hashlib
import io
import sys
import time
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dev import generate_data as D
from schemas import avro_schema, field_names
from transforms.scan.checkdigits import USCC_CHARSET, gb11714, mod11_10, mod11_2, uscc_mod31

__all__ = ["generate_table", "generate_truth", "write_base", "main", "BLOCK_ROWS"]

BLOCK_ROWS = 50_000  # changing it changes every base: the RNG is per (seed, block)
THREADS = 2          # blocks made at once while write_base writes (numpy and Arrow release the GIL)
# Shares of all lines (enum values, identity class); of a subscriber kind (documents).
KINDS = {"INDIVIDUAL": 0.94, "ORGANIZATION": 0.06}
LINE_TYPES = {"MOBILE": 0.86, "FIXED": 0.08, "DATA_CARD": 0.06}
STATUSES = {"ACTIVE": 0.82, "SUSPENDED": 0.07, "TERMINATED": 0.11}
IDENTITY = {"COMPLETE": 0.62, "MISSING": 0.11, "INCOMPLETE": 0.15, "INVALID": 0.12}
PERSON_DOCS = {"RESIDENT_ID": 0.90, "HOUSEHOLD_REGISTER": 0.02, "TEMP_RESIDENT_ID": 0.01, "MILITARY_ID": 0.01,
               "ARMED_POLICE_ID": 0.005, "HK_MACAO_TRAVEL_PERMIT": 0.015, "TAIWAN_TRAVEL_PERMIT": 0.01,
               "HMT_RESIDENCE_PERMIT": 0.01, "FOREIGN_PASSPORT": 0.015, "FOREIGN_PERMANENT_RESIDENT_ID": 0.005}
ORG_DOCS = {"USCC": 0.70, "BUSINESS_LICENSE": 0.12, "ORG_CODE": 0.08, "PUBLIC_INSTITUTION_CERT": 0.06,
            "SOCIAL_GROUP_CERT": 0.04}
# The one defect of an INVALID line, by subscriber kind.
PERSON_INVALID = {"checksum": 0.20, "birth_date": 0.10, "region": 0.06, "first_generation": 0.10,
                  "permit_as_resident_id": 0.05, "number_format": 0.04, "name_placeholder": 0.12,
                  "name_too_short": 0.05, "address_placeholder": 0.12, "doc_not_accepted": 0.08,
                  "doc_unknown": 0.04, "org_doc_for_person": 0.04}
ORG_INVALID = {"org_uscc_checksum": 0.20, "org_embedded_check": 0.08, "org_code_reserved": 0.05,
               "org_license_checksum": 0.07, "org_person_doc": 0.08, "org_name_placeholder": 0.12,
               "org_name_too_short": 0.06, "org_address_placeholder": 0.12, "org_doc_not_accepted": 0.07,
               "org_handler_invalid": 0.15}
RAW_LABEL = 0.5           # doc_type written as an operator label (domain.md 1.3), not the code
HANDLER_ONLY = 0.35       # of INCOMPLETE organisation lines: only handler fields are absent
BLANKS = {None: 0.6, "": 0.15, " ": 0.15, "\u3000": 0.05, "  ": 0.05}  # how an absent value looks
DUPLICATE_LINE_ID, EMPTY_LINE_ID = 0.002, 0.0001
BAD_ENUM, BAD_DATE = 0.0002, 0.0002  # dead letters: PREPAID, 2019-13-40
DIRTY_ENUM = 0.03         # per enum column: " mobile ", "Active", ...
MSISDN_FORMATTED = 0.08   # +86, 0086, 86, spaces, hyphens, (area code)
IOT_DATA_CARD = 0.2       # of DATA_CARD lines: 13-digit IoT numbers
NO_AGENT, AGENTS = 0.25, 300  # no agent: online / self-service openings
OTHER_BIRTHPLACE = 0.2    # citizen numbers whose address code is not the line's region
MINORITY_NAME, LOOKALIKE_DOT, XINJIANG = 0.02, 0.3, 0.7  # dotted names; of them: look-alike dot, in Xinjiang
LATIN_FOREIGN, RURAL = 0.75, 0.15  # of foreign documents: Latin names; of persons: village addresses
ZONED_TIMESTAMP = 0.1     # updated_at with "+08:00"
DIRT = {"fullwidth_digits": 0.01, "zero_width": 0.005, "ideographic_space": 0.005, "edge_spaces": 0.015,
        "double_space": 0.01, "grouped_number": 0.005, "lower_x": 0.3, "fullwidth_x": 0.05}  # x: of X-ending
LINE_LIMIT_GROUPS, NAME_CONFLICTS, ORG_SHARED = 2, 6, 0.3  # per block; share of organisation lines

DOCS, INVALID = list(PERSON_DOCS) + list(ORG_DOCS), list(PERSON_INVALID) + list(ORG_INVALID)
K = {d: i for i, d in enumerate(DOCS)}
COLUMNS = field_names("subscriber_base")
SCHEMA = pa.schema([pa.field(c, pa.string()) for c in COLUMNS])
ACTIVATED_FROM, DATA_END, UPDATED_FROM, UPDATED_END, BORN_FROM, BORN_TO, Y2K = map(D._day, (
    "2003-01-01", "2025-12-31", "2024-01-01", "2026-01-31", "1935-01-02", "2009-12-31", "2000-01-01"))
YEARS28 = 10227  # days in 28 years: the same month, day and leap-ness (ages are 16-90 in 2026)
_A = functools.partial(pa.array, type=pa.string())
_MAT = D.ascii_matrix
_LABELS = _A([lab for d in DOCS for lab in D.DOC_LABELS[d]])
_LABEL_CNT = np.array([len(D.DOC_LABELS[d]) for d in DOCS])
_LABEL_OFF = np.cumsum(_LABEL_CNT) - _LABEL_CNT
_CITIZEN = np.isin(np.arange(len(DOCS)), [K["RESIDENT_ID"], K["HOUSEHOLD_REGISTER"], K["TEMP_RESIDENT_ID"]])
_CHECK11, _USCC = np.frombuffer(b"0123456789X", np.uint8), np.frombuffer(USCC_CHARSET.encode(), np.uint8)
_BAD_BIRTHS = _MAT([f"{y:04d}{m:02d}{d:02d}" for y, m, d in D.BAD_BIRTH_DATES])
_AGENTS = _A([f"AG{i:05d}" for i in range(1, AGENTS + 1)] + [None])
_AGENT_P = list((1 - NO_AGENT) * (w := 1.0 / np.arange(10, AGENTS + 10)) / w.sum()) + [NO_AGENT]


@functools.lru_cache(maxsize=None)
def _lut(weights: tuple) -> np.ndarray:
    cum = np.cumsum(weights)
    return np.searchsorted(cum / cum[-1], (np.arange(1 << 16) + 0.5) / (1 << 16), side="right")


def _draw(rng: np.random.Generator, n: int, shares) -> np.ndarray:
    """Category index per row, by share (a dict of shares or a sequence of weights), in 1/65536 steps."""
    return _lut(tuple(shares.values()) if isinstance(shares, dict) else tuple(shares))[rng.integers(0, 1 << 16, n)]


def _pick(rng: np.random.Generator, n: int, share: float, within: np.ndarray | None = None) -> np.ndarray:
    """About ``share`` of the rows (of ``within`` if given), distinct and sorted."""
    pool = n if within is None else len(within)
    if share >= 0.01 or not pool:
        rows = np.flatnonzero(rng.random(pool) < share)
    else:  # a few rows: cheaper than a mask over all of them
        rows = np.unique(rng.integers(0, pool, rng.binomial(pool, share)))
    return rows if within is None else within[rows]


def _choose(rng: np.random.Generator, values, k: int) -> pa.Array:
    values = values if isinstance(values, pa.Array) else _A(values)
    return values.take(rng.integers(0, len(values), k))


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _digits(rng: np.random.Generator, k: int, w: int) -> np.ndarray:
    return rng.integers(48, 58, (k, w), dtype=np.uint8)


def _strings(mat: np.ndarray, lens: np.ndarray | None = None) -> pa.Array:
    """ASCII rows of a uint8 matrix (the first ``lens[i]`` bytes of row i) as strings."""
    n, w = mat.shape
    offsets = np.arange(n + 1, dtype=np.int32) * w if lens is None else np.concatenate([[0], np.cumsum(lens)])
    data = np.ascontiguousarray(mat) if lens is None else np.ascontiguousarray(mat[np.arange(w) < lens[:, None]])
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])


def _text(mat: np.ndarray, lens: np.ndarray) -> "_Col":
    """Like ``_strings``, as a column: the commonest length for all rows, the other rows patched."""
    common = int(np.bincount(lens).argmax())
    col, other = _Col(_strings(mat[:, :common])), np.flatnonzero(lens != common)
    col.put(other, _strings(mat[other], lens[other]))
    return col


def _other(rng: np.random.Generator, chars: np.ndarray, alphabet: np.ndarray) -> np.ndarray:
    """A character of ``alphabet`` other than each of ``chars`` (a wrong check character)."""
    pos = np.argmax(alphabet[None, :] == chars[:, None], axis=1)
    return alphabet[(pos + rng.integers(1, len(alphabet), len(chars))) % len(alphabet)]


class _Col:
    """A string column under construction: values[idx] plus row patches; one ``take`` at the end."""

    def __init__(self, values: pa.Array, idx: np.ndarray | None = None) -> None:
        self.parts, self.size = [values], len(values)
        self.idx = np.arange(len(values)) if idx is None else idx

    def put(self, rows: np.ndarray, values: pa.Array) -> None:
        if len(rows):
            self.idx[rows] = self.size + np.arange(len(rows))
            self.parts.append(values)
            self.size += len(values)

    def get(self, rows: np.ndarray) -> pa.Array:
        idx = self.idx[rows]
        if not len(idx) or idx.max() < len(self.parts[0]):  # all from the base: no concatenation
            return self.parts[0].take(idx)
        return pa.chunked_array(self.parts, pa.string()).take(idx).combine_chunks()

    def done(self, rowmap: np.ndarray) -> pa.Array:
        return (pa.concat_arrays(self.parts) if len(self.parts) > 1 else self.parts[0]).take(self.idx[rowmap])


def _person(seed: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Birth day and sequence code of the person of each global row, distinct for distinct rows
    below 27 million, so two people never share a citizen number by chance: a keyed Feistel
    permutation of (birth day, sequence code) pairs, with hashed round functions."""
    span, keys = BORN_TO - BORN_FROM, np.random.default_rng([seed, 1 << 40]).integers(0, 1 << 62, 3, np.uint64)
    mix = lambda x, k, m: ((x.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + k) >> np.uint64(29)) % np.uint64(m)  # noqa
    day, seq = rows % span, rows // span % 1000
    for k in keys:
        seq = (seq + mix(day, k, 1000).astype(np.int64)) % 1000
        day = (day + mix(seq, k ^ np.uint64(0x5DEECE66D), span).astype(np.int64)) % span
    return BORN_FROM + day, seq


def _citizen(addr6: np.ndarray, birth: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """18-character citizen numbers (domain.md 2.1): address, YYYYMMDD, sequence, MOD 11-2."""
    mat = np.empty((len(addr6), 18), np.uint8)
    mat[:, :6], mat[:, 6:14], mat[:, 14:17] = addr6, birth, D.DIGITS[3][seq]
    mat[:, 17] = mod11_2(mat[:, :17])
    return mat


def _org_body(rng: np.random.Generator, k: int) -> np.ndarray:
    """GB 11714 bodies (domain.md 2.5): ``MA`` + 6 USCC-set characters (60%) or 8 digits."""
    body, old = _USCC[rng.integers(0, 31, (k, 8))], rng.random(k) < 0.4
    body[:, :2] = (ord("M"), ord("A"))
    body[old] = _digits(rng, int(old.sum()), 8)
    body[old, 0] = rng.integers(49, 58, int(old.sum()))
    return body


def _numbers(rng, n, dk, defect, ri, org, born, seq) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Document numbers (byte matrix + lengths) of each document kind (domain.md 2.1-2.7)."""
    DM, DL, ari = np.zeros((n, 20), np.uint8), np.zeros(n, np.int64), ri.copy()
    away = _pick(rng, n, OTHER_BIRTHPLACE)  # address code of the birthplace, not of the line
    ari[away] = rng.integers(0, len(D.REGIONS), len(away))
    born = np.where(defect("first_generation") & (born >= Y2K), born - YEARS28, born)  # 15 digits: 19xx
    birth, bad = D.YMD8[born - D.DAY0], defect("birth_date")  # impossible or future, with a right check
    birth[bad] = _BAD_BIRTHS[rng.integers(0, len(_BAD_BIRTHS), int(bad.sum()))]
    addr6, permit = D.REGION_MAT[ari], defect("permit_as_resident_id")
    foreign = np.flatnonzero((dk == K["FOREIGN_PERMANENT_RESIDENT_ID"]) | permit)
    fprid = np.zeros(n, bool)
    fprid[foreign[rng.random(len(foreign)) < 0.5]] = True  # new card: 9 + province + nationality
    nat = rng.integers(0, len(D.NATIONALITIES), n)
    hmt = (dk == K["HMT_RESIDENCE_PERMIT"]) | permit & ~fprid
    addr6[hmt] = _MAT(D.HMT_PERMIT_CODES)[rng.integers(0, 3, int(hmt.sum()))]
    addr6[fprid, 0], addr6[fprid, 1:3] = ord("9"), D.REGION_MAT[ri[fprid], :2]
    addr6[fprid, 3:6] = _MAT([x[1] for x in D.NATIONALITIES])[nat[fprid]]
    bad = defect("region")
    addr6[bad] = _MAT(D.BAD_ADDRESS_CODES)[rng.integers(0, len(D.BAD_ADDRESS_CODES), int(bad.sum()))]
    DM[:, :18] = _citizen(addr6, birth, seq)  # for every row: cheaper than selecting; others overwrite
    DL[_CITIZEN[dk] | hmt | fprid] = 18
    r = np.flatnonzero((dk == K["FOREIGN_PERMANENT_RESIDENT_ID"]) & ~fprid)  # old card: USA 1100 800101 1 1
    old = np.zeros((len(r), 15), np.uint8)
    old[:, :3], old[:, 3:7] = _MAT([x[0] for x in D.NATIONALITIES])[nat[r]], D.REGION_MAT[ri[r], :4]
    old[:, 7:13], old[:, 13] = birth[r, 2:], rng.integers(48, 58, len(r))
    value = old[:, :14].astype(np.int64) - np.where(old[:, :14] >= 65, 55, 48)
    old[:, 14] = 48 + (value @ np.resize([7, 3, 1], 14)) % 10  # ICAO 7-3-1 (not enforced by the policy)
    DM[r, :15], DL[r] = old, 15
    r = np.flatnonzero(dk == K["HK_MACAO_TRAVEL_PERMIT"])  # H/M + 8 digits (+ 2-digit renewal count)
    DM[r, 0], DM[r, 1:11] = np.where(rng.random(len(r)) < 0.7, 72, 77), _digits(rng, len(r), 10)
    renewal = rng.random(len(r)) < 0.4
    DM[r[renewal], 9], DL[r] = 48, np.where(renewal, 11, 9)
    r = np.flatnonzero(dk == K["TAIWAN_TRAVEL_PERMIT"])  # 8 digits, or 10 digits (+ "(X)")
    form = rng.integers(0, 5, len(r))
    DM[r, :10], DM[r, 10], DM[r, 11], DM[r, 12] = _digits(rng, len(r), 10), 40, rng.integers(65, 91, len(r)), 41
    DL[r] = np.select([form < 3, form == 3], [8, 10], 13)
    r = np.flatnonzero(dk == K["FOREIGN_PASSPORT"])  # 9 digits, or 1-2 letters + digits
    DM[r, :9], DL[r], letters = _digits(rng, len(r), 9), 9, rng.integers(0, 3, len(r))
    for j in range(2):
        DM[r[letters > j], j] = rng.integers(65, 91, int((letters > j).sum()))
    o = np.flatnonzero(org | (dk >= len(PERSON_DOCS)))  # organisation documents from here on
    legacy, kind = rng.random(len(o)) < 0.3, dk[o]
    head = np.select([kind == K["PUBLIC_INSTITUTION_CERT"], kind == K["SOCIAL_GROUP_CERT"],
                      rng.random(len(o)) < 0.15], [12, 51, 92], 91)  # authority + category (domain.md 2.4)
    sel = (kind == K["USCC"]) | ~legacy & np.isin(kind, [K["BUSINESS_LICENSE"], K["PUBLIC_INSTITUTION_CERT"],
                                                          K["SOCIAL_GROUP_CERT"]])
    r = o[sel]
    DM[r, :2], DM[r, 2:8], DM[r, 8:16], DL[r] = D.DIGITS[2][head[sel]], D.REGION_MAT[ri[r]], _org_body(rng, len(r)), 18
    DM[r, 16] = gb11714(DM[r, 8:16])
    DM[r, 17] = uscc_mod31(DM[r, :17])
    r = o[(kind == K["BUSINESS_LICENSE"]) & (legacy | defect("org_license_checksum")[o])]  # 15 digits
    DM[r, :6], DM[r, 6:14] = D.REGION_MAT[ri[r]], _digits(rng, len(r), 8)
    DM[r, 14], DL[r] = mod11_10(DM[r, :14]), 15
    for cert, width in ((K["PUBLIC_INSTITUTION_CERT"], 12), (K["SOCIAL_GROUP_CERT"], 10)):
        r = o[(kind == cert) & legacy]  # pre-USCC certificate numbers
        DM[r, :6], DM[r, 6:width], DL[r] = D.REGION_MAT[ri[r]], _digits(rng, len(r), width - 6), width
    r = o[kind == K["ORG_CODE"]]  # XXXXXXXX-C or XXXXXXXXC
    body, pdy, hyphen = _org_body(rng, len(r)), defect("org_code_reserved")[r], rng.random(len(r)) < 0.5
    body[pdy, :3], body[pdy, 3:] = _MAT(["PDY"]), _digits(rng, int(pdy.sum()), 5)
    check = gb11714(body)
    DM[r, :8], DM[r, 8], DM[r, 9], DL[r] = body, np.where(hyphen, 45, check), check, np.where(hyphen, 10, 9)
    r = np.flatnonzero(defect("checksum", "org_license_checksum"))  # the defects of INVALID lines
    for width, alphabet in ((18, _CHECK11), (15, _CHECK11[:10])):
        DM[r[DL[r] == width], width - 1] = _other(rng, DM[r[DL[r] == width], width - 1], alphabet)
    r = np.flatnonzero(defect("org_uscc_checksum"))
    DM[r, 17] = _other(rng, DM[r, 17], _USCC)
    r = np.flatnonzero(defect("org_embedded_check"))  # mod-31 right, embedded GB 11714 wrong
    DM[r, 16] = _other(rng, DM[r, 16], _CHECK11)
    DM[r, 17] = uscc_mod31(DM[r, :17])
    r = np.flatnonzero(defect("first_generation"))  # AAAAAA YYMMDD SSS
    DM[r, 6:15], DL[r] = DM[r, 8:17], 15
    r = np.flatnonzero(defect("number_format"))
    sheet = r[rng.random(len(r)) < 0.5]  # spreadsheet damage: 1.10105E+17
    DL[r], DL[sheet] = 17, 11
    DM[sheet, 2:7], DM[sheet, 1], DM[sheet, 7:11] = DM[sheet, 1:6], ord("."), _MAT(["E+17"])
    x = _pick(rng, n, DIRT["lower_x"], np.flatnonzero((DL == 18) & (DM[:, 17] == ord("X")) & ~org))
    DM[x, 17] = ord("x")
    return DM, DL, ari


def _identity(rng, n, org, quality, ri, person) -> tuple[dict[str, _Col], np.ndarray, np.ndarray]:
    """doc_type, doc_number, name, address and the handler's fields; also doc kind and defect."""
    born, seq = person  # of the line's person: the subscriber, or an organisation's handler
    dk0, inv, bad = _draw(rng, n, PERSON_DOCS), np.full(n, -1), quality == 3
    dk0[org] = _draw(rng, int(org.sum()), ORG_DOCS) + len(PERSON_DOCS)
    inv[bad & ~org] = _draw(rng, int((bad & ~org).sum()), PERSON_INVALID)
    inv[bad & org] = _draw(rng, int((bad & org).sum()), ORG_INVALID) + len(PERSON_INVALID)
    lut = np.where(inv < 0, len(INVALID), inv)
    defect = lambda *names: np.isin(np.arange(len(INVALID) + 1), [INVALID.index(x) for x in names])[lut]  # noqa
    dk = np.where(defect("checksum", "birth_date", "region", "first_generation", "number_format")
                  & ~_CITIZEN[dk0], K["RESIDENT_ID"], dk0)
    for names, kind in ((("permit_as_resident_id", "org_person_doc"), "RESIDENT_ID"),
                        (("org_doc_for_person", "org_uscc_checksum", "org_embedded_check"), "USCC"),
                        (("org_code_reserved",), "ORG_CODE"), (("org_license_checksum",), "BUSINESS_LICENSE")):
        dk[defect(*names)] = K[kind]
    DM, DL, ari = _numbers(rng, n, dk, defect, ri, org, born, seq)
    num = _text(DM, DL)
    r = np.flatnonzero((dk == K["MILITARY_ID"]) | (dk == K["ARMED_POLICE_ID"]))  # 南字第12345678号
    pre = np.where(dk[r] == K["MILITARY_ID"], rng.integers(0, len(D.MILITARY_PREFIXES), len(r)),
                   len(D.MILITARY_PREFIXES))
    num.put(r, _join(_A(D.MILITARY_PREFIXES + ["武"]).take(pre), "字第", _strings(_digits(rng, len(r), 8)), "号"))
    u = rng.random(n)  # < RAW_LABEL: an operator label, picked by the rest of u
    raw = u < RAW_LABEL
    dtype = _Col(_LABELS, _LABEL_OFF[dk] + raw * (1 + (u / RAW_LABEL * (_LABEL_CNT[dk] - 1)).astype(np.int64)))
    r = np.flatnonzero(defect("first_generation") & raw)
    dtype.put(r, pa.repeat(D.FIRST_GENERATION_LABEL, len(r)))
    for flaw, values in (("doc_not_accepted", D.NOT_ACCEPTED_PERSON), ("doc_unknown", D.UNKNOWN_LABELS),
                         ("org_doc_not_accepted", D.NOT_ACCEPTED_ORG)):
        r = np.flatnonzero(defect(flaw))
        dtype.put(r, _choose(rng, values, len(r)))
    name = _Col(D.NAME_POOL, rng.integers(0, len(D.NAME_POOL), n))
    r = _pick(rng, n, MINORITY_NAME, np.flatnonzero(~org))
    dot = np.where(rng.random(len(r)) < LOOKALIKE_DOT, rng.integers(1, 4, len(r)), 0)
    name.put(r, D.DOTTED_POOL.take(dot * 4096 + rng.integers(0, 4096, len(r))))
    r = _pick(rng, n, LATIN_FOREIGN, np.flatnonzero(~org & np.isin(dk, [K["FOREIGN_PASSPORT"],
                                                                         K["FOREIGN_PERMANENT_RESIDENT_ID"]])))
    name.put(r, _choose(rng, D.LATIN_POOL, len(r)))
    r = np.flatnonzero(org)
    kind = np.select([dk0[r] == K["PUBLIC_INSTITUTION_CERT"], dk0[r] == K["SOCIAL_GROUP_CERT"]], [1, 2], 0)
    tails = pa.concat_arrays([_choose(rng, D.FIRM_POOL, len(r)), _choose(rng, D.INSTITUTIONS, len(r)),
                              _choose(rng, D.SOCIAL_GROUPS, len(r))])
    name.put(r, _join(D.ORG_CITY.take(ri[r]), tails.take(kind * len(r) + np.arange(len(r)))))
    for flaw, values in (("name_placeholder", D.PLACEHOLDER_PERSON_NAMES), ("name_too_short", D.SURNAMES[:60]),
                         ("org_name_placeholder", D.PLACEHOLDER_ORG_NAMES), ("org_name_too_short", D.TRADE_NAMES)):
        r = np.flatnonzero(defect(flaw))
        name.put(r, _choose(rng, values, len(r)))
    tail = rng.integers(0, len(D.STREET_POOL), n)
    rural = _pick(rng, n, RURAL, np.flatnonzero(~org))  # town + village + group
    tail[rural] = len(D.STREET_POOL) + rng.integers(0, len(D.VILLAGE_POOL), len(rural))
    where = np.where(_CITIZEN[dk], ari, ri)  # the address printed on the document
    addr = _Col(_join(D.REGION_ADDRESS.take(where), D.ADDRESS_TAILS.take(tail)))
    r = np.flatnonzero(defect("address_placeholder", "org_address_placeholder"))
    addr.put(r, _choose(rng, D.BAD_ADDRESSES, len(r)))
    h = np.flatnonzero(org)  # the handling person of an organisation (Art. 8)
    hri = np.where(rng.random(len(h)) < 0.8, ri[h], rng.integers(0, len(D.REGIONS), len(h)))
    hmat = _citizen(D.REGION_MAT[hri], D.YMD8[born[h] - D.DAY0], seq[h])
    bad = defect("org_handler_invalid")[h]
    hmat[bad, 17] = _other(rng, hmat[bad, 17], _CHECK11)
    hand = {c: _Col(_A([None]), np.zeros(n, np.int64))
            for c in ("handler_doc_type", "handler_doc_number", "handler_name")}
    rid = K["RESIDENT_ID"]
    hand["handler_doc_type"].put(h, _LABELS.take(_LABEL_OFF[rid] + (rng.random(len(h)) < RAW_LABEL)
                                                 * rng.integers(1, _LABEL_CNT[rid], len(h))))
    hand["handler_doc_number"].put(h, _strings(hmat))
    hand["handler_name"].put(h, _choose(rng, D.NAME_POOL, len(h)))
    main = {"doc_type": dtype, "doc_number": num, "name": name, "address": addr}
    handler_only = np.zeros(n, bool)
    handler_only[_pick(rng, n, HANDLER_ONLY, np.flatnonzero((quality == 2) & org))] = True
    bits = np.where(quality == 1, 15, 0)  # bit j: blank field j (MISSING: all; INCOMPLETE: some, never all)
    bits[(quality == 2) & ~handler_only] = rng.integers(1, 15, int(((quality == 2) & ~handler_only).sum()))
    hbits = np.where((quality == 1) & org, 7, 0)
    hbits[handler_only] = rng.integers(1, 8, int(handler_only.sum()))
    blanks = _A(list(BLANKS))
    for j, col in [*enumerate(main.values()), *enumerate(hand.values(), 4)]:
        r = np.flatnonzero((bits if j < 4 else hbits) >> (j % 4) & 1)
        col.put(r, blanks.take(_draw(rng, len(r), BLANKS)))
    _dirty(rng, n, main, np.flatnonzero(DL == 18), DM[:, 17] == ord("X"))
    return {**main, **hand}, dk, inv


def _dirty(rng, n, c: dict[str, _Col], rows18: np.ndarray, big_x: np.ndarray) -> None:
    """Characters that the scan's normalisation removes (domain.md section 5)."""
    def apply(col: _Col, rows: np.ndarray, fn) -> None:
        col.put(rows, fn(col.get(rows), len(rows)))

    def insert(at: int, what):
        return lambda v, k: _join(pc.utf8_slice_codeunits(v, 0, at), what(k) if callable(what) else what,
                                  pc.utf8_slice_codeunits(v, at))

    def fullwidth(v: pa.Array, k: int) -> pa.Array:
        for digit in range(10):
            v = pc.replace_substring(v, str(digit), chr(0xFF10 + digit))
        return v
    zero_width = lambda k: _choose(rng, ["\u200b", "\ufeff"], k)  # noqa: E731
    apply(c["doc_number"], _pick(rng, n, DIRT["fullwidth_digits"]), fullwidth)
    apply(c["doc_number"], _pick(rng, n, DIRT["fullwidth_x"], rows18[big_x[rows18]]),
          lambda v, k: pc.replace_substring(v, "X", "\uff38"))
    cut = pc.utf8_slice_codeunits
    apply(c["doc_number"], _pick(rng, n, DIRT["grouped_number"], rows18),
          lambda v, k: _join(cut(v, 0, 6), " ", cut(v, 6, 14), " ", cut(v, 14)))
    apply(c["doc_number"], _pick(rng, n, DIRT["zero_width"]), insert(6, zero_width))
    apply(c["name"], _pick(rng, n, DIRT["zero_width"]), insert(1, zero_width))
    apply(c["name"], _pick(rng, n, DIRT["ideographic_space"]), lambda v, k: _join(v, "\u3000"))
    apply(c["address"], _pick(rng, n, DIRT["ideographic_space"]), insert(3, "\u3000"))
    apply(c["address"], _pick(rng, n, DIRT["double_space"]), insert(6, "  "))
    for col in c.values():
        rows = _pick(rng, n, DIRT["edge_spaces"])
        pattern = rng.integers(0, 4, len(rows))
        apply(col, rows, lambda v, k: _join(_A([" ", "", " ", "  "]).take(pattern), v,
                                            _A(["", " ", " ", ""]).take(pattern)))


def _msisdn(rng, n, ltype, ri) -> _Col:
    """Mobile 1[3-9]x, data cards 145/147/149 and 13-digit IoT, fixed 0 + area code + 7-8 digits."""
    M, L, fixed, data = np.empty((n, 13), np.uint8), np.full(n, 11), ltype == 1, ltype == 2
    M[:, 3:] = _digits(rng, n, 10)
    M[:, :3] = D.DIGITS[3][np.array(D.MOBILE_PREFIXES)[rng.integers(0, len(D.MOBILE_PREFIXES), n)]]
    r = np.flatnonzero(data)
    M[r, :3] = D.DIGITS[3][np.array(D.DATA_CARD_PREFIXES)[rng.integers(0, 3, len(r))]]
    iot = _pick(rng, n, IOT_DATA_CARD, r)
    M[iot, :5], L[iot] = _MAT(D.IOT_PREFIXES)[rng.integers(0, 2, len(iot))], 13
    f = np.flatnonzero(fixed)
    alen = D.AREA_LEN[ri[f]]
    M[f, :4], M[f, alen] = D.AREA_MAT[ri[f]], rng.integers(50, 57, len(f))  # local numbers start with 2-8
    L[f] = alen + np.where((alen == 3) | (rng.random(len(f)) < 0.6), 8, 7)
    col, r, cut = _text(M, L), _pick(rng, n, MSISDN_FORMATTED), pc.utf8_slice_codeunits
    mob = r[~fixed[r] & (L[r] == 11)]
    form, v = rng.integers(0, 6, len(mob)), col.get(mob)
    sep = _A(["", "", "", "", " ", "-"]).take(form)
    col.put(mob, _join(_A(["+86", "0086", "+86 ", "86", "", ""]).take(form), cut(v, 0, 3), sep, cut(v, 3, 7), sep,
                       cut(v, 7)))
    fr = r[fixed[r]]
    form, v, three = rng.integers(0, 3, len(fr)), col.get(fr), pa.array(D.AREA_LEN[ri[fr]] == 3)
    area = pc.if_else(three, cut(v, 0, 3), cut(v, 0, 4))
    area = pc.if_else(pa.array(form == 1), cut(area, 1), area)  # +86 drops the trunk 0
    col.put(fr, _join(_A(["", "+86", "("]).take(form), area, _A(["-", "", ")"]).take(form),
                      pc.if_else(three, cut(v, 3), cut(v, 4))))
    return col


def _lines(rng, n, first, codes, ri, bad_enum, bad_date) -> tuple[dict[str, _Col], np.ndarray, np.ndarray]:
    """Line-level columns; also updated_at in seconds and the rows whose line_id is empty."""
    lid, rows = np.empty((n, 11), np.uint8), first + 1 + np.arange(n)  # L0000000123: row + 1
    lid[:, 0], lid[:, 1:6], lid[:, 6:] = ord("L"), D.DIGITS[5][rows // 100_000 % 100_000], D.DIGITS[5][rows % 100_000]
    cols, empty = {"line_id": _Col(_strings(lid))}, _pick(rng, n, EMPTY_LINE_ID)
    cols["line_id"].put(empty, pa.repeat("", len(empty)))
    which = rng.integers(0, 3, len(bad_enum))
    for j, (field, shares, bad) in enumerate((("line_type", LINE_TYPES, D.BAD_LINE_TYPES),
                                              ("subscriber_kind", KINDS, D.BAD_KINDS),
                                              ("status", STATUSES, D.BAD_STATUSES))):
        variants = _A([x for v in shares for x in (v, v.lower(), f" {v.lower()} ", v.title(), f"{v} ", f" {v}")])
        idx, dirty = codes[field] * 6, _pick(rng, n, DIRTY_ENUM)
        idx[dirty] += rng.integers(1, 6, len(dirty))
        cols[field] = _Col(variants, idx)
        cols[field].put(bad_enum[which == j], _choose(rng, bad, int((which == j).sum())))
    act = rng.integers(ACTIVATED_FROM, DATA_END + 1, n)
    gone = np.flatnonzero(codes["status"] == 2)
    term = act.copy()
    term[gone] += 1 + (rng.random(len(gone)) * (DATA_END - act[gone])).astype(np.int64)
    cols["activated_on"] = _Col(_strings(D.YMD10[act - D.DAY0]))
    cols["activated_on"].put(bad_date, _choose(rng, D.BAD_DATES, len(bad_date)))
    cols["terminated_on"] = _Col(_A([None]), np.zeros(n, np.int64))
    cols["terminated_on"].put(gone, _strings(D.YMD10[term[gone] - D.DAY0]))
    base = np.maximum(term, UPDATED_FROM) * 86400
    secs = rng.integers(base, UPDATED_END * 86400)
    cols["region"] = _Col(D.REGION_CODE, ri.copy())
    cols["agent_id"] = _Col(_AGENTS, _draw(rng, n, _AGENT_P))
    cols["msisdn"] = _msisdn(rng, n, codes["line_type"], ri)
    return cols, secs, empty


@functools.lru_cache(maxsize=2)  # small, misaligned requests reuse the block they share
def _block(seed: int, block: int, truth: bool = False) -> pa.Table:
    """Rows ``block * BLOCK_ROWS`` onwards (with ``truth``: their intended verdicts)."""
    rng, n, first = np.random.default_rng([seed, block]), BLOCK_ROWS, block * BLOCK_ROWS
    codes = {f: _draw(rng, n, s) for f, s in (("subscriber_kind", KINDS), ("line_type", LINE_TYPES),
                                               ("status", STATUSES), ("identity", IDENTITY))}
    org, quality, status = codes["subscriber_kind"] == 1, codes["identity"], codes["status"]
    ri = rng.integers(0, len(D.REGIONS), n)
    xj = _pick(rng, n, MINORITY_NAME * XINJIANG, np.flatnonzero(~org))  # most dotted names are in Xinjiang
    ri[xj] = D.XINJIANG[rng.integers(0, len(D.XINJIANG), len(xj))]
    dup, src = _pick(rng, n, DUPLICATE_LINE_ID)[1:], np.arange(n)
    src[dup] = dup - 1 - (rng.random(len(dup)) * np.minimum(dup, 2000)).astype(np.int64)
    src = src[src[src]]  # a re-export of a re-export copies the original
    bad_enum, bad_date = _pick(rng, n, BAD_ENUM), _pick(rng, n, BAD_DATE)
    cols, secs, empty = _lines(rng, n, first, codes, ri, bad_enum, bad_date)
    ident, dk, inv = _identity(rng, n, org, quality, ri, _person(seed, first + np.arange(n)))
    maps = {c: np.arange(n) for c in ("doc_type", "doc_number", "name", "address")}
    busy = np.zeros(n, bool)
    busy[np.concatenate([dup, src[dup], bad_enum, bad_date, empty])] = True
    cand = rng.permutation(np.flatnonzero((quality == 0) & ~org & (dk == K["RESIDENT_ID"]) & (status != 2) & ~busy))
    flag, pos = np.zeros(n, np.int64), 0
    for g in range(LINE_LIMIT_GROUPS + NAME_CONFLICTS):  # one ID on 6-8 live lines; one ID, 2-3 names
        limit = g < LINE_LIMIT_GROUPS
        group = cand[pos: pos + int(rng.integers(6, 9) if limit else rng.integers(2, 4))]
        pos += len(group)
        for c in (maps if limit else ("doc_type", "doc_number")):
            maps[c][group] = group[0]
        flag[group] = 1 if limit else 2
    oc = np.flatnonzero((quality == 0) & org & ~busy)  # an organisation holds many lines
    follow = rng.random(len(oc)) < ORG_SHARED
    if follow.any() and not follow.all():
        lead = oc[~follow][rng.integers(0, int((~follow).sum()), int(follow.sum()))]
        for m in maps.values():
            m[oc[follow]] = lead
    if truth:
        dead = np.zeros(n, np.int64)
        dead[empty], dead[bad_enum], dead[bad_date] = 2, 3, 4
        dead = dead[src]  # a re-export repeats the defect; else the older copy is the duplicate
        dead[src[dup]] = np.where(dead[src[dup]] == 0, 1, dead[src[dup]])
        return pa.table({
            "row": pa.array(first + np.arange(n)),
            "identity_class": _A(list(IDENTITY)).take(quality[src]),
            "defect": _A(INVALID + [None]).take(np.where(inv < 0, len(INVALID), inv)[src]),
            "doc_kind": _A(DOCS).take(dk[maps["doc_number"]][src]),
            "cross_record": _A([None, "DOC_LINE_LIMIT", "DOC_NAME_CONFLICT"]).take(flag[src]),
            "dead_letter": _A([None, "DUPLICATE_LINE_ID", "LINE_ID_MISSING", "BAD_ENUM", "BAD_DATE"]).take(dead),
        })
    secs = secs[src]
    secs[dup] += rng.integers(3600, 60 * 86400, len(dup))  # the re-export is the later row
    stamp, zoned = np.empty((n, 25), np.uint8), np.full(n, 19)  # 2024-05-01T08:30:00[+08:00]
    stamp[:, :10], stamp[:, 10], stamp[:, 11:19] = D.YMD10[secs // 86400 - D.DAY0], ord("T"), D.HMS[secs % 86400]
    stamp[:, 19:], zoned[_pick(rng, n, ZONED_TIMESTAMP)] = _MAT(["+08:00"]), 25
    out = {c: col.done(maps[c][src] if c in maps else src) for c, col in {**cols, **ident}.items()}
    out["updated_at"] = _text(stamp, zoned).done(np.arange(n))
    return pa.table([out[c] for c in COLUMNS], schema=SCHEMA)


def _check(lines: int, seed: int, start: int = 0) -> None:
    for label, value in (("lines", lines), ("seed", seed), ("start", start)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{label} must be a non-negative integer")
    if seed >= 2 ** 63:
        raise ValueError("seed must be below 2**63")


def _rows(lines: int, seed: int, start: int, truth: bool = False, ahead: int = 0) -> Iterator[pa.Table]:
    """Rows ``start .. start+lines-1``, block by block; with ``ahead``, blocks are made in threads meanwhile."""
    spans, row = [], start
    while row < start + lines:
        block = row // BLOCK_ROWS
        take = min((block + 1) * BLOCK_ROWS, start + lines) - row
        spans.append((block, row - block * BLOCK_ROWS, take))
        row += take
    if not ahead:
        yield from (_block(seed, block, truth).slice(offset, take) for block, offset, take in spans)
        return
    with concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="generate") as pool:
        queue: collections.deque = collections.deque()
        for i, (_, offset, take) in enumerate(spans):
            while len(queue) <= ahead and i + len(queue) < len(spans):
                queue.append(pool.submit(_block, seed, spans[i + len(queue)][0], truth))
            yield queue.popleft().result().slice(offset, take)


def generate_table(lines: int, seed: int, start: int = 0) -> pa.Table:
    """Rows ``start .. start+lines-1`` of the base for ``seed``; every contract column a string."""
    _check(lines, seed, start)
    parts = list(_rows(lines, seed, start))
    return pa.concat_tables(parts) if parts else SCHEMA.empty_table()


def generate_truth(lines: int, seed: int, start: int = 0) -> pa.Table:
    """The intended verdict of each row of ``generate_table(lines, seed, start)`` (for tests).

    Columns: row; identity_class (COMPLETE, MISSING, INCOMPLETE, INVALID); defect (of an
    INVALID line, see PERSON_INVALID / ORG_INVALID); doc_kind (the document its number
    was made for); cross_record (DOC_LINE_LIMIT, DOC_NAME_CONFLICT as planted: chance
    collisions of random numbers are not listed); dead_letter (DUPLICATE_LINE_ID on the
    older copy, LINE_ID_MISSING, BAD_ENUM, BAD_DATE).
    """
    _check(lines, seed, start)
    parts = list(_rows(lines, seed, start, truth=True))
    return pa.concat_tables(parts) if parts else _block(seed, 0, True).slice(0, 0)


FORMATS = {".parquet": "parquet", ".avro": "avro", ".csv": "csv"}
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "gb18030": "gb18030"}
_DICTIONARY = ["line_type", "subscriber_kind", "status", "activated_on", "terminated_on", "region", "agent_id",
               "doc_type", "handler_doc_type"]  # low-cardinality columns: dictionary-encoded in Parquet


def _options(path: str, encoding: str) -> tuple[str, str]:
    """(format, encoding) of an output path, or ValueError."""
    fmt = next((f for ext, f in FORMATS.items() if path.lower().endswith(ext)), None)
    if fmt is None:
        raise ValueError(f"unknown output format of {path!r}: use .parquet, .avro or .csv")
    enc = ENCODINGS.get(str(encoding).lower())
    if enc is None:
        raise ValueError(f"unknown encoding {encoding!r}: use utf-8 or gb18030")
    if enc != "utf-8" and fmt != "csv":
        raise ValueError("an encoding other than utf-8 applies to .csv output only")
    return fmt, enc


def _chunks(lines: int, seed: int, chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of ``chunk_rows`` rows (the last may be shorter; one empty table for 0 lines)."""
    pending, have = [], 0
    for part in _rows(lines, seed, 0, ahead=chunk_rows // BLOCK_ROWS + 1):  # keep the writer fed
        while len(part):
            piece = part.slice(0, chunk_rows - have)
            part, have = part.slice(len(piece)), have + len(piece)
            pending.append(piece)
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
    from apache_beam.io.filesystems import FileSystems

    _check(lines, seed)
    fmt, enc = _options(path, encoding)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError("chunk_rows must be a positive integer")
    written, chunks = 0, _chunks(lines, seed, chunk_rows)
    with FileSystems.create(path, mime_type="application/octet-stream", compression_type="uncompressed") as f:
        if fmt == "parquet":  # a native buffer in front of the Python file: few GIL round trips
            with pa.BufferedOutputStream(pa.PythonFile(f, mode="w"), 1 << 24) as sink, pq.ParquetWriter(
                    sink, SCHEMA, compression="snappy", use_dictionary=_DICTIONARY, write_statistics=False) as out:
                for chunk in filter(len, chunks):  # 0 lines: a file with the schema and no row group
                    out.write_table(chunk, row_group_size=len(chunk))
                    written += len(chunk)
        elif fmt == "avro":
            def records() -> Iterator[dict]:
                nonlocal written
                for chunk in chunks:
                    for s in range(0, len(chunk), 10_000):
                        yield from chunk.slice(s, 10_000).to_pylist()
                    written += len(chunk)
            marker = hashlib.sha256(f"subscriber-backfill:{seed}".encode()).digest()[:16]  # same seed, same bytes
            fastavro.writer(f, fastavro.parse_schema(copy.deepcopy(avro_schema("subscriber_base"))), records(),
                            codec="deflate", sync_marker=marker)
        else:
            for i, chunk in enumerate(chunks):
                buf = io.BytesIO()
                pacsv.write_csv(chunk, buf, pacsv.WriteOptions(include_header=i == 0))
                f.write(buf.getvalue() if enc == "utf-8" else buf.getvalue().decode("utf-8").encode("gb18030"))
                written += len(chunk)
    return written


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block; main() exits 2
        raise ValueError(message)


def main(argv: list[str] | None = None) -> int:
    """``backfill generate --lines N --seed S --out PATH [--encoding utf-8|gb18030]``."""
    parser = _Parser(prog="backfill generate", description="Write a realistic synthetic subscriber base "
                     "(Parquet, Avro or CSV by the extension of --out; gs:// paths work).")
    parser.add_argument("--lines", type=int, required=True, help="number of lines (rows) to write")
    parser.add_argument("--seed", type=int, required=True, help="random seed: the same seed gives the same file")
    parser.add_argument("--out", required=True, help="output path ending .parquet, .avro or .csv")
    parser.add_argument("--encoding", default="utf-8", help="CSV encoding: utf-8 (default) or gb18030")
    try:
        args = parser.parse_args(argv)
        if args.lines < 0 or not 0 <= args.seed < 2 ** 63:
            raise ValueError("--lines must be 0 or more and --seed between 0 and 2**63-1")
        _fmt, enc = _options(args.out, args.encoding)
    except ValueError as exc:
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
