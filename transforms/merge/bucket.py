"""The merge of one line bucket (Beam-free): base lines + events -> merged lines + vault rows.

``merge_bucket`` takes every row of one line_id bucket: the base (raw rows as
the readers make them, or a previous merge's rows), the checked events
(``transforms.merge.events.check_events``) and the previous vault's key and
value rows, and returns the merged lines (``schemas/merged_line.avsc``), the
vault rows, the dead letters and the counts. Steps:

1. the base (``transforms.merge.lines``): a raw base is classified by the
   scan's policy (``classify_batch``) and de-duplicated exactly as the scan
   does (latest ``updated_at`` wins; ``DUPLICATE_LINE_ID``); a merged base is carried;
2. the events are validated against their lines and the winner of each line
   picked (``transforms.merge.events``);
3. the identity of each line whose plaintext is at hand (every line of a raw
   base, the registered lines of a merged base) is *protected*: canonical
   document codes, tokens and masks of the normalised values
   (``transforms.crypto.tokenize``), and the original values sealed in the vault
   under the line's data key (``transforms.crypto.vault``; an existing key is reused),
   bound to the line's registration (the winning event's id; none for a raw
   base line without one) and to the set of fields sealed, so a value row of an
   older registration, or a dropped one, fails to open;
4. the other lines keep their row, and their vault rows are copied.

A registration replaces the line's identity and status (COMPLETE, since only
valid events win) and fills the ``registration_*`` columns; ``agent_id``
stays the agent who opened the line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema
from transforms.scan.classify import bits_to_lists, lookup, per_distinct
from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.merge.events import pick_winners, validate_events
from transforms.merge.lines import IDENTITY_FIELDS, Normalized, base_lines
from transforms.core.counts import merge_counts, value_counts
from transforms.scan.normalize import contiguous, normalize_label
from transforms.scan.policy import NOT_ACCEPTED, Policy
from transforms.core.reasons import FLAGS
from transforms.crypto.tokenize import Tokenizer, masks, normalize
from transforms.crypto.vault import Vault, drop_lines

__all__ = [
    "MERGED_SCHEMA",
    "IDENTITY_FIELDS",
    "LINE_FIELDS",
    "NO_LINES",
    "TOKENIZED",
    "BucketResult",
    "merge_bucket",
    "protect",
    "canonical_doc_types",
    "value_counts",
]

MERGED_SCHEMA = arrow_schema("merged_line")
# vault field -> (token kind, token column, mask column)
TOKENIZED = {
    "doc_number": ("doc_number", "doc_token", "doc_mask"),
    "name": ("name", "name_token", "name_mask"),
    "address": ("address", "address_token", "address_mask"),
    "handler_doc_number": ("doc_number", "handler_doc_token", "handler_doc_mask"),
    "handler_name": ("name", "handler_name_token", "handler_name_mask"),
}
_DOC_TYPES = ("doc_type", "handler_doc_type")
_REGISTRATION = {
    "registered_at": "_registered_at",
    "registration_event_id": "event_id",
    "registration_channel": "channel",
    "registration_agent_id": "agent_id",
    "verified_by": "verified_by",
}
LINE_FIELDS = (
    "line_id",
    "msisdn",
    "line_type",
    "subscriber_kind",
    "status",
    "activated_on",
    "terminated_on",
    "region",
    "agent_id",
)
NO_LINES = pa.schema(
    [
        ("line_id", pa.string()),
        ("line_type", pa.string()),
        ("subscriber_kind", pa.string()),
        ("status", pa.string()),
        ("registered_at", pa.timestamp("us", tz="UTC")),
        ("registration_event_id", pa.string()),
    ]
).empty_table()


@dataclasses.dataclass
class BucketResult:
    base: pa.Table  # merged lines (MERGED_SCHEMA)
    vault_keys: pa.Table
    vault_values: pa.Table
    dead_letter: pa.Table
    counts: dict


def canonical_doc_types(labels, policy: Policy) -> pa.Array:
    """The policy's document code of each raw label; null when absent, unknown or not accepted."""

    def resolve(distinct: pa.Array) -> pa.Array:
        label = normalize_label(distinct)
        code = pc.coalesce(lookup(label, policy.label_lookup), lookup(label, policy.review_labels))
        return pc.if_else(pc.equal(code, NOT_ACCEPTED), pa.scalar(None, pa.string()), code)

    return per_distinct(labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels, resolve)


def protect(
    line_ids: pa.Array,
    originals: dict,
    tokenizer: Tokenizer,
    vault: Vault,
    policy: Policy,
    existing_keys: pa.Table | None,
    registrations: pa.Array | None = None,
    normalized: Normalized | None = None,
) -> tuple[dict[str, pa.Array], pa.Table, pa.Table]:
    """Codes, tokens and masks of a batch of identities, and their vault rows.

    Args:
        line_ids: one per row, unique.
        originals: field -> original values (as received) of every IDENTITY_FIELDS field.
        existing_keys: the previous vault's key rows (their data keys are reused).
        registrations: the registration_event_id each identity comes from (null: the base's own),
            aligned with ``line_ids``; sealed into the vault rows (``Vault.seal``).
        normalized: the values a raw base's classification already normalised (aligned with ``line_ids``),
            so they are not normalised twice; None: every value is normalised here.

    Returns:
        ``(columns, vault keys, vault values)``: the merged-line identity
        columns plus ``join_key_version``; a vault row for every value that is
        present after normalisation, and a key row for every line with one.
    """
    columns, present = {}, {}
    for field in _DOC_TYPES:
        columns[field] = canonical_doc_types(originals[field], policy)
        present[field] = normalize_label(originals[field]).is_valid()
    any_token = np.zeros(len(line_ids), bool)
    for field, (kind, token_column, mask_column) in TOKENIZED.items():
        values = normalize(kind, originals[field]) if normalized is None else normalized.of(kind, field, originals)
        present[field] = values.is_valid()
        here = present[field].to_numpy(zero_copy_only=False)
        # Only present values go to the tokenizer: a mostly-null column (handler fields) costs nothing.
        at = pa.array(np.cumsum(here) - 1, mask=~here)
        columns[token_column] = tokenizer.tokens(kind, values.filter(present[field]), normalized=True).take(at)
        columns[mask_column] = masks(kind, values, normalized=True)
        any_token |= here
    version = pa.scalar(tokenizer.version, pa.string())
    columns["join_key_version"] = pc.if_else(pa.array(any_token), version, pa.scalar(None, pa.string()))
    keys, values = _seal(line_ids, originals, present, vault, existing_keys, registrations)
    return columns, keys, values


def _seal(
    line_ids: pa.Array,
    originals: dict,
    present: dict,
    vault: Vault,
    existing_keys: pa.Table | None,
    registrations: pa.Array | None,
) -> tuple[pa.Table, pa.Table]:
    """Seal every present value (present after normalisation: a blank original is not sealed) in one
    ``Vault.seal`` call; lines with no value at all get no vault rows."""
    masks_ = {f: present[f].to_numpy(zero_copy_only=False) for f in IDENTITY_FIELDS}
    any_value = np.logical_or.reduce(list(masks_.values()))
    if not any_value.any():
        return arrow_schema("vault_key").empty_table(), arrow_schema("vault_value").empty_table()
    pick = None if any_value.all() else pa.array(any_value)

    def kept(values: pa.Array) -> pa.Array:
        return values if pick is None else values.filter(pick)

    null = pa.scalar(None, pa.string())
    columns = {f: kept(pc.if_else(present[f], _chunk(originals[f]), null)) for f in IDENTITY_FIELDS}
    if registrations is None:
        registrations = pa.nulls(len(line_ids), pa.string())
    return vault.seal(kept(line_ids), columns, existing_keys, registrations=kept(_chunk(registrations)))


def _chunk(values) -> pa.Array:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values if values.type == pa.string() else values.cast(pa.string())


def merge_bucket(
    base: pa.Table,
    base_kind: str,
    events: pa.Table | None,
    vault_keys: pa.Table | None,
    vault_values: pa.Table | None,
    *,
    tokenizer: Tokenizer,
    vault: Vault,
    policy: Policy,
    as_of: dt.date,
    ctx: DeadLetterContext,
    salt: str,
) -> BucketResult:
    """Merge one line bucket; see the module docstring."""
    lines, dead, counts = base_lines(base, base_kind, policy, as_of, ctx, salt, normalized=True)
    winners, event_dead = _winners(events, NO_LINES if lines is None else lines, policy, as_of, ctx, salt, counts)
    dead = pa.concat_tables([dead, event_dead])
    if lines is None:  # events or vault rows of lines that the base does not have: events are dead letters
        return _without_lines(vault_keys, vault_values, dead, counts)
    w_at = pc.index_in(lines.column("line_id"), value_set=winners.column("line_id"))
    ids, originals, registrations, todo = _identities(lines, base_kind, winners, w_at)
    # a raw base's own values as its classification normalised them; a line with a winner takes the winner's
    normalized = (
        Normalized.of_lines(lines, w_at.is_valid().to_numpy(zero_copy_only=False)) if base_kind == "raw" else None
    )
    columns, keys, values = protect(ids, originals, tokenizer, vault, policy, vault_keys, registrations, normalized)
    sealed = keys.column("line_id")
    keys_out = _with_copied(keys, vault_keys, sealed)
    values_out = _with_copied(values, vault_values, sealed)
    merged = _assemble(lines, base_kind, winners, w_at, todo, columns, keys_out, policy, as_of)
    merge_counts(counts, _bucket_counts(merged, winners, keys, values, keys_out, values_out))
    return BucketResult(merged, keys_out, values_out, dead, counts)


def _without_lines(
    vault_keys: pa.Table | None, vault_values: pa.Table | None, dead: pa.Table, counts: dict
) -> BucketResult:
    """A bucket with no base line: no merged rows, the previous vault rows copied as they are."""
    keys_out = vault_keys if vault_keys is not None else arrow_schema("vault_key").empty_table()
    values_out = vault_values if vault_values is not None else arrow_schema("vault_value").empty_table()
    merge_counts(counts, {"vault": {"keys_copied": keys_out.num_rows, "values_copied": values_out.num_rows}})
    return BucketResult(MERGED_SCHEMA.empty_table(), keys_out, values_out, dead, counts)


def _identities(
    lines: pa.Table, base_kind: str, winners: pa.Table, w_at: pa.Array
) -> tuple[pa.Array, dict, pa.Array, pa.Array]:
    """The identities to protect: (line ids, field -> originals, registrations, mask of the lines protected).

    Every line of a raw base (the winner's values, else the base's own); only the
    lines with a winner of a merged base.
    """
    has_winner = w_at.is_valid()
    event_ids = _winner_event_ids(winners).take(w_at)  # null where the line has no winner
    if base_kind == "raw":
        todo = pa.array(np.ones(lines.num_rows, bool))
        originals = {
            f: pc.if_else(
                has_winner, winners.column(f).combine_chunks().take(w_at), lines.column(f"_orig_{f}").combine_chunks()
            )
            for f in IDENTITY_FIELDS
        }
        registrations = event_ids
    else:
        todo = has_winner
        originals = {f: winners.column(f).combine_chunks().take(w_at).filter(todo) for f in IDENTITY_FIELDS}
        registrations = event_ids.filter(todo)
    ids = lines.column("line_id").combine_chunks().filter(todo)
    return ids, originals, registrations, todo


def _with_copied(fresh: pa.Table, previous: pa.Table | None, sealed: pa.Array) -> pa.Table:
    """The rows sealed now, then the previous vault's rows of every line not sealed now (copied)."""
    return pa.concat_tables(
        [fresh]
        + (
            [drop_lines(previous, sealed.to_pylist()).cast(fresh.schema)]
            if previous is not None and previous.num_rows
            else []
        )
    )


def _bucket_counts(
    merged: pa.Table, winners: pa.Table, keys: pa.Table, values: pa.Table, keys_out: pa.Table, values_out: pa.Table
) -> dict:
    """The bucket's tallies of merged lines and vault rows."""
    return {
        "base": {"rows_out": merged.num_rows},
        "lines": {
            "registered": len(winners),
            "identity_status": value_counts(merged.column("identity_status")),
            "needs_registration": int(pc.sum(merged.column("needs_registration").cast(pa.int64())).as_py() or 0),
            "with_tokens": merged.num_rows - merged.column("join_key_version").null_count,
        },
        "vault": {
            "lines_sealed": keys.num_rows,
            "values_sealed": int(pc.sum(pc.list_value_length(keys.column("sealed_fields"))).as_py() or 0),
            "keys_copied": keys_out.num_rows - keys.num_rows,
            "values_copied": values_out.num_rows - values.num_rows,
        },
    }


def _winner_event_ids(winners: pa.Table) -> pa.Array:
    """The winners' event ids as one string array (what becomes each line's registration_event_id)."""
    if "event_id" not in winners.column_names:
        return pa.nulls(winners.num_rows, pa.string())
    return _chunk(winners.column("event_id"))


def _winners(
    events: pa.Table | None,
    lines: pa.Table,
    policy: Policy,
    as_of: dt.date,
    ctx: DeadLetterContext,
    salt: str,
    counts: dict,
) -> tuple[pa.Table, pa.Table]:
    """Validate the bucket's events and pick one winner per line; counts the outcomes."""
    if events is None or events.num_rows == 0:
        empty = pa.schema([pa.field("line_id", pa.string())] + [pa.field(f, pa.string()) for f in IDENTITY_FIELDS])
        return empty.empty_table(), dead_letter_table(ctx, [])
    valid, dead, applied = validate_events(events, lines, policy, as_of, ctx, salt)
    winners, superseded = pick_winners(valid, lines)
    merge_counts(
        counts,
        {
            "events": {
                "applied": winners.num_rows,
                "superseded": superseded,
                "duplicates": applied,
                "dead_letters": value_counts(dead.column("reason")),
            }
        },
    )
    return winners, dead


def _assemble(
    lines: pa.Table,
    base_kind: str,
    winners: pa.Table,
    w_at: pa.Array,
    todo: pa.Array,
    columns: dict,
    keys_out: pa.Table,
    policy: Policy,
    as_of: dt.date,
) -> pa.Table:
    """The merged lines of the bucket, in MERGED_SCHEMA."""
    n = lines.num_rows
    todo_np = todo.to_numpy(zero_copy_only=False)
    p_at = pa.array(np.cumsum(todo_np) - 1, mask=~todo_np)  # row in the protected batch
    has_winner = w_at.is_valid()
    carried = base_kind != "raw"

    def fresh_or_kept(new: pa.Array, name: str) -> pa.Array:
        return pc.if_else(todo, new, contiguous(lines.column(name))) if carried else new

    def winner_or_kept(new: pa.Array, name: str) -> pa.Array:
        if name not in lines.column_names:
            return new
        return pc.if_else(has_winner, new, contiguous(lines.column(name))) if winners.num_rows else lines.column(name)

    out = {name: lines.column(name) for name in LINE_FIELDS}
    for name, values in columns.items():
        out[name] = fresh_or_kept(values.take(p_at), name)
    flags = bits_to_lists(winners.column("_flag_bits").to_numpy(), FLAGS) if winners.num_rows else None
    for name in ("identity_status", "reasons", "flags"):
        new = flags if name == "flags" else (winners.column(name) if winners.num_rows else None)
        out[name] = winner_or_kept(contiguous(new).take(w_at) if new is not None else None, name)
    for name, source in _REGISTRATION.items():
        new = (
            contiguous(winners.column(source)).take(w_at)
            if winners.num_rows
            else pa.nulls(n, MERGED_SCHEMA.field(name).type)
        )
        out[name] = winner_or_kept(new, name)
    complete = pc.equal(out["identity_status"], "COMPLETE")
    out["needs_registration"] = pc.and_(pc.invert(complete), pc.not_equal(lines.column("status"), "TERMINATED"))
    out["policy_version"] = fresh_or_kept(pa.array(np.full(n, policy.version, object), pa.string()), "policy_version")
    out["as_of"] = fresh_or_kept(pa.array(np.full(n, as_of), pa.date32()), "as_of")
    key_at = pc.index_in(lines.column("line_id"), value_set=keys_out.column("line_id"))
    out["vault_key_version"] = contiguous(keys_out.column("vault_key_version")).take(key_at)
    return pa.table(
        [contiguous(out[name]).cast(MERGED_SCHEMA.field(name).type) for name in MERGED_SCHEMA.names],
        schema=MERGED_SCHEMA,
    )
