"""Identity columns of the synthetic base (``dev.generate``).

doc_type, doc_number, name, address and an organisation's handling person,
per line: the document kind by share, the INVALID line's one defect planted
in the field it concerns, absent values written the ways operators write
them, then the dirt that the scan's normalisation removes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dev import generate_data as D
from dev.generate_arrays import Col, choose, digits, draw, join, other, pick, strings, strs, text
from dev.generate_numbers import citizen, numbers
from dev.generate_shares import (
    BLANKS,
    CHECK11,
    CITIZEN,
    DIRT,
    HANDLER_ONLY,
    INVALID,
    K,
    LABEL_CNT,
    LABEL_OFF,
    LABELS,
    LATIN_FOREIGN,
    LOOKALIKE_DOT,
    MINORITY_NAME,
    ORG_DOCS,
    ORG_INVALID,
    PERSON_DOCS,
    PERSON_INVALID,
    RAW_LABEL,
    RURAL,
)

__all__ = ["identity"]

_HANDLER_FIELDS = ("handler_doc_type", "handler_doc_number", "handler_name")


def identity(rng, n, org, quality, ri, person) -> tuple[dict[str, Col], np.ndarray, np.ndarray]:
    """doc_type, doc_number, name, address and the handler's fields; also doc kind and defect."""
    born, seq = person  # of the line's person: the subscriber, or an organisation's handler
    dk0, dk, inv, defect = _kinds_and_defects(rng, n, org, quality)
    DM, DL, ari = numbers(rng, n, dk, defect, ri, org, born, seq)
    number = _doc_numbers(rng, dk, DM, DL)
    doc_type = _doc_types(rng, n, dk, defect)
    name = _names(rng, n, org, dk, dk0, ri, defect)
    address = _addresses(rng, n, org, dk, ri, ari, defect)
    hand = _handlers(rng, n, org, ri, born, seq, defect)
    main = {"doc_type": doc_type, "doc_number": number, "name": name, "address": address}
    _blanks(rng, n, org, quality, main, hand)
    _dirty(rng, n, main, np.flatnonzero(DL == 18), DM[:, 17] == ord("X"))
    return {**main, **hand}, dk, inv


def _kinds_and_defects(rng, n, org, quality):
    """(drawn document kind, the kind the number is made for, defect index or -1, defect(*names) mask)."""
    dk0, inv, bad = draw(rng, n, PERSON_DOCS), np.full(n, -1), quality == 3
    dk0[org] = draw(rng, int(org.sum()), ORG_DOCS) + len(PERSON_DOCS)
    inv[bad & ~org] = draw(rng, int((bad & ~org).sum()), PERSON_INVALID)
    inv[bad & org] = draw(rng, int((bad & org).sum()), ORG_INVALID) + len(PERSON_INVALID)
    lut = np.where(inv < 0, len(INVALID), inv)
    defect = lambda *names: np.isin(np.arange(len(INVALID) + 1), [INVALID.index(x) for x in names])[lut]  # noqa
    dk = np.where(
        defect("checksum", "birth_date", "region", "first_generation", "number_format") & ~CITIZEN[dk0],
        K["RESIDENT_ID"],
        dk0,
    )
    for names, kind in (
        (("permit_as_resident_id", "org_person_doc"), "RESIDENT_ID"),
        (("org_doc_for_person", "org_uscc_checksum", "org_embedded_check"), "USCC"),
        (("org_code_reserved",), "ORG_CODE"),
        (("org_license_checksum",), "BUSINESS_LICENSE"),
    ):
        dk[defect(*names)] = K[kind]
    return dk0, dk, inv, defect


def _doc_numbers(rng, dk, DM, DL) -> Col:
    """doc_number: the byte matrix as text, military and armed-police IDs written in full."""
    num = text(DM, DL)
    r = np.flatnonzero((dk == K["MILITARY_ID"]) | (dk == K["ARMED_POLICE_ID"]))  # 南字第12345678号
    pre = np.where(
        dk[r] == K["MILITARY_ID"], rng.integers(0, len(D.MILITARY_PREFIXES), len(r)), len(D.MILITARY_PREFIXES)
    )
    num.put(r, join(strs(D.MILITARY_PREFIXES + ["武"]).take(pre), "字第", strings(digits(rng, len(r), 8)), "号"))
    return num


def _doc_types(rng, n, dk, defect) -> Col:
    """doc_type: the code or an operator label; labels of the document defects."""
    u = rng.random(n)  # < RAW_LABEL: an operator label, picked by the rest of u
    raw = u < RAW_LABEL
    dtype = Col(LABELS, LABEL_OFF[dk] + raw * (1 + (u / RAW_LABEL * (LABEL_CNT[dk] - 1)).astype(np.int64)))
    r = np.flatnonzero(defect("first_generation") & raw)
    dtype.put(r, pa.repeat(D.FIRST_GENERATION_LABEL, len(r)))
    for flaw, values in (
        ("doc_not_accepted", D.NOT_ACCEPTED_PERSON),
        ("doc_unknown", D.UNKNOWN_LABELS),
        ("org_doc_not_accepted", D.NOT_ACCEPTED_ORG),
    ):
        r = np.flatnonzero(defect(flaw))
        dtype.put(r, choose(rng, values, len(r)))
    return dtype


def _names(rng, n, org, dk, dk0, ri, defect) -> Col:
    """name: Han names (some dotted), Latin names on foreign documents, organisations' names, junk."""
    name = Col(D.NAME_POOL, rng.integers(0, len(D.NAME_POOL), n))
    r = pick(rng, n, MINORITY_NAME, np.flatnonzero(~org))
    dot = np.where(rng.random(len(r)) < LOOKALIKE_DOT, rng.integers(1, 4, len(r)), 0)
    name.put(r, D.DOTTED_POOL.take(dot * 4096 + rng.integers(0, 4096, len(r))))
    r = pick(
        rng,
        n,
        LATIN_FOREIGN,
        np.flatnonzero(~org & np.isin(dk, [K["FOREIGN_PASSPORT"], K["FOREIGN_PERMANENT_RESIDENT_ID"]])),
    )
    name.put(r, choose(rng, D.LATIN_POOL, len(r)))
    r = np.flatnonzero(org)
    kind = np.select([dk0[r] == K["PUBLIC_INSTITUTION_CERT"], dk0[r] == K["SOCIAL_GROUP_CERT"]], [1, 2], 0)
    tails = pa.concat_arrays(
        [choose(rng, D.FIRM_POOL, len(r)), choose(rng, D.INSTITUTIONS, len(r)), choose(rng, D.SOCIAL_GROUPS, len(r))]
    )
    name.put(r, join(D.ORG_CITY.take(ri[r]), tails.take(kind * len(r) + np.arange(len(r)))))
    for flaw, values in (
        ("name_placeholder", D.PLACEHOLDER_PERSON_NAMES),
        ("name_too_short", D.SURNAMES[:60]),
        ("org_name_placeholder", D.PLACEHOLDER_ORG_NAMES),
        ("org_name_too_short", D.TRADE_NAMES),
    ):
        r = np.flatnonzero(defect(flaw))
        name.put(r, choose(rng, values, len(r)))
    return name


def _addresses(rng, n, org, dk, ri, ari, defect) -> Col:
    """address: region + street (or town + village), the one printed on the document; junk."""
    tail = rng.integers(0, len(D.STREET_POOL), n)
    rural = pick(rng, n, RURAL, np.flatnonzero(~org))  # town + village + group
    tail[rural] = len(D.STREET_POOL) + rng.integers(0, len(D.VILLAGE_POOL), len(rural))
    where = np.where(CITIZEN[dk], ari, ri)  # the address printed on the document
    addr = Col(join(D.REGION_ADDRESS.take(where), D.ADDRESS_TAILS.take(tail)))
    r = np.flatnonzero(defect("address_placeholder", "org_address_placeholder"))
    addr.put(r, choose(rng, D.BAD_ADDRESSES, len(r)))
    return addr


def _handlers(rng, n, org, ri, born, seq, defect) -> dict[str, Col]:
    """The handling person of an organisation (Art. 8): a resident ID, its number and a name."""
    h = np.flatnonzero(org)
    hri = np.where(rng.random(len(h)) < 0.8, ri[h], rng.integers(0, len(D.REGIONS), len(h)))
    hmat = citizen(D.REGION_MAT[hri], D.YMD8[born[h] - D.DAY0], seq[h])
    bad = defect("org_handler_invalid")[h]
    hmat[bad, 17] = other(rng, hmat[bad, 17], CHECK11)
    hand = {c: Col(strs([None]), np.zeros(n, np.int64)) for c in _HANDLER_FIELDS}
    rid = K["RESIDENT_ID"]
    hand["handler_doc_type"].put(
        h, LABELS.take(LABEL_OFF[rid] + (rng.random(len(h)) < RAW_LABEL) * rng.integers(1, LABEL_CNT[rid], len(h)))
    )
    hand["handler_doc_number"].put(h, strings(hmat))
    hand["handler_name"].put(h, choose(rng, D.NAME_POOL, len(h)))
    return hand


def _blanks(rng, n, org, quality, main: dict[str, Col], hand: dict[str, Col]) -> None:
    """Absent values of MISSING and INCOMPLETE lines, written the ways of ``BLANKS``."""
    handler_only = np.zeros(n, bool)
    handler_only[pick(rng, n, HANDLER_ONLY, np.flatnonzero((quality == 2) & org))] = True
    bits = np.where(quality == 1, 15, 0)  # bit j: blank field j (MISSING: all; INCOMPLETE: some, never all)
    bits[(quality == 2) & ~handler_only] = rng.integers(1, 15, int(((quality == 2) & ~handler_only).sum()))
    hbits = np.where((quality == 1) & org, 7, 0)
    hbits[handler_only] = rng.integers(1, 8, int(handler_only.sum()))
    blanks = strs(list(BLANKS))
    for j, col in [*enumerate(main.values()), *enumerate(hand.values(), 4)]:
        r = np.flatnonzero((bits if j < 4 else hbits) >> (j % 4) & 1)
        col.put(r, blanks.take(draw(rng, len(r), BLANKS)))


def _dirty(rng, n, c: dict[str, Col], rows18: np.ndarray, big_x: np.ndarray) -> None:
    """Characters that the scan's normalisation removes (docs/regulation.md §5)."""

    def apply(col: Col, rows: np.ndarray, fn) -> None:
        col.put(rows, fn(col.get(rows), len(rows)))

    def insert(at: int, what):
        return lambda v, k: join(
            pc.utf8_slice_codeunits(v, 0, at), what(k) if callable(what) else what, pc.utf8_slice_codeunits(v, at)
        )

    def fullwidth(v: pa.Array, k: int) -> pa.Array:
        for digit in range(10):
            v = pc.replace_substring(v, str(digit), chr(0xFF10 + digit))
        return v

    zero_width = lambda k: choose(rng, ["\u200b", "\ufeff"], k)  # noqa: E731
    apply(c["doc_number"], pick(rng, n, DIRT["fullwidth_digits"]), fullwidth)
    apply(
        c["doc_number"],
        pick(rng, n, DIRT["fullwidth_x"], rows18[big_x[rows18]]),
        lambda v, k: pc.replace_substring(v, "X", "\uff38"),
    )
    cut = pc.utf8_slice_codeunits
    apply(
        c["doc_number"],
        pick(rng, n, DIRT["grouped_number"], rows18),
        lambda v, k: join(cut(v, 0, 6), " ", cut(v, 6, 14), " ", cut(v, 14)),
    )
    apply(c["doc_number"], pick(rng, n, DIRT["zero_width"]), insert(6, zero_width))
    apply(c["name"], pick(rng, n, DIRT["zero_width"]), insert(1, zero_width))
    apply(c["name"], pick(rng, n, DIRT["ideographic_space"]), lambda v, k: join(v, "\u3000"))
    apply(c["address"], pick(rng, n, DIRT["ideographic_space"]), insert(3, "\u3000"))
    apply(c["address"], pick(rng, n, DIRT["double_space"]), insert(6, "  "))
    for col in c.values():
        rows = pick(rng, n, DIRT["edge_spaces"])
        pattern = rng.integers(0, 4, len(rows))
        apply(
            col,
            rows,
            lambda v, k: join(strs([" ", "", " ", "  "]).take(pattern), v, strs(["", " ", " ", ""]).take(pattern)),
        )
