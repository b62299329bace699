"""Constant tables of the synthetic subscriber base (``dev.generate``).

Everything here is plain data: real GB/T 2260 county-level codes with the
place names and fixed-line area codes that go with them, name and address
parts, document labels of operator exports (docs/regulation.md §1.3) and
the junk values of §6. No identity of any real person is in here.

The literal tables are kept by kind beside this module and re-exported here:
``generate_data_places`` (regions, number prefixes), ``generate_data_words``
(name, firm and address parts) and ``generate_data_labels`` (document labels,
junk values). Below them, the tables derived from them at import.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dev.generate_data_labels import (
    NATIONALITIES,
    MILITARY_PREFIXES,
    DOC_LABELS,
    FIRST_GENERATION_LABEL,
    NOT_ACCEPTED_PERSON,
    NOT_ACCEPTED_ORG,
    UNKNOWN_LABELS,
    PLACEHOLDER_PERSON_NAMES,
    PLACEHOLDER_ORG_NAMES,
    BAD_ADDRESSES,
    BAD_BIRTH_DATES,
    BAD_LINE_TYPES,
    BAD_KINDS,
    BAD_STATUSES,
    BAD_DATES,
)
from dev.generate_data_places import (
    REGIONS,
    BAD_ADDRESS_CODES,
    HMT_PERMIT_CODES,
    MOBILE_PREFIXES,
    DATA_CARD_PREFIXES,
    IOT_PREFIXES,
)
from dev.generate_data_words import (
    SURNAMES,
    GIVEN_CHARS,
    MINORITY_FIRST,
    MINORITY_SECOND,
    DOT_LOOKALIKES,
    LATIN_GIVEN,
    LATIN_FAMILY,
    TRADE_NAMES,
    INDUSTRIES,
    LEGAL_FORMS,
    INSTITUTIONS,
    SOCIAL_GROUPS,
    ROADS,
    TOWNS,
    VILLAGES,
)


# The literal tables (re-exported), then the derived ones.
__all__ = [
    "REGIONS",
    "BAD_ADDRESS_CODES",
    "HMT_PERMIT_CODES",
    "MOBILE_PREFIXES",
    "DATA_CARD_PREFIXES",
    "IOT_PREFIXES",
    "SURNAMES",
    "GIVEN_CHARS",
    "MINORITY_FIRST",
    "MINORITY_SECOND",
    "DOT_LOOKALIKES",
    "LATIN_GIVEN",
    "LATIN_FAMILY",
    "TRADE_NAMES",
    "INDUSTRIES",
    "LEGAL_FORMS",
    "INSTITUTIONS",
    "SOCIAL_GROUPS",
    "ROADS",
    "TOWNS",
    "VILLAGES",
    "NATIONALITIES",
    "MILITARY_PREFIXES",
    "DOC_LABELS",
    "FIRST_GENERATION_LABEL",
    "NOT_ACCEPTED_PERSON",
    "NOT_ACCEPTED_ORG",
    "UNKNOWN_LABELS",
    "PLACEHOLDER_PERSON_NAMES",
    "PLACEHOLDER_ORG_NAMES",
    "BAD_ADDRESSES",
    "BAD_BIRTH_DATES",
    "BAD_LINE_TYPES",
    "BAD_KINDS",
    "BAD_STATUSES",
    "BAD_DATES",
    "ascii_matrix",
    "day_number",
    "DIGITS",
    "DAY0",
    "YMD10",
    "YMD8",
    "HMS",
    "REGION_MAT",
    "REGION_CODE",
    "REGION_ADDRESS",
    "ORG_CITY",
    "AREA_MAT",
    "AREA_LEN",
    "XINJIANG",
    "NAME_POOL",
    "STREET_POOL",
    "VILLAGE_POOL",
    "ADDRESS_TAILS",
    "FIRM_POOL",
    "DOTTED_POOL",
    "LATIN_POOL",
]


# ---- Derived tables (built once at import; fixed seeds, so the same in every run) ----------


def ascii_matrix(strings: list[str]) -> np.ndarray:
    """Equal-length ASCII strings as a uint8 matrix, one row each."""
    return np.frombuffer("".join(strings).encode(), np.uint8).reshape(len(strings), -1)


def day_number(iso: str) -> int:
    """Days since 1970-01-01 of an ISO date."""
    return int(np.datetime64(iso, "D").astype(np.int64))


def _digit_table(width: int) -> np.ndarray:
    """i -> the ASCII digits of i, zero-padded to ``width`` (row i)."""
    return (48 + np.arange(10**width)[:, None] // 10 ** np.arange(width - 1, -1, -1) % 10).astype(np.uint8)


DIGITS = {w: _digit_table(w) for w in (2, 3, 5)}
DAY0 = day_number("1850-01-01")  # day - DAY0 -> b"YYYY-MM-DD" (YMD10), b"YYYYMMDD" (YMD8)
YMD10 = (
    np.datetime_as_string(np.arange(DAY0, day_number("2031-01-01")).astype("M8[D]"))
    .astype("S10")
    .view(np.uint8)
    .reshape(-1, 10)
)
YMD8 = np.ascontiguousarray(YMD10[:, [0, 1, 2, 3, 5, 6, 8, 9]])
HMS = np.concatenate(
    [
        DIGITS[2][np.arange(86400) // 3600],
        np.full((86400, 1), 58, np.uint8),
        DIGITS[2][np.arange(86400) // 60 % 60],
        np.full((86400, 1), 58, np.uint8),
        DIGITS[2][np.arange(86400) % 60],
    ],
    axis=1,
)  # second of day -> b"HH:MM:SS"
REGION_MAT = ascii_matrix([r[0] for r in REGIONS])
REGION_CODE = pa.array([r[0] for r in REGIONS])
REGION_ADDRESS = pa.array([r[1] + r[2] + r[3] for r in REGIONS])  # 广东省深圳市南山区
ORG_CITY = pa.array([r[2] or r[1] for r in REGIONS])  # 深圳市 / 北京市: first part of a firm's name
AREA_MAT, AREA_LEN = ascii_matrix([r[4].ljust(4, "0") for r in REGIONS]), np.array([len(r[4]) for r in REGIONS])
XINJIANG = np.array([i for i, r in enumerate(REGIONS) if r[0].startswith("65")])


def _pool(size: int, *parts: list[str], weights: list[float] | None = None) -> pa.Array:
    """``size`` random concatenations of one item of each part (the first part drawn by ``weights``)."""
    rng = np.random.default_rng(20130901 + size + len(parts))
    chosen = []
    for i, part in enumerate(parts):
        p = None if i or weights is None else np.asarray(weights) / np.sum(weights)
        chosen.append(pa.array(part).take(rng.choice(len(part), size, p=p)))
    return pc.binary_join_element_wise(*chosen, "")


# Common surnames weigh more (rank-based); ~70% of given names have two characters.
NAME_POOL = _pool(
    1 << 17, SURNAMES, GIVEN_CHARS, GIVEN_CHARS + [""] * 40, weights=list(1.0 / (np.arange(len(SURNAMES)) + 4) ** 1.1)
)
STREET_POOL = _pool(
    1 << 16,
    ROADS,
    [f"{i}号" for i in range(1, 300)] + [f"{i}号" for i in range(1, 1000)],
    [""] * 30 + [f"{i}栋" for i in range(1, 31)] + [f"{i}号楼" for i in range(1, 21)],
    ["", ""] + [f"{i}单元" for i in range(1, 7)],
    [""] * 40 + [f"{f}{r:02d}室" for f in range(1, 34) for r in range(1, 7)],
)
VILLAGE_POOL = _pool(4096, TOWNS, VILLAGES, [f"{i}组" for i in range(1, 13)])
ADDRESS_TAILS = pa.concat_arrays([STREET_POOL, VILLAGE_POOL])  # streets first, then villages
FIRM_POOL = _pool(4096, TRADE_NAMES, INDUSTRIES, LEGAL_FORMS)
DOTTED_POOL = pa.concat_arrays(
    [
        _pool(4096, MINORITY_FIRST, [dot], MINORITY_SECOND)  # 4096 per dot,
        for dot in ["\u00b7"] + DOT_LOOKALIKES
    ]
)  # U+00B7 first
LATIN_POOL = _pool(4096, LATIN_GIVEN, [" "], LATIN_FAMILY)
