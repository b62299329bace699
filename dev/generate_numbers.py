"""Document numbers of the synthetic base (``dev.generate``), as byte matrices.

Each number is made the way its document makes it (docs/regulation.md §2):
citizen numbers (address code, birth date, sequence, MOD 11-2) for resident
IDs, HMT residence permits and the new foreign permanent-resident card; the
old foreign card; travel permits and passports; USCC, GB 11714 organisation
codes, 15-digit business licences and the older certificates. The defects of
INVALID lines are then planted (wrong check characters, first-generation
numbers, spreadsheet damage). Check characters come from
:mod:`transforms.scan.checkdigits`.
"""

from __future__ import annotations

import numpy as np

from dev import generate_data as D
from dev.generate_arrays import digits, other, pick
from dev.generate_shares import (
    BAD_BIRTHS,
    BORN_FROM,
    BORN_TO,
    CHECK11,
    CITIZEN,
    DIRT,
    K,
    OTHER_BIRTHPLACE,
    PERSON_DOCS,
    USCC,
    Y2K,
    YEARS28,
)
from transforms.scan.checkdigits import gb11714, mod11_10, mod11_2, uscc_mod31

__all__ = ["person", "citizen", "numbers"]

_MAT = D.ascii_matrix


def person(seed: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def citizen(addr6: np.ndarray, birth: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """18-character citizen numbers (docs/regulation.md §2.1): address, YYYYMMDD, sequence, MOD 11-2."""
    mat = np.empty((len(addr6), 18), np.uint8)
    mat[:, :6], mat[:, 6:14], mat[:, 14:17] = addr6, birth, D.DIGITS[3][seq]
    mat[:, 17] = mod11_2(mat[:, :17])
    return mat


def _org_body(rng: np.random.Generator, k: int) -> np.ndarray:
    """GB 11714 bodies (docs/regulation.md §2.5): ``MA`` + 6 USCC-set characters (60%) or 8 digits."""
    body, old = USCC[rng.integers(0, 31, (k, 8))], rng.random(k) < 0.4
    body[:, :2] = (ord("M"), ord("A"))
    body[old] = digits(rng, int(old.sum()), 8)
    body[old, 0] = rng.integers(49, 58, int(old.sum()))
    return body


def numbers(rng, n, dk, defect, ri, org, born, seq) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Document numbers (byte matrix + lengths) of each document kind (docs/regulation.md §2.1-§2.7),
    and the region index of each citizen number's address code."""
    DM, DL = np.zeros((n, 20), np.uint8), np.zeros(n, np.int64)
    ari, birth, fprid, nat = _citizen_numbers(rng, n, dk, defect, ri, born, seq, DM, DL)
    _old_foreign_cards(rng, dk, ri, birth, fprid, nat, DM, DL)
    _travel_numbers(rng, dk, DM, DL)
    _org_numbers(rng, dk, defect, ri, org, DM, DL)
    _number_defects(rng, n, defect, org, DM, DL)
    return DM, DL, ari


def _citizen_numbers(rng, n, dk, defect, ri, born, seq, DM, DL):
    """Citizen-number rows: resident IDs, HMT residence permits, new foreign permanent-resident cards.

    Returns the address region of each row, its YYYYMMDD birth bytes, the new-card rows and a
    nationality index per row (both also used by the old foreign cards)."""
    ari = ri.copy()
    away = pick(rng, n, OTHER_BIRTHPLACE)  # address code of the birthplace, not of the line
    ari[away] = rng.integers(0, len(D.REGIONS), len(away))
    born = np.where(defect("first_generation") & (born >= Y2K), born - YEARS28, born)  # 15 digits: 19xx
    birth, bad = D.YMD8[born - D.DAY0], defect("birth_date")  # impossible or future, with a right check
    birth[bad] = BAD_BIRTHS[rng.integers(0, len(BAD_BIRTHS), int(bad.sum()))]
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
    DM[:, :18] = citizen(addr6, birth, seq)  # for every row: cheaper than selecting; others overwrite
    DL[CITIZEN[dk] | hmt | fprid] = 18
    return ari, birth, fprid, nat


def _old_foreign_cards(rng, dk, ri, birth, fprid, nat, DM, DL) -> None:
    """Old foreign permanent-resident cards, 15 characters: USA 1100 800101 1 1."""
    r = np.flatnonzero((dk == K["FOREIGN_PERMANENT_RESIDENT_ID"]) & ~fprid)
    old = np.zeros((len(r), 15), np.uint8)
    old[:, :3], old[:, 3:7] = _MAT([x[0] for x in D.NATIONALITIES])[nat[r]], D.REGION_MAT[ri[r], :4]
    old[:, 7:13], old[:, 13] = birth[r, 2:], rng.integers(48, 58, len(r))
    value = old[:, :14].astype(np.int64) - np.where(old[:, :14] >= 65, 55, 48)
    old[:, 14] = 48 + (value @ np.resize([7, 3, 1], 14)) % 10  # ICAO 7-3-1 (not enforced by the policy)
    DM[r, :15], DL[r] = old, 15


def _travel_numbers(rng, dk, DM, DL) -> None:
    """HK/Macao and Taiwan travel permits, foreign passports (docs/regulation.md §2.7)."""
    r = np.flatnonzero(dk == K["HK_MACAO_TRAVEL_PERMIT"])  # H/M + 8 digits (+ 2-digit renewal count)
    DM[r, 0], DM[r, 1:11] = np.where(rng.random(len(r)) < 0.7, 72, 77), digits(rng, len(r), 10)
    renewal = rng.random(len(r)) < 0.4
    DM[r[renewal], 9], DL[r] = 48, np.where(renewal, 11, 9)
    r = np.flatnonzero(dk == K["TAIWAN_TRAVEL_PERMIT"])  # 8 digits, or 10 digits (+ "(X)")
    form = rng.integers(0, 5, len(r))
    DM[r, :10], DM[r, 10], DM[r, 11], DM[r, 12] = digits(rng, len(r), 10), 40, rng.integers(65, 91, len(r)), 41
    DL[r] = np.select([form < 3, form == 3], [8, 10], 13)
    r = np.flatnonzero(dk == K["FOREIGN_PASSPORT"])  # 9 digits, or 1-2 letters + digits
    DM[r, :9], DL[r], letters = digits(rng, len(r), 9), 9, rng.integers(0, 3, len(r))
    for j in range(2):
        DM[r[letters > j], j] = rng.integers(65, 91, int((letters > j).sum()))


def _org_numbers(rng, dk, defect, ri, org, DM, DL) -> None:
    """Organisation documents: USCC, legacy business licences and certificates, organisation codes."""
    o = np.flatnonzero(org | (dk >= len(PERSON_DOCS)))
    legacy, kind = rng.random(len(o)) < 0.3, dk[o]
    head = np.select(
        [kind == K["PUBLIC_INSTITUTION_CERT"], kind == K["SOCIAL_GROUP_CERT"], rng.random(len(o)) < 0.15],
        [12, 51, 92],
        91,
    )  # authority + category (docs/regulation.md §2.4)
    sel = (kind == K["USCC"]) | ~legacy & np.isin(
        kind, [K["BUSINESS_LICENSE"], K["PUBLIC_INSTITUTION_CERT"], K["SOCIAL_GROUP_CERT"]]
    )
    r = o[sel]
    DM[r, :2], DM[r, 2:8], DM[r, 8:16], DL[r] = D.DIGITS[2][head[sel]], D.REGION_MAT[ri[r]], _org_body(rng, len(r)), 18
    DM[r, 16] = gb11714(DM[r, 8:16])
    DM[r, 17] = uscc_mod31(DM[r, :17])
    r = o[(kind == K["BUSINESS_LICENSE"]) & (legacy | defect("org_license_checksum")[o])]  # 15 digits
    DM[r, :6], DM[r, 6:14] = D.REGION_MAT[ri[r]], digits(rng, len(r), 8)
    DM[r, 14], DL[r] = mod11_10(DM[r, :14]), 15
    for cert, width in ((K["PUBLIC_INSTITUTION_CERT"], 12), (K["SOCIAL_GROUP_CERT"], 10)):
        r = o[(kind == cert) & legacy]  # pre-USCC certificate numbers
        DM[r, :6], DM[r, 6:width], DL[r] = D.REGION_MAT[ri[r]], digits(rng, len(r), width - 6), width
    r = o[kind == K["ORG_CODE"]]  # XXXXXXXX-C or XXXXXXXXC
    body, pdy, hyphen = _org_body(rng, len(r)), defect("org_code_reserved")[r], rng.random(len(r)) < 0.5
    body[pdy, :3], body[pdy, 3:] = _MAT(["PDY"]), digits(rng, int(pdy.sum()), 5)
    check = gb11714(body)
    DM[r, :8], DM[r, 8], DM[r, 9], DL[r] = body, np.where(hyphen, 45, check), check, np.where(hyphen, 10, 9)


def _number_defects(rng, n, defect, org, DM, DL) -> None:
    """The number defects of INVALID lines, and lower-case x in some person's check characters."""
    r = np.flatnonzero(defect("checksum", "org_license_checksum"))
    for width, alphabet in ((18, CHECK11), (15, CHECK11[:10])):
        DM[r[DL[r] == width], width - 1] = other(rng, DM[r[DL[r] == width], width - 1], alphabet)
    r = np.flatnonzero(defect("org_uscc_checksum"))
    DM[r, 17] = other(rng, DM[r, 17], USCC)
    r = np.flatnonzero(defect("org_embedded_check"))  # mod-31 right, embedded GB 11714 wrong
    DM[r, 16] = other(rng, DM[r, 16], CHECK11)
    DM[r, 17] = uscc_mod31(DM[r, :17])
    r = np.flatnonzero(defect("first_generation"))  # AAAAAA YYMMDD SSS
    DM[r, 6:15], DL[r] = DM[r, 8:17], 15
    r = np.flatnonzero(defect("number_format"))
    sheet = r[rng.random(len(r)) < 0.5]  # spreadsheet damage: 1.10105E+17
    DL[r], DL[sheet] = 17, 11
    DM[sheet, 2:7], DM[sheet, 1], DM[sheet, 7:11] = DM[sheet, 1:6], ord("."), _MAT(["E+17"])
    x = pick(rng, n, DIRT["lower_x"], np.flatnonzero((DL == 18) & (DM[:, 17] == ord("X")) & ~org))
    DM[x, 17] = ord("x")
