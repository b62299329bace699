"""Arrow tables to Avro container files and to JSON messages, vectorised.

Beam's ``WriteToAvro`` and fastavro take one Python dict per record; at a
million jobs a wave that costs more than planning them. Avro's binary encoding
is simple enough to build column by column with numpy and pyarrow: each field
becomes binary values (zig-zag varints, length-prefixed strings, union branch
bytes, little-endian doubles). A field whose values repeat (campaign, variant,
region, days, send windows ...) is encoded once per distinct value, adjacent
such fields merged into one piece; string lengths are rows of a table of
precomputed varints. One ``take`` in row order then lays every record's pieces
end to end, and its data buffer is the block. The files are standard Avro
object container files (codec ``null``), read back by fastavro in the tests.
The same column-wise approach renders the JSON payload of each Pub/Sub message.

    data = avro_file(table, avro_schema("notify_sms_job"), name="part-1.avro")
    payloads = json_messages(table)   # pa.BinaryArray, one JSON object per row
"""

from __future__ import annotations

import functools
import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["avro_file", "write_avro", "json_messages", "varints"]

BLOCK_RECORDS = 32_768
_EMPTY = pa.scalar(b"", pa.binary())
_SAMPLE = 512  # rows looked at to judge whether a column holds few distinct values
_PAIRS = 4096  # two parts of few values merge into all their pairs up to this many, else into the pairs seen
_TABLE_LIMIT = 1 << 14  # unsigned values below it take one or two bytes: string lengths, days, small counts


def _varints_numpy(z: np.ndarray) -> pa.Array:
    """Varint bytes of each unsigned 64-bit value (the general path)."""
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


@functools.lru_cache(maxsize=1)
def _small_varints() -> pa.Array:
    """The varint of every unsigned value below _TABLE_LIMIT: most columns are one ``take`` from it."""
    return _varints_numpy(np.arange(_TABLE_LIMIT, dtype=np.uint64))


def varints(values: np.ndarray, zigzag: bool = True) -> pa.Array:
    """Avro ``long`` encoding of each value: a binary array of 1-10 byte varints."""
    v = np.asarray(values, np.int64)
    z = ((v << 1) ^ (v >> 63)).view(np.uint64) if zigzag else v.view(np.uint64)
    if len(z) and int(z.max()) < _TABLE_LIMIT:
        return _small_varints().take(pa.array(z.astype(np.int32)))
    return _varints_numpy(z)


def _fixed(raw: np.ndarray) -> pa.Array:
    """Rows of a (n, k) uint8 matrix as a binary array."""
    n, k = raw.shape
    offsets = (np.arange(n + 1, dtype=np.int32) * k).tobytes()
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw.tobytes())])


def _string_parts(column: pa.Array) -> list:
    """A string column's encoding as two parts: the lengths' varints (rows of the table of small varints, or
    one value when every length is the same), then the bytes."""
    raw = pc.cast(pc.fill_null(column, ""), pa.binary())
    lengths = pc.binary_length(raw).to_numpy(zero_copy_only=False).astype(np.int64)
    if len(lengths) and lengths.min() == lengths.max():  # job ids, masks ...: one length, encoded once
        head = (pa.array([_long(int(lengths[0]))], pa.binary()), np.zeros(len(lengths), np.int64))
    elif len(lengths) and 2 * int(lengths.max()) < _TABLE_LIMIT:
        head = (_small_varints(), 2 * lengths)
    else:
        head = (varints(lengths), None)
    return [head, (raw, None)]


def _plain(column: pa.Array) -> pa.Array:
    """Encoding of the non-null values of one column (nulls give garbage, replaced later)."""
    t = column.type
    if pa.types.is_string(t) or pa.types.is_binary(t):
        raw = pc.cast(pc.fill_null(column, ""), pa.binary())
        return pc.binary_join_element_wise(varints(pc.binary_length(raw).to_numpy(zero_copy_only=False)), raw, _EMPTY)
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


def _encode(column: pa.Array, avro_type) -> pa.Array:
    """Each row's encoding of one column (an Avro type, or ["null", X])."""
    if isinstance(avro_type, list):  # ["null", X]: a branch index before the value
        branch = avro_type.index("null")
        value = pc.binary_join_element_wise(pa.scalar(bytes([2 * (1 - branch)]), pa.binary()), _plain(column), _EMPTY)
        return pc.if_else(pc.is_valid(column), value, pa.scalar(bytes([2 * branch]), pa.binary()))
    return _plain(column)


def _few_values(column: pa.Array) -> bool:
    """True when the column likely holds few distinct values (judged on its first rows): campaign, wave,
    channel, variant, region, line type, days, windows, segments ..., encoded once per distinct value."""
    head = column.slice(0, _SAMPLE)
    return len(pc.unique(head)) <= max(1, len(head) // 8)


def _dictionary(column: pa.Array, avro_type) -> tuple[pa.Array, np.ndarray]:
    """(the encoding of each distinct value, each row's distinct value). Doubles are told apart by their bits
    (0.0 and -0.0 are two values), so every row is encoded exactly as it is."""
    if pa.types.is_floating(column.type):
        bits = pc.dictionary_encode(pa.array(column.to_numpy(zero_copy_only=False).astype("<f8").view(np.int64)))
        values = _fixed(bits.dictionary.to_numpy().view(np.uint8).reshape(-1, 8))
        return values, bits.indices.to_numpy().astype(np.int64)
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    return _encode(encoded.dictionary, avro_type), encoded.indices.to_numpy().astype(np.int64)


def _parts(column, avro_type) -> list[tuple[pa.Array, np.ndarray | None]]:
    """One column's parts of the records: (encoded values, the value of each row; None: row i has value i)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    floating = pa.types.is_floating(column.type)
    if len(column) and not (floating and column.null_count) and _few_values(column):
        return [_dictionary(column, avro_type)]
    if avro_type == "string" and not column.null_count:
        return _string_parts(column)
    return [(_encode(column, avro_type), None)]


def _merge(a: tuple[pa.Array, np.ndarray], b: tuple[pa.Array, np.ndarray]) -> tuple[pa.Array, np.ndarray]:
    """Two adjacent parts of few values as one: each pair of values that occurs, joined."""
    (va, ra), (vb, rb) = a, b
    code = ra * len(vb) + rb
    if len(va) * len(vb) <= _PAIRS:
        pairs = np.arange(len(va) * len(vb), dtype=np.int64)
    else:
        pairs, code = np.unique(code, return_inverse=True)
    joined = pc.binary_join_element_wise(
        va.take(pa.array(pairs // len(vb))), vb.take(pa.array(pairs % len(vb))), _EMPTY
    )
    return joined, code.reshape(-1)


def _records_data(table: pa.Table, schema: dict) -> pa.Buffer:
    """The rows' Avro records, one after the other. Each field's encoded values are computed once per distinct
    value where values repeat (adjacent such fields merged into one part); then every part's values are
    gathered into one array, and one ``take`` in row-major order (row 0's parts, row 1's parts ...) copies
    them into place."""
    n = table.num_rows
    parts: list[tuple[pa.Array, np.ndarray | None]] = []
    for field in schema["fields"]:
        for part in _parts(table.column(field["name"]), field["type"]):
            if parts and part[1] is not None and parts[-1][1] is not None:
                parts[-1] = _merge(parts[-1], part)
            else:
                parts.append(part)
    rows, base = [], 0
    for values, at in parts:
        rows.append(base + (np.arange(n, dtype=np.int64) if at is None else at))
        base += len(values)
    index = np.stack(rows, axis=1).reshape(-1)
    return _data(pa.concat_arrays([values for values, _ in parts]).take(pa.array(index)))


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
        data = _records_data(part, schema)
        handle.write(_long(part.num_rows) + _long(data.size))
        handle.write(memoryview(data))
        handle.write(sync)


def avro_file(table: pa.Table, schema: dict, name: str = "") -> bytes:
    """The whole Avro file as bytes (see :func:`write_avro`)."""
    sink = io.BytesIO()
    write_avro(sink, table, schema, name)
    return sink.getvalue()


def _long(value: int) -> bytes:
    """One Avro ``long`` (zig-zag varint) of a 64-bit value."""
    z = (value << 1) ^ (value >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


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
