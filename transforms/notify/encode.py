"""Arrow tables to Avro container files and to JSON messages, vectorised.

Beam's ``WriteToAvro`` and fastavro take one Python dict per record; at a
million jobs a wave that costs more than planning them. Avro's binary encoding
is simple enough to build column by column with numpy and pyarrow: each field
becomes a binary array of its encoded values (zig-zag varints, length-prefixed
strings, union branch bytes, little-endian doubles), one
``binary_join_element_wise`` makes the records, and their data buffer is the
block. The files are standard Avro object container files (codec ``null``),
read back by fastavro in the tests. The same column-wise approach renders the
JSON payload of each Pub/Sub message.

    data = avro_file(table, avro_schema("notify_sms_job"), name="part-1.avro")
    payloads = json_messages(table)   # pa.BinaryArray, one JSON object per row
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["avro_file", "write_avro", "json_messages", "varints"]

BLOCK_RECORDS = 32_768
_EMPTY = pa.scalar(b"", pa.binary())


def varints(values: np.ndarray, zigzag: bool = True) -> pa.Array:
    """Avro ``long`` encoding of each value: a binary array of 1-10 byte varints."""
    v = np.asarray(values, np.int64)
    z = ((v << 1) ^ (v >> 63)).view(np.uint64) if zigzag else v.view(np.uint64)
    n = len(z)
    sizes = np.ones(n, np.int64)
    rest = z >> np.uint64(7)
    while rest.any():
        sizes += rest > 0
        rest >>= np.uint64(7)
    width = int(sizes.max()) if n else 1
    out = np.empty((n, width), np.uint8)
    for i in range(width):
        more = (sizes > i + 1).astype(np.uint8) << 7
        out[:, i] = ((z >> np.uint64(7 * i)) & np.uint64(0x7F)).astype(np.uint8) | more
    data = out[np.arange(width) < sizes[:, None]]
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(sizes, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data.tobytes())])


def _fixed(raw: np.ndarray) -> pa.Array:
    """Rows of a (n, k) uint8 matrix as a binary array."""
    n, k = raw.shape
    offsets = (np.arange(n + 1, dtype=np.int32) * k).tobytes()
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw.tobytes())])


def _plain(column: pa.Array) -> pa.Array:
    """Encoding of the non-null values of one column (nulls give garbage, replaced later)."""
    t = column.type
    if pa.types.is_string(t) or pa.types.is_binary(t):
        raw = pc.cast(pc.fill_null(column, ""), pa.binary())
        lengths = pc.binary_length(raw).to_numpy(zero_copy_only=False)
        return pc.binary_join_element_wise(varints(lengths), raw, _EMPTY)
    if pa.types.is_floating(t):
        values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype("<f8")
        return _fixed(values.view(np.uint8).reshape(-1, 8))
    if pa.types.is_boolean(t):
        values = pc.fill_null(column, False).to_numpy(zero_copy_only=False).astype(np.uint8)
        return _fixed(values.reshape(-1, 1))
    if pa.types.is_date(t) or pa.types.is_timestamp(t) or pa.types.is_integer(t):
        if pa.types.is_date(t):
            column = column.cast(pa.int32())
        return varints(pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False))
    raise TypeError(f"no Avro encoding for {t}")


def _encode(column, avro_type) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(avro_type, list):  # ["null", X]: a branch index before the value
        branch = avro_type.index("null")
        value = pc.binary_join_element_wise(pa.scalar(bytes([2 * (1 - branch)]), pa.binary()), _plain(column), _EMPTY)
        return pc.if_else(pc.is_valid(column), value, pa.scalar(bytes([2 * branch]), pa.binary()))
    if pa.types.is_date(column.type) or pa.types.is_timestamp(column.type):  # a few days per batch
        distinct = pc.unique(column)
        return _plain(distinct).take(pc.index_in(column, value_set=distinct))
    return _plain(column)


def _constant(column) -> pa.Scalar | None:
    """The column's one value when every row holds it (campaign, channel, wave, locale ...)."""
    if len(column) == 0 or column.null_count or pa.types.is_floating(column.type):
        return None
    bounds = pc.min_max(column)
    low, high = bounds["min"], bounds["max"]
    return low if low.is_valid and low == high else None


def _records(table: pa.Table, schema: dict) -> pa.Array:
    parts = []
    for field in schema["fields"]:
        column = table.column(field["name"])
        same = _constant(column)
        if same is not None:  # encode once; the join repeats it
            parts.append(
                pa.scalar(_encode(pa.array([same.as_py()], column.type), field["type"])[0].as_py(), pa.binary())
            )
        else:
            parts.append(_encode(column, field["type"]))
    if not any(isinstance(part, (pa.Array, pa.ChunkedArray)) for part in parts):
        # every column constant (a one-row table): the join of scalars would be one scalar, not a row each
        parts[0] = pa.repeat(parts[0], table.num_rows)
    if len(parts) == 1:
        parts.append(_EMPTY)
    return pc.binary_join_element_wise(*parts, _EMPTY)


def _data(records: pa.Array) -> pa.Buffer:
    offsets = np.frombuffer(records.buffers()[1], np.int32)[records.offset : records.offset + len(records) + 1]
    return records.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def write_avro(handle, table: pa.Table, schema: dict, name: str = "") -> None:
    """Write an Avro object container file (codec null) of every row of ``table`` to ``handle``.

    The sync marker is derived from ``name``, so the same rows under the same
    name give the same bytes (re-runs compare equal). Blocks are written
    straight from Arrow's buffers, without copies.
    """
    sync = hashlib.sha256(f"avro-sync:{name}".encode()).digest()[:16]
    meta = {"avro.schema": json.dumps(schema, ensure_ascii=False).encode(), "avro.codec": b"null"}
    head = [b"Obj\x01", _long(len(meta))]
    for key, value in meta.items():
        head += [_long(len(key)), key.encode(), _long(len(value)), value]
    handle.write(b"".join([*head, _long(0), sync]))
    for start in range(0, table.num_rows, BLOCK_RECORDS):
        part = table.slice(start, BLOCK_RECORDS)
        data = _data(_records(part, schema))
        handle.write(_long(part.num_rows) + _long(data.size))
        handle.write(memoryview(data))
        handle.write(sync)


def avro_file(table: pa.Table, schema: dict, name: str = "") -> bytes:
    """The whole Avro file as bytes (see :func:`write_avro`)."""
    sink = io.BytesIO()
    write_avro(sink, table, schema, name)
    return sink.getvalue()


def _long(value: int) -> bytes:
    return varints(np.array([value], np.int64))[0].as_py()


def _json_string(column: pa.Array) -> pa.Array:
    text = pc.fill_null(column, "")
    special = pc.match_substring_regex(text, r'["\\\x00-\x1f]')
    if pc.any(special).as_py():  # rare: let json escape those rows
        escaped = [json.dumps(v, ensure_ascii=False)[1:-1] for v in text.to_pylist()]
        text = pc.if_else(special, pa.array(escaped, pa.string()), text)
    quoted = pc.binary_join_element_wise('"', text, '"', "")
    return pc.if_else(pc.is_valid(column), quoted, "null") if column.null_count else quoted


def _by_distinct(column: pa.Array, encode) -> pa.Array:
    """Encode the distinct values only (dates, times: a handful per batch), then spread them."""
    distinct = pc.unique(column)
    return encode(distinct).take(pc.index_in(column, value_set=distinct))


def _iso(values: pa.Array) -> pa.Array:
    """RFC 3339 UTC text: whole seconds as ``...T08:00:00Z``, else with microseconds."""
    values = values.cast(pa.timestamp("us", tz="UTC"))
    try:
        return pc.strftime(values.cast(pa.timestamp("s", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
    except pa.ArrowInvalid:  # fractional seconds somewhere
        return pc.strftime(values, "%Y-%m-%dT%H:%M:%SZ")


def _json_value(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if pa.types.is_string(t):
        return _json_string(column)
    if pa.types.is_timestamp(t):
        return _by_distinct(column, lambda v: _json_string(_iso(v)))
    if pa.types.is_date(t):
        return _by_distinct(column, lambda v: _json_string(pc.cast(v, pa.string())))
    if pa.types.is_boolean(t):
        return pc.if_else(pc.is_valid(column), pc.if_else(column, "true", "false"), "null")
    return pc.fill_null(pc.cast(column, pa.string()), "null")


def json_messages(table: pa.Table) -> pa.Array:
    """One compact JSON object (UTF-8) per row, keys in the table's column order."""
    parts: list = []
    for i, name in enumerate(table.column_names):
        parts += [("{" if i == 0 else ",") + json.dumps(name) + ":", _json_value(table.column(name))]
    parts.append("}")
    return pc.cast(pc.binary_join_element_wise(*parts, ""), pa.binary())
