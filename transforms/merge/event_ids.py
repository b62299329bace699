"""Who holds an event id (Beam-free): the copies of one ``event_id``, in arrival order, sorted into outcomes.

One rule for the batch merge and both streaming merges (docs/contract.md "Registration events"):

- a copy that fails the message or row checks (not JSON, attributes missing or
  disagreeing with the body, no event_id or line_id, a bad time or enum) is a
  dead letter and takes nothing: it never reaches :func:`take_ids`;
- a copy that passes them but not its line's checks (``UNKNOWN_LINE``,
  ``LINE_TERMINATED``, the policy's codes) is a dead letter and takes nothing;
- the first *valid* copy (arrival order: a file's row order; the local stream's
  processing order; the Dataflow stream's publish time, then message) takes the
  id: it is applied or superseded;
- once the id is held, a later copy with the same body is a duplicate and one
  with another body, valid or not, is ``EVENT_ID_CONFLICT``; an id held
  before (an earlier window, a line that already carries the event) counts as
  held from the start.

So a truncated, mismatched or made-up copy sent first cannot pre-empt the
valid one, and two different registrations under one id are never silently
merged into one. "Same body" is a keyed digest (:func:`body_digests`) of the
event's contract fields as received: no identity value is kept to compare.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Callable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.core.rows import EVENTS
from transforms.merge.events import validate_events
from transforms.scan.normalize import clean_text
from transforms.scan.policy import Policy

__all__ = [
    "TAKE",
    "DUPLICATE",
    "CONFLICT",
    "OWN",
    "DIGEST",
    "Resolved",
    "body_digests",
    "take_ids",
    "conflict_letters",
    "valid_rows",
    "resolve_copies",
]

TAKE, DUPLICATE, CONFLICT, OWN = 0, 1, 2, 3  # OWN: an invalid copy that keeps its own dead letter
DIGEST = "_digest"
_DOMAIN = "registration-event-body"
_SEP, _NULL = "\x1f", "\x00"  # neither can be in a field: the readers refuse control characters


def body_digests(raw: pa.Table, tokenizer, version: str | None = None) -> pa.Array:
    """The keyed digest of each event's contract fields as received (before any cleaning)."""
    n = raw.num_rows
    parts = [
        raw.column(name).combine_chunks().cast(pa.string()) if name in raw.column_names else pa.nulls(n, pa.string())
        for name in EVENTS.columns
    ]
    if n == 0:
        return pa.array([], pa.string())
    joined = pc.binary_join_element_wise(*parts, _SEP, null_handling="replace", null_replacement=_NULL)
    return tokenizer.digests(_DOMAIN, joined, version)


def take_ids(
    event_ids: pa.Array,
    digests: pa.Array,
    valid: np.ndarray,
    held: Mapping[str, str | None],
    same_body: Callable[[int, str], bool] | None = None,
) -> tuple[np.ndarray, dict[str, str]]:
    """The outcome of each copy (arrival order) and the ids taken here.

    Args:
        event_ids: clean event ids, one per copy, in arrival order.
        digests: :func:`body_digests` of the copies.
        valid: per copy, whether it passed its line's checks.
        held: ids held before this batch -> the digest of the copy that holds
            each (``None``: held by a line that already carries the event; any
            copy is then a duplicate).
        same_body: ``(row, held digest) -> bool`` for a held digest made under
            another join-key version (after a rotation); default: different.

    Returns:
        ``(codes, taken)``: TAKE, DUPLICATE, CONFLICT or OWN per copy, and
        event_id -> digest of each id taken in this batch.
    """
    ids = event_ids.to_pylist()
    marks = digests.to_pylist()
    codes = np.empty(len(ids), np.int8)
    taken: dict[str, str] = {}
    for i, (event_id, mark) in enumerate(zip(ids, marks)):
        holder = taken.get(event_id, held.get(event_id, False))
        if holder is False:  # nobody holds it yet
            if valid[i]:
                codes[i] = TAKE
                taken[event_id] = mark
            else:
                codes[i] = OWN
        elif holder is None or holder == mark:
            codes[i] = DUPLICATE
        elif _version(holder) != _version(mark) and same_body is not None and same_body(i, holder):
            codes[i] = DUPLICATE
        else:
            codes[i] = CONFLICT
    return codes, taken


def _version(digest: str) -> str:
    return digest.split(":", 1)[0]


def conflict_letters(
    ctx: DeadLetterContext,
    events: pa.Table,
    mask: np.ndarray,
    detail: str = "another copy of this event_id with a different body holds the id",
) -> pa.Table:
    """``EVENT_ID_CONFLICT`` dead letters of the masked copies (no value: ids, source and reason only)."""
    rows = events.filter(pa.array(mask))
    return dead_letter_table(
        ctx,
        ["EVENT_ID_CONFLICT"] * rows.num_rows,
        source_file=rows.column("_src_file"),
        source_row=rows.column("_src_row"),
        event_id=rows.column("event_id"),
        line_id=clean_text(rows.column("line_id").combine_chunks()),
        field="event_id",
        detail=detail,
    )


def valid_rows(
    events: pa.Table, lines: pa.Table, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, salt: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(valid, carried)`` per copy: it passes its line's checks; its line already carries this event.

    ``lines`` as ``transforms.merge.events.validate_events`` takes them (line_id, line_type,
    subscriber_kind, status, registered_at, registration_event_id)."""
    n = events.num_rows
    valid = np.zeros(n, bool)
    if n == 0:
        return valid, valid.copy()
    tagged = events.append_column("_arrival", pa.array(np.arange(n, dtype=np.int64)))
    kept, _, _ = validate_events(tagged, lines, policy, as_of, ctx, salt)
    valid[kept.column("_arrival").to_numpy()] = True
    at = pc.index_in(events.column("line_id"), value_set=lines.column("line_id"))
    current = lines.column("registration_event_id").combine_chunks().take(at)
    carried = pc.fill_null(pc.equal(events.column("event_id"), current), False).to_numpy(zero_copy_only=False)
    return valid & ~carried, carried


@dataclasses.dataclass
class Resolved:
    takers: pa.Table  # the copies that take their id (checked events, arrival order): applied or superseded next
    dead_letter: pa.Table  # the invalid copies' own dead letters and the EVENT_ID_CONFLICT ones
    duplicates: int
    taken: dict  # event_id -> digest of the ids taken here


def resolve_copies(
    events: pa.Table,
    lines: pa.Table,
    held: Mapping[str, str | None],
    *,
    policy: Policy,
    as_of: dt.date,
    ctx: DeadLetterContext,
    salt: str,
    same_body: Callable[[int, str], bool] | None = None,
) -> Resolved:
    """Checked events with their :data:`DIGEST` column (arrival order) -> who takes each id, and the rest.

    ``held``: ids held before (an earlier window). A copy of an event its line already carries
    counts as held (a duplicate)."""
    valid, carried = valid_rows(events, lines, policy, as_of, ctx, salt)
    ids = events.column("event_id").combine_chunks()
    before = dict(held)
    for event_id in ids.filter(pa.array(carried)).to_pylist():
        before.setdefault(event_id, None)
    codes, taken = take_ids(ids, events.column(DIGEST).combine_chunks(), valid, before, same_body)
    own = codes == OWN
    letters = [conflict_letters(ctx, events, codes == CONFLICT)]
    if own.any():  # invalid copies: their own reasons, as the line checks give them
        letters.append(validate_events(events.filter(pa.array(own)), lines, policy, as_of, ctx, salt)[1])
    return Resolved(
        events.filter(pa.array(codes == TAKE)),
        pa.concat_tables(letters),
        int((codes == DUPLICATE).sum()),
        taken,
    )
