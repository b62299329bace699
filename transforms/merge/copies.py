"""The copies of each event id in the batch merge (Beam-free): who takes the id, under the rule of
``transforms.merge.event_ids`` (docs/contract.md "Registration events").

Every copy has passed the row checks (``check_events``) and carries :data:`DIGEST`, the keyed digest
of its fields as received (``body_digests``). ``transforms.merge.composite`` runs three steps:

    split_copies       per event_id bucket  ids whose copies are all identical: the first copy in
                                            (file, row) order goes on, the others are duplicates;
                                            ids with two or more bodies ("contested", rare): every copy
    line_verdicts      per line_id bucket   each contested copy against its line (the base's lines of
                                            the contested line_ids only): valid, already carried, or
                                            the reason of its own dead letter
    resolve_contested  per event_id bucket  ``take_ids`` in (file, row) order: the first valid copy takes
                                            the id; the rest are duplicates, EVENT_ID_CONFLICT, or keep
                                            their own dead letter

Before them, the copies of an id that a line of the previous merged base carries (its
``registration_event_id``: :func:`held_pairs`) are held by that line from the start: a copy on any other
line is ``EVENT_ID_CONFLICT`` (:func:`held_elsewhere`), whatever its order or validity (its body names
another line, so it cannot be the same event); a copy on the carrying line goes on as before (the line
merge counts it a duplicate).

An id whose copies are identical needs no line check to be decided: all its copies pass or fail
alike, so its first copy goes to the line merge, which applies, supersedes or dead-letters it. The
takers of contested ids join it there.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.merge.bucket import NO_LINES
from transforms.merge.event_ids import CONFLICT, DIGEST, DUPLICATE, OWN, TAKE, conflict_letters, take_ids, valid_rows
from transforms.merge.events import validate_events
from transforms.scan.policy import Policy

__all__ = [
    "VALID",
    "CARRIED",
    "NO_LINES",
    "HELD_SCHEMA",
    "HELD_DETAIL",
    "held_pairs",
    "held_elsewhere",
    "split_copies",
    "line_verdicts",
    "resolve_contested",
    "without_marks",
]

VALID, CARRIED = "_valid", "_carried"
_LETTER = {"_reason": "reason", "_field": "field", "_detail": "detail"}  # an invalid copy's own dead letter
_MARKS = (DIGEST, VALID, CARRIED, *_LETTER)
_ARRIVAL = [("_src_file", "ascending"), ("_src_row", "ascending")]


HELD_SCHEMA = pa.schema([("event_id", pa.string()), ("line_id", pa.string())])
HELD_DETAIL = "a line of the previous merge carries this event_id"
_SEP = "\x1f"  # in no id: the readers refuse control characters


def held_pairs(base: pa.Table) -> pa.Table:
    """A merged base's rows -> ``(event_id, line_id)`` of the lines that carry a registration (HELD_SCHEMA)."""
    ids = base.column("registration_event_id").cast(pa.string())
    keep = pc.is_valid(ids)
    return pa.table([ids.filter(keep), base.column("line_id").cast(pa.string()).filter(keep)], schema=HELD_SCHEMA)


def held_elsewhere(events: pa.Table, held: pa.Table | None) -> np.ndarray:
    """Per copy: its event_id is carried by a line of the previous base (``held``, :func:`held_pairs` of the
    copies' event_id bucket) and not by the copy's own line."""
    if held is None or held.num_rows == 0 or events.num_rows == 0:
        return np.zeros(events.num_rows, bool)
    ids, lines = events.column("event_id"), events.column("line_id")
    held_ids = held.column("event_id")
    pairs = pc.binary_join_element_wise(held_ids, held.column("line_id"), _SEP)
    carried = pc.is_in(ids, value_set=held_ids.combine_chunks())
    own = pc.is_in(pc.binary_join_element_wise(ids, lines, _SEP), value_set=pairs.combine_chunks())
    return pc.and_(pc.fill_null(carried, False), pc.invert(pc.fill_null(own, False))).to_numpy(zero_copy_only=False)


def without_marks(events: pa.Table) -> pa.Table:
    """The checked events without the columns of this module (what the line merge takes)."""
    return events.drop_columns([c for c in _MARKS if c in events.column_names])


def split_copies(events: pa.Table) -> tuple[pa.Table, pa.Table, int]:
    """One event_id bucket -> ``(firsts, contested, duplicates)``.

    ``firsts``: the first copy in (file, row) order of each id whose copies all have one digest;
    ``contested``: every copy, in (file, row) order, of the ids with two digests or more;
    ``duplicates``: the other copies of the first kind.
    """
    if events.num_rows == 0:
        return events, events, 0
    order = pc.sort_indices(events, [("event_id", "ascending")] + _ARRIVAL)
    events = events.take(order)
    ids = events.column("event_id").combine_chunks()
    digests = events.column(DIGEST).combine_chunks()
    n = len(ids)
    starts = np.ones(n, bool)
    starts[1:] = ~pc.fill_null(pc.equal(ids.slice(1), ids.slice(0, n - 1)), False).to_numpy(zero_copy_only=False)
    group = np.cumsum(starts) - 1
    first_digest = digests.take(pa.array(np.flatnonzero(starts))).take(pa.array(group))
    differs = ~pc.fill_null(pc.equal(digests, first_digest), False).to_numpy(zero_copy_only=False)
    contested_group = np.zeros(int(group[-1]) + 1, bool)
    contested_group[group[differs]] = True
    contested = contested_group[group]
    firsts = events.filter(pa.array(starts & ~contested))
    return firsts, events.filter(pa.array(contested)), int((~starts & ~contested).sum())


def line_verdicts(
    copies: pa.Table, lines: pa.Table | None, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, salt: str
) -> pa.Table:
    """Contested copies of one line bucket -> the copies with VALID, CARRIED and, for the invalid ones, the
    reason, field and detail of their own dead letter (``validate_events``'s: no value).

    ``lines``: the bucket's kept base lines (``transforms.merge.lines.base_lines``), None when the base has
    none. A copy whose line already carries its event is neither valid nor a dead letter (a duplicate)."""
    lines = NO_LINES if lines is None else lines
    valid, carried = valid_rows(copies, lines, policy, as_of, ctx, salt)
    invalid = ~valid & ~carried
    letter = {name: np.full(copies.num_rows, None, object) for name in _LETTER}
    if invalid.any():  # each invalid copy gets one dead letter: its position stands in for its row to find it
        at = pa.array(np.flatnonzero(invalid), pa.int64())
        bad = copies.filter(pa.array(invalid))
        bad = bad.set_column(bad.schema.get_field_index("_src_row"), "_src_row", at)
        letters = validate_events(bad, lines, policy, as_of, ctx, salt)[1]
        rows = letters.column("source_row").to_numpy()
        if not np.array_equal(np.sort(rows), at.to_numpy()):
            raise RuntimeError("an invalid contested copy has no dead letter of its own")
        for name, column in _LETTER.items():
            letter[name][rows] = letters.column(column).to_numpy(zero_copy_only=False)
    marked = copies.append_column(VALID, pa.array(valid)).append_column(CARRIED, pa.array(carried))
    for name in _LETTER:
        marked = marked.append_column(name, pa.array(letter[name], pa.string()))
    return marked


def resolve_contested(copies: pa.Table, ctx: DeadLetterContext) -> tuple[pa.Table, pa.Table, int]:
    """The contested copies of one event_id bucket (``line_verdicts``'s) -> ``(takers, dead letters,
    duplicates)``: ``take_ids`` in (file, row) order. An invalid copy that takes nothing before the id is
    held keeps its own dead letter; after, a different body is EVENT_ID_CONFLICT.

    An id that a copy's line already carries is held from the start: its copies are duplicates."""
    if copies.num_rows == 0:
        return without_marks(copies), dead_letter_table(ctx, []), 0
    copies = copies.take(pc.sort_indices(copies, _ARRIVAL))
    ids = copies.column("event_id").combine_chunks()
    held = dict.fromkeys(ids.filter(copies.column(CARRIED).combine_chunks()).to_pylist())
    valid = copies.column(VALID).combine_chunks().to_numpy(zero_copy_only=False)
    codes, _ = take_ids(ids, copies.column(DIGEST).combine_chunks(), valid, held)
    own = copies.filter(pa.array(codes == OWN))
    letters = dead_letter_table(
        ctx,
        own.column("_reason"),
        source_file=own.column("_src_file"),
        source_row=own.column("_src_row"),
        event_id=own.column("event_id"),
        line_id=own.column("line_id"),
        field=own.column("_field"),
        detail=own.column("_detail"),
    )
    dead = pa.concat_tables([letters, conflict_letters(ctx, copies, codes == CONFLICT)])
    takers = without_marks(copies.filter(pa.array(codes == TAKE)))
    return takers, dead, int((codes == DUPLICATE).sum())
