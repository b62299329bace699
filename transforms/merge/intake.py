"""The message checks of a streaming window (Beam-free): Pub/Sub messages -> raw events + dead letters.

:func:`parse_messages` is steps 2 and 3 of :func:`transforms.merge.stream.process_window`:

1. **size**: a message over ``max_bytes`` is ``MESSAGE_TOO_LARGE`` (its body
   never reached the window: the lander keeps only its size);
2. **attributes**: ``ATTRIBUTE_MISSING`` (event_id or line_id attribute absent or empty);
3. **body**: parsed as the JSON Lines reader of the batch merge parses a line
   (``MESSAGE_MALFORMED``: not JSON, not an object, a field that is an object,
   or over the field size limit);
4. **mismatch**: ``ATTRIBUTE_MISMATCH`` (the body's event_id or line_id differs
   from the attribute).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.merge.messages import MAX_FIELD_CHARS, parse_bodies
from transforms.scan.normalize import clean_text

__all__ = ["parse_messages"]


def _dead(
    ctx: DeadLetterContext, messages: pa.Table, mask: np.ndarray, reason: str, field, detail, source: str
) -> pa.Table:
    rows = messages.filter(pa.array(mask))
    return dead_letter_table(
        ctx,
        [reason] * rows.num_rows,
        source_file=pc.binary_join_element_wise(source + "/", rows.column("message_id").combine_chunks(), ""),
        event_id=clean_text(rows.column("attr_event_id").combine_chunks()),
        line_id=clean_text(rows.column("attr_line_id").combine_chunks()),
        field=field if isinstance(field, str) or field is None else list(np.asarray(field, object)[mask]),
        detail=detail if isinstance(detail, str) else list(np.asarray(detail, object)[mask]),
    )


# A body that pyarrow's JSON reader parses exactly as json.loads does: one flat object (a single "{", no "[")
# on one line, no control character, no NaN/Inf spelling (RapidJSON takes "-NaN" and "Inf", json.loads does not),
# and short (json.loads refuses an integer of over 4,300 digits, even in a key the contract ignores).


def parse_messages(
    messages: pa.Table, ctx: DeadLetterContext, source: str, max_bytes: int
) -> tuple[pa.Table, list[pa.Table]]:
    """(raw events: the event contract's strings + _src_file/_src_row, dead letters)."""
    ok, dead = _unfit(messages, ctx, source, max_bytes)
    raw, malformed = _bodies(messages, ok, ctx, source)
    dead += malformed
    raw, mismatched = _mismatched(messages, raw, ctx, source)
    dead += mismatched
    # Dead letters carry no source row: a message is named by its id in source_file.
    raw = raw.set_column(raw.schema.get_field_index("_src_row"), "_src_row", pa.nulls(raw.num_rows, pa.int64()))
    return raw, dead


def _unfit(
    messages: pa.Table, ctx: DeadLetterContext, source: str, max_bytes: int
) -> tuple[np.ndarray, list[pa.Table]]:
    """(mask of the messages to parse, MESSAGE_TOO_LARGE and ATTRIBUTE_MISSING dead letters)."""
    dead = []
    sizes = messages.column("size").to_numpy()
    too_large = (sizes > max_bytes) | ~messages.column("data").is_valid().to_numpy(zero_copy_only=False)
    dead.append(
        _dead(ctx, messages, too_large, "MESSAGE_TOO_LARGE", "data", f"message body over {max_bytes:,} bytes", source)
    )
    no_event = ~clean_text(messages.column("attr_event_id").combine_chunks()).is_valid().to_numpy(zero_copy_only=False)
    no_line = ~clean_text(messages.column("attr_line_id").combine_chunks()).is_valid().to_numpy(zero_copy_only=False)
    missing = (no_event | no_line) & ~too_large
    dead.append(
        _dead(
            ctx,
            messages,
            missing,
            "ATTRIBUTE_MISSING",
            np.where(no_event, "event_id", "line_id"),
            np.where(
                no_event, "the event_id attribute is missing or empty", "the line_id attribute is missing or empty"
            ),
            source,
        )
    )
    return ~(too_large | missing), dead


def _bodies(messages: pa.Table, ok: np.ndarray, ctx: DeadLetterContext, source: str) -> tuple[pa.Table, list[pa.Table]]:
    """(raw events of the bodies that parse, named by message id; MESSAGE_MALFORMED dead letters)."""
    dead = []
    n = messages.num_rows
    at = np.flatnonzero(ok)
    raw, bad = parse_bodies(at, messages.column("data").combine_chunks().take(pa.array(at)), MAX_FIELD_CHARS)
    if bad:
        rows = np.zeros(n, bool)
        details = np.empty(n, object)
        fields = np.empty(n, object)
        for b in bad:
            rows[b.source_row], details[b.source_row], fields[b.source_row] = True, b.detail, b.field
        dead.append(_dead(ctx, messages, rows, "MESSAGE_MALFORMED", fields, details, source))
    ids = messages.column("message_id").combine_chunks().take(raw.column("_src_row"))
    raw = raw.set_column(
        raw.schema.get_field_index("_src_file"), "_src_file", pc.binary_join_element_wise(source + "/", ids, "")
    )
    return raw, dead


def _mismatched(
    messages: pa.Table, raw: pa.Table, ctx: DeadLetterContext, source: str
) -> tuple[pa.Table, list[pa.Table]]:
    """The body must name the event and line its attributes name (a copy of the id is how Pub/Sub dedups).

    Returns (the raw events that do, ATTRIBUTE_MISMATCH dead letters).
    """
    dead = []
    n = messages.num_rows
    position = raw.column("_src_row")
    attr_event = clean_text(messages.column("attr_event_id").combine_chunks().take(position))
    attr_line = clean_text(messages.column("attr_line_id").combine_chunks().take(position))
    event_differs = ~pc.fill_null(
        pc.equal(clean_text(raw.column("event_id").combine_chunks()), attr_event), False
    ).to_numpy(zero_copy_only=False)
    line_differs = ~pc.fill_null(
        pc.equal(clean_text(raw.column("line_id").combine_chunks()), attr_line), False
    ).to_numpy(zero_copy_only=False)
    mismatch = event_differs | line_differs
    if mismatch.any():
        rows = np.zeros(n, bool)
        rows[position.to_numpy()[mismatch]] = True
        field = np.where(event_differs, "event_id", "line_id")
        fields = np.empty(n, object)
        fields[position.to_numpy()[mismatch]] = field[mismatch]
        details = np.where(
            fields == "event_id",
            "the body's event_id differs from the event_id attribute",
            "the body's line_id differs from the line_id attribute",
        )
        dead.append(_dead(ctx, messages, rows, "ATTRIBUTE_MISMATCH", fields, details, source))
        raw = raw.filter(pa.array(~mismatch))
    return raw, dead
