"""Planning a read: expand paths, check every file's header, cut splits.

``plan_splits`` runs before a pipeline starts (or in its first step, see
``PlanInPipeline``): it expands files, globs and folders (local, ``gs://``,
``s3://``), refuses a file that cannot be read with a one-line ``InputError``,
names the columns beyond the contract once, and cuts Parquet files into
splits of row groups. The rules are in ``pipelines/io/base_files.py``.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import logging
import os
import re

import fastavro
import pyarrow.parquet as pq

from pipelines.io.avro_schema import avro_columns, top_level_problem
from pipelines.io.folders import input_format, left_out_problem, match_files, subfolder_problem
from transforms.core.column_names import contract_key
from pipelines.io.paths import join_path, open_read
from transforms.core.rows import BASE, Contract, column_type_error, column_type_problem

log = logging.getLogger("backfill")

__all__ = [
    "InputError",
    "InputInfo",
    "Split",
    "codec_name",
    "encoding_error",
    "expand_paths",
    "map_columns",
    "match_files",
    "plan_splits",
    "read_csv_header",
    "shown_column",
]

_HEADER_MAX = 1 << 20
_SAMPLE = 1 << 20


class InputError(Exception):
    """A file that cannot be read at all. str(e) is ONE line naming the file and
    the problem, and (for encoding) the --encoding option. Never includes row values."""


@dataclasses.dataclass(frozen=True)
class Split:
    path: str
    file_index: int  # index of the file in the run's sorted input list
    fmt: str  # "parquet" | "avro" | "csv" (| "jsonl", read by pipelines.io.events)
    row_groups: tuple[int, ...] | None = None  # parquet: this split's row groups; None = whole file
    first_row: int = 1  # 1-based data row number of the split's first row (header excluded)
    contract: Contract = BASE
    size: int | None = None  # the file's size in bytes, when planned
    # csv/avro: the bytes [start, end) this split reads (None: the whole file), and the rows they hold. A range
    # without rows is only cut (pipelines/io/ranges.py finds its record boundaries and first row before a read).
    byte_range: tuple[int, int] | None = None
    rows: int | None = None


@dataclasses.dataclass(frozen=True)
class InputInfo:
    files: list[str]
    ignored_columns: list[str]  # columns beyond the contract, sorted, named once
    missing_identity_columns: list[str]  # optional contract columns absent from a file
    estimated_rows: int  # exact for parquet (footer), estimated from size for csv/avro


def codec_name(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        name = ""
    if name in ("gbk", "gb2312", "gb18030"):
        return "gb18030"
    if name == "utf-8":
        return name
    # an InputError, so that the command line prints it as its one-line error
    shown = repr(encoding) if _PLAIN_NAME.fullmatch(encoding) else "(not a codec name: not quoted)"
    raise InputError(f"unsupported --encoding {shown}: use utf-8 or gb18030")


def encoding_error(path: str, codec: str, looks_utf8: bool = False) -> InputError:
    if looks_utf8:
        return InputError(f"{path}: looks like utf-8 text, not gb18030; pass --encoding utf-8")
    if codec == "utf-8":
        return InputError(f"{path}: not valid utf-8 text; if the export is GB18030, pass --encoding gb18030")
    return InputError(f"{path}: not valid gb18030 text; if the export is UTF-8, pass --encoding utf-8")


def _fmt(path: str, formats: tuple[tuple[str, str], ...] = BASE.formats) -> str | None:
    return input_format(path, formats)


def expand_paths(paths: list[str], formats: tuple[tuple[str, str], ...] = BASE.formats) -> dict[str, int]:
    """path -> size for every input file (file, glob or directory)."""
    found: dict[str, int] = {}
    exts = [e for e, _ in formats]
    kinds = ", ".join(exts[:-1]) + " or " + exts[-1]
    for path in paths:
        if any(c in path for c in "*?["):
            files = [m for m in match_files(path) if _fmt(m[0], formats)]
            if not files:
                raise InputError(f"{path}: matches no {kinds} file")
        else:
            exact = [m for m in match_files(path) if m[0] in (path.rstrip("/"), os.path.normpath(path))]
            if exact and _fmt(path, formats):
                files = exact
            else:  # a directory (local, or an object-store prefix)
                listing = match_files(join_path(path.rstrip("/"), "*"))
                files = [m for m in listing if _fmt(m[0], formats)]
                left_out = [name for name, _ in listing if not _fmt(name, formats)]
                problem = left_out_problem(path, left_out, kinds) or subfolder_problem(path, formats)
                if problem:
                    raise InputError(problem)
                if not files:
                    if listing:
                        raise InputError(f"{path}: directory has no {kinds} file")
                    if exact:
                        raise InputError(f"{path}: not a {kinds} file, nor a directory of them")
                    raise InputError(f"{path}: no such file or directory")
        found.update(files)
    _refuse_aliases(found)
    return found


def _refuse_aliases(found: dict[str, int]) -> None:
    """One local file under two names (a link, a bind mount) would be read twice: each of its rows a duplicate."""
    seen: dict[tuple[int, int], str] = {}
    for path in found:
        if "://" in path:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue  # the read says what is wrong with it
        first = seen.setdefault((st.st_dev, st.st_ino), path)
        if first != path:
            raise InputError(f"{first} and {path} are the same file (a link or a second name): give it once")


# A column name outside the contract that may be shown in a message: a plain ASCII identifier
# (letters, digits, "_", "." and "-", starting with a letter or "_", up to 64 characters) with fewer
# than 6 digits. Anything else may be a value (a name, an address, a number in a row taken for the
# header), so it is named by position: a Han column name such as 备注 shows as "column 19".
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")


def shown_column(name: str, position: int, contract: Contract = BASE) -> str:
    """A column as a message may name it: a contract column by its name; another by its name only
    when that looks like a plain name (see ``_PLAIN_NAME``), else by its 1-based position."""
    key = contract_key(name, contract)
    if key in contract.columns:
        return key
    text = name.replace("\ufeff", "").strip()
    if _PLAIN_NAME.fullmatch(text) and sum(c.isdigit() for c in text) < 6:
        return text
    return f"column {position}"


def map_columns(
    path: str, names: list[str], contract: Contract = BASE, fmt: str = "csv"
) -> tuple[dict[str, str], list[str], list[str]]:
    """(contract name -> source name, ignored names, missing optional names).

    No value of the file is ever quoted: a file whose first row names no column of the contract
    is refused as having no header row (that row is data), and a problem with a column outside
    the contract names it by position."""
    keys = [contract_key(n, contract) for n in names]  # the contract's names, or an export's (column_names.py)
    if names and not any(k in contract.columns for k in keys):
        required = ", ".join(contract.required)
        sep = next((s for s in (";", "\t", "|") if fmt == "csv" and len(names) == 1 and s in names[0]), None)
        if sep and any(contract_key(part, contract) in contract.columns for part in names[0].split(sep)):
            shown = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}[sep]
            raise InputError(f"{path}: its columns are separated by {shown}, not commas: export it as CSV")
        if fmt == "csv":
            raise InputError(
                f"{path}: no header row: none of the {len(names)} cells of the first row names a column of the "
                f"{contract.name} (the file seems to start with data); the first row must name the columns "
                f"({required}, ...)"
            )
        raise InputError(
            f"{path}: none of its {len(names)} columns is a column of the {contract.name} (required: {required})"
        )
    norm: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key and key in norm:
            first = norm[key] + 1
            if key in contract.columns:
                raise InputError(f"{path}: duplicate column {key} (columns {first} and {i + 1})")
            raise InputError(f"{path}: columns {first} and {i + 1} have the same name")
        norm[key] = i
    missing = [c for c in contract.required if c not in norm]
    if missing:
        raise InputError(f"{path}: missing required column(s): {', '.join(missing)}")
    mapping = {c: names[norm[c]] for c in contract.columns if c in norm}
    ignored = [shown_column(names[i], i + 1, contract) for k, i in norm.items() if k not in mapping]
    return mapping, ignored, [c for c in contract.columns if c not in norm]


_LINE_BREAK = re.compile(rb"[\r\n]")


def _header_end(buf: bytes, start: int, final: bool) -> int:
    """The index of the last byte of the header row's line break in ``buf`` (``\\n``, ``\\r\\n`` or a lone
    ``\\r``, outside quotes, as pyarrow's parser ends a record), or -1 when ``buf`` does not hold it yet (a
    ``\\r`` at its end may be followed by a ``\\n`` not read yet). A file with old Mac line breaks (a lone
    ``\\r``) has its header ended at its first one, not read as one row of header."""
    for found in _LINE_BREAK.finditer(buf, start):
        end = found.start()
        if buf.count(b'"', 0, end) % 2:
            continue
        if buf[end] == 0x0D and end + 1 == len(buf) and not final:
            return -1
        return end + 1 if buf[end : end + 2] == b"\r\n" else end
    return -1


def read_csv_header(f, path: str, codec: str) -> tuple[list[str], bytes]:
    """Read the header record; return its names and the bytes read after it."""
    buf, start = b"", 0
    while True:
        chunk = f.read(1 << 16)
        buf += chunk
        end = _header_end(buf, start, not chunk)
        if end >= 0 or not chunk:
            break
        start = max(len(buf) - 1, 0)  # a \r at the end is looked at again with the bytes after it
        if len(buf) > _HEADER_MAX:
            raise InputError(f"{path}: header row longer than {_HEADER_MAX} bytes")
    if not buf:
        raise InputError(f"{path}: empty file")
    if buf.startswith((b"\xff\xfe", b"\xfe\xff")):  # a spreadsheet's "Unicode text": UTF-16 (or UTF-32)
        raise InputError(
            f"{path}: UTF-16 text (it starts with a UTF-16 byte-order mark): re-export as UTF-8 or GB18030"
        )
    end = len(buf) if end < 0 else end + 1
    head = buf[:end].rstrip(b"\r\n")
    try:
        text = head.decode(codec).lstrip("\ufeff")
    except UnicodeDecodeError:
        raise encoding_error(path, codec) from None
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
        raise encoding_error(path, codec)
    if codec != "utf-8" and not sample.isascii():
        try:
            sample[: sample.rfind(b"\n") + 1].decode("utf-8")
            raise encoding_error(path, codec, looks_utf8=True)
        except UnicodeDecodeError:
            pass
    return len(lines)


def _inspect(
    path: str, fmt: str, size: int, codec: str, contract: Contract = BASE
) -> tuple[list[str] | None, int, list[int], dict[str, str]]:
    """(column names, estimated rows, parquet row-group sizes, columns whose type is not text or a
    plain value -> what they hold) of one file. JSON Lines has no header: names are None (each
    object names its own)."""
    if size == 0 and fmt == "jsonl":  # no events that day: a file of no lines
        return None, 0, [], {}
    if size == 0:
        raise InputError(f"{path}: empty file")
    try:
        with open_read(path) as f:
            if fmt == "jsonl":
                sample = f.read(_SAMPLE)
                n = _check_sample(path, sample, "utf-8")
                per_line = len(sample[: sample.rfind(b"\n") + 1]) / n if n else 0
                return None, int(size / per_line) if per_line else int(bool(sample.strip())), [], {}
            if fmt == "csv":
                names, rest = read_csv_header(f, path, codec)
                sample = rest + f.read(_SAMPLE)
                if b"\n" not in sample:  # old Mac line breaks (a lone \r): lines for the estimate
                    sample = sample.replace(b"\r", b"\n")
                n = _check_sample(path, sample, codec)
                per_line = len(sample[: sample.rfind(b"\n") + 1]) / n if n else 0
                return names, int(size / per_line) if per_line else int(bool(sample.strip())), [], {}
            if fmt == "parquet":
                meta = pq.ParquetFile(f)
                groups = [meta.metadata.row_group(i).num_rows for i in range(meta.num_row_groups)]
                schema = meta.schema_arrow
                refused = {fl.name: column_type_problem(fl.type) for fl in schema}
                return schema.names, meta.metadata.num_rows, groups, {k: v for k, v in refused.items() if v}
            blocks = fastavro.block_reader(f)
            if problem := top_level_problem(blocks.writer_schema):  # a file of strings, of arrays, a union...
                raise InputError(
                    f"{path}: the Avro schema is not a record of the {contract.name} contract's columns (its top "
                    f"level is {problem})"
                )
            block = next(iter(blocks), None)
            est = 0 if block is None else int(block.num_records * size / max(block.size, 1))
            names, refused = avro_columns(blocks.writer_schema)
            return names, est, [], refused
    except InputError:
        raise
    except Exception as e:  # unreadable: name the problem class, never its text (may quote data)
        raise InputError(f"{path}: not a readable {fmt} file ({type(e).__name__})") from None


def plan_splits(
    paths: list[str], rows_per_split: int = 500_000, encoding: str = "utf-8", contract: Contract = BASE
) -> tuple[list[Split], InputInfo]:
    """Expand paths, check each file's header / footer / schema, and cut splits."""
    codec = codec_name(encoding)
    files = expand_paths([paths] if isinstance(paths, str) else list(paths), contract.formats)
    ordered = sorted(files)
    splits: list[Split] = []
    ignored: set[str] = set()
    missing: set[str] = set()
    total = 0
    for index, path in enumerate(ordered):
        fmt = _fmt(path, contract.formats)
        names, est, groups, refused = _inspect(path, fmt, files[path], codec, contract)
        if names is not None:
            mapping, extra, absent = map_columns(path, names, contract, fmt)
            for column, source in mapping.items() if contract.text else ():
                if source in refused:
                    raise InputError(str(column_type_error(path, column, refused[source])))
            ignored.update(extra)
            missing.update(absent)
        total += est
        if fmt != "parquet" or len(groups) <= 1:
            splits.append(Split(path, index, fmt, contract=contract, size=files[path]))
            continue
        first, current, rows = 1, [], 0
        for g, n in enumerate(groups):
            current.append(g)
            rows += n
            if rows >= rows_per_split or g == len(groups) - 1:
                splits.append(Split(path, index, fmt, tuple(current), first, contract, files[path]))
                first, current, rows = first + rows, [], 0
    info = InputInfo(ordered, sorted(ignored), [c for c in contract.columns if c in missing], total)
    return splits, info
