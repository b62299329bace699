"""Cross-record logic on one bucket: dedup, document flags, bucket stability."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from tests.support.rows import AS_OF, CTX, SALT, organisation, person, raw_table
from transforms.scan.classify import classify_batch, finalize
from transforms.scan.crossrecord import (
    apply_exceptions,
    batch_id,
    bucket_of,
    deduplicate,
    document_flags,
    document_keys,
    key_table,
)
from transforms.scan.composite import rows_for_finalize


def classified(rows, policy):
    return classify_batch(raw_table(rows), policy, AS_OF, CTX, SALT).classified


def cross(rows, policy, split=None):
    """The scan's cross-record path on one bucket; ``split`` cuts the input into two batches."""
    table = classified(rows, policy)
    parts = [table] if split is None else [table.slice(0, split), table.slice(split)]
    batches = [batch_id("base.csv", i) for i in range(len(parts))]
    keys = pa.concat_tables([key_table(t, b) for t, b in zip(parts, batches)])
    kept, drops, dead = deduplicate(keys, CTX)
    flags = document_flags(document_keys(kept), policy.doc_line_limit)
    full = pa.concat_tables([rows_for_finalize(t, b).drop_columns(["_bucket"]) for t, b in zip(parts, batches)])
    final = finalize(apply_exceptions(full, pa.concat_tables([drops, flags])))
    return {r["line_id"]: r for r in final.to_pylist()}, dead.to_pylist()


def test_dedup_keeps_latest_updated_at(policy):
    rows, dead = cross(
        [
            person(line_id="A", name="旧名", updated_at="2024-01-01T00:00:00"),
            person(line_id="A", name="新名", updated_at="2024-06-01T08:00:00+08:00"),
            person(line_id="A", name="中名", updated_at="2024-03-01T00:00:00"),
            person(line_id="B"),
        ],
        policy,
    )
    assert sorted(rows) == ["A", "B"]
    assert sorted((d["reason"], d["source_row"]) for d in dead) == [("DUPLICATE_LINE_ID", 1), ("DUPLICATE_LINE_ID", 3)]


def test_dedup_tie_goes_to_the_later_row(policy):
    rows, dead = cross([person(line_id="A", name=""), person(line_id="A")], policy)
    assert rows["A"]["identity_status"] == "COMPLETE"
    assert [d["source_row"] for d in dead] == [1]


def test_doc_name_conflict(policy):
    rows, _ = cross(
        [
            person(line_id="A", name="张三"),
            person(line_id="B", name="李四"),
            person(line_id="C", name="王五", doc_number="440308199901101512"),
            person(line_id="D", name="张 三", doc_number="440308199901101512"),
        ],
        policy,
    )
    assert rows["A"]["flags"] == rows["B"]["flags"] == ["DOC_NAME_CONFLICT"]
    assert rows["A"]["needs_review"] is True
    # Different names after normalisation only: 张 三 is not 王五 -> conflict too.
    assert rows["C"]["flags"] == ["DOC_NAME_CONFLICT"]


def test_same_name_after_normalisation_is_not_a_conflict(policy):
    rows, _ = cross([person(line_id="A", name="阿卜杜拉·买买提"), person(line_id="B", name="阿卜杜拉・买买提")], policy)
    assert rows["A"]["flags"] == rows["B"]["flags"] == []


def test_doc_line_limit_counts_non_terminated_individual_lines(policy):
    limit = policy.doc_line_limit
    active = [person(line_id=f"A{i}") for i in range(limit)]
    terminated = [person(line_id=f"T{i}", status="TERMINATED", terminated_on="2020-01-01") for i in range(3)]
    rows, _ = cross(active + terminated, policy)
    assert all(r["flags"] == [] for r in rows.values())  # exactly the limit: fine
    rows, _ = cross(active + terminated + [person(line_id="X")], policy)
    assert all(rows[f"A{i}"]["flags"] == ["DOC_LINE_LIMIT"] for i in range(limit))
    assert rows["X"]["flags"] == ["DOC_LINE_LIMIT"]
    assert all(rows[f"T{i}"]["flags"] == [] for i in range(3))


def test_line_limit_ignores_organisations(policy):
    rows, _ = cross([organisation(line_id=f"O{i}") for i in range(8)], policy)
    assert all(r["flags"] == [] for r in rows.values())


def test_exceptions_reach_rows_across_batches(policy):
    rows = [person(line_id=f"A{i}") for i in range(6)] + [person(line_id="A0", updated_at="2030-01-01T00:00:00")]
    whole, dead_whole = cross(rows, policy)
    split, dead_split = cross(rows, policy, split=3)
    assert whole == split and len(dead_whole) == len(dead_split) == 1
    assert all(r["flags"] == ["DOC_LINE_LIMIT"] for r in split.values())


def test_key_tables_carry_no_plaintext(policy):
    keys = key_table(classified([person(line_id="A")], policy), 1)
    assert set(keys.column_names) == {
        "line_id",
        "_updated_at",
        "_src_file",
        "_src_row",
        "_doc_key",
        "_name_key",
        "_active_person",
        "_batch",
        "_index",
    }
    blob = repr(keys.to_pylist())
    assert "11010519491231002X" not in blob and "张三" not in blob


@pytest.mark.e2e
def test_buckets_are_stable_across_processes():
    values = pa.array([f"L{i:08d}" for i in range(1000)])
    here = bucket_of(values, 17)
    code = (
        "import pyarrow as pa; from transforms.scan.crossrecord import bucket_of;"
        "print(bucket_of(pa.array([f'L{i:08d}' for i in range(1000)]), 17).tolist())"
    )
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert [int(x) for x in there.strip()[1:-1].split(",")] == here.tolist()
    assert set(np.unique(here)) == set(range(17))


def test_malformed_numbers_are_left_out_of_cross_record_checks(policy):
    junk = "1.10105E+17"
    rows, _ = cross(
        [person(line_id=f"J{i}", doc_number=junk, name=n) for i, n in enumerate(["张三", "李四"] * 4)], policy
    )
    assert all(r["reasons"] == ["DOC_NUMBER_FORMAT"] and r["flags"] == [] for r in rows.values())
