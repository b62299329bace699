"""Blocks of the synthetic base (``dev.generate``): ``BLOCK_ROWS`` rows drawn from one RNG.

Block ``b`` of seed ``s`` is drawn from ``numpy.random.default_rng([s, b])``,
so row ``i`` depends only on ``(seed, i)``. A block draws its line columns
(:mod:`dev.generate_lines`) and identities (:mod:`dev.generate_identity`),
plants the cross-record cases inside itself (re-exported line_ids, one
document on 6-8 lines, one document under two names, organisations with many
lines) and returns either the rows or, with ``truth``, their intended
verdicts. :func:`iter_rows` serves any range of rows block by block.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
from typing import Iterator

import numpy as np
import pyarrow as pa

from dev import generate_data as D
from dev.generate_arrays import draw, pick, strs, text
from dev.generate_identity import identity
from dev.generate_lines import line_columns
from dev.generate_numbers import person
from dev.generate_shares import (
    BAD_DATE,
    BAD_ENUM,
    COLUMNS,
    DOCS,
    DUPLICATE_LINE_ID,
    IDENTITY,
    INVALID,
    K,
    KINDS,
    LINE_LIMIT_GROUPS,
    LINE_TYPES,
    MINORITY_NAME,
    NAME_CONFLICTS,
    ORG_SHARED,
    SCHEMA,
    STATUSES,
    XINJIANG,
    ZONED_TIMESTAMP,
)

__all__ = ["BLOCK_ROWS", "THREADS", "block", "iter_rows", "check_request"]

BLOCK_ROWS = 50_000  # changing it changes every base: the RNG is per (seed, block)
THREADS = 2  # blocks made at once while write_base writes (numpy and Arrow release the GIL)
_MAT = D.ascii_matrix
_IDENTITY_FIELDS = ("doc_type", "doc_number", "name", "address")


@functools.lru_cache(maxsize=2)  # small, misaligned requests reuse the block they share
def block(seed: int, index: int, truth: bool = False) -> pa.Table:
    """Rows ``index * BLOCK_ROWS`` onwards (with ``truth``: their intended verdicts)."""
    rng, n, first = np.random.default_rng([seed, index]), BLOCK_ROWS, index * BLOCK_ROWS
    codes = {
        f: draw(rng, n, s)
        for f, s in (
            ("subscriber_kind", KINDS),
            ("line_type", LINE_TYPES),
            ("status", STATUSES),
            ("identity", IDENTITY),
        )
    }
    org, quality, status = codes["subscriber_kind"] == 1, codes["identity"], codes["status"]
    ri = rng.integers(0, len(D.REGIONS), n)
    xj = pick(rng, n, MINORITY_NAME * XINJIANG, np.flatnonzero(~org))  # most dotted names are in Xinjiang
    ri[xj] = D.XINJIANG[rng.integers(0, len(D.XINJIANG), len(xj))]
    dup, src = _re_exports(rng, n)
    bad_enum, bad_date = pick(rng, n, BAD_ENUM), pick(rng, n, BAD_DATE)
    cols, secs, empty = line_columns(rng, n, first, codes, ri, bad_enum, bad_date)
    ident, dk, inv = identity(rng, n, org, quality, ri, person(seed, first + np.arange(n)))
    busy = np.zeros(n, bool)
    busy[np.concatenate([dup, src[dup], bad_enum, bad_date, empty])] = True
    maps, flag = _shared_documents(rng, n, org, quality, status, dk, busy)
    if truth:
        dead = _dead_letters(n, src, dup, empty, bad_enum, bad_date)
        return _truth(first, n, quality, inv, dk, maps, flag, src, dead)
    updated_at = _updated_at(rng, n, secs, src, dup)
    out = {c: col.done(maps[c][src] if c in maps else src) for c, col in {**cols, **ident}.items()}
    out["updated_at"] = updated_at
    return pa.table([out[c] for c in COLUMNS], schema=SCHEMA)


def _re_exports(rng, n) -> tuple[np.ndarray, np.ndarray]:
    """(rows that re-export an earlier line, the source row of every row)."""
    dup, src = pick(rng, n, DUPLICATE_LINE_ID)[1:], np.arange(n)
    src[dup] = dup - 1 - (rng.random(len(dup)) * np.minimum(dup, 2000)).astype(np.int64)
    return dup, src[src[src]]  # a re-export of a re-export copies the original


def _shared_documents(rng, n, org, quality, status, dk, busy) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Row maps of the identity columns that plant one document on several lines, and the planted flag.

    One resident ID on 6-8 live lines (DOC_LINE_LIMIT, flag 1), one ID under 2-3 names
    (DOC_NAME_CONFLICT, flag 2), and organisations holding many lines."""
    maps = {c: np.arange(n) for c in _IDENTITY_FIELDS}
    cand = rng.permutation(np.flatnonzero((quality == 0) & ~org & (dk == K["RESIDENT_ID"]) & (status != 2) & ~busy))
    flag, pos = np.zeros(n, np.int64), 0
    for g in range(LINE_LIMIT_GROUPS + NAME_CONFLICTS):  # one ID on 6-8 live lines; one ID, 2-3 names
        limit = g < LINE_LIMIT_GROUPS
        group = cand[pos : pos + int(rng.integers(6, 9) if limit else rng.integers(2, 4))]
        pos += len(group)
        for c in maps if limit else ("doc_type", "doc_number"):
            maps[c][group] = group[0]
        flag[group] = 1 if limit else 2
    oc = np.flatnonzero((quality == 0) & org & ~busy)  # an organisation holds many lines
    follow = rng.random(len(oc)) < ORG_SHARED
    if follow.any() and not follow.all():
        lead = oc[~follow][rng.integers(0, int((~follow).sum()), int(follow.sum()))]
        for m in maps.values():
            m[oc[follow]] = lead
    return maps, flag


def _dead_letters(n, src, dup, empty, bad_enum, bad_date) -> np.ndarray:
    """The planted dead letter of each row: 0 none, 1 duplicate, 2 no line_id, 3 bad enum, 4 bad date."""
    dead = np.zeros(n, np.int64)
    dead[empty], dead[bad_enum], dead[bad_date] = 2, 3, 4
    dead = dead[src]  # a re-export repeats the defect; else the older copy is the duplicate
    dead[src[dup]] = np.where(dead[src[dup]] == 0, 1, dead[src[dup]])
    return dead


def _truth(first, n, quality, inv, dk, maps, flag, src, dead) -> pa.Table:
    """The intended verdict of each row of the block (see ``dev.generate.generate_truth``)."""
    return pa.table(
        {
            "row": pa.array(first + np.arange(n)),
            "identity_class": strs(list(IDENTITY)).take(quality[src]),
            "defect": strs(INVALID + [None]).take(np.where(inv < 0, len(INVALID), inv)[src]),
            "doc_kind": strs(DOCS).take(dk[maps["doc_number"]][src]),
            "cross_record": strs([None, "DOC_LINE_LIMIT", "DOC_NAME_CONFLICT"]).take(flag[src]),
            "dead_letter": strs([None, "DUPLICATE_LINE_ID", "LINE_ID_MISSING", "BAD_ENUM", "BAD_DATE"]).take(dead),
        }
    )


def _updated_at(rng, n, secs, src, dup) -> pa.Array:
    """updated_at text (a re-export is the later row), some with a +08:00 zone."""
    secs = secs[src]
    secs[dup] += rng.integers(3600, 60 * 86400, len(dup))  # the re-export is the later row
    stamp, zoned = np.empty((n, 25), np.uint8), np.full(n, 19)  # 2024-05-01T08:30:00[+08:00]
    stamp[:, :10], stamp[:, 10], stamp[:, 11:19] = D.YMD10[secs // 86400 - D.DAY0], ord("T"), D.HMS[secs % 86400]
    stamp[:, 19:], zoned[pick(rng, n, ZONED_TIMESTAMP)] = _MAT(["+08:00"]), 25
    return text(stamp, zoned).done(np.arange(n))


def check_request(lines: int, seed: int, start: int = 0) -> None:
    """ValueError unless lines, seed and start are non-negative integers and seed < 2**63."""
    for label, value in (("lines", lines), ("seed", seed), ("start", start)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{label} must be a non-negative integer")
    if seed >= 2**63:
        raise ValueError("seed must be below 2**63")


def iter_rows(lines: int, seed: int, start: int, truth: bool = False, ahead: int = 0) -> Iterator[pa.Table]:
    """Rows ``start .. start+lines-1``, block by block; with ``ahead``, blocks are made in threads meanwhile."""
    spans, row = [], start
    while row < start + lines:
        index = row // BLOCK_ROWS
        take = min((index + 1) * BLOCK_ROWS, start + lines) - row
        spans.append((index, row - index * BLOCK_ROWS, take))
        row += take
    if not ahead:
        yield from (block(seed, index, truth).slice(offset, take) for index, offset, take in spans)
        return
    with concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="generate") as pool:
        queue: collections.deque = collections.deque()
        for i, (_, offset, take) in enumerate(spans):
            while len(queue) <= ahead and i + len(queue) < len(spans):
                queue.append(pool.submit(block, seed, spans[i + len(queue)][0], truth))
            yield queue.popleft().result().slice(offset, take)
