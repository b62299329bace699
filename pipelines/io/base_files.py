"""Subscriber-base readers: Avro, Parquet or CSV files -> Arrow batches of strings.

``plan_splits`` expands paths and checks every file's header before a pipeline
starts; ``read_split`` streams one split as ``(raw, bad)`` batches; the Beam
layer is ``ReadSubscriberBase``. Every contract column arrives as a string, so
no msisdn or document number loses its leading zeros to type inference. An
operator who already stored msisdn as an integer column in Parquet or Avro has
lost those zeros before we see the file: we cast ``1065529988`` back to text as
is and cannot recover the ``0``.

Rules decided here (and relied on downstream):

* Row numbers (``_src_row``, dead-letter ``source_row``) are 1-based data-row
  numbers, header excluded. CSV counts records, not lines: a quoted field with
  newlines is one row, and blank lines are not rows.
* CSV: an empty field is null (as in Parquet/Avro); nothing else is a null marker.
* Encodings (CSV only): ``utf-8`` (BOM tolerated) or ``gb18030`` (``gbk`` and
  ``gb2312`` are read as their superset gb18030). A file is refused with an
  ``InputError`` naming ``--encoding`` when its header does not decode, or when
  more than half of the first rows do not (the first 1 MiB of lines at plan time,
  the first batch at read time), or when it is read as gb18030 but is plainly
  UTF-8 (non-ASCII and valid UTF-8). Other undecodable rows are BadRows.
* A row is malformed (one BadRow, first problem found) when its field count
  differs from the header, a contract field does not decode, is longer than
  ``max_field_chars`` characters, or holds a C0 control character other than
  tab, CR and LF. Columns beyond the contract are never checked.
* CSV is parsed by pyarrow in blocks of ``CSV_BLOCK_BYTES`` (read ahead at most
  ``_AHEAD`` blocks) and re-batched to ``batch_size`` rows. A row larger than a
  block makes the reader start the file again with 4x larger blocks (rows
  already yielded are skipped), up to ``CSV_MAX_BLOCK_BYTES``, past which the
  file is refused. An unbalanced quote joins the following lines into its row,
  as in any CSV reader: that row is then one BadRow (wrong field count).
* Directories and globs select only ``*.parquet``, ``*.avro`` and ``*.csv`` files;
  a named file with another extension is refused.
* A :class:`Contract` says which columns are read (all as strings), which a
  file must have and which extensions are selected: the subscriber base's
  (``BASE``) is the default; ``pipelines.io.events`` reads registration events
  with its own, which also selects JSON Lines (checked here by ``plan_splits``,
  read by that module).
"""
from __future__ import annotations

import atexit
import codecs
import csv
import dataclasses
import functools
import io
import os
import sys
import threading
import time
import weakref
from itertools import islice
from typing import Iterator

import apache_beam as beam
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from schemas import field_names
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.deadletter import DeadLetterContext, dead_letter_table

__all__ = ["InputError", "Split", "InputInfo", "BadRow", "RAW_SCHEMA", "plan_splits",
           "read_split", "ReadSubscriberBase", "Contract", "BASE", "PlanInPipeline"]

CONTRACT: list[str] = field_names("subscriber_base")
REQUIRED = ("line_id", "line_type", "subscriber_kind", "status")
RAW_SCHEMA = pa.schema([pa.field(n, pa.string()) for n in CONTRACT]
                       + [pa.field("_src_file", pa.string()), pa.field("_src_row", pa.int64())])
FORMATS = {".parquet": "parquet", ".avro": "avro", ".csv": "csv"}
_KEY_MAX = 200  # a malformed row's key (event_id) is reported only when it is this short and clean
CSV_BLOCK_BYTES = 4 << 20
_AHEAD = 4  # CSV blocks read ahead of the consumer
CSV_MAX_BLOCK_BYTES = 256 << 20
_HEADER_MAX = 1 << 20
_SAMPLE = 1 << 20
_CTRL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
# Undecodable bytes in a transcoded CSV stream become this noncharacter (never
# legitimate in interchange text), so the stream stays valid UTF-8 for pyarrow and
# the rows holding it are found per batch.
_MARK = "\ufdd0"
codecs.register_error("subreg.mark", lambda e: (_MARK, e.end))


class InputError(Exception):
    """A file that cannot be read at all. str(e) is ONE line naming the file and
    the problem, and (for encoding) the --encoding option. Never includes row values."""


@dataclasses.dataclass(frozen=True)
class Contract:
    """The columns a reader reads (every one as a string), those a file must have,
    the extensions it selects, and the column (if any) whose value names a
    malformed row in its dead letter (``BadRow.key``)."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    formats: tuple[tuple[str, str], ...] = tuple(FORMATS.items())
    key: str | None = None

    @property
    def schema(self) -> pa.Schema:
        return _raw_schema(self.columns)


@functools.lru_cache(maxsize=None)
def _raw_schema(columns: tuple[str, ...]) -> pa.Schema:
    return pa.schema([pa.field(n, pa.string()) for n in columns]
                     + [pa.field("_src_file", pa.string()), pa.field("_src_row", pa.int64())])


BASE = Contract("subscriber base", tuple(CONTRACT), REQUIRED)


@dataclasses.dataclass(frozen=True)
class Split:
    path: str
    file_index: int  # index of the file in the run's sorted input list
    fmt: str  # "parquet" | "avro" | "csv" (| "jsonl", read by pipelines.io.events)
    row_groups: tuple[int, ...] | None = None  # parquet: this split's row groups; None = whole file
    first_row: int = 1  # 1-based data row number of the split's first row (header excluded)
    contract: Contract = BASE


@dataclasses.dataclass(frozen=True)
class InputInfo:
    files: list[str]
    ignored_columns: list[str]  # columns beyond the contract, sorted, named once
    missing_identity_columns: list[str]  # optional contract columns absent from a file
    estimated_rows: int  # exact for parquet (footer), estimated from size for csv/avro


@dataclasses.dataclass(frozen=True)
class BadRow:
    source_file: str
    source_row: int | None
    field: str | None
    detail: str
    key: str | None = None  # the contract's key column (event_id), when that value is clean


def _codec(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        name = ""
    if name in ("gbk", "gb2312", "gb18030"):
        return "gb18030"
    if name == "utf-8":
        return name
    # an InputError, so that the command line prints it as its one-line error
    raise InputError(f"unsupported --encoding {encoding!r}: use utf-8 or gb18030")


def _encoding_error(path: str, codec: str, looks_utf8: bool = False) -> InputError:
    if looks_utf8:
        return InputError(f"{path}: looks like utf-8 text, not gb18030; pass --encoding utf-8")
    if codec == "utf-8":
        return InputError(f"{path}: not valid utf-8 text; if the export is GB18030, pass --encoding gb18030")
    return InputError(f"{path}: not valid gb18030 text; if the export is UTF-8, pass --encoding utf-8")


def _fmt(path: str, formats: tuple[tuple[str, str], ...] = BASE.formats) -> str | None:
    return dict(formats).get(os.path.splitext(path)[1].lower())


def _match(pattern: str) -> list[tuple[str, int]]:
    """(path, size) of each match; nothing for a failed match."""
    bare = "://" not in pattern and not os.path.dirname(pattern)  # Beam lists nothing for "*.csv"
    try:
        metas = FileSystems.match([os.path.join(".", pattern) if bare else pattern])[0].metadata_list
    except Exception:  # BeamIOError and friends: nothing there
        return []
    local = "://" not in pattern  # normalised, so "./a.csv" and "a.csv" are one file
    return [(os.path.normpath(m.path) if local else m.path, m.size_in_bytes) for m in metas]


def _expand(paths: list[str], formats: tuple[tuple[str, str], ...] = BASE.formats) -> dict[str, int]:
    """path -> size for every input file (file, glob or directory)."""
    found: dict[str, int] = {}
    exts = [e for e, _ in formats]
    kinds = ", ".join(exts[:-1]) + " or " + exts[-1]
    for path in paths:
        if any(c in path for c in "*?["):
            files = [m for m in _match(path) if _fmt(m[0], formats)]
            if not files:
                raise InputError(f"{path}: matches no {kinds} file")
        else:
            exact = [m for m in _match(path) if m[0] in (path.rstrip("/"), os.path.normpath(path))]
            if exact and _fmt(path, formats):
                files = exact
            else:  # a directory (local, or an object-store prefix)
                listing = _match(FileSystems.join(path.rstrip("/"), "*"))
                files = [m for m in listing if _fmt(m[0], formats)]
                if not files:
                    if listing:
                        raise InputError(f"{path}: directory has no {kinds} file")
                    if exact:
                        raise InputError(f"{path}: not a {kinds} file, nor a directory of them")
                    raise InputError(f"{path}: no such file or directory")
        found.update(files)
    return found


def _columns(path: str, names: list[str], contract: Contract = BASE) -> tuple[dict[str, str], list[str], list[str]]:
    """(contract name -> source name, ignored names, missing optional names)."""
    norm: dict[str, str] = {}
    for name in names:
        key = name.replace("\ufeff", "").strip().lower()
        if key and key in norm:
            raise InputError(f"{path}: duplicate column {name.strip()!r}")
        norm[key] = name
    missing = [c for c in contract.required if c not in norm]
    if missing:
        raise InputError(f"{path}: missing required column(s): {', '.join(missing)}")
    mapping = {c: norm[c] for c in contract.columns if c in norm}
    ignored = [n.replace("\ufeff", "").strip() for k, n in norm.items() if k not in mapping]
    return mapping, ignored, [c for c in contract.columns if c not in norm]


def _csv_head(f, path: str, codec: str) -> tuple[list[str], bytes]:
    """Read the header record; return its names and the bytes read after it."""
    buf, start = b"", 0
    while True:
        chunk = f.read(1 << 16)
        buf += chunk
        end = buf.find(b"\n", start)
        while end >= 0 and buf.count(b'"', 0, end) % 2:
            end = buf.find(b"\n", end + 1)
        if end >= 0 or not chunk:
            break
        start = len(buf)
        if len(buf) > _HEADER_MAX:
            raise InputError(f"{path}: header row longer than {_HEADER_MAX} bytes")
    if not buf:
        raise InputError(f"{path}: empty file")
    end = len(buf) if end < 0 else end + 1
    head = buf[:end].rstrip(b"\r\n")
    try:
        text = head.decode(codec).lstrip("\ufeff")
    except UnicodeDecodeError:
        raise _encoding_error(path, codec) from None
    names = next(csv.reader(io.StringIO(text, newline="")), [])
    return names, buf[end:]


def _check_sample(path: str, sample: bytes, codec: str) -> int:
    """Apply the wrong-encoding rule to whole lines of a sample; return their count."""
    lines = [ln for ln in sample[: sample.rfind(b"\n") + 1].split(b"\n") if ln.strip()]
    bad = 0
    for ln in lines:
        try:
            ln.decode(codec)
        except UnicodeDecodeError:
            bad += 1
    if bad and bad * 2 > len(lines):
        raise _encoding_error(path, codec)
    if codec != "utf-8" and not sample.isascii():
        try:
            sample[: sample.rfind(b"\n") + 1].decode("utf-8")
            raise _encoding_error(path, codec, looks_utf8=True)
        except UnicodeDecodeError:
            pass
    return len(lines)


def _inspect(path: str, fmt: str, size: int, codec: str) -> tuple[list[str] | None, int, list[int]]:
    """(column names, estimated rows, parquet row-group sizes) of one file.
    JSON Lines has no header: names are None (each object names its own)."""
    if size == 0 and fmt == "jsonl":  # no events that day: a file of no lines
        return None, 0, []
    if size == 0:
        raise InputError(f"{path}: empty file")
    try:
        with FileSystems.open(path) as f:
            if fmt == "jsonl":
                sample = f.read(_SAMPLE)
                n = _check_sample(path, sample, "utf-8")
                per_line = len(sample[: sample.rfind(b"\n") + 1]) / n if n else 0
                return None, int(size / per_line) if per_line else int(bool(sample.strip())), []
            if fmt == "csv":
                names, rest = _csv_head(f, path, codec)
                sample = rest + f.read(_SAMPLE)
                n = _check_sample(path, sample, codec)
                per_line = len(sample[: sample.rfind(b"\n") + 1]) / n if n else 0
                return names, int(size / per_line) if per_line else int(bool(sample.strip())), []
            if fmt == "parquet":
                meta = pq.ParquetFile(f)
                groups = [meta.metadata.row_group(i).num_rows for i in range(meta.num_row_groups)]
                return meta.schema_arrow.names, meta.metadata.num_rows, groups
            blocks = fastavro.block_reader(f)
            block = next(iter(blocks), None)
            est = 0 if block is None else int(block.num_records * size / max(block.size, 1))
            return [fl["name"] for fl in blocks.writer_schema.get("fields", [])], est, []
    except InputError:
        raise
    except Exception as e:  # unreadable: name the problem class, never its text (may quote data)
        raise InputError(f"{path}: not a readable {fmt} file ({type(e).__name__})") from None


def plan_splits(paths: list[str], rows_per_split: int = 500_000, encoding: str = "utf-8",
                contract: Contract = BASE) -> tuple[list[Split], InputInfo]:
    """Expand paths, check each file's header / footer / schema, and cut splits."""
    codec = _codec(encoding)
    files = _expand([paths] if isinstance(paths, str) else list(paths), contract.formats)
    ordered = sorted(files)
    splits: list[Split] = []
    ignored: set[str] = set()
    missing: set[str] = set()
    total = 0
    for index, path in enumerate(ordered):
        fmt = _fmt(path, contract.formats)
        names, est, groups = _inspect(path, fmt, files[path], codec)
        if names is not None:
            _, extra, absent = _columns(path, names, contract)
            ignored.update(extra)
            missing.update(absent)
        total += est
        if fmt != "parquet" or len(groups) <= 1:
            splits.append(Split(path, index, fmt, contract=contract))
            continue
        first, current, rows = 1, [], 0
        for g, n in enumerate(groups):
            current.append(g)
            rows += n
            if rows >= rows_per_split or g == len(groups) - 1:
                splits.append(Split(path, index, fmt, tuple(current), first, contract))
                first, current, rows = first + rows, [], 0
    info = InputInfo(ordered, sorted(ignored), [c for c in contract.columns if c in missing], total)
    return splits, info


def _to_string(arr: pa.Array) -> tuple[pa.Array, np.ndarray | None]:
    """Cast any column to strings; binary that does not decode -> null + mask."""
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
    if pa.types.is_date64(t):
        arr = arr.cast(pa.date32())
    try:
        return arr.cast(pa.string()), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string()), None


def _valid(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _assemble(cols: dict[str, pa.Array], rows: np.ndarray, path: str, label: str,
              limit: int, marked: bool = False, contract: Contract = BASE) -> tuple[pa.Table, list[BadRow], int]:
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
        s, undec = _to_string(cols[name])
        out[name] = s
        if marked:
            mark = pc.match_substring(s, _MARK).fill_null(False).to_numpy(zero_copy_only=False)
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
            flag(ctrl, name, lambda i: ("NUL byte" if "\x00" in s[int(i)].as_py() else
                                        "control character") + f" in field {name}")
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


class _Stream:
    """The file-like object pyarrow's CSV reader pulls blocks from (on its I/O thread).

    ``head`` first, then the rest of ``raw``; when ``transcode``, decoded from
    ``codec`` and re-encoded as UTF-8 with undecodable bytes -> _MARK. pyarrow
    reads ~32 blocks ahead of its consumer (not configurable): ``read`` waits
    until the consumer has taken a block (``took``), so at most _AHEAD blocks are
    in flight; the wait is bounded, so it can slow a read but never deadlock.
    ``stop`` turns every later read into end-of-file, so an abandoned reader ends.
    """

    def __init__(self, head: bytes, raw, codec: str, transcode: bool):
        self._raw, self.closed, self._eof, self._stopped, self.reading = raw, False, False, False, 0
        self._ahead = _AHEAD
        self._room = threading.Semaphore(_AHEAD)
        _LIVE.add(self)
        self._dec = codecs.getincrementaldecoder(codec)("subreg.mark") if transcode else None
        self._buf = bytearray(self._tr(head))

    def _tr(self, data: bytes, final: bool = False) -> bytes:
        return data if self._dec is None else self._dec.decode(data, final).encode("utf-8")

    def took(self) -> None:
        self._room.release()

    def stop(self) -> None:
        self._stopped = True
        self._room.release(self._ahead)

    def read(self, n: int = -1) -> bytes:
        self.reading += 1
        try:
            return self._read(n)
        finally:
            self.reading -= 1

    def _read(self, n: int) -> bytes:
        self._room.acquire(timeout=5)
        if self._stopped:
            return b""
        while not self._eof and (n < 0 or len(self._buf) < n):
            chunk = self._raw.read(max(n, 1 << 20))
            self._eof = not chunk
            self._buf += self._tr(chunk, final=self._eof)
        n = len(self._buf) if n < 0 else min(n, len(self._buf))
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def close(self) -> None:
        self.closed = True


_LIVE: weakref.WeakSet[_Stream] = weakref.WeakSet()


@atexit.register
def _stop_streams() -> None:
    """A reader still open at exit: end its read-ahead while threads may still run
    Python (after this, pyarrow's I/O thread entering Python aborts the interpreter)."""
    streams = list(_LIVE)
    for stream in streams:
        stream.stop()
    deadline = time.monotonic() + 2
    while any(st.reading for st in streams) and time.monotonic() < deadline:
        time.sleep(0.01)


def _read_csv(split: Split, codec: str, batch_size: int, limit: int) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    """CSV through pyarrow's streaming reader, columns as binary, re-batched to batch_size."""
    path = split.path
    done_bad: set[int] = set()  # field-count rows already yielded (kept across restarts)
    # resume: the first good row not yet yielded. utf-8 is parsed as raw bytes (fast
    # path); pyarrow cannot hand a field-count error in a row with invalid UTF-8 to
    # the handler (it decodes the row text strictly) and fails: then the file is
    # read again, transcoded. A row larger than a block: read again, larger blocks.
    resume, block, checked, transcode = 1, CSV_BLOCK_BYTES, False, codec != "utf-8"
    while True:
        with FileSystems.open(path) as f:
            names, rest = _csv_head(f, path, codec)
            mapping, _, _ = _columns(path, names, split.contract)
            while not rest.strip():  # pyarrow refuses an empty stream: header only = 0 rows
                more = f.read(1 << 16)
                if not more:
                    return
                rest += more
            src = {c: f"c{names.index(s)}" for c, s in mapping.items()}
            cols = [f"c{i}" for i in range(len(names))]
            invalid: list[tuple[int, int]] = []  # (row, fields) not yet yielded; never the row text
            bad_nums: list[int] = []  # invalid rows >= next_row, ascending, for the numbering
            pending: list[pa.Table] = []  # numbered good rows (column "_row") not yet yielded
            next_row, skip = 1, resume

            def handler(r) -> str:
                invalid.append((r.number, r.actual_columns))
                bad_nums.append(r.number)
                return "skip"

            def emit(n: int) -> tuple[pa.Table, list[BadRow]]:
                nonlocal pending, resume, checked
                raw, bad, rows = split.contract.schema.empty_table(), [], []
                if pending:
                    table = pa.concat_tables(pending)
                    head, tail = table.slice(0, n), table.slice(n)
                    pending = [tail] if tail.num_rows else []
                    rows = head.column("_row").to_numpy()
                    data = {c: head.column(s).combine_chunks() for c, s in src.items()}
                    raw, bad, undecodable = _assemble(data, rows, path, codec, limit, transcode, split.contract)
                if not checked and len(rows):
                    checked = True
                    if undecodable * 2 > len(rows):
                        raise _encoding_error(path, codec)
                resume = int(rows[-1]) + 1 if len(rows) else resume
                bad += [BadRow(path, num, None, f"expected {len(names)} fields, found {found}")
                        for num, found in invalid if num not in done_bad]
                done_bad.update(num for num, _ in invalid)
                invalid.clear()
                return raw, sorted(bad, key=lambda b: b.source_row)

            stream, reader = _Stream(rest, f, codec, transcode), None
            try:
                reader = pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(column_names=cols, block_size=block, use_threads=False),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler),
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.binary() for c in cols}, strings_can_be_null=True,
                        null_values=[""], include_columns=list(src.values())))
                for batch in reader:
                    stream.took()
                    # Good rows are the rows not reported invalid: the k-th good row
                    # is next_row + k + (invalid rows before it), vectorised.
                    k = np.arange(batch.num_rows)
                    b = np.array(bad_nums, dtype=np.int64)
                    rows = next_row + k + np.searchsorted(b - np.arange(len(b)) - next_row, k, side="right")
                    next_row = int(rows[-1]) + 1 if len(rows) else next_row
                    bad_nums[:] = [x for x in bad_nums if x >= next_row]
                    table = pa.Table.from_batches([batch]).append_column("_row", pa.array(rows, pa.int64()))
                    pending.append(table.filter(pa.array(rows >= skip)) if len(rows) and rows[0] < skip else table)
                    while sum(t.num_rows for t in pending) >= batch_size:
                        yield emit(batch_size)
            except pa.ArrowInvalid as e:  # its message may quote row text: never pass it on
                if "straddl" in str(e) and block < CSV_MAX_BLOCK_BYTES:
                    block *= 4
                    continue
                if "straddl" in str(e):
                    raise InputError(f"{path}: a row near data row {next_row} is longer than "
                                     f"{CSV_MAX_BLOCK_BYTES} bytes") from None
                if transcode:
                    raise InputError(f"{path}: CSV parse error after data row {next_row - 1}") from None
                transcode = True
                continue
            finally:
                stream.stop()
            held = sum(t.num_rows for t in pending)
            if held or invalid:
                yield emit(held)
            return


def _read_parquet(split: Split, batch_size: int, limit: int) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    with FileSystems.open(split.path) as f:
        pf = pq.ParquetFile(f)
        mapping, _, _ = _columns(split.path, pf.schema_arrow.names, split.contract)
        groups = None if split.row_groups is None else list(split.row_groups)
        row = split.first_row
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=list(mapping.values())):
            rows = np.arange(row, row + batch.num_rows, dtype=np.int64)
            row += batch.num_rows
            # Parquet strings are not validated on read: view them as binary so the
            # cast back to string checks the UTF-8 (rows that fail become BadRows).
            data = {c: _as_binary(batch.column(s)) for c, s in mapping.items()}
            raw, bad, _ = _assemble(data, rows, split.path, "utf-8", limit, contract=split.contract)
            yield raw, bad


def _as_binary(arr: pa.Array) -> pa.Array:
    return arr.view(pa.binary()) if pa.types.is_string(arr.type) else arr


def _read_avro(split: Split, batch_size: int, limit: int) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    with FileSystems.open(split.path) as f:
        reader = fastavro.reader(f)
        names = [fl["name"] for fl in reader.writer_schema.get("fields", [])]
        mapping, _, _ = _columns(split.path, names, split.contract)
        row, records = 1, iter(reader)
        while True:
            try:
                chunk = list(islice(records, batch_size))
            except Exception as e:
                raise InputError(f"{split.path}: corrupt Avro data after row {row - 1} "
                                 f"({type(e).__name__})") from None
            if not chunk:
                return
            # fastavro hands out one dict per record: building columns is per-row
            # Python that cannot be avoided; one list comprehension per column.
            data = {c: _column([r.get(s) for r in chunk]) for c, s in mapping.items()}
            rows = np.arange(row, row + len(chunk), dtype=np.int64)
            row += len(chunk)
            yield _assemble(data, rows, split.path, "utf-8", limit, contract=split.contract)[:2]


def _column(values: list) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed union branches
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def read_split(split: Split, encoding: str = "utf-8", batch_size: int = 65_536,
               max_field_chars: int = 4096) -> Iterator[tuple[pa.Table, list[BadRow]]]:
    """Yield (raw, bad) per batch; see the module docstring for the rules."""
    codec = _codec(encoding)
    readers = {"csv": lambda: _read_csv(split, codec, batch_size, max_field_chars),
               "parquet": lambda: _read_parquet(split, batch_size, max_field_chars),
               "avro": lambda: _read_avro(split, batch_size, max_field_chars)}
    if split.fmt not in readers:
        raise InputError(f"{split.path}: unknown format {split.fmt!r}")
    return _guarded(readers[split.fmt](), split.path)


def _guarded(batches: Iterator, path: str, _error=InputError, _finalizing=sys.is_finalizing) -> Iterator:
    """Any failure -> one-line InputError (type only: messages may quote data).
    Defaults are bound early: an abandoned reader may be closed during shutdown."""
    try:
        yield from batches
    except Exception as e:
        if _finalizing():  # a reader abandoned until exit: nothing left to report to
            return
        if isinstance(e, _error):
            raise
        raise _error(f"{path}: cannot read ({type(e).__name__})") from None


@beam.typehints.with_output_types(pa.Table, dead_letter=pa.Table)
class ReadSplitFn(beam.DoFn):
    """Read one split as Arrow batches; bad rows to the 'dead_letter' output.

    Args:
      read: ``read_split`` for the base, ``read_event_split`` for events.
      counter_prefix: the Beam counters' prefix (``rows`` -> rows_read, rows_malformed).
      key_field: the dead-letter field that carries ``BadRow.key`` (events: "event_id").
    """

    def __init__(self, ctx: DeadLetterContext, encoding: str, batch_size: int, max_field_chars: int,
                 read=None, counter_prefix: str = "rows", key_field: str | None = None):
        self._ctx, self._encoding = ctx, encoding
        self._batch_size, self._limit = batch_size, max_field_chars
        self._reader, self._key_field = read or read_split, key_field
        self._read = beam.metrics.Metrics.counter("subreg", f"{counter_prefix}_read")
        self._malformed = beam.metrics.Metrics.counter("subreg", f"{counter_prefix}_malformed")

    def process(self, split: Split):
        for raw, bad in self._reader(split, self._encoding, self._batch_size, self._limit):
            self._read.inc(raw.num_rows + len(bad))
            if raw.num_rows:
                yield raw
            if bad:
                self._malformed.inc(len(bad))
                yield beam.pvalue.TaggedOutput("dead_letter", malformed_table(self._ctx, bad, self._key_field))


def malformed_table(ctx: DeadLetterContext, bad: list[BadRow], key_field: str | None = None) -> pa.Table:
    """ROW_MALFORMED dead letters of bad rows; ``key_field`` ("event_id") carries ``BadRow.key``."""
    keys = {key_field: [b.key for b in bad]} if key_field else {}
    return dead_letter_table(
        ctx, ["ROW_MALFORMED"] * len(bad),
        source_file=[b.source_file for b in bad], source_row=[b.source_row for b in bad],
        field=[b.field for b in bad], detail=[b.detail for b in bad], **keys)


@dataclasses.dataclass(frozen=True)
class PlanInPipeline:
    """Input paths that the pipeline's first step plans (``plan_splits`` on a
    worker) instead of the launcher: for a launcher that reads no input file,
    such as an offline Dataflow dry run or a launcher without read access to
    the bucket. The splits are the same; a bad file fails the job, not the launch."""

    paths: tuple[str, ...]
    encoding: str = "utf-8"

    def splits(self) -> list[Split]:
        return plan_splits(list(self.paths), encoding=self.encoding)[0]

    def info(self) -> InputInfo:
        return plan_splits(list(self.paths), encoding=self.encoding)[1]


class ReadSubscriberBase(beam.PTransform):
    """splits (or a PlanInPipeline) -> DoOutputsTuple: 'raw' (pa.Table per batch,
    RAW_SCHEMA) and 'dead_letter' (dead-letter tables, reason ROW_MALFORMED).
    Counters in namespace 'subreg': rows_read (every data row, raw or malformed), rows_malformed."""

    def __init__(self, splits: list[Split], dl_ctx: DeadLetterContext, encoding: str = "utf-8",
                 batch_size: int = 65_536, max_field_chars: int = 4096):
        super().__init__()
        _codec(encoding)
        self._splits = splits if isinstance(splits, PlanInPipeline) else list(splits)
        self._fn = ReadSplitFn(dl_ctx, encoding, batch_size, max_field_chars)

    def expand(self, pbegin):
        if isinstance(self._splits, PlanInPipeline):
            splits = (pbegin
                      | "Paths" >> beam.Create([self._splits])
                      | "PlanSplits" >> beam.FlatMap(PlanInPipeline.splits))
        else:
            splits = pbegin | "Splits" >> beam.Create(self._splits)
        return (splits
                | "Spread" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(self._fn).with_outputs("dead_letter", main="raw"))
