"""Line-level columns of the synthetic base (``dev.generate``).

line_id, the three enums (with dirty spellings and a few bad values),
activation and termination dates, region, agent and msisdn; also each line's
updated_at in seconds, which the block turns into text after planting
re-exported rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dev import generate_data as D
from dev.generate_arrays import Col, choose, digits, draw, join, pick, strings, strs, text
from dev.generate_shares import (
    ACTIVATED_FROM,
    AGENT_IDS,
    AGENT_P,
    DATA_END,
    DIRTY_ENUM,
    EMPTY_LINE_ID,
    IOT_DATA_CARD,
    KINDS,
    LINE_TYPES,
    MSISDN_FORMATTED,
    STATUSES,
    UPDATED_END,
    UPDATED_FROM,
)

__all__ = ["line_columns"]

_MAT = D.ascii_matrix


def line_columns(rng, n, first, codes, ri, bad_enum, bad_date) -> tuple[dict[str, Col], np.ndarray, np.ndarray]:
    """Line-level columns; also updated_at in seconds and the rows whose line_id is empty."""
    lid, rows = np.empty((n, 11), np.uint8), first + 1 + np.arange(n)  # L0000000123: row + 1
    lid[:, 0], lid[:, 1:6], lid[:, 6:] = ord("L"), D.DIGITS[5][rows // 100_000 % 100_000], D.DIGITS[5][rows % 100_000]
    cols, empty = {"line_id": Col(strings(lid))}, pick(rng, n, EMPTY_LINE_ID)
    cols["line_id"].put(empty, pa.repeat("", len(empty)))
    which = rng.integers(0, 3, len(bad_enum))
    for j, (field, shares, bad) in enumerate(
        (
            ("line_type", LINE_TYPES, D.BAD_LINE_TYPES),
            ("subscriber_kind", KINDS, D.BAD_KINDS),
            ("status", STATUSES, D.BAD_STATUSES),
        )
    ):
        variants = strs([x for v in shares for x in (v, v.lower(), f" {v.lower()} ", v.title(), f"{v} ", f" {v}")])
        idx, dirty = codes[field] * 6, pick(rng, n, DIRTY_ENUM)
        idx[dirty] += rng.integers(1, 6, len(dirty))
        cols[field] = Col(variants, idx)
        cols[field].put(bad_enum[which == j], choose(rng, bad, int((which == j).sum())))
    act = rng.integers(ACTIVATED_FROM, DATA_END + 1, n)
    gone = np.flatnonzero(codes["status"] == 2)
    term = act.copy()
    term[gone] += 1 + (rng.random(len(gone)) * (DATA_END - act[gone])).astype(np.int64)
    cols["activated_on"] = Col(strings(D.YMD10[act - D.DAY0]))
    cols["activated_on"].put(bad_date, choose(rng, D.BAD_DATES, len(bad_date)))
    cols["terminated_on"] = Col(strs([None]), np.zeros(n, np.int64))
    cols["terminated_on"].put(gone, strings(D.YMD10[term[gone] - D.DAY0]))
    base = np.maximum(term, UPDATED_FROM) * 86400
    secs = rng.integers(base, UPDATED_END * 86400)
    cols["region"] = Col(D.REGION_CODE, ri.copy())
    cols["agent_id"] = Col(AGENT_IDS, draw(rng, n, AGENT_P))
    cols["msisdn"] = _msisdn(rng, n, codes["line_type"], ri)
    return cols, secs, empty


def _msisdn(rng, n, ltype, ri) -> Col:
    """Mobile 1[3-9]x, data cards 145/147/149 and 13-digit IoT, fixed 0 + area code + 7-8 digits."""
    M, L, fixed, data = np.empty((n, 13), np.uint8), np.full(n, 11), ltype == 1, ltype == 2
    M[:, 3:] = digits(rng, n, 10)
    M[:, :3] = D.DIGITS[3][np.array(D.MOBILE_PREFIXES)[rng.integers(0, len(D.MOBILE_PREFIXES), n)]]
    r = np.flatnonzero(data)
    M[r, :3] = D.DIGITS[3][np.array(D.DATA_CARD_PREFIXES)[rng.integers(0, 3, len(r))]]
    iot = pick(rng, n, IOT_DATA_CARD, r)
    M[iot, :5], L[iot] = _MAT(D.IOT_PREFIXES)[rng.integers(0, 2, len(iot))], 13
    f = np.flatnonzero(fixed)
    alen = D.AREA_LEN[ri[f]]
    M[f, :4], M[f, alen] = D.AREA_MAT[ri[f]], rng.integers(50, 57, len(f))  # local numbers start with 2-8
    L[f] = alen + np.where((alen == 3) | (rng.random(len(f)) < 0.6), 8, 7)
    return _formatted(rng, n, text(M, L), fixed, L, ri)


def _formatted(rng, n, col: Col, fixed, L, ri) -> Col:
    """A share of the numbers written as people write them: +86, 0086, spaces, hyphens, (area code)."""
    r, cut = pick(rng, n, MSISDN_FORMATTED), pc.utf8_slice_codeunits
    mob = r[~fixed[r] & (L[r] == 11)]
    form, v = rng.integers(0, 6, len(mob)), col.get(mob)
    sep = strs(["", "", "", "", " ", "-"]).take(form)
    col.put(
        mob,
        join(strs(["+86", "0086", "+86 ", "86", "", ""]).take(form), cut(v, 0, 3), sep, cut(v, 3, 7), sep, cut(v, 7)),
    )
    fr = r[fixed[r]]
    form, v, three = rng.integers(0, 3, len(fr)), col.get(fr), pa.array(D.AREA_LEN[ri[fr]] == 3)
    area = pc.if_else(three, cut(v, 0, 3), cut(v, 0, 4))
    area = pc.if_else(pa.array(form == 1), cut(area, 1), area)  # +86 drops the trunk 0
    col.put(
        fr,
        join(
            strs(["", "+86", "("]).take(form),
            area,
            strs(["-", "", ")"]).take(form),
            pc.if_else(three, cut(v, 3), cut(v, 4)),
        ),
    )
    return col
