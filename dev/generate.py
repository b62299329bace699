"""Synthetic subscriber base for the Decree 25 backfill (``backfill generate``).

    backfill generate --lines 10000000 --seed 7 --out bench-data/base.parquet
    python -m dev.generate --lines 200000 --seed 1 --out /tmp/base.csv --encoding gb18030

Rows come in blocks of ``BLOCK_ROWS``; block ``b`` is drawn from a numpy RNG
seeded with ``(seed, b)``, so row ``i`` depends only on ``(seed, i)`` and any
range of rows is made block by block with bounded memory. All of it is
vectorised: numpy byte matrices for numbers (check characters from
``transforms.scan.checkdigits``), Arrow ``take`` from dictionaries and pools
(``dev.generate_data``) for text. Cross-record cases (re-exported line_ids, one
document on 6-8 lines, one document under two names, organisations with many
lines) stay inside a block. The shares are intended shares;
``generate_truth`` gives the intended verdict of each row (rules:
docs/policy.md, docs/regulation.md). ``write_base`` makes blocks in
``THREADS`` threads while it encodes Parquet (snappy, dictionary pages for
low-cardinality columns, no statistics), Avro (fastavro, deflate) or CSV.

The parts, one job each: ``dev.generate_shares`` (the shares and the tables
built from them), ``dev.generate_arrays`` (vectorised building blocks),
``dev.generate_numbers`` (document numbers), ``dev.generate_identity``
(identity columns), ``dev.generate_lines`` (line columns) and
``dev.generate_blocks`` (one block; the rows of any range). This module holds
the public functions, the file writer and the command line; it re-exports the
shares (``KINDS``, ``SCHEMA``, ...).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import sys
import time
from typing import Iterator

import pyarrow as pa

from dev.generate_blocks import BLOCK_ROWS, THREADS, block, check_request, iter_rows  # noqa: F401  (re-exports)
from dev.generate_numbers import person  # noqa: F401  (used by tests as gen.person)
from dev.generate_shares import *  # noqa: F403  (the shares are part of this module's surface)
from dev.generate_shares import SCHEMA
from dev.outputs import existing_file_refusal, removed_on_failure
from pipelines.common import split_beam_flags
from pipelines.flags import package_version
from schemas import avro_schema
from transforms.core.rows import FORMATS

__all__ = ["generate_table", "generate_truth", "write_base", "main", "BLOCK_ROWS"]


def generate_table(lines: int, seed: int, start: int = 0) -> pa.Table:
    """Rows ``start .. start+lines-1`` of the base for ``seed``; every contract column a string."""
    check_request(lines, seed, start)
    parts = list(iter_rows(lines, seed, start))
    return pa.concat_tables(parts) if parts else SCHEMA.empty_table()


def generate_truth(lines: int, seed: int, start: int = 0) -> pa.Table:
    """The intended verdict of each row of ``generate_table(lines, seed, start)`` (for tests).

    Columns: row; identity_class (COMPLETE, MISSING, INCOMPLETE, INVALID); defect (of an
    INVALID line, see PERSON_INVALID / ORG_INVALID); doc_kind (the document its number
    was made for); cross_record (DOC_LINE_LIMIT, DOC_NAME_CONFLICT as planted: chance
    collisions of random numbers are not listed); dead_letter (DUPLICATE_LINE_ID on the
    older copy, LINE_ID_MISSING, BAD_ENUM, BAD_DATE).
    """
    check_request(lines, seed, start)
    parts = list(iter_rows(lines, seed, start, truth=True))
    return pa.concat_tables(parts) if parts else block(seed, 0, True).slice(0, 0)


ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "gb18030": "gb18030"}
_DICTIONARY = [
    "line_type",
    "subscriber_kind",
    "status",
    "activated_on",
    "terminated_on",
    "region",
    "agent_id",
    "doc_type",
    "handler_doc_type",
]  # low-cardinality columns: dictionary-encoded in Parquet


def _options(path: str, encoding: str) -> tuple[str, str]:
    """(format, encoding) of an output path, or ValueError."""
    fmt = next((f for ext, f in FORMATS.items() if path.lower().endswith(ext)), None)
    if fmt is None:
        raise ValueError(f"unknown output format of {path!r}: use .parquet, .avro or .csv")
    enc = ENCODINGS.get(str(encoding).lower())
    if enc is None:
        raise ValueError(f"unknown encoding {encoding!r}: use utf-8 or gb18030")
    if enc != "utf-8" and fmt != "csv":
        raise ValueError("an encoding other than utf-8 applies to .csv output only")
    return fmt, enc


def _chunks(lines: int, seed: int, chunk_rows: int) -> Iterator[pa.Table]:
    """Tables of ``chunk_rows`` rows (the last may be shorter; one empty table for 0 lines)."""
    pending, have = [], 0
    for part in iter_rows(lines, seed, 0, ahead=chunk_rows // BLOCK_ROWS + 1):  # keep the writer fed
        while len(part):
            piece = part.slice(0, chunk_rows - have)
            part, have = part.slice(len(piece)), have + len(piece)
            pending.append(piece)
            if have == chunk_rows:
                yield pa.concat_tables(pending)
                pending, have = [], 0
    if pending or not lines:
        yield pa.concat_tables(pending) if pending else SCHEMA.empty_table()


def write_base(path: str, lines: int, seed: int, encoding: str = "utf-8", chunk_rows: int = 250_000) -> int:
    """Write the base as Parquet, Avro or CSV (by extension), chunk by chunk; returns rows written."""
    import fastavro
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    check_request(lines, seed)
    fmt, enc = _options(path, encoding)
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError("chunk_rows must be a positive integer")
    written, chunks = 0, _chunks(lines, seed, chunk_rows)
    with FileSystems.create(path, mime_type="application/octet-stream", compression_type="uncompressed") as f:
        if fmt == "parquet":  # a native buffer in front of the Python file: few GIL round trips
            with (
                pa.BufferedOutputStream(pa.PythonFile(f, mode="w"), 1 << 24) as sink,
                pq.ParquetWriter(
                    sink, SCHEMA, compression="snappy", use_dictionary=_DICTIONARY, write_statistics=False
                ) as out,
            ):
                for chunk in filter(len, chunks):  # 0 lines: a file with the schema and no row group
                    out.write_table(chunk, row_group_size=len(chunk))
                    written += len(chunk)
        elif fmt == "avro":

            def records() -> Iterator[dict]:
                nonlocal written
                for chunk in chunks:
                    for s in range(0, len(chunk), 10_000):
                        yield from chunk.slice(s, 10_000).to_pylist()
                    written += len(chunk)

            marker = hashlib.sha256(f"subscriber-backfill:{seed}".encode()).digest()[:16]  # same seed, same bytes
            fastavro.writer(
                f,
                fastavro.parse_schema(copy.deepcopy(avro_schema("subscriber_base"))),
                records(),
                codec="deflate",
                sync_marker=marker,
            )
        else:
            for i, chunk in enumerate(chunks):
                buf = io.BytesIO()
                pacsv.write_csv(chunk, buf, pacsv.WriteOptions(include_header=i == 0))
                f.write(buf.getvalue() if enc == "utf-8" else buf.getvalue().decode("utf-8").encode("gb18030"))
                written += len(chunk)
    return written


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block; main() exits 2
        raise ValueError(message)


def main(argv: list[str] | None = None) -> int:
    """``backfill generate --lines N --seed S --out PATH [--encoding utf-8|gb18030]``."""
    parser = _Parser(
        prog="backfill generate",
        description="Write a realistic synthetic subscriber base "
        "(Parquet, Avro or CSV by the extension of --out; gs:// paths work).",
    )
    parser.add_argument("--lines", type=int, required=True, help="number of lines (rows) to write")
    parser.add_argument("--seed", type=int, required=True, help="random seed: the same seed gives the same file")
    parser.add_argument("--out", required=True, help="output path ending .parquet, .avro or .csv")
    parser.add_argument("--encoding", default="utf-8", help="CSV encoding: utf-8 (default) or gb18030")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    try:
        args, _ = split_beam_flags(parser, argv, pipeline=False)
        if args.lines < 0 or not 0 <= args.seed < 2**63:
            raise ValueError("--lines must be 0 or more and --seed between 0 and 2**63-1")
        _fmt, enc = _options(args.out, args.encoding)
        if refusal := existing_file_refusal(args.out, args.overwrite):
            raise ValueError(refusal)
    except ValueError as exc:
        print(f"backfill generate: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        with removed_on_failure(args.out):
            written = write_base(args.out, args.lines, args.seed, enc)
    except KeyboardInterrupt:
        print("backfill generate: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, never a traceback
        reason = (str(exc).splitlines() or [""])[0][:300]
        print(f"backfill generate: error: cannot write {args.out}: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 1
    print(f"wrote {written:,} lines to {args.out} in {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
