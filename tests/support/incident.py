"""Builders of the incident scope's Beam tests: merged-base rows and vault key rows drawn at random, and the
expected scope worked out from them in plain Python (a second, row-by-row reading of the rules in
docs/compliance.md, not the code under test).
"""

from __future__ import annotations

import collections
import csv
import glob
import json
import os
import random

import pyarrow as pa

from schemas import arrow_schema
from tests.support.compliance import MERGE_AS_OF, event, run

KEYSET = "ks_incidenttest0001"
GROUPS = {  # identity field group -> the base columns that hold it
    "doc": ("doc_token", "doc_mask"),
    "name": ("name_token", "name_mask"),
    "address": ("address_token", "address_mask"),
    "handler": ("handler_doc_token", "handler_doc_mask", "handler_name_token", "handler_name_mask"),
}
SEALABLE = ("address", "doc_number", "doc_type", "name", "handler_name")


def base_rows(n: int, seed: int) -> list[dict]:
    """``n`` merged-base rows: key versions, regions and identity columns at random, documents shared."""
    rng = random.Random(seed)
    documents = [f"doctoken{i:04d}" for i in range(max(1, n // 3))]
    rows = []
    for i in range(n):
        row = {
            "line_id": f"L{i:06d}",
            "region": rng.choice(["110105", "310101", "440305", None]),
            "join_key_version": rng.choice(["j1", "j1", "j2", None]),
            "vault_key_version": rng.choice(["v1", "v2", None]),
        }
        for columns in GROUPS.values():
            for column in columns:
                row[column] = f"{column}-{i}" if rng.random() < 0.5 else None
        row["doc_token"] = rng.choice(documents) if rng.random() < 0.7 else None
        rows.append(row)
    return rows


def key_rows(base: list[dict], seed: int, strangers: int = 5) -> list[dict]:
    """Vault key rows for about two thirds of the lines, and ``strangers`` for lines the base does not hold."""
    rng = random.Random(seed)
    ids = [r["line_id"] for r in base if rng.random() < 0.66] + [f"X{i:04d}" for i in range(strangers)]
    return [
        {
            "line_id": line,
            "keyset_id": KEYSET,
            "vault_key_version": rng.choice(["v1", "v2", "v3"]),
            "sealed_fields": rng.sample(SEALABLE, rng.randint(0, 4)),
        }
        for line in ids
    ]


def batches(rows: list[dict], size: int, schema: pa.Schema) -> list[pa.Table]:
    names = schema.names
    return [
        pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows[i : i + size]], schema=schema)
        for i in range(0, len(rows), size)
    ]


def base_batches(rows: list[dict], size: int) -> list[pa.Table]:
    full = arrow_schema("merged_line")
    return batches(rows, size, pa.schema([full.field(n) for n in ["line_id", "region", *_BASE_COLUMNS]]))


_BASE_COLUMNS = ["join_key_version", "vault_key_version", *(c for cols in GROUPS.values() for c in cols)]


def key_batches(rows: list[dict], size: int) -> list[pa.Table]:
    schema = pa.schema(
        [
            ("line_id", pa.string()),
            ("keyset_id", pa.string()),
            ("vault_key_version", pa.string()),
            ("sealed_fields", pa.list_(pa.string())),
        ]
    )
    return batches(rows, size, schema)


def _fields(row: dict) -> list[str]:
    return [name for name, columns in GROUPS.items() if any(row[c] is not None for c in columns)]


def expected(base: list[dict], keys: list[dict] | None, *, key_version=None, listed=None) -> tuple[list, dict]:
    """``(affected rows as tuples, the counts the scope must sum to)``; ``keys`` None: no vault read."""
    vault = {k["line_id"]: k for k in keys} if keys is not None else None
    given = set(listed) if listed is not None else None
    in_base = {r["line_id"] for r in base}

    def inside(row) -> bool:
        if given is not None:
            return row["line_id"] in given
        if key_version.startswith("j"):
            return row["join_key_version"] == key_version
        wrapped = vault is not None and vault.get(row["line_id"], {}).get("vault_key_version") == key_version
        return row["vault_key_version"] == key_version or wrapped

    affected = []
    by = collections.defaultdict(collections.Counter)
    documents = set()
    for row in (r for r in base if inside(r)):
        key = vault.get(row["line_id"]) if vault is not None else None
        version = (key or {}).get("vault_key_version") if vault is not None else row["vault_key_version"]
        sealed = sorted(key["sealed_fields"]) if key else ([] if vault is not None else None)
        shreddable = (key is not None) if vault is not None else None
        fields = _fields(row)
        affected.append((row["line_id"], row["region"], fields, row["join_key_version"], version, sealed, shreddable))
        by["region"][row["region"] or "(none)"] += 1
        by["field"].update(fields)
        by["vault_field"].update(sealed or [])
        by["join_key_version"][row["join_key_version"] or "(none)"] += 1
        by["vault_key_version"][version or "(none)"] += 1
        if row["doc_token"] is not None:
            documents.add(row["doc_token"])
    counts = {
        "base": {"rows_in": len(base), "affected": len(affected), "not_affected": len(base) - len(affected)},
        "affected": {
            "lines": len(affected),
            "lines_with_identity": sum(1 for a in affected if a[2]),
            **{name: dict(counter) for name, counter in by.items()},
        },
        "subscribers_by_document": len(documents),
    }
    if vault is not None:
        counts["affected"]["shreddable"] = sum(1 for a in affected if a[6])
        counts["vault"] = {"key_rows": len(keys)}
        if key_version is not None and key_version.startswith("v"):
            stray = [k for k in keys if k["vault_key_version"] == key_version and k["line_id"] not in in_base]
            counts["vault"]["wrapped_not_in_base"] = len(stray)
    if given is not None:
        found = len(given & in_base)
        counts["listed"] = {"rows_joined": len(listed), "distinct": len(given), "found": found}
        counts["listed"]["unknown"] = len(given) - found
    if not affected:  # no batch of affected lines to count, no document to count
        del counts["affected"]
    if not documents:
        del counts["subscribers_by_document"]
    return affected, counts


# -- a merged site of generated lines, and the affected-lines files of a run ----------------------------------------

COLUMNS = [
    "line_id",
    "region",
    "fields",
    "join_key_version",
    "vault_key_version",
    "vault_fields",
    "shreddable",
    "shredded",
]


def build_generated(root, lines: int, seed: int) -> dict:
    """``backfill keys init`` and ``backfill merge`` of ``lines`` generated lines (dev/generate.py) under ``root``."""
    from dev.generate import write_base

    root = str(root)
    keys, base = os.path.join(root, "secure", "keys.json"), os.path.join(root, "base.parquet")
    run("keys", "init", "--keys", keys)
    write_base(base, lines, seed)
    events = os.path.join(root, "events.jsonl")
    with open(events, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({**event(), "line_id": "L0000000001"}, ensure_ascii=False) + "\n")
    out = os.path.join(root, "merge")
    run("merge", "--base", base, "--registrations", events, "--keys", keys, "--out", out, "--as-of", MERGE_AS_OF)
    return {"root": root, "keys": keys, "base": os.path.join(out, "base"), "vault": os.path.join(out, "vault")}


def affected_files(out) -> list[str]:
    return sorted(glob.glob(os.path.join(str(out), "affected_lines", "affected_lines-*.csv")))


def affected_csv(out) -> dict[str, dict]:
    """Every affected-lines file of OUT, each with its header; a line in exactly one row."""
    rows: dict[str, dict] = {}
    assert affected_files(out)
    for path in affected_files(out):
        with open(path, encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            assert reader.fieldnames == COLUMNS
            for row in reader:
                assert row["line_id"] not in rows
                rows[row["line_id"]] = row
    return rows
