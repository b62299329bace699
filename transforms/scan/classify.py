"""Classify the identity of each line of one Arrow batch (Beam-free).

Input: a raw batch from the readers, every contract column as a string plus
``_src_file`` / ``_src_row``. Output: the classified batch (the columns of
``schemas/classified_line.avsc`` plus hidden ``_*`` working columns used by
the cross-record step) and the dead letters of rows that cannot be
classified. Everything is vectorised; the only per-row Python is in the
keyed hash of document numbers and names (see :func:`keyed_hash`).

Status precedence (docs/contract.md "Identity status"): MISSING when none of
doc_type, doc_number, name, address is present; else INCOMPLETE when any
required field is absent (absence wins over invalidity); else INVALID when
any check fails; else COMPLETE. Failed checks of the present fields are
listed whatever the status.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema
from transforms.scan.dates import parse_dates, parse_timestamps
from transforms.scan.arrow_columns import _column, _np, bits_to_lists, lookup, per_distinct
from transforms.core.deadletter import DeadLetterContext, dead_letter_table
from transforms.scan.identity_text import check_addresses, check_names, name_charset_review
from transforms.scan.keyed_hash import keyed_hash
from transforms.scan.normalize import (
    clean_text,
    normalize_doc_number,
    normalize_enum,
    normalize_label,
    normalize_msisdn,
    normalize_name,
)
from transforms.scan.policy import NOT_ACCEPTED, Policy
from transforms.core.reasons import FLAGS, LINE_REASONS

__all__ = [
    "classify_batch",
    "bits_to_lists",
    "finalize",
    "ClassifiedBatch",
    "HIDDEN_COLUMNS",
    "FLAG_BIT",
    "IDENTITY_STATUSES",
]

CLASSIFIED_SCHEMA = arrow_schema("classified_line")
IDENTITY_STATUSES = ("COMPLETE", "MISSING", "INCOMPLETE", "INVALID")
ENUM_FIELDS = ("line_type", "subscriber_kind", "status")
FLAG_BIT = {code: 1 << i for i, code in enumerate(FLAGS)}
_BIT = {code: np.uint32(1 << i) for i, code in enumerate(LINE_REASONS)}
_MISSING_CODES = ("DOC_TYPE_MISSING", "DOC_NUMBER_MISSING", "NAME_MISSING", "ADDRESS_MISSING", "HANDLER_MISSING")
_FAILURE_MASK = np.uint32(sum(int(_BIT[c]) for c in LINE_REASONS if c not in _MISSING_CODES))
_FIELD_MISSING = {
    "doc_type": "DOC_TYPE_MISSING",
    "doc_number": "DOC_NUMBER_MISSING",
    "name": "NAME_MISSING",
    "address": "ADDRESS_MISSING",
    "handler_doc_type": "HANDLER_MISSING",
    "handler_doc_number": "HANDLER_MISSING",
    "handler_name": "HANDLER_MISSING",
}
# Working columns carried between the pipeline's stages, dropped by finalize().
HIDDEN_COLUMNS = ("_src_file", "_src_row", "_updated_at", "_doc_key", "_name_key", "_flag_bits")


@dataclasses.dataclass
class ClassifiedBatch:
    classified: pa.Table
    dead_letter: pa.Table
    rows_in: int


def _dead_letters(
    raw: pa.Table, line_id: pa.Array, enums: dict, bad_dates: dict, ctx, policy
) -> tuple[np.ndarray, pa.Table]:
    """Rows that cannot be classified, one reason each (first that applies)."""
    no_id = ~_np(line_id.is_valid())
    conditions, reasons, fields, details = [no_id], ["LINE_ID_MISSING"], ["line_id"], ["line_id is empty"]
    for field in ENUM_FIELDS:
        conditions.append(~_np(enums[field].is_valid()))
        reasons.append("BAD_ENUM")
        fields.append(field)
        allowed = ", ".join(policy.enum_values[field])
        details.append(f"{field} is missing or not one of {allowed}")
    for field, bad in bad_dates.items():
        conditions.append(bad)
        reasons.append("BAD_DATE")
        fields.append(field)
        details.append(f"{field} is not a valid date or time")
    dead = np.logical_or.reduce(conditions)
    if not dead.any():
        return dead, None

    def pick(options):
        return np.select(conditions, options, None)[dead]

    table = dead_letter_table(
        ctx,
        list(pick(reasons)),
        source_file=raw.column("_src_file").filter(pa.array(dead)),
        source_row=raw.column("_src_row").filter(pa.array(dead)),
        line_id=line_id.filter(pa.array(dead)),
        field=list(pick(fields)),
        detail=list(pick(details)),
    )
    return dead, table


class _Bits:
    def __init__(self, n: int):
        self.value = np.zeros(n, np.uint32)

    def set(self, code: str, mask: np.ndarray) -> None:
        self.value |= np.where(mask, _BIT[code], np.uint32(0))


def _document(labels: pa.Array, policy: Policy):
    """(code or NOT_ACCEPTED or null, review flag, label present) per row."""

    def resolve(distinct: pa.Array):
        label = normalize_label(distinct)
        code = lookup(label, policy.label_lookup)
        review = lookup(label, policy.review_labels)
        return pc.coalesce(code, review), _np(review.is_valid()), _np(label.is_valid())

    return per_distinct(labels, resolve)


def _check_handler(table: pa.Table, is_org: np.ndarray, policy: Policy, as_of, rules) -> tuple[np.ndarray, np.ndarray]:
    """(HANDLER_MISSING, HANDLER_INVALID) masks: organisations' handling person (Art. 6, 8).

    Only organisations have a handler to check, so only their rows are looked at.
    """
    from transforms.scan.documents import REASONS, check_document_numbers

    missing_all = np.zeros(len(is_org), bool)
    invalid_all = np.zeros(len(is_org), bool)
    if not is_org.any():
        return missing_all, invalid_all
    table = table.select(["handler_doc_type", "handler_doc_number", "handler_name"]).filter(pa.array(is_org))
    org_rows = np.flatnonzero(is_org)
    code, _, type_present = _document(table.column("handler_doc_type").combine_chunks(), policy)
    number = normalize_doc_number(table.column("handler_doc_number"))
    name = normalize_name(table.column("handler_name"))
    present = {
        "handler_doc_type": type_present,
        "handler_doc_number": _np(number.is_valid()),
        "handler_name": _np(name.is_valid()),
    }
    required = set(policy.required_fields["ORGANIZATION"])
    missing = np.zeros(len(org_rows), bool)
    for field, here in present.items():
        if field in required:
            missing |= ~here
    person_docs = {c: check for c, (kind, check) in policy.documents.items() if kind == "INDIVIDUAL"}
    check = lookup(code, person_docs)
    bad_type = type_present & ~_np(check.is_valid())
    results = check_document_numbers(check, number, as_of, rules)
    bad = bad_type | np.logical_or.reduce([results[r] for r in REASONS])
    names = check_names(name, np.ones(len(org_rows), bool), policy.names)
    bad |= np.logical_or.reduce(list(names.values()))
    missing_all[org_rows] = missing
    invalid_all[org_rows] = bad
    return missing_all, invalid_all


@dataclasses.dataclass
class _LineFields:
    """The line-level fields of a raw batch, parsed: what decides a dead letter."""

    line_id: pa.Array
    enums: dict
    activated: pa.Array
    terminated: pa.Array
    updated: pa.Array
    bad_dates: dict

    def filter(self, keep: pa.Array) -> "_LineFields":
        enums = {f: a.filter(keep) for f, a in self.enums.items()}
        return _LineFields(
            self.line_id.filter(keep),
            enums,
            self.activated.filter(keep),
            self.terminated.filter(keep),
            self.updated.filter(keep),
            self.bad_dates,
        )


def _line_fields(raw: pa.Table, policy: Policy) -> _LineFields:
    """line_id, the enums and the dates of every row, with the rows whose dates do not parse."""
    col = functools.partial(_column, raw)
    line_id = clean_text(col("line_id"))
    enums = {f: per_distinct(col(f), lambda d, f=f: lookup(normalize_enum(d), policy.enums[f])) for f in ENUM_FIELDS}
    activated, bad_act = per_distinct(col("activated_on"), parse_dates)
    terminated, bad_term = per_distinct(col("terminated_on"), parse_dates)
    updated, bad_upd = parse_timestamps(col("updated_at"))
    bad_dates = {"activated_on": bad_act, "terminated_on": bad_term, "updated_at": bad_upd}
    return _LineFields(line_id, enums, activated, terminated, updated, bad_dates)


@dataclasses.dataclass
class _Identity:
    """The normalised identity of each row and the reason bits of its checks."""

    bits: _Bits
    present: dict
    review: np.ndarray
    number: pa.Array
    name: pa.Array
    address: pa.Array
    flags: np.ndarray  # uint8 FLAG_BIT of the row's own review flags (division, name charset)


def _missing_bits(bits: _Bits, present: dict, is_org: np.ndarray, policy: Policy) -> None:
    """A *_MISSING reason for each required field that is absent (the kind decides what is required)."""
    for field, here in present.items():
        required = np.where(
            is_org, field in policy.required_fields["ORGANIZATION"], field in policy.required_fields["INDIVIDUAL"]
        )
        bits.set(_FIELD_MISSING[field], required & ~here)


def _document_bits(
    bits: _Bits, code, type_present, number, subscriber_kind, policy: Policy, as_of, rules
) -> np.ndarray:
    """Document type (Art. 7, 8; docs/regulation.md §1.3) and document number checks; returns the
    document's review flags (uint8 FLAG_BIT)."""
    from transforms.scan.documents import REASONS, REVIEWS, check_document_numbers

    not_accepted = _np(pc.equal(code, NOT_ACCEPTED))
    bits.set("DOC_TYPE_UNKNOWN", type_present & ~_np(code.is_valid()))
    bits.set("DOC_TYPE_NOT_ACCEPTED", not_accepted)
    doc_kind = lookup(code, {c: kind for c, (kind, _) in policy.documents.items()})
    bits.set("DOC_TYPE_NOT_ALLOWED_FOR_KIND", _np(pc.not_equal(doc_kind, subscriber_kind)))
    check = lookup(code, {c: chk for c, (_, chk) in policy.documents.items()})
    results = check_document_numbers(check, number, as_of, rules)
    for reason in REASONS:
        bits.set(reason, results[reason])
    flags = np.zeros(len(number), np.uint8)
    for review in REVIEWS:
        flags |= np.where(results[review], FLAG_BIT[review], 0).astype(np.uint8)
    return flags


def _check_identity(raw: pa.Table, kind: pa.Array, policy: Policy, as_of: dt.date) -> _Identity:
    """Normalise the identity fields and run every per-row check on them."""
    col = functools.partial(_column, raw)
    is_org = _np(pc.equal(kind, "ORGANIZATION"))
    rules = policy.document_rules()
    code, review, type_present = _document(col("doc_type"), policy)
    number = normalize_doc_number(col("doc_number"))
    name = normalize_name(col("name"))
    address = clean_text(col("address"))
    present = {
        "doc_type": type_present,
        "doc_number": _np(number.is_valid()),
        "name": _np(name.is_valid()),
        "address": _np(address.is_valid()),
    }
    bits = _Bits(raw.num_rows)
    _missing_bits(bits, present, is_org, policy)
    flags = _document_bits(bits, code, type_present, number, kind, policy, as_of, rules)
    names = check_names(name, ~is_org, policy.names)
    for reason, mask in names.items():
        bits.set(reason, mask)
    # A person's name on a mainland document is in Chinese characters (docs/policy.md "Names"); junk is junk only.
    han_docs = pa.array(policy.names.get("han_only_documents", []), pa.string())
    han_only = ~is_org & ~names["NAME_PLACEHOLDER"] & _np(pc.is_in(code, value_set=han_docs))
    flags |= np.where(name_charset_review(name, han_only), FLAG_BIT["NAME_CHARSET_REVIEW"], 0).astype(np.uint8)
    for reason, mask in check_addresses(address, policy.addresses).items():
        bits.set(reason, mask)
    handler_missing, handler_invalid = _check_handler(raw, is_org, policy, as_of, rules)
    bits.set("HANDLER_MISSING", handler_missing)
    bits.set("HANDLER_INVALID", handler_invalid)
    return _Identity(bits, present, review, number, name, address, flags)


def _status_codes(identity: _Identity) -> np.ndarray:
    """Index into IDENTITY_STATUSES: MISSING, else INCOMPLETE, else INVALID, else COMPLETE."""
    bits = identity.bits.value
    any_present = np.logical_or.reduce(list(identity.present.values()))
    missing_bits = np.uint32(sum(int(_BIT[c]) for c in _MISSING_CODES))
    conditions = [~any_present, (bits & missing_bits) != 0, (bits & _FAILURE_MASK) != 0]
    return np.select(conditions, [1, 2, 3], 0).astype(np.int8)


def _cross_record_keys(identity: _Identity, salt: str) -> tuple[pa.Array, pa.Array]:
    """(_doc_key, _name_key): keyed hashes of the document number and of the name beside it.

    Cross-record checks only count numbers shaped like a document number: a
    placeholder or spreadsheet junk (1.10105E+17) is shared by strangers.
    """
    malformed = (identity.bits.value & _BIT["DOC_NUMBER_FORMAT"]) != 0
    cross_number = pc.if_else(pa.array(malformed), pa.scalar(None, pa.string()), identity.number)
    doc_key = keyed_hash(cross_number, bytes.fromhex(salt))
    # The name key only matters beside a document number (DOC_NAME_CONFLICT).
    name = pc.if_else(cross_number.is_valid(), identity.name, pa.scalar(None, pa.string()))
    name_key = keyed_hash(name, bytes.fromhex(salt))
    return doc_key, name_key


def checked_regions(values: pa.Array, policy: Policy) -> tuple[pa.Array, np.ndarray]:
    """(regions, valid): the normalised region codes with every invalid one nulled, and a mask that is
    False where a present value is not six digits under a province-level code of the policy's code tables
    (docs/policy.md "Regions"). Checked per distinct value."""
    provinces = pa.array(sorted(policy.code_tables.province_level), pa.string())

    def check(distinct: pa.Array):
        # "110101.0": a spreadsheet's or dataframe's float rendering of the code
        region = pc.replace_substring_regex(clean_text(distinct), r"^([0-9]{6})\.0+$", r"\1")
        shaped = pc.match_substring_regex(region, r"^[0-9]{6}$")
        known = pc.is_in(pc.utf8_slice_codeunits(region, 0, 2), value_set=provinces)
        valid = pc.fill_null(pc.and_(shaped, known), False)
        ok = _np(pc.or_kleene(valid, pc.is_null(region)))
        return pc.if_else(valid, region, pa.scalar(None, pa.string())), ok

    region, ok = per_distinct(values, check)
    return region, ok | ~_np(values.is_valid())  # an absent region is no invalid one


def _classified_table(
    raw: pa.Table, line: _LineFields, identity: _Identity, policy: Policy, as_of: dt.date, salt: str, normalized: bool
) -> pa.Table:
    """The classified batch: the contract's columns and the hidden working columns (``normalized``: with the
    normalised identity values, ``_norm_doc_number``, ``_norm_name``, ``_norm_address``)."""
    n = raw.num_rows
    col = functools.partial(_column, raw)
    enums = line.enums
    status_code = _status_codes(identity)
    terminated_line = _np(pc.equal(enums["status"], "TERMINATED"))
    doc_key, name_key = _cross_record_keys(identity, salt)
    region, region_ok = checked_regions(col("region"), policy)
    flag_bits = identity.flags | np.where(identity.review, FLAG_BIT["DOC_TYPE_LABEL_REVIEW"], 0).astype(np.uint8)
    flag_bits |= np.where(region_ok, 0, FLAG_BIT["REGION_INVALID"]).astype(np.uint8)
    columns = {
        "line_id": line.line_id,
        "msisdn": normalize_msisdn(col("msisdn")),
        "line_type": enums["line_type"],
        "subscriber_kind": enums["subscriber_kind"],
        "status": enums["status"],
        "region": region,
        "agent_id": per_distinct(col("agent_id"), clean_text),
        "activated_on": line.activated,
        "terminated_on": line.terminated,
        "identity_status": pa.array(IDENTITY_STATUSES, pa.string()).take(pa.array(status_code)),
        "reasons": bits_to_lists(identity.bits.value, LINE_REASONS),
        "needs_registration": pa.array((status_code != 0) & ~terminated_line),
        "policy_version": pa.repeat(pa.scalar(policy.version, pa.string()), n),
        "as_of": pa.repeat(pa.scalar(as_of, pa.date32()), n),
        "_src_file": col("_src_file"),
        "_src_row": col("_src_row"),
        "_updated_at": line.updated,
        "_doc_key": doc_key,
        "_name_key": name_key,
        "_flag_bits": pa.array(flag_bits, pa.uint8()),
    }
    if normalized:
        columns.update(_norm_doc_number=identity.number, _norm_name=identity.name, _norm_address=identity.address)
    return pa.Table.from_pydict(columns)


def classify_batch(
    raw: pa.Table, policy: Policy, as_of: dt.date, ctx: DeadLetterContext, salt: str, *, normalized: bool = False
) -> ClassifiedBatch:
    """Classify one raw batch. Rows in = classified rows + dead letters. ``normalized``: keep the normalised
    document number, name and address as hidden columns (the merge tokenizes them rather than normalise again)."""
    rows_in = raw.num_rows
    line = _line_fields(raw, policy)
    dead, dead_table = _dead_letters(raw, line.line_id, line.enums, line.bad_dates, ctx, policy)
    if dead.any():
        keep = pa.array(~dead)
        raw = raw.filter(keep)
        line = line.filter(keep)
    identity = _check_identity(raw, line.enums["subscriber_kind"], policy, as_of)
    classified = _classified_table(raw, line, identity, policy, as_of, salt, normalized)
    if dead_table is None:
        dead_table = dead_letter_table(ctx, [])
    return ClassifiedBatch(classified, dead_table, rows_in)


def finalize(table: pa.Table) -> pa.Table:
    """The classified-line contract: flags from ``_flag_bits``, hidden columns dropped."""
    bits = table.column("_flag_bits").to_numpy()
    columns = {name: table.column(name) for name in CLASSIFIED_SCHEMA.names if name in table.column_names}
    columns["flags"] = bits_to_lists(bits, FLAGS)
    columns["needs_review"] = pa.array(bits != 0)
    return pa.Table.from_pydict({name: columns[name] for name in CLASSIFIED_SCHEMA.names}, schema=CLASSIFIED_SCHEMA)
