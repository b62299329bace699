"""The row contract of every reader: which columns, as strings, and which rows are malformed.

A :class:`Contract` says which columns a reader reads (every one as a string),
which a file must have, which extensions are selected, and which column names
a malformed row in its dead letter. ``assemble_rows`` turns decoded columns of
any file format into a table of the contract (strings, plus ``_src_file`` and
``_src_row``) with malformed rows taken out as :class:`BadRow`;
``parse_json_lines`` does the same for JSON Lines (files of events, or Pub/Sub
message bodies). Beam-free; the file readers are in ``pipelines/io/``.

Malformed (one BadRow, first problem found): a contract field that does not
decode, is longer than the limit, or holds a C0 control character other than
tab, CR and LF; in JSON Lines also a line that is not a JSON object, a
field that is an object, an array or a boolean, one given twice, or one under two keys (a
key may be the column's name or an export's, as a CSV header: 登记流水号 is
``event_id``; ``transforms/core/column_names.py``). Row numbers are 1-based.

A whole contract column of a type that is not text or a plain value (a list,
a struct, a map, a union, fixed-size binary) is not a row problem but a file
problem: :class:`ColumnTypeError`, one line naming the file and the column
(never a value). A list of names is not a name: it is refused, not sealed as
its Python text ``"['...']"``.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import field_names
from transforms.core.deadletter import DeadLetterContext, dead_letter_table

__all__ = [
    "BASE",
    "EVENTS",
    "FORMATS",
    "MARK",
    "RAW_SCHEMA",
    "BadRow",
    "ColumnTypeError",
    "Contract",
    "column_type_error",
    "column_type_problem",
    "assemble_rows",
    "malformed_table",
    "event_column",
    "parse_json_lines",
]

CONTRACT: list[str] = field_names("subscriber_base")
REQUIRED = ("line_id", "line_type", "subscriber_kind", "status")
RAW_SCHEMA = pa.schema(
    [pa.field(n, pa.string()) for n in CONTRACT]
    + [pa.field("_src_file", pa.string()), pa.field("_src_row", pa.int64())]
)
FORMATS = {".parquet": "parquet", ".avro": "avro", ".csv": "csv"}
_KEY_MAX = 200  # a malformed row's key (event_id) is reported only when it is this short and clean
_CTRL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
# Undecodable bytes in a transcoded CSV stream become this noncharacter (never
# legitimate in interchange text), so the stream stays valid UTF-8 for pyarrow and
# the rows holding it are found per batch.
MARK = "\ufdd0"


@dataclasses.dataclass(frozen=True)
class Contract:
    """The columns a reader reads (every one as a string), those a file must have,
    the extensions it selects, and the column (if any) whose value names a
    malformed row in its dead letter (``BadRow.key``). ``text``: the columns are
    read as text (``assemble_rows``), so a file whose contract column is a list,
    a struct, ... is refused when it is planned (a merged base keeps its types)."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    formats: tuple[tuple[str, str], ...] = tuple(FORMATS.items())
    key: str | None = None
    text: bool = False

    @property
    def schema(self) -> pa.Schema:
        return _raw_schema(self.columns)


@functools.lru_cache(maxsize=None)
def _raw_schema(columns: tuple[str, ...]) -> pa.Schema:
    return pa.schema(
        [pa.field(n, pa.string()) for n in columns]
        + [pa.field("_src_file", pa.string()), pa.field("_src_row", pa.int64())]
    )


BASE = Contract("subscriber base", tuple(CONTRACT), REQUIRED, text=True)
EVENTS = Contract(
    "registration events",
    tuple(field_names("registration_event")),
    required=("event_id", "line_id"),
    formats=(
        (".parquet", "parquet"),
        (".avro", "avro"),
        (".csv", "csv"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
    ),
    key="event_id",
    text=True,
)


@dataclasses.dataclass(frozen=True)
class BadRow:
    source_file: str
    source_row: int | None
    field: str | None
    detail: str
    key: str | None = None  # the contract's key column (event_id), when that value is clean


class ColumnTypeError(ValueError):
    """A contract column whose type is not text or a plain value; ``str()`` is one line
    naming the file and the column, never a value."""


def column_type_problem(t: pa.DataType) -> str | None:
    """What a column of type ``t`` holds when that is not contract text (``"lists"``,
    ``"structs"``, ...); None for text and plain values (strings, binary that is to be
    decoded as UTF-8, numbers, booleans, dates, times, timestamps)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if isinstance(t, pa.ExtensionType):
        t = t.storage_type
    if any(
        check(t)
        for check in (
            pa.types.is_list,
            pa.types.is_large_list,
            pa.types.is_fixed_size_list,
            pa.types.is_list_view,
            pa.types.is_large_list_view,
        )
    ):
        return "lists"
    if pa.types.is_map(t):
        return "maps"
    if pa.types.is_struct(t):
        return "structs (records)"
    if pa.types.is_union(t):
        return "unions of several types"
    if pa.types.is_fixed_size_binary(t):
        return "fixed-size binary values"
    return None


def column_type_error(path: str, column: str, kind: str) -> ColumnTypeError:
    return ColumnTypeError(
        f"{path}: column {column} holds {kind}, not text; every contract column must be text or a plain value "
        "(a number, a date, a time)"
    )


def _to_string(arr: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
    """Cast a column of text or plain values to strings; binary that does not decode -> null + mask.
    The caller has refused other types (:func:`column_type_problem`)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr, t = arr.dictionary_decode(), t.value_type
    if pa.types.is_string(t):
        return arr, None
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_large_string(t):
        try:
            return arr.cast(pa.string()), None
        except pa.ArrowInvalid:  # fallback, this column of this batch only
            bad = np.array([v is not None and not _valid(v) for v in arr.to_pylist()])
            return pc.if_else(pa.array(bad), None, arr).cast(pa.string()), bad
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            arr = arr.cast(pa.timestamp(t.unit, "UTC"))
        iso = pc.strftime(arr, format="%Y-%m-%dT%H:%M:%S" + ("Z" if t.tz else ""))
        return pc.replace_substring_regex(iso, r"\.0+(Z?)$", r"\1"), None  # drop a zero fraction
    if pa.types.is_floating(t):
        return _float_text(arr), None
    if pa.types.is_date64(t):
        arr = arr.cast(pa.date32())
    try:
        return arr.cast(pa.string()), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string()), None


_EXACT = {16: 2.0**11, 32: 2.0**24, 64: 2.0**53}  # bits of a float -> every integer below it is exact in it


def _float_text(arr: pa.Array) -> pa.Array:
    """A float column (a dataframe's integer column that held a null, a spreadsheet's number) as text: a whole
    value below 2**53 (a double; 2**24 a single) as the integer it is (``13800138000``, ``110101``, not ``1.3800138e+10``, ``110101.0``);
    other values as Arrow writes them (a longer number, such as an 18-digit document number, has lost digits
    and is left to fail its check)."""
    whole = pc.and_(pc.equal(pc.floor(arr), arr), pc.less(pc.abs(arr), _EXACT[arr.type.bit_width]))
    whole = pc.fill_null(whole, False)
    as_int = pc.if_else(whole, arr, pa.scalar(0.0, arr.type)).cast(pa.int64()).cast(pa.string())
    return pc.if_else(whole, as_int, arr.cast(pa.string()))


def _valid(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def assemble_rows(
    cols: dict[str, pa.Array],
    rows: np.ndarray,
    path: str,
    label: str,
    limit: int,
    marked: bool = False,
    contract: Contract = BASE,
) -> tuple[pa.Table, list[BadRow], int]:
    """Contract columns as strings + source columns, malformed rows taken out.
    Returns (raw, bad, number of rows that did not decode)."""
    n = len(rows)
    out: dict[str, pa.Array] = {}
    flagged = np.zeros(n, dtype=bool)
    bad: list[BadRow] = []
    undecodable = 0

    def flag(mask: np.ndarray, field: str, detail) -> None:
        new = np.flatnonzero(mask & ~flagged)
        flagged[new] = True
        bad.extend(BadRow(path, int(rows[i]), field, detail(i)) for i in new)

    for name in contract.columns:
        if name not in cols:
            out[name] = pa.nulls(n, pa.string())
            continue
        kind = column_type_problem(cols[name].type)
        if kind:
            raise column_type_error(path, name, kind)
        s, undec = _to_string(cols[name])
        out[name] = s
        if marked:
            mark = pc.match_substring(s, MARK).fill_null(False).to_numpy(zero_copy_only=False)
            undec = mark if undec is None else undec | mark
        if undec is not None:
            undecodable += int(undec.sum())
            flag(undec, name, lambda i: f"bytes not valid {label}")
    for name in contract.columns:
        if name not in cols:
            continue
        s = out[name]
        if len(s) and (pc.max(pc.binary_length(s)).as_py() or 0) > limit:  # bytes >= characters
            lengths = pc.utf8_length(s).fill_null(0).to_numpy(zero_copy_only=False)
            flag(lengths > limit, name, lambda i: f"field {name} is {lengths[i]} characters, limit {limit}")
        if _maybe_ctrl(s):
            ctrl = pc.match_substring_regex(s, _CTRL).fill_null(False).to_numpy(zero_copy_only=False)
            flag(
                ctrl,
                name,
                lambda i: ("NUL byte" if "\x00" in s[int(i)].as_py() else "control character") + f" in field {name}",
            )
    out["_src_file"] = pa.array([path] * n, pa.string())
    out["_src_row"] = pa.array(rows, pa.int64())
    table = pa.Table.from_pydict(out, schema=contract.schema)
    if flagged.any():
        if contract.key:
            bad = _with_keys(bad, out[contract.key], rows, contract.key)
        table = table.filter(pa.array(~flagged))
    return table, bad, undecodable


def _with_keys(bad: list[BadRow], keys: pa.Array, rows: np.ndarray, key: str) -> list[BadRow]:
    """Each bad row with its key (event_id), unless the key is at fault, long or has control characters."""
    at = np.searchsorted(rows, np.array([b.source_row for b in bad], np.int64))
    out = []
    for b, i in zip(bad, at):
        value = keys[int(i)].as_py() if b.field != key and i < len(rows) else None
        if value and len(value) <= _KEY_MAX and not any(ord(c) < 32 for c in value):
            b = dataclasses.replace(b, key=value)
        out.append(b)
    return out


def _maybe_ctrl(s: pa.Array) -> bool:
    """Cheap pre-check on the whole value buffer (a superset of the slice's bytes)."""
    buf = s.buffers()[2]
    if buf is None:
        return False
    b = np.frombuffer(buf, np.uint8)
    low = b[b < 32]
    return bool(len(low) and ((low != 9) & (low != 10) & (low != 13)).any())


def malformed_table(ctx: DeadLetterContext, bad: list[BadRow], key_field: str | None = None) -> pa.Table:
    """ROW_MALFORMED dead letters of bad rows; ``key_field`` ("event_id") carries ``BadRow.key``."""
    keys = {key_field: [b.key for b in bad]} if key_field else {}
    return dead_letter_table(
        ctx,
        ["ROW_MALFORMED"] * len(bad),
        source_file=[b.source_file for b in bad],
        source_row=[b.source_row for b in bad],
        field=[b.field for b in bad],
        detail=[b.detail for b in bad],
        **keys,
    )


def _text(value) -> str | None:
    """A JSON value as contract text; ValueError for objects, arrays and booleans."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(type(value).__name__)


class _Object(dict):
    """A JSON object as parsed, with the first key it gives twice (``repeated``; None: none). ``json.loads``
    keeps a repeated key's last value, so ``{"name": "A", "name": "B"}`` would show one checker A and
    merge B."""

    __slots__ = ("repeated",)


def _object(pairs: list) -> _Object:
    obj = _Object(pairs)
    obj.repeated = None
    if len(obj) != len(pairs):
        seen: set = set()
        obj.repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
    return obj


def _fields(obj: dict, named: dict) -> tuple[dict, str | None]:
    """An object's contract fields, by the column each key names: its own name or an export's
    (``transforms/core/column_names.py``, as a CSV header's); ``named`` caches key -> column (None: no contract
    column). Second: a column two keys name (the object is malformed), else None."""
    fields: dict = {}
    for key, value in obj.items():
        column = named.get(key, "")
        if column == "":
            column = named[key] = event_column(key)
        if column is None:
            continue
        if column in fields:
            return fields, column
        fields[column] = value
    return fields, None


def event_column(key: str) -> str | None:
    """The event contract's column a JSON key names (its own name or an export's), or None."""
    from transforms.core.column_names import contract_key

    column = contract_key(key, EVENTS)
    return column if column in EVENTS.columns else None


def parse_json_lines(lines: list[tuple[int, bytes]], path: str, limit: int) -> tuple[pa.Table, list[BadRow]]:
    """One batch of JSON lines (line number, bytes) -> (raw, bad), under the event contract; keys under an
    export's names (登记流水号, 用户编号...) are the contract's columns, one column under two keys malformed."""
    names = EVENTS.columns
    columns: dict[str, list] = {n: [] for n in names}
    rows, bad, named = [], [], {}
    for number, line in lines:
        try:
            obj = json.loads(line, object_pairs_hook=_object)
        except UnicodeDecodeError:
            bad.append(BadRow(path, number, None, "bytes not valid utf-8"))
            continue
        except (ValueError, RecursionError):
            bad.append(BadRow(path, number, None, "not valid JSON"))
            continue
        if not isinstance(obj, dict):
            bad.append(BadRow(path, number, None, "not a JSON object"))
            continue
        repeated = event_column(obj.repeated) if isinstance(obj, _Object) and obj.repeated is not None else None
        obj, twice = _fields(obj, named)
        values, fault = [], (twice, f"field {twice} under two keys (two of its names)") if twice else None
        if repeated:
            fault = (repeated, f"field {repeated} given twice in one object")
        for n in names if not fault else ():
            try:
                values.append(_text(obj.get(n)))
            except ValueError as exc:
                fault = (n, f"field {n} is a JSON {exc}, not text")
                break
        if fault:
            key = obj.get("event_id") if fault[0] != "event_id" and isinstance(obj.get("event_id"), str) else None
            bad.append(BadRow(path, number, fault[0], fault[1], key if key and len(key) <= 200 else None))
            continue
        rows.append(number)
        for n, v in zip(names, values):
            columns[n].append(v)
    arrays = {}
    for n in names:
        try:
            arrays[n] = pa.array(columns[n], pa.string())
        except (pa.ArrowInvalid, UnicodeEncodeError):  # a lone surrogate from a \ud800 escape
            arrays[n] = pa.array(
                [None if v is None else v.encode("utf-8", "surrogatepass") for v in columns[n]], pa.binary()
            )
    raw, more, _ = assemble_rows(arrays, np.array(rows, np.int64), path, "utf-8", limit, contract=EVENTS)
    return raw, sorted(bad + more, key=lambda b: b.source_row)
