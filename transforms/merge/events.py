"""Registration events over Arrow tables (Beam-free): prepare, check, validate, pick.

docs/contract.md "Registration events": every copy is checked first; a copy
that fails the row checks or its line's checks is a dead letter and takes
nothing, and the first *valid* copy of an event_id in arrival order holds the
id (``transforms.merge.event_ids``; in the batch merge
``transforms.merge.copies``): a later copy with the same body is a duplicate
(counted, never a dead letter), one with another body EVENT_ID_CONFLICT.
Among the valid events of one line the latest ``registered_at`` wins, a tie
goes to the larger event_id, and the others are superseded. Dead letters
carry the event_id, the line_id, the source file and row and a reason code,
never a value.

The stages, each a function of one table (``transforms.merge.event_stages`` and
``transforms.merge.composite`` run them in the batch merge):

    prepare_events   per read batch      EVENT_ID_MISSING, EVENT_ID_MALFORMED; event_id cleaned
    check_events     same batch          LINE_ID_MISSING, BAD_TIMESTAMP, BAD_ENUM (channel, verified_by)
    (copies)         per event_id bucket who holds each id (transforms/merge/copies.py)
    validate_events  per line bucket     UNKNOWN_LINE, LINE_TERMINATED, TIMESTAMP_IN_FUTURE, the policy's codes
    pick_winners     same bucket         one winner per line; the rest superseded

Against a merged base, an event that the line already carries
(``registration_event_id``) is a duplicate, and one older than the line's
registration is superseded: merging the same events twice changes nothing.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.reasons import EVENT_REASONS as _CATALOGUE_EVENTS
from schemas import field_names
from transforms.scan.classify import classify_batch, lookup, per_distinct
from transforms.scan.dates import parse_timestamps
from transforms.core.deadletter import DeadLetterContext, dead_letter_table, empty_dead_letters, plain_ids
from transforms.scan.normalize import clean_text, normalize_enum
from transforms.scan.policy import Policy

__all__ = [
    "CHANNELS",
    "VERIFIERS",
    "EVENT_REASONS",
    "prepare_events",
    "check_events",
    "validate_events",
    "pick_winners",
]

CHANNELS = ("STORE", "AGENT", "ONLINE", "SELF_SERVICE")
VERIFIERS = ("ID_CARD_READER", "FACE_MATCH", "MANUAL")
# The names registration exports give them (docs/contract.md "Registration events"), matched as the codes are
# (trimmed, ignoring case and full-width forms). Only names that mean one code: 渠道 alone, 其他, ... stay BAD_ENUM.
CHANNEL_NAMES = {
    "STORE": ("营业厅", "自有营业厅", "实体营业厅", "门店"),
    "AGENT": ("代理商", "代理点", "合作营业厅", "社会渠道"),
    "ONLINE": ("网上营业厅", "网厅", "手机营业厅", "掌上营业厅", "线上", "在线"),
    "SELF_SERVICE": ("自助终端", "自助服务", "自助"),
}
VERIFIER_NAMES = {
    "ID_CARD_READER": ("身份证阅读器", "二代证阅读器", "二代证读卡器", "身份证读卡器", "读卡器"),
    "FACE_MATCH": ("人脸识别", "人像比对", "人证比对", "人脸比对"),
    "MANUAL": ("人工核验", "人工审核", "人工"),
}
# Dead-letter reasons of events (besides ROW_MALFORMED and the policy's line
# reasons): the catalogue in transforms/core/reasons.py is their one home.
EVENT_REASONS = {
    code: meaning
    for code, meaning in _CATALOGUE_EVENTS.items()
    if code
    in (
        "EVENT_ID_MISSING",
        "EVENT_ID_MALFORMED",
        "LINE_ID_MISSING",
        "BAD_TIMESTAMP",
        "UNKNOWN_LINE",
        "LINE_TERMINATED",
        "TIMESTAMP_IN_FUTURE",
    )
}
EVENT_REASONS["BAD_ENUM"] = "channel or verified_by is missing or not in its set"
_BASE_FIELDS = field_names("subscriber_base")
_IDENTITY = ("doc_type", "doc_number", "name", "address", "handler_doc_type", "handler_doc_number", "handler_name")
_NO_STRING = pa.scalar(None, pa.string())


def _mask(values) -> np.ndarray:
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _dead(ctx: DeadLetterContext, events: pa.Table, mask: np.ndarray, reasons, fields, details) -> pa.Table:
    """Dead letters of the masked events (reasons, fields, details: scalars or per-row arrays)."""
    pick = pa.array(mask)
    rows = events.filter(pick)

    def as_list(v):
        return v if isinstance(v, str) or v is None else list(np.asarray(v, object)[mask])

    reason = as_list(reasons)
    return dead_letter_table(
        ctx,
        [reason] * rows.num_rows if isinstance(reason, str) else reason,
        source_file=rows.column("_src_file"),
        source_row=rows.column("_src_row"),
        event_id=rows.column("event_id"),
        line_id=clean_text(rows.column("line_id")),
        field=as_list(fields),
        detail=as_list(details),
    )


def prepare_events(raw: pa.Table, ctx: DeadLetterContext) -> tuple[pa.Table, pa.Table]:
    """(events with a clean, plain event_id; EVENT_ID_MISSING and EVENT_ID_MALFORMED dead letters) of one read
    batch. An applied event's id is kept in the merged base and the stream's state: one that holds a name, an
    address or a document number (not printable ASCII, or an identity card number) would be plaintext there."""
    event_id = clean_text(raw.column("event_id"))
    raw = raw.set_column(raw.schema.get_field_index("event_id"), "event_id", event_id)
    missing = ~_mask(event_id.is_valid())
    malformed = ~missing & ~_mask(plain_ids(event_id).is_valid())
    bad = missing | malformed
    if not bad.any():
        return raw, empty_dead_letters()
    reasons = np.where(malformed, "EVENT_ID_MALFORMED", "EVENT_ID_MISSING")
    details = np.where(
        malformed, "event_id is not a plain id (printable ASCII, no identity card number)", "event_id is empty"
    )
    return raw.filter(pa.array(~bad)), _dead(ctx, raw, bad, reasons, "event_id", details)


def _enum(values, allowed: tuple[str, ...], names: dict[str, tuple[str, ...]]) -> pa.Array:
    table = {v: v for v in allowed}
    for code, aliases in names.items():
        table.update(dict.fromkeys(normalize_enum(pa.array(aliases, pa.string())).to_pylist(), code))
    return per_distinct(values, lambda d: lookup(normalize_enum(d), table))


def check_events(events: pa.Table, ctx: DeadLetterContext) -> tuple[pa.Table, pa.Table]:
    """(checked events, dead letters): line_id, registered_at, channel and verified_by.

    Checked events get a clean ``line_id``, canonical ``channel`` and
    ``verified_by``, a clean ``agent_id`` and ``_registered_at`` (UTC).
    """

    def col(name):
        return events.column(name).combine_chunks()

    line_id = clean_text(col("line_id"))
    registered, bad_time = parse_timestamps(col("registered_at"))
    channel = _enum(col("channel"), CHANNELS, CHANNEL_NAMES)
    verified = _enum(col("verified_by"), VERIFIERS, VERIFIER_NAMES)
    conditions = [
        ~_mask(line_id.is_valid()),
        bad_time | ~_mask(registered.is_valid()),
        ~_mask(channel.is_valid()),
        ~_mask(verified.is_valid()),
    ]
    reasons = ["LINE_ID_MISSING", "BAD_TIMESTAMP", "BAD_ENUM", "BAD_ENUM"]
    fields = ["line_id", "registered_at", "channel", "verified_by"]
    details = [
        "line_id is empty",
        "registered_at is missing or not a valid time",
        f"channel is missing or not one of {', '.join(CHANNELS)}",
        f"verified_by is missing or not one of {', '.join(VERIFIERS)}",
    ]
    dead = np.logical_or.reduce(conditions)
    letters = _dead(
        ctx,
        events,
        dead,
        np.select(conditions, reasons, ""),
        np.select(conditions, fields, ""),
        np.select(conditions, details, ""),
    )
    out = events
    for name, values in (
        ("line_id", line_id),
        ("channel", channel),
        ("verified_by", verified),
        ("agent_id", clean_text(col("agent_id"))),
    ):
        out = out.set_column(out.schema.get_field_index(name), name, values)
    out = out.append_column("_registered_at", registered)
    return (out.filter(pa.array(~dead)) if dead.any() else out), letters


def _latest(as_of: dt.date) -> pa.Scalar:
    """The first instant no registration can have: the start (UTC) of the second day after the merge's day, or
    after today when that is later (a stream runs for days on the ``--as-of`` it started with). Any time zone's
    "tomorrow" is before it."""
    day = max(as_of, dt.datetime.now(dt.timezone.utc).date()) + dt.timedelta(days=2)
    return pa.scalar(dt.datetime.combine(day, dt.time(0), dt.timezone.utc), pa.timestamp("us", tz="UTC"))


def validate_events(
    events: pa.Table, lines: pa.Table, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, salt: str
) -> tuple[pa.Table, pa.Table, int]:
    """Check events against their lines and the policy.

    Args:
        events: checked events of one line bucket.
        lines: the bucket's base lines (unique line_id; line_type,
            subscriber_kind, status; registered_at and registration_event_id,
            null for a raw base).

    Returns:
        ``(valid, dead letters, already applied)``: valid events carry
        ``_line`` (their row in ``lines``), ``identity_status``, ``reasons``
        and ``_flag_bits`` from the policy.
    """
    at = pc.index_in(events.column("line_id"), value_set=lines.column("line_id"))
    unknown = ~_mask(at.is_valid())
    status = lines.column("status").combine_chunks().take(at)
    terminated = _mask(pc.equal(status, "TERMINATED")) & ~unknown
    applied = (
        _mask(pc.equal(events.column("event_id"), lines.column("registration_event_id").combine_chunks().take(at)))
        & ~unknown
    )
    future = _mask(pc.greater_equal(events.column("_registered_at"), _latest(as_of))) & ~(unknown | terminated)
    future &= ~applied
    dead_parts = [
        _dead(ctx, events, unknown, "UNKNOWN_LINE", "line_id", EVENT_REASONS["UNKNOWN_LINE"]),
        _dead(ctx, events, terminated, "LINE_TERMINATED", "status", EVENT_REASONS["LINE_TERMINATED"]),
        _dead(ctx, events, future, "TIMESTAMP_IN_FUTURE", "registered_at", EVENT_REASONS["TIMESTAMP_IN_FUTURE"]),
    ]
    keep = pa.array(~(unknown | terminated | applied | future))
    events, at = events.filter(keep), at.filter(keep)
    n = events.num_rows
    like = {name: pa.nulls(n, pa.string()) for name in _BASE_FIELDS}
    for name in ("line_id", "line_type", "subscriber_kind", "status"):
        like[name] = lines.column(name).combine_chunks().take(at)
    for name in _IDENTITY:
        like[name] = events.column(name)
    like["_src_file"], like["_src_row"] = events.column("_src_file"), events.column("_src_row")
    verdict = classify_batch(pa.table(like), policy, as_of, ctx, salt)
    classified = verdict.classified
    if classified.num_rows != n:  # line fields come from kept base lines: nothing can fail here
        raise RuntimeError("event validation lost rows")
    bad = _mask(pc.not_equal(classified.column("identity_status"), "COMPLETE"))
    if bad.any():
        reasons = classified.column("reasons").combine_chunks().filter(pa.array(bad)).to_pylist()
        states = classified.column("identity_status").combine_chunks().filter(pa.array(bad)).to_pylist()
        details = np.empty(n, object)
        details[bad] = [f"identity {s}: {', '.join(r)}" for s, r in zip(states, reasons)]
        first = np.empty(n, object)
        first[bad] = [r[0] for r in reasons]
        dead_parts.append(_dead(ctx, events, bad, first, None, details))
    valid = events.append_column("_line", at)
    for name in ("identity_status", "reasons", "_flag_bits"):
        valid = valid.append_column(name, classified.column(name))
    return valid.filter(pa.array(~bad)), pa.concat_tables(dead_parts), int(applied.sum())


def pick_winners(valid: pa.Table, lines: pa.Table) -> tuple[pa.Table, int]:
    """(the winning event of each line, number superseded).

    Latest ``_registered_at`` wins, a tie goes to the larger event_id. On a
    merged base the winner must also beat the line's current registration.
    """
    if valid.num_rows == 0:
        return valid, 0
    order = pc.sort_indices(
        valid, [("line_id", "ascending"), ("_registered_at", "descending"), ("event_id", "descending")]
    )
    ids = valid.column("line_id").combine_chunks().take(order)
    first = np.ones(len(ids), bool)
    first[1:] = ~_mask(pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)))
    best = valid.take(pa.array(order.to_numpy()[first]))
    at = best.column("_line")
    current_at = lines.column("registered_at").combine_chunks().take(at)
    current_id = lines.column("registration_event_id").combine_chunks().take(at)
    newer = pc.or_(
        pc.greater(best.column("_registered_at"), current_at),
        pc.and_(pc.equal(best.column("_registered_at"), current_at), pc.greater(best.column("event_id"), current_id)),
    )
    beats = _mask(pc.or_kleene(pc.is_null(current_at), newer))
    winners = best.filter(pa.array(beats))
    return winners, valid.num_rows - winners.num_rows
