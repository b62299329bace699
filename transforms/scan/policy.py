"""The identity policy: Decree 25's rules as versioned data (docs/architecture.md "Principle 3").

The default policy ships as ``schemas/decree25_policy.yaml``; ``--policy FILE``
replaces it. A policy is validated when it is loaded (JSON Schema, then the
cross-references between its sections) and a bad one is a one-line
:class:`PolicyError`. The loaded :class:`Policy` is small, immutable and
picklable, so it travels in the pipeline graph; it holds no secrets.

    policy = load_policy()            # the default
    policy = load_policy("my.yaml")   # an operator's override
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from importlib import resources
from typing import Any, Mapping

import jsonschema
import pyarrow as pa
import yaml

import schemas
from transforms.scan.normalize import normalize_label

__all__ = ["Policy", "PolicyError", "load_policy", "NOT_ACCEPTED", "KINDS", "IDENTITY_FIELDS"]

NOT_ACCEPTED = "__NOT_ACCEPTED__"
KINDS = ("INDIVIDUAL", "ORGANIZATION")
IDENTITY_FIELDS = ("doc_type", "doc_number", "name", "address")
# Art. 14 thresholds for a policy file written before they existed (the default policy states them).
DEFAULT_AGENTS = {"min_registrations": 20, "max_failed_share": 0.05, "min_lines_opened": 50, "max_flagged_share": 0.05}


class PolicyError(ValueError):
    """A policy file that cannot be used; ``str()`` is one line."""


def _schema() -> dict:
    text = resources.files(schemas).joinpath("policy.schema.json").read_text("utf-8")
    return json.loads(text)


def _norm(values: list[str]) -> list[str]:
    return normalize_label(pa.array(values, pa.string())).to_pylist()


@dataclasses.dataclass(frozen=True)
class Policy:
    """A validated, compiled policy. Build it with :func:`load_policy`."""

    version: str
    digest: str  # sha256 of the file's bytes, recorded in manifests
    source: str
    documents: Mapping[str, tuple[str, str]]  # code -> (kind, check)
    label_lookup: Mapping[str, str]  # normalised label -> code or NOT_ACCEPTED
    review_labels: Mapping[str, str]  # normalised label -> code
    required_fields: Mapping[str, tuple[str, ...]]
    document_numbers: Mapping[str, Any]
    names: Mapping[str, Any]
    addresses: Mapping[str, Any]
    doc_line_limit: int
    enums: Mapping[str, Mapping[str, str]]  # field -> normalised value -> canonical
    enum_values: Mapping[str, tuple[str, ...]]
    retention_years: int
    agents: Mapping[str, float]  # Art. 14 thresholds (min_registrations, max_failed_share, ...)
    raw: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)

    def document_rules(self):
        """The :class:`transforms.scan.documents.DocumentRules` of this policy."""
        from transforms.scan.documents import DocumentRules

        cfg = dict(self.document_numbers)
        kwargs: dict[str, Any] = {}
        for key, value in cfg.items():
            if key == "placeholders":
                kwargs["number_placeholders"] = tuple(_norm(list(value)))
            elif key == "province_codes":
                kwargs["province_codes"] = frozenset(value)
            elif key == "first_generation_void_since":
                kwargs[key] = dt.date.fromisoformat(value)
            elif isinstance(value, list):
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return DocumentRules(**kwargs)


def _fail(source: str, where: str, message: str) -> PolicyError:
    where = f" {where}:" if where else ""
    return PolicyError(f"policy {source}:{where} {message}".replace("\n", " "))


def load_policy(path: str | None = None) -> Policy:
    """Load, validate and compile a policy file (the default if ``path`` is None)."""
    source = path or schemas.policy_path()
    try:
        if path is None:
            data = resources.files(schemas).joinpath("decree25_policy.yaml").read_bytes()
        elif "://" not in path:
            with open(path, "rb") as handle:
                data = handle.read()
        else:  # gs:// and the like through Beam's file systems (imported only then)
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.open(path) as handle:
                data = handle.read()
    except Exception as exc:  # any unreadable path is one line for the user
        raise _fail(source, "", f"cannot be read ({type(exc).__name__})") from None
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise _fail(source, where, "not valid YAML") from None
    if not isinstance(raw, dict):
        raise _fail(source, "", "must be a YAML mapping")
    # Dates written unquoted arrive as datetime.date; the schema expects text.
    numbers = raw.get("document_numbers")
    if isinstance(numbers, dict) and isinstance(numbers.get("first_generation_void_since"), dt.date):
        numbers["first_generation_void_since"] = numbers["first_generation_void_since"].isoformat()
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(_schema()).iter_errors(raw))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        raise _fail(source, where, error.message[:200])
    return _compile(raw, source, hashlib.sha256(data).hexdigest())


def _compile(raw: dict, source: str, digest: str) -> Policy:
    documents = {code: (d["kind"], d["check"]) for code, d in raw["documents"].items()}
    lookup: dict[str, str] = {}

    def add(label: str, target: str, where: str) -> None:
        if lookup.get(label, target) != target:
            raise _fail(source, where, f"label {label!r} maps to both {lookup[label]} and {target}")
        lookup[label] = target

    for code in documents:
        add(_norm([code])[0], code, "documents")
    for code, labels in raw["labels"].items():
        if code not in documents:
            raise _fail(source, f"labels.{code}", "not a document of this policy")
        for label in _norm(labels):
            add(label, code, f"labels.{code}")
    for label in _norm(raw["not_accepted_labels"]):
        add(label, NOT_ACCEPTED, "not_accepted_labels")
    review: dict[str, str] = {}
    for label, code in (raw.get("review_labels") or {}).items():
        if code not in documents:
            raise _fail(source, f"review_labels.{label}", f"{code} is not a document of this policy")
        review[_norm([label])[0]] = code
    enums: dict[str, dict[str, str]] = {}
    enum_values: dict[str, tuple[str, ...]] = {}
    for field, spec in raw["enums"].items():
        values = tuple(spec["values"])
        table = {v: v for v in _norm(list(values))}
        for alias, target in (spec.get("aliases") or {}).items():
            if target not in values:
                raise _fail(source, f"enums.{field}.aliases", f"{target} is not one of {list(values)}")
            table[_norm([alias])[0]] = target
        enums[field] = table
        enum_values[field] = values
    if set(enum_values["subscriber_kind"]) != set(KINDS):
        raise _fail(source, "enums.subscriber_kind", f"values must be {list(KINDS)}")
    numbers = dict(raw["document_numbers"])
    if "first_generation_void_since" in numbers:
        try:
            dt.date.fromisoformat(numbers["first_generation_void_since"])
        except ValueError:
            raise _fail(source, "document_numbers.first_generation_void_since", "not a date") from None
    return Policy(
        version=raw["policy_version"],
        digest=digest,
        source=source,
        documents=documents,
        label_lookup=lookup,
        review_labels=review,
        required_fields={k: tuple(v) for k, v in raw["required_fields"].items()},
        document_numbers=numbers,
        names=dict(raw["names"]),
        addresses=dict(raw["addresses"]),
        doc_line_limit=int(raw["cross_record"]["doc_line_limit"]),
        enums=enums,
        enum_values=enum_values,
        retention_years=int(raw["retention"]["years_after_termination"]),
        agents=dict(raw.get("agents") or DEFAULT_AGENTS),
        raw=raw,
    )
