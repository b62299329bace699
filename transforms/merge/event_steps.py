"""The batch merge's per-batch and per-bucket steps (Beam-free): the bodies of the merge's DoFns.

    checked, dead, counts = check_batch(raw, tokenizer, ctx)              # CheckEvents, per read batch
    firsts, contested, dead, counts = split_bucket(events, held, ctx)     # SplitCopies, per event_id bucket
    rows, ids = contested_rows(base, line_ids, clean)                     # LinesOfContested, per base batch
    base = contested_base(base_tables, copies, clean)                     # a bucket's base read by the bucket
    copies = verdicts(copies, base, kind, policy, as_of, ctx, salt)       # LineVerdicts, per line bucket
    takers, dead, counts = take_bucket(copies, ctx)                       # TakeIds, per event_id bucket
    ids = line_keys(table, clean)                                         # KeyByLine: what a row's bucket is of

The Beam job (``transforms/merge/event_stages.py``, ``transforms/merge/composite.py``) and the
in-process merge (``pipelines/merge_tasks.py``) call these same functions, so both decide alike. Each
runs under :func:`value_free` (an error's text may quote an identity value).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.counts import value_counts
from transforms.core.deadletter import DeadLetterContext
from transforms.merge.copies import HELD_DETAIL, held_elsewhere, line_verdicts, resolve_contested, split_copies
from transforms.merge.copies import without_marks
from transforms.merge.event_ids import DIGEST, body_digests, conflict_letters
from transforms.merge.events import check_events, prepare_events
from transforms.merge.lines import base_lines
from transforms.merge.value_free import value_free
from transforms.scan.normalize import clean_text
from transforms.scan.policy import Policy

__all__ = ["check_batch", "split_bucket", "contested_rows", "contested_base", "verdicts", "take_bucket", "line_keys"]


def line_keys(table: pa.Table, clean: bool) -> pa.Array:
    """The line_id each row is bucketed by: cleaned as the scan cleans it for a raw base (' L1' meets 'L1')."""
    ids = table.column("line_id").combine_chunks()
    return clean_text(ids) if clean else ids


def check_batch(raw: pa.Table, tokenizer, ctx: DeadLetterContext) -> tuple[pa.Table, pa.Table, dict]:
    """A read batch of events -> (checked copies with their body digest, their dead letters, counts)."""
    with value_free("CheckEvents"):
        marked = raw.append_column(DIGEST, body_digests(raw, tokenizer))
        events, missing = prepare_events(marked, ctx)
        checked, bad = check_events(events, ctx)
        dead = pa.concat_tables([missing, bad])
    return checked, dead, {"events": {"rows_in": raw.num_rows, "dead_letters": value_counts(dead.column("reason"))}}


def split_bucket(
    events: pa.Table, held: pa.Table | None, ctx: DeadLetterContext
) -> tuple[pa.Table, pa.Table, pa.Table, dict]:
    """One event_id bucket -> (the first copy of each id with one body, unmarked; every copy of the
    contested ids; the EVENT_ID_CONFLICT dead letters of copies of an id a line of the previous base
    carries (``held``: its :func:`held_pairs` of the bucket; None for a raw base); counts)."""
    with value_free("SplitCopies"):
        elsewhere = held_elsewhere(events, held)
        dead = conflict_letters(ctx, events, elsewhere, HELD_DETAIL)
        if dead.num_rows:
            events = events.filter(pa.array(~elsewhere))
        firsts, contested, duplicates = split_copies(events)
        firsts = without_marks(firsts)
    counts = {"duplicates": duplicates, "dead_letters": value_counts(dead.column("reason"))}
    return firsts, contested, dead, {"events": counts}


def contested_rows(table: pa.Table, line_ids: pa.Array, clean: bool) -> tuple[pa.Table, pa.Array] | None:
    """A base batch's rows of the contested ``line_ids`` and their (cleaned) line ids; None when it has none."""
    with value_free("LinesOfContested"):
        ids = line_keys(table, clean)
        keep = pc.fill_null(pc.is_in(ids, value_set=line_ids), False)
        if not pc.any(keep).as_py():
            return None
        return table.filter(keep), ids.filter(keep)


def contested_base(tables: Iterable[pa.Table], copies: pa.Table, clean: bool) -> pa.Table | None:
    """A line bucket's base rows of its contested ``copies``' lines, from the bucket's base tables read one by
    one (only those rows kept); None when there are none."""
    wanted = pc.unique(copies.column("line_id")).drop_null()
    found = [rows[0] for rows in (contested_rows(table, wanted, clean) for table in tables) if rows is not None]
    return pa.concat_tables(found, promote_options="permissive").combine_chunks() if found else None


def verdicts(
    copies: pa.Table,
    base: pa.Table | None,
    base_kind: str,
    policy: Policy,
    as_of: dt.date,
    ctx: DeadLetterContext,
    salt: str,
) -> pa.Table:
    """One line bucket of contested copies and the base rows of their lines -> the copies with their verdicts."""
    with value_free("LineVerdicts"):
        lines = base_lines(base, base_kind, policy, as_of, ctx, salt)[0]
        return line_verdicts(copies, lines, policy, as_of, ctx, salt)


def take_bucket(copies: pa.Table, ctx: DeadLetterContext) -> tuple[pa.Table, pa.Table, dict]:
    """One event_id bucket of contested copies with their verdicts -> (takers, dead letters, counts)."""
    with value_free("TakeIds"):
        takers, dead, duplicates = resolve_contested(copies, ctx)
    return takers, dead, {"events": {"duplicates": duplicates, "dead_letters": value_counts(dead.column("reason"))}}
