"""The naive baseline of the scan: Beam, one dict per row, the rules in a per-element DoFn.

This is the slow path docs/architecture.md "Principle 1" says the product exists to beat
(issue "Speed and memory (a benchmark, not a timed test)"), and the oracle
of ``tests/test_scan_oracle.py``: :func:`classify_row` applies the Decree 25
rules to one row dict with the plain Python of :mod:`bench.naive_rules`,
written from docs/policy.md, not from ``transforms/``.

    .venv/bin/python -m bench.naive --base bench-data/base_200k.parquet --out /tmp/naive \\
        [--as-of 2026-11-30] [Beam flags...]

The pipeline (:func:`run_naive`) reads Parquet rows as dicts
(``beam.io.ReadFromParquet``), classifies each in a ``beam.ParDo``, groups
row by row on line_id to drop duplicates and on a keyed hash of the document
number for the cross-record flags, and writes ``OUT/classified/`` and
``OUT/dead_letter/`` (Parquet) and ``OUT/summary.json`` (counts). It runs on
the FnApiRunner, always named explicitly (the DirectRunner would try to
download Prism). ``ReadFromParquet`` gives no row numbers, so its dead letters
name the file only and duplicate ties fall to a content order.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import secrets
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from bench import naive_rules as R
from bench.naive_crossrecord import _document_entry, _document_flags, _finalize, _order
from schemas import arrow_schema
from transforms.scan.policy import NOT_ACCEPTED, Policy, load_policy
from transforms.core.reasons import FLAGS, LINE_REASONS

__all__ = ["classify_row", "is_dead_letter", "run_naive", "main"]

AS_OF = dt.date(2026, 11, 30)
ENUM_FIELDS = ("line_type", "subscriber_kind", "status")
DATE_FIELDS = ("activated_on", "terminated_on")
_MISSING = {
    "doc_type": "DOC_TYPE_MISSING",
    "doc_number": "DOC_NUMBER_MISSING",
    "name": "NAME_MISSING",
    "address": "ADDRESS_MISSING",
}
_HANDLER_FIELDS = ("handler_doc_type", "handler_doc_number", "handler_name")
_MISSING_CODES = frozenset(_MISSING.values()) | {"HANDLER_MISSING"}
_ORDER = {code: i for i, code in enumerate(LINE_REASONS)}
_PREPARED: dict[str, dict] = {}


def _prepared(policy: Policy) -> dict:
    rules = _PREPARED.get(policy.digest)
    if rules is None:
        rules = _PREPARED[policy.digest] = R.prepare(policy)
    return rules


def _dead(reason: str, field: str, detail: str, line_id, row: dict) -> dict:
    return {
        "reason": reason,
        "field": field,
        "detail": detail,
        "line_id": line_id,
        "source_file": row.get("_src_file"),
        "source_row": row.get("_src_row"),
    }


def is_dead_letter(result: dict) -> bool:
    return "reason" in result


def _key(value: str | None, salt: bytes | None) -> bytes | None:
    """A keyed hash: equal values group, and no value travels through a shuffle."""
    if value is None or salt is None:
        return None
    return hashlib.blake2b(value.encode("utf-8"), key=salt, digest_size=16).digest()


def _document(raw_label, policy: Policy) -> tuple[str | None, str | None, bool]:
    """(normalised label, code or NOT_ACCEPTED or None, review label?) (docs/policy.md "Document labels")."""
    text = R.label(raw_label)
    if text is None:
        return None, None, False
    review = policy.review_labels.get(text)
    return text, policy.label_lookup.get(text) or review, review is not None


def _handler(row: dict, policy: Policy, as_of: dt.date, rules: dict) -> tuple[bool, bool]:
    """(HANDLER_MISSING, HANDLER_INVALID) of an organisation's handling person (Art. 6, 8)."""
    text, code, _ = _document(row.get("handler_doc_type"), policy)
    number = R.doc_number(row.get("handler_doc_number"))
    name = R.person_name(row.get("handler_name"))
    present = dict(zip(_HANDLER_FIELDS, (text is not None, number is not None, name is not None)))
    required = policy.required_fields["ORGANIZATION"]
    missing = any(f in required and not here for f, here in present.items())
    invalid = False
    if text is not None:
        doc = policy.documents.get(code) if code != NOT_ACCEPTED else None
        if doc is None or doc[0] != "INDIVIDUAL":  # unknown, not accepted, or an organisation's
            invalid = True
        elif number is not None:
            invalid = bool(R.number_reasons(doc[1], number, as_of, rules["numbers"]))
    if name is not None and R.name_reasons(name, True, rules["names"]):
        invalid = True
    return missing, invalid


def _line_fields(row: dict, policy: Policy, line_id: str) -> tuple[dict | None, dict, dict, object]:
    """(dead letter or None, enums, dates, updated_at) of one row: the fields a dead letter is decided on."""
    enums = {}
    for field in ENUM_FIELDS:
        enums[field] = policy.enums[field].get(R.label(row.get(field)))
        if enums[field] is None:
            allowed = ", ".join(policy.enum_values[field])
            return _dead("BAD_ENUM", field, f"{field} is missing or not one of {allowed}", line_id, row), {}, {}, None
    dates = {}
    for field in DATE_FIELDS:
        dates[field], bad = R.parse_date(row.get(field))
        if bad:
            return _dead("BAD_DATE", field, f"{field} is not a valid date or time", line_id, row), {}, {}, None
    updated, bad = R.parse_timestamp(row.get("updated_at"))
    if bad:
        dead = _dead("BAD_DATE", "updated_at", "updated_at is not a valid date or time", line_id, row)
        return dead, {}, {}, None
    return None, enums, dates, updated


def _document_reasons(code, kind: str, number, policy: Policy, as_of: dt.date, rules: dict) -> set:
    """The reasons of a present document type, and of its number when there is one."""
    if code is None:
        return {"DOC_TYPE_UNKNOWN"}
    if code == NOT_ACCEPTED:
        return {"DOC_TYPE_NOT_ACCEPTED"}
    reasons = set()
    doc_kind, check = policy.documents[code]
    if doc_kind != kind:
        reasons.add("DOC_TYPE_NOT_ALLOWED_FOR_KIND")
    if number is not None:  # checked whatever the kind: every failed check is listed
        reasons |= R.number_reasons(check, number, as_of, rules["numbers"])
    return reasons


def _identity(row: dict, kind: str, policy: Policy, as_of: dt.date, rules: dict) -> dict:
    """The normalised identity fields of one row, which are present, and every reason they fail."""
    is_org = kind == "ORGANIZATION"
    text, code, review = _document(row.get("doc_type"), policy)
    number = R.doc_number(row.get("doc_number"))
    name = R.person_name(row.get("name"))
    address = R.clean(row.get("address"))
    present = {
        "doc_type": text is not None,
        "doc_number": number is not None,
        "name": name is not None,
        "address": address is not None,
    }
    reasons = {_MISSING[f] for f, here in present.items() if not here and f in policy.required_fields[kind]}
    if text is not None:
        reasons |= _document_reasons(code, kind, number, policy, as_of, rules)
    if name is not None:
        reasons |= R.name_reasons(name, not is_org, rules["names"])
    if address is not None:
        reasons |= R.address_reasons(address, rules["addresses"])
    if is_org:
        missing, invalid = _handler(row, policy, as_of, rules)
        if missing:
            reasons.add("HANDLER_MISSING")
        if invalid:
            reasons.add("HANDLER_INVALID")
    flags = _review_flags(code, is_org, number, name, reasons, policy, rules, as_of)
    return {"present": present, "reasons": reasons, "review": review, "number": number, "name": name, "flags": flags}


def _review_flags(code, is_org: bool, number, name, reasons: set, policy: Policy, rules: dict, as_of=None) -> set:
    """DOC_NUMBER_DIVISION_REVIEW, DOC_NUMBER_CODE_REVIEW and NAME_CHARSET_REVIEW of one row (docs/policy.md
    "Code tables", "Names")."""
    flags = set()
    if code in policy.documents and number is not None:
        flags |= R.number_reviews(policy.documents[code][1], number, rules["numbers"], as_of)
    han_only = code in policy.names.get("han_only_documents", ()) and not is_org
    if han_only and name is not None and "NAME_PLACEHOLDER" not in reasons and R.name_charset(name):
        flags.add("NAME_CHARSET_REVIEW")
    return flags


def _status(present: dict, reasons: set) -> str:
    """docs/contract.md "Identity status": absence wins over invalidity."""
    if not any(present.values()):
        return "MISSING"
    if reasons & _MISSING_CODES:
        return "INCOMPLETE"
    if reasons:
        return "INVALID"
    return "COMPLETE"


def classify_row(row: dict, policy: Policy, as_of: dt.date, salt: bytes | None = None) -> dict:
    """Classify one raw row (contract field -> string or None).

    Returns the classified-line dict (the contract's fields, ``flags`` holding
    only the per-row review flags (DOC_TYPE_LABEL_REVIEW, REGION_INVALID, DOC_NUMBER_DIVISION_REVIEW,
    NAME_CHARSET_REVIEW, DOC_NUMBER_CODE_REVIEW), plus ``_src_file``, ``_src_row``,
    ``_updated_at`` and, with a ``salt``, the ``_doc_key`` / ``_name_key``
    hashes), or a dead-letter dict (``reason``, ``field``, ``detail``,
    ``line_id``, ``source_file``, ``source_row``): see :func:`is_dead_letter`.
    """
    rules = _prepared(policy)
    line_id = R.clean(row.get("line_id"))
    if line_id is None:
        return _dead("LINE_ID_MISSING", "line_id", "line_id is empty", None, row)
    dead, enums, dates, updated = _line_fields(row, policy, line_id)
    if dead is not None:
        return dead
    kind = enums["subscriber_kind"]
    ident = _identity(row, kind, policy, as_of, rules)
    reasons = ident["reasons"]
    status = _status(ident["present"], reasons)
    region, region_ok = R.region(row.get("region"), rules["numbers"]["_province_level"])
    own = ident["flags"] | ({"DOC_TYPE_LABEL_REVIEW"} if ident["review"] else set())
    flags = [f for f in FLAGS if f in own or (f == "REGION_INVALID" and not region_ok)]
    return {
        "line_id": line_id,
        "msisdn": R.msisdn(row.get("msisdn")),
        "line_type": enums["line_type"],
        "subscriber_kind": kind,
        "status": enums["status"],
        "region": region,
        "agent_id": R.clean(row.get("agent_id")),
        "activated_on": dates["activated_on"],
        "terminated_on": dates["terminated_on"],
        "identity_status": status,
        "reasons": sorted(reasons, key=_ORDER.__getitem__),
        "flags": flags,
        "needs_registration": status != "COMPLETE" and enums["status"] != "TERMINATED",
        "needs_review": bool(flags),
        "policy_version": policy.version,
        "as_of": as_of,
        "_src_file": row.get("_src_file"),
        "_src_row": row.get("_src_row"),
        "_updated_at": updated,
        # Numbers that fail the format check are junk, not identities: no cross-record key.
        "_doc_key": _key(None if "DOC_NUMBER_FORMAT" in reasons else ident["number"], salt),
        "_name_key": _key(ident["name"], salt),
    }


# --- the per-element pipeline ---


class _ClassifyRowFn(beam.DoFn):
    def __init__(self, policy: Policy, as_of: dt.date, salt: bytes, source: str):
        self._policy, self._as_of, self._salt, self._source = policy, as_of, salt, source

    def process(self, row: dict):
        row = {**row, "_src_file": self._source}
        result = classify_row(row, self._policy, self._as_of, self._salt)
        if is_dead_letter(result):
            yield beam.pvalue.TaggedOutput("dead_letter", result)
        else:
            yield result


class _DedupFn(beam.DoFn):
    def process(self, element):
        _, rows = element
        rows = list(rows)
        if len(rows) > 1:
            rows.sort(key=_order)
            for loser in rows[:-1]:
                yield beam.pvalue.TaggedOutput(
                    "dead_letter",
                    _dead(
                        "DUPLICATE_LINE_ID",
                        "line_id",
                        "a later row of the same line_id was kept (latest updated_at)",
                        loser["line_id"],
                        {"_src_file": loser["_src_file"], "_src_row": loser["_src_row"]},
                    ),
                )
        yield rows[-1]


def _stamp(dead: dict, ctx: dict) -> dict:
    return {**ctx, "event_id": None, **dead}


def _write_summary(counts: dict, dead: int, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(
            {"classified": sum(counts.values()), "dead_letters": dead, "identity_status": dict(sorted(counts.items()))},
            handle,
            indent=2,
        )


def run_naive(
    base_parquet: str, out_dir: str, *, as_of: dt.date = AS_OF, policy_path: str | None = None, beam_args=()
) -> dict:
    """Run the naive scan; returns the summary dict (also in ``OUT/summary.json``)."""
    policy = load_policy(policy_path)
    salt = secrets.token_bytes(16)  # run-local key of the shuffle hashes
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    ctx = {"step": "scan", "run_id": f"naive-{secrets.token_hex(4)}", "time": started}
    os.makedirs(out_dir, exist_ok=True)
    summary_path = os.path.join(out_dir, "summary.json")
    options = PipelineOptions(["--runner", "FnApiRunner", *beam_args])
    with beam.Pipeline(options=options) as p:
        rows = p | "ReadBase" >> beam.io.ReadFromParquet(base_parquet)
        classified = rows | "ClassifyRows" >> beam.ParDo(
            _ClassifyRowFn(policy, as_of, salt, os.path.basename(base_parquet))
        ).with_outputs("dead_letter", main="rows")
        deduped = (
            classified.rows
            | "KeyByLine" >> beam.Map(lambda r: (r["line_id"], r))
            | "GroupByLine" >> beam.GroupByKey()
            | "Deduplicate" >> beam.ParDo(_DedupFn()).with_outputs("dead_letter", main="rows")
        )
        flags = (
            deduped.rows
            | "KeyByDocument" >> beam.FlatMap(_document_entry)
            | "GroupByDocument" >> beam.GroupByKey()
            | "DocumentFlags" >> beam.FlatMap(_document_flags, policy.doc_line_limit)
        )
        final = (
            {"rows": deduped.rows | "KeyKeptByLine" >> beam.Map(lambda r: (r["line_id"], r)), "flags": flags}
            | "JoinFlags" >> beam.CoGroupByKey()
            | "Finalize" >> beam.FlatMap(_finalize)
        )
        final | "WriteClassified" >> beam.io.WriteToParquet(
            os.path.join(out_dir, "classified", "part"),
            schema=arrow_schema("classified_line"),
            file_name_suffix=".parquet",
        )
        dead = (
            (classified.dead_letter, deduped.dead_letter)
            | "FlattenDeadLetters" >> beam.Flatten()
            | "StampDeadLetters" >> beam.Map(_stamp, ctx)
        )
        dead | "WriteDeadLetters" >> beam.io.WriteToParquet(
            os.path.join(out_dir, "dead_letter", "part"),
            schema=arrow_schema("dead_letter"),
            file_name_suffix=".parquet",
        )
        status_counts = (
            final
            | "Status" >> beam.Map(lambda r: r["identity_status"])
            | "CountStatus" >> beam.combiners.Count.PerElement()
            | "StatusDict" >> beam.combiners.ToDict()
        )
        dead_count = dead | "CountDeadLetters" >> beam.combiners.Count.Globally()
        (status_counts | "WriteSummary" >> beam.Map(_write_summary, beam.pvalue.AsSingleton(dead_count), summary_path))
    with open(summary_path, encoding="utf-8") as handle:
        return json.load(handle)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="one Parquet file of the subscriber base")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=AS_OF)
    parser.add_argument("--policy", default=None)
    args, beam_args = parser.parse_known_args(argv)
    start = time.perf_counter()
    summary = run_naive(args.base, args.out, as_of=args.as_of, policy_path=args.policy, beam_args=beam_args)
    seconds = time.perf_counter() - start
    rows = summary["classified"] + summary["dead_letters"]
    print(
        f"naive scan: {rows:,} rows in {seconds:.1f} s ({rows / max(seconds, 1e-9):,.0f} rows/s); "
        f"identity {summary['identity_status']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
