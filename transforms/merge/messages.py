"""Pub/Sub messages of registration events, as Arrow: their table, and their bodies parsed.

``messages_table`` turns pulled messages into :data:`MESSAGE_SCHEMA` (a body
over ``max_bytes`` is kept only by its size). ``parse_bodies`` parses bodies as
the batch merge's JSON Lines reader parses lines (one message = one line),
the flat JSON objects in one vectorised pass, the rest line by line; both end
in ``transforms.core.rows.assemble_rows`` (field size limit, control
characters), so a message and a file line get the same verdict.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core.rows import EVENTS, assemble_rows, event_column, parse_json_lines

__all__ = ["MAX_FIELD_CHARS", "MAX_MESSAGE_BYTES", "MESSAGE_SCHEMA", "flat_json", "messages_table", "parse_bodies"]

_TS = pa.timestamp("us", tz="UTC")

MAX_MESSAGE_BYTES = 256 * 1024  # a registration event is a few hundred bytes


MAX_FIELD_CHARS = 4096  # as the batch merge's readers


MESSAGE_SCHEMA = pa.schema(
    [
        pa.field("message_id", pa.string()),
        pa.field("publish_time", pa.timestamp("us", tz="UTC")),
        pa.field("attr_event_id", pa.string()),
        pa.field("attr_line_id", pa.string()),
        pa.field("size", pa.int64()),  # bytes of the body as published
        pa.field("data", pa.binary()),  # null when the body was over the cap (never kept)
    ]
)


def messages_table(records: Iterable[dict], max_bytes: int = MAX_MESSAGE_BYTES) -> pa.Table:
    """Message records -> a MESSAGE_SCHEMA table; a body over ``max_bytes`` is dropped (its size kept).

    A record: ``message_id``, ``publish_time`` (datetime, or microseconds),
    ``attributes`` (dict) and ``data`` (bytes).
    """
    ids, times, events, lines, sizes, data = [], [], [], [], [], []
    for r in records:
        body = r.get("data") or b""
        attrs = r.get("attributes") or {}
        ids.append(r.get("message_id"))
        t = r.get("publish_time")
        times.append(
            t
            if t is None or isinstance(t, int)
            else (t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
        )
        events.append(attrs.get("event_id"))
        lines.append(attrs.get("line_id"))
        sizes.append(len(body))
        data.append(bytes(body) if len(body) <= max_bytes else None)
    return pa.table(
        [
            pa.array(ids, pa.string()),
            pa.array(times, pa.int64()).cast(_TS),
            pa.array(events, pa.string()),
            pa.array(lines, pa.string()),
            pa.array(sizes, pa.int64()),
            pa.array(data, pa.binary()),
        ],
        schema=MESSAGE_SCHEMA,
    )


_FLAT_JSON_UNSAFE = r"[\x00-\x1f]|Inf|NaN"


def flat_json(bodies: pa.Array) -> np.ndarray:
    """Which bodies may take the vectorised parse (the rest go through the batch merge's per-line parser).

    The per-body substring kernels are slow (10+ ms each per 20,000 bodies), so each is run only when
    one look at the bodies' bytes together says some body may fail it."""
    starts = pc.starts_with(bodies, "{")
    flat = pc.and_(pc.and_(starts, pc.ends_with(bodies, "}")), pc.less_equal(pc.binary_length(bodies), MAX_FIELD_CHARS))
    flat = pc.fill_null(flat, False).to_numpy(zero_copy_only=False)
    n = len(bodies)
    offsets = np.frombuffer(bodies.buffers()[1], np.int32, n + 1, bodies.offset * 4)
    data = memoryview(bodies.buffers()[2])[int(offsets[0]) : int(offsets[-1])]
    view = np.frombuffer(data, np.uint8)
    if np.count_nonzero(view == ord("{")) != int(pc.sum(pc.cast(pc.fill_null(starts, False), pa.int64())).as_py() or 0):
        flat &= pc.fill_null(pc.equal(pc.count_substring(bodies, "{"), 1), False).to_numpy(zero_copy_only=False)
    if np.count_nonzero(view == ord("[")):
        flat &= pc.fill_null(pc.equal(pc.count_substring(bodies, "["), 0), False).to_numpy(zero_copy_only=False)
    raw = bytes(data)
    if np.count_nonzero(view < 0x20) or b"Inf" in raw or b"NaN" in raw:
        flat &= ~pc.fill_null(pc.match_substring_regex(bodies, _FLAT_JSON_UNSAFE), True).to_numpy(zero_copy_only=False)
    return flat


def _readflat_json(bodies: pa.Array, columns: tuple[str, ...]) -> dict[str, pa.Array] | None:
    """Flat JSON objects -> the contract's columns as strings, in one pyarrow.json pass; None when pyarrow
    refuses the batch (a number, boolean or null where text belongs, a repeated key, invalid UTF-8, not JSON, other
    keys of mixed types) or a key is one of a column's other names (which the per-line parser maps):
    the caller then parses those bodies one by one, as before, and dead-letters exactly the same ones."""
    import pyarrow.json as pj

    try:
        text = bodies.cast(pa.string())  # UTF-8 checked here: pyarrow's JSON reader does not check it
        lines = pc.binary_join_element_wise(text, pa.scalar("\n"), "")  # each body + "\n", in one buffer
        offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
        buffer = lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        table = pj.read_json(
            pa.BufferReader(buffer),
            read_options=pj.ReadOptions(use_threads=False, block_size=16 << 20),
            parse_options=pj.ParseOptions(
                explicit_schema=pa.schema([pa.field(n, pa.string()) for n in columns]),
                unexpected_field_behavior="infer",  # the other keys, to see whether one is an export's name
                newlines_in_values=False,
            ),
        )
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows != len(bodies):  # a body that held two documents
        return None
    if any(event_column(n) for n in table.column_names if n not in columns):
        return None  # a contract field under an export's name (登记流水号...): the per-line parser maps it
    return {n: table.column(n).combine_chunks() for n in columns}


def parse_bodies(rows: np.ndarray, bodies: pa.Array, limit: int):
    """``transforms.core.rows.parse_json_lines`` (the batch merge's JSON Lines parser; one message = one line) over (row, body) pairs, the flat JSON objects in one vectorised pass.

    Same result as ``parse_json_lines(list(zip(rows, bodies)), "", limit)`` (rows ascending): the raw events
    in row order and the bad rows sorted by row; both parsers end in ``assemble_rows`` (field
    size limit, control characters)."""
    fast = flat_json(bodies) if len(bodies) else np.zeros(0, bool)
    columns = _readflat_json(bodies.filter(pa.array(fast)), EVENTS.columns) if fast.any() else None
    if columns is None:
        return parse_json_lines(list(zip(rows.tolist(), bodies.to_pylist())), "", limit)
    raw, bad, _ = assemble_rows(columns, rows[fast], "", "utf-8", limit, contract=EVENTS)
    if not fast.all():
        slow = ~fast
        more_raw, more_bad = parse_json_lines(
            list(zip(rows[slow].tolist(), bodies.filter(pa.array(slow)).to_pylist())), "", limit
        )
        raw = pa.concat_tables([raw, more_raw])
        raw = raw.take(pc.sort_indices(raw.column("_src_row")))
        bad = bad + more_bad
    return raw, sorted(bad, key=lambda b: b.source_row)
