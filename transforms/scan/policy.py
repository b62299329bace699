"""The identity policy: Decree 25's rules as versioned data (docs/architecture.md "Principle 3").

The default policy ships as ``schemas/decree25_policy.yaml``; ``--policy FILE``
replaces it. A policy is validated when it is loaded (JSON Schema, then the
cross-references between its sections) and a bad one is a one-line
:class:`PolicyError`. The loaded :class:`Policy` is small, immutable and
picklable, so it travels in the pipeline graph; it holds no secrets. Its
code tables (``code_tables:``, :mod:`transforms.scan.code_tables`) are
compiled with it: table files a policy lists are read beside the policy file
(else beside the default policy), python-stdnum's and pycountry's data from
the installed packages.

    policy = load_policy()            # the default
    policy = load_policy("my.yaml")   # an operator's override
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import os
import posixpath
from importlib import resources
from typing import Any, Mapping

import jsonschema
import pyarrow as pa
import yaml

import schemas
from transforms.scan.code_tables import CodeTableError, CodeTables, compile_code_tables
from transforms.scan.normalize import normalize_label
from transforms.core.special_files import special_file
from transforms.core.strict_yaml import load_bounded, load_problem, unique_keys

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
    code_tables: CodeTables  # the tables behind the document numbers (transforms.scan.code_tables)
    not_accepted_documents: tuple[str, ...]  # document types the policy marks ``accepted: false``
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
        return DocumentRules(**kwargs, tables=self.code_tables)


def _fail(source: str, where: str, message: str) -> PolicyError:
    where = f" {where}:" if where else ""
    return PolicyError(f"policy {source}:{where} {message}".replace("\n", " "))


MAX_POLICY_BYTES = 64 << 20  # a policy and its code tables are text; never more is read (/dev/zero given by mistake)


def _read_bytes(path: str) -> bytes:
    if kind := special_file(path):
        raise _NotPolicyText(f"is {kind}, not a policy file")
    if "://" not in path:
        with open(path, "rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    else:
        from apache_beam.io.filesystems import FileSystems  # gs:// and the like (imported only then)

        with FileSystems.open(path) as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    if len(data) > MAX_POLICY_BYTES:
        raise _NotPolicyText(f"is over {MAX_POLICY_BYTES:,} bytes: not a policy file")
    return data


class _NotPolicyText(ValueError):
    """A file that is no policy text (past ``MAX_POLICY_BYTES``, or not a regular file): its message is the
    user's one line."""


def _table_reader(path: str | None):
    """``read(name)`` of the table files a policy lists: a path or URI as given, a bare name beside the
    policy file, else the file of that name shipped beside the default policy."""

    def read(name: str) -> bytes:
        if "://" in name or os.path.isabs(name):
            return _read_bytes(name)
        if path is not None:
            join = posixpath.join if "://" in path else os.path.join
            beside = join(posixpath.dirname(path) if "://" in path else os.path.dirname(path), name)
            try:
                return _read_bytes(beside)
            except Exception:  # not beside the policy: the packaged file of that name, if any
                pass
        return resources.files(schemas).joinpath(name).read_bytes()

    return read


# libyaml's parser where PyYAML has it (the same safe documents, about 8x faster: the default policy is read at the
# start of every step), else PyYAML's own
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


MAX_POLICY_VALUES = 1_000_000  # the default policy holds about 1,000; an operator's division tables add thousands


def _safe_load(text: str):
    return load_bounded(text, unique_keys(_SAFE_LOADER), MAX_POLICY_VALUES)


@functools.lru_cache(maxsize=1)
def _default_raw() -> dict:
    return _safe_load(resources.files(schemas).joinpath("decree25_policy.yaml").read_bytes().decode("utf-8"))


def load_policy(path: str | None = None) -> Policy:
    """Load, validate and compile a policy file (the default if ``path`` is None)."""
    source = path or schemas.policy_path()
    try:
        if path is None:
            data = resources.files(schemas).joinpath("decree25_policy.yaml").read_bytes()
        else:
            data = _read_bytes(path)
    except Exception as exc:  # any unreadable path is one line for the user
        raise _fail(
            source, "", str(exc) if isinstance(exc, _NotPolicyText) else f"cannot be read ({type(exc).__name__})"
        ) from None
    try:
        raw = _safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:  # too large or deep, a repeated key, not YAML
        raise _fail(source, *load_problem(exc, "policy")) from None
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
    return _compile(raw, source, hashlib.sha256(data).hexdigest(), _table_reader(path))


def _tables(raw: dict, source: str, read) -> CodeTables:
    """The policy's code tables; a policy written before they existed gets the default policy's."""
    section = raw.get("code_tables") or _default_raw()["code_tables"]
    if "code_tables" not in raw:
        read = _table_reader(None)
    try:
        return compile_code_tables(section, read)
    except CodeTableError as exc:
        raise _fail(source, "", str(exc)) from None
    except Exception as exc:  # a table file that cannot be read: one line, no path contents
        said = str(exc) if isinstance(exc, _NotPolicyText) else f"cannot be read ({type(exc).__name__})"
        raise _fail(source, "code_tables.divisions.files", said) from None


def _documents(raw: dict, source: str) -> tuple[dict[str, tuple[str, str]], tuple[str, ...]]:
    """(accepted code -> (kind, check), the codes marked ``accepted: false``)."""
    accepted = {code: d for code, d in raw["documents"].items() if d.get("accepted", True)}
    for code, d in accepted.items():
        if "kind" not in d or "check" not in d:
            raise _fail(source, f"documents.{code}", "an accepted document needs a kind and a check")
    refused = tuple(code for code in raw["documents"] if code not in accepted)
    for code in raw["names"].get("han_only_documents") or ():
        if code not in accepted:
            raise _fail(source, "names.han_only_documents", f"{code} is not an accepted document of this policy")
    return {code: (d["kind"], d["check"]) for code, d in accepted.items()}, refused


def _labels(raw: dict, documents: dict, source: str) -> tuple[dict[str, str], dict[str, str]]:
    """(normalised label -> code or NOT_ACCEPTED, normalised review label -> code)."""
    lookup: dict[str, str] = {}

    def add(label: str, target: str, where: str) -> None:
        if lookup.get(label, target) != target:
            raise _fail(source, where, f"label {label!r} maps to both {lookup[label]} and {target}")
        lookup[label] = target

    for code in raw["documents"]:
        add(_norm([code])[0], code if code in documents else NOT_ACCEPTED, "documents")
    for code, labels in raw["labels"].items():
        if code not in raw["documents"]:
            raise _fail(source, f"labels.{code}", "not a document of this policy")
        for label in _norm(labels):  # a document marked not accepted: DOC_TYPE_NOT_ACCEPTED
            add(label, code if code in documents else NOT_ACCEPTED, f"labels.{code}")
    for label in _norm(raw["not_accepted_labels"]):
        add(label, NOT_ACCEPTED, "not_accepted_labels")
    review: dict[str, str] = {}
    for label, code in (raw.get("review_labels") or {}).items():
        if code not in documents:
            raise _fail(source, f"review_labels.{label}", f"{code} is not a document of this policy")
        normalised = _norm([label])[0]
        if normalised in lookup:  # the label would win and the review flag never be set
            raise _fail(
                source, f"review_labels.{label}", f"label {label!r} is also under labels or not_accepted_labels"
            )
        review[normalised] = code
    return lookup, review


def _enums(raw: dict, source: str) -> tuple[dict[str, dict[str, str]], dict[str, tuple[str, ...]]]:
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
    return enums, enum_values


def _compile(raw: dict, source: str, digest: str, read) -> Policy:
    documents, refused = _documents(raw, source)
    lookup, review = _labels(raw, documents, source)
    enums, enum_values = _enums(raw, source)
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
        code_tables=_tables(raw, source, read),
        not_accepted_documents=refused,
        raw=raw,
    )
