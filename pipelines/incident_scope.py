"""What an incident covers: the listed line_ids read, the base scanned for the affected lines, the scope in words.

Used by ``backfill incident`` (:mod:`pipelines.incident`, which re-exports ``read_line_ids``).
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from pipelines.common import UserError

if TYPE_CHECKING:
    from pipelines.incident import _Job

__all__ = ["read_line_ids", "scope_text"]

_EXPOSURE = {
    "join": "tokens (keyed HMAC-SHA256) under join key {v}: whoever holds the key can test guessed values "
    "(document numbers, names, addresses) against them; masks were in the same rows",
    "vault": "data keys wrapped by vault key {v}: whoever holds the key and a copy of the vault tables can "
    "open every sealed value of these lines",
    "lines": "the listed lines' records as held by the operator: the identity fields named below may be "
    "exposed (tokens and masks in the base, sealed originals in the vault)",
}


def read_line_ids(path: str) -> tuple[list[str], int]:
    """``(distinct line_ids in file order, rows read)`` from a list or a CSV with a ``line_id`` column."""
    try:
        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"--lines {path} is not UTF-8 text") from None
    except Exception as exc:  # the type only: a message may quote data
        raise UserError(f"--lines {path} cannot be read ({type(exc).__name__})") from None
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows:
        raise UserError(f"--lines {path} holds no line_id")
    head = rows[0].strip()
    if "," in head or head.lower() == "line_id":
        reader = csv.DictReader(io.StringIO(text))
        column = next((c for c in reader.fieldnames or [] if c and c.strip().lower() == "line_id"), None)
        if column is None:
            raise UserError(f"--lines {path} is a CSV without a line_id column")
        ids = [(row.get(column) or "").strip() for row in reader]
        ids = [i for i in ids if i]
        if not ids:
            raise UserError(f"--lines {path} holds no line_id")
    else:
        ids = [line.strip() for line in rows]
    return list(dict.fromkeys(ids)), len(ids)


def _scan(files: list[str], key_version: str | None, line_ids: pa.Array | None, keys, values):
    """The affected lines described, the base lines read, the base ids found, the distinct document tokens."""
    from pipelines.retention_base import merged_batches
    from transforms.compliance.incident import BASE_COLUMNS, describe_lines, scope_mask

    parts, found, tokens, lines_in = [], [], [], 0
    for path in files:
        for table in merged_batches(path, BASE_COLUMNS):
            lines_in += table.num_rows
            chosen = table.filter(scope_mask(table, key_version=key_version, line_ids=line_ids, vault_keys=keys))
            if chosen.num_rows:
                parts.append(describe_lines(chosen, keys, values))
                found.append(chosen.column("line_id").combine_chunks())
                tokens.append(pc.unique(chosen.column("doc_token").drop_null().combine_chunks()))
    if parts:
        lines = pa.concat_tables(parts)
        lines = lines.take(pc.sort_indices(lines, [("line_id", "ascending")]))
    else:
        lines = describe_lines(pa.table({c: pa.array([], pa.string()) for c in BASE_COLUMNS}), keys, values)
    subscribers = len(pc.unique(pa.chunked_array(tokens, pa.string()))) if tokens else 0
    base_ids = pa.chunked_array(found, pa.string()).combine_chunks() if found else pa.array([], pa.string())
    return lines, lines_in, base_ids, subscribers


def _scope(job: _Job, given_array: pa.Array | None, base_ids: pa.Array) -> tuple[dict, str, list]:
    """What the incident covers, the exposure in words, and the listed line_ids not in the base."""
    args, keys = job.args, job.keys
    if job.given is not None:
        unknown = pc.filter(given_array, pc.invert(pc.is_in(given_array, value_set=base_ids))).to_pylist()
        scope = {
            "kind": "lines",
            "file": args.lines,
            "rows": job.rows_given,
            "distinct": len(job.given),
            "duplicates": job.rows_given - len(job.given),
        }
        return scope, _EXPOSURE["lines"], unknown
    purpose = "join" if args.key_version.startswith("j") else "vault"
    scope = {"kind": "key_version", "key_version": args.key_version, "key_purpose": purpose}
    if purpose == "vault" and keys is not None:
        wrapped = keys.filter(pc.equal(keys.column("vault_key_version"), args.key_version)).column("line_id")
        outside = pc.filter(wrapped, pc.invert(pc.is_in(wrapped, value_set=base_ids)))
        scope["vault_lines_not_in_base"] = len(outside)
    if job.keyset is not None:
        scope["key_in_keyset"] = args.key_version in {k.version for k in job.keyset.info()}
    return scope, _EXPOSURE[purpose].format(v=args.key_version), []


def scope_text(scope: dict) -> str:
    if scope["kind"] == "key_version":
        return f"{scope['key_purpose']} key version {scope['key_version']}"
    return f"{scope['distinct']:,} line_id(s) listed in {scope['file']}"
