"""The merge's domain (transforms/merge/bucket.py, merge_events.py) and its composite under TestPipeline.

Run: .venv/bin/python -m pytest tests/test_merge.py -q
"""

from __future__ import annotations

import pickle

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to

from tests.support.rows import (
    AS_OF,
    CANARY_ADDRESS,
    CANARY_NAME,
    CANARY_NUMBER,
    RUNNER,
    organisation,
    person,
    raw_table,
)
from tests.support.merge import CTX, event, events_table, merged_base, run
from transforms.crypto.keyset import Keyset
from transforms.merge.bucket import IDENTITY_FIELDS, MERGED_SCHEMA
from transforms.merge.composite import MergeCompletedRegistrations, TokenizeAndSealFn
from transforms.crypto.tokenize import Tokenizer
from transforms.crypto.vault import Vault
from transforms.scan.keyed_hash import bucket_of

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
NEW_NUMBER = "440308199901101512"


@pytest.fixture
def keyset():
    return Keyset.generate()


def rows_by_line(table: pa.Table) -> dict[str, dict]:
    return {r["line_id"]: r for r in table.to_pylist()}


def events_balance(counts: dict) -> tuple[int, int]:
    e = counts["events"]
    return e["rows_in"], e.get("applied", 0) + e.get("superseded", 0) + e.get("duplicates", 0) + sum(
        e.get("dead_letters", {}).values()
    )


def test_latest_registered_at_wins_and_a_tie_goes_to_the_larger_event_id(keyset, policy):
    events = [
        event(event_id="E1", registered_at="2026-11-20T10:00:00"),
        event(event_id="E3", registered_at="2026-11-21T09:00:00", doc_number=NEW_NUMBER, name="李四"),
        event(event_id="E2", registered_at="2026-11-21T09:00:00Z"),  # the same instant: E3 > E2
        event(event_id="E9", registered_at="2026-11-21T16:00:00+08:00"),  # 08:00 UTC: earlier
        event(event_id="F1", line_id="L2", registered_at="2026-11-01"),
    ]
    result, counts, dead = run([person(line_id="L1"), person(line_id="L2")], events, keyset, policy)
    lines = rows_by_line(result.base)
    assert lines["L1"]["registration_event_id"] == "E3" and lines["L2"]["registration_event_id"] == "F1"
    assert str(lines["L1"]["registered_at"]) == "2026-11-21 09:00:00+00:00"
    assert lines["L1"]["doc_token"] == Tokenizer(keyset).token("doc_number", NEW_NUMBER)
    assert counts["events"]["applied"] == 2 and counts["events"]["superseded"] == 3
    assert dead.num_rows == 0 and events_balance(counts) == (5, 5)


def test_identical_copies_are_duplicates_and_a_different_body_is_a_conflict(keyset, policy):
    events = [
        event(),
        event(),
        event(event_id=" E1 "),  # the same id, but not the same body as received: EVENT_ID_CONFLICT
        event(event_id="E2", line_id="L2"),
        event(event_id="E2", line_id="L2"),
    ]
    result, counts, dead = run([person(line_id="L1"), person(line_id="L2")], events, keyset, policy)
    assert counts["events"]["duplicates"] == 2 and counts["events"]["applied"] == 2
    assert [(r["reason"], r["event_id"], r["source_row"]) for r in dead.to_pylist()] == [("EVENT_ID_CONFLICT", "E1", 3)]
    assert events_balance(counts) == (5, 5) and result.vault_keys.num_rows == 2


def test_bad_events_are_dead_letters_with_reason_and_event_id_and_no_values(keyset, policy):
    events = [
        event(event_id="E1", line_id="NOPE"),
        event(event_id="E2", line_id="L3"),
        event(event_id="E3", registered_at="2026-11-31T10:00:00"),
        event(event_id="E4", registered_at=None),
        event(event_id=None),
        event(event_id="  "),
        event(event_id="E5", name="测试", address="无"),
        event(event_id="E6", channel="PIGEON"),
        event(event_id="E7", verified_by=None),
        event(event_id="E8", line_id=None),
        event(event_id="E9", line_id="L4"),
        event(event_id="E10", line_id="L5"),
    ]  # an organisation registered without its handler
    base = [
        person(line_id="L1"),
        person(line_id="L3", status="TERMINATED"),
        person(line_id="L4", status="BOGUS"),
        organisation(line_id="L5"),
    ]
    result, counts, dead = run(base, events, keyset, policy)
    got = sorted(
        (r["reason"], r["event_id"], r["line_id"], r["field"])
        for r in dead.to_pylist()
        if r["event_id"] or r["reason"] == "EVENT_ID_MISSING"
    )
    assert got == sorted(
        [
            ("UNKNOWN_LINE", "E1", "NOPE", "line_id"),
            ("LINE_TERMINATED", "E2", "L3", "status"),
            ("BAD_TIMESTAMP", "E3", "L1", "registered_at"),
            ("BAD_TIMESTAMP", "E4", "L1", "registered_at"),
            ("EVENT_ID_MISSING", None, "L1", "event_id"),
            ("EVENT_ID_MISSING", None, "L1", "event_id"),
            ("NAME_PLACEHOLDER", "E5", "L1", None),
            ("BAD_ENUM", "E6", "L1", "channel"),
            ("BAD_ENUM", "E7", "L1", "verified_by"),
            ("LINE_ID_MISSING", "E8", None, "line_id"),
            ("UNKNOWN_LINE", "E9", "L4", "line_id"),
            ("HANDLER_MISSING", "E10", "L5", None),
        ]
    )
    policy_dead = {r["event_id"]: r["detail"] for r in dead.to_pylist() if r["event_id"] in ("E5", "E10")}
    assert policy_dead == {
        "E5": "identity INVALID: NAME_PLACEHOLDER, ADDRESS_PLACEHOLDER",
        "E10": "identity INCOMPLETE: HANDLER_MISSING, DOC_TYPE_NOT_ALLOWED_FOR_KIND",
    }
    assert all(r["step"] == "merge" and r["source_file"] for r in dead.to_pylist())
    text = str(dead.to_pylist())
    assert not any(c in text for c in CANARIES + ("测试",))
    assert counts["events"].get("applied", 0) == 0 and events_balance(counts) == (12, 12)
    assert set(rows_by_line(result.base)) == {"L1", "L3", "L5"}  # L4 is a base dead letter (BAD_ENUM)


def test_a_registration_replaces_the_identity_and_keeps_the_opening_agent(keyset, policy):
    base = [
        person(line_id="L1", name="", address="无", agent_id="AG00001", updated_at="2024-01-01T00:00:00"),
        person(line_id="L1", name="王二", agent_id="AG00001", updated_at="2023-01-01T00:00:00"),
    ]
    result, counts, dead = run(
        base, [event(doc_type="居民身份证", doc_number="１１０１０５１９４９１２３１００２ｘ")], keyset, policy
    )
    (line,) = result.base.to_pylist()
    assert line["agent_id"] == "AG00001" and line["registration_agent_id"] == "AG00777"
    assert (line["identity_status"], line["reasons"], line["needs_registration"]) == ("COMPLETE", [], False)
    assert line["doc_type"] == "RESIDENT_ID" and line["registration_channel"] == "STORE"
    assert line["verified_by"] == "FACE_MATCH" and line["policy_version"] == policy.version
    assert line["doc_token"] == Tokenizer(keyset).token("doc_number", CANARY_NUMBER)  # full-width: the same number
    assert (line["doc_mask"], line["name_mask"], line["address_mask"]) == ("110****2X", "金**", "北京市海淀区****")
    assert line["join_key_version"] == "j1" and line["vault_key_version"] == "v1"
    opened = Vault(keyset).open(result.vault_keys, result.vault_values, "L1")
    assert opened == {
        "doc_type": "居民身份证",
        "doc_number": "１１０１０５１９４９１２３１００２ｘ",
        "name": CANARY_NAME,
        "address": CANARY_ADDRESS,
    }  # the originals, as received
    assert [r["reason"] for r in dead.to_pylist()] == ["DUPLICATE_LINE_ID"]
    assert counts["base"] == {"rows_in": 2, "rows_out": 1, "dead_letters": {"DUPLICATE_LINE_ID": 1}}


def test_base_lines_are_classified_tokenized_and_sealed_as_received(keyset, policy):
    base = [
        person(line_id="L1"),
        person(line_id="L2", name="", address=None),
        person(line_id="L3", doc_type=None, doc_number=None, name=None, address=None),
        organisation(line_id="L4"),
    ]
    result, _, _ = run(base, [], keyset, policy)
    lines = rows_by_line(result.base)
    assert {k: v["identity_status"] for k, v in lines.items()} == {
        "L1": "COMPLETE",
        "L2": "INCOMPLETE",
        "L3": "MISSING",
        "L4": "COMPLETE",
    }
    assert lines["L2"]["reasons"] == ["NAME_MISSING", "ADDRESS_MISSING"] and lines["L2"]["needs_registration"]
    assert lines["L3"]["join_key_version"] is None and lines["L3"]["vault_key_version"] is None
    assert all(lines["L3"][c] is None for c in ("doc_token", "name_token", "address_token", "doc_type"))
    assert lines["L4"]["handler_doc_token"] == lines["L1"]["doc_token"]  # one number, one token, as handler too
    assert lines["L4"]["handler_name_mask"] == "王**" and lines["L4"]["doc_type"] == "USCC"
    assert sorted(result.vault_keys.column("line_id").to_pylist()) == ["L1", "L2", "L4"]
    assert Vault(keyset).open(result.vault_keys, result.vault_values, "L2") == {
        "doc_type": "RESIDENT_ID",
        "doc_number": CANARY_NUMBER,
    }
    assert result.base.schema.equals(MERGED_SCHEMA)
    plain = str(result.base.to_pylist())
    assert not any(c in plain for c in CANARIES)


def test_tokens_are_deterministic_per_version_and_differ_across_fields_and_versions(keyset, policy):
    same = [person(line_id="L1", name="11010519491231002X", address="11010519491231002X")]
    first, _, _ = run(same, [], keyset, policy)
    again, _, _ = run(same, [], keyset, policy)
    assert first.base.equals(again.base)  # same inputs, same keys: the same row
    (line,) = first.base.to_pylist()
    assert len({line["doc_token"], line["name_token"], line["address_token"]}) == 3
    keyset.rotate_join()
    rotated, _, _ = run(same, [], keyset, policy)
    (row2,) = rotated.base.to_pylist()
    assert row2["doc_token"].startswith("j2:") and line["doc_token"].startswith("j1:")
    assert row2["doc_token"] != line["doc_token"] and row2["join_key_version"] == "j2"
    assert Tokenizer(keyset, "j1").token("doc_number", CANARY_NUMBER) == line["doc_token"]


def test_a_merged_base_carries_untouched_lines_and_their_vault_rows(keyset, policy):
    day1, _, _ = run(
        [person(line_id="L1"), person(line_id="L2", name="李四"), person(line_id="L3", name="")],
        [event(line_id="L3")],
        keyset,
        policy,
    )
    events = [
        event(event_id="E2", line_id="L2", name="赵六", registered_at="2026-11-25T00:00:00"),
        event(event_id="E1", line_id="L3"),  # already applied yesterday: a duplicate
        event(event_id="E0", line_id="L3", registered_at="2026-11-01T00:00:00"),
    ]  # older than the line's
    day2, counts, dead = run(
        [],
        events,
        keyset,
        policy,
        kind="merged",
        base=merged_base(day1.base),
        vault_keys=day1.vault_keys,
        vault_values=day1.vault_values,
    )
    before, after = rows_by_line(day1.base), rows_by_line(day2.base)
    assert after["L1"] == before["L1"] and after["L3"] == before["L3"]
    assert after["L2"]["registration_event_id"] == "E2" and after["L2"]["name_token"] != before["L2"]["name_token"]
    assert counts["events"] == {"rows_in": 3, "applied": 1, "superseded": 1, "duplicates": 1, "dead_letters": {}}
    vault = Vault(keyset)
    assert vault.open(day2.vault_keys, day2.vault_values, "L2")["name"] == "赵六"
    assert vault.open(day2.vault_keys, day2.vault_values, "L1") == vault.open(day1.vault_keys, day1.vault_values, "L1")
    keys1, keys2 = rows_by_line(day1.vault_keys), rows_by_line(day2.vault_keys)
    assert keys2["L2"]["dek_id"] == keys1["L2"]["dek_id"]  # a re-registered line keeps its data key
    assert day2.vault_values.num_rows == day1.vault_values.num_rows and dead.num_rows == 0


def test_events_for_a_bucket_without_base_lines_are_unknown(keyset, policy):
    result, counts, dead = run([], [event(line_id="L9")], keyset, policy, base=raw_table([]))
    assert result.base.num_rows == 0 and [r["reason"] for r in dead.to_pylist()] == ["UNKNOWN_LINE"]
    assert events_balance(counts) == (1, 1)


# ---- the composite, as the pipeline runs it -------------------------------------------------------------


@pytest.fixture
def keys_file(tmp_path, keyset):
    path = str(tmp_path / "keys.json")
    keyset.save(path)
    return path


def _summary(tables):
    rows = [r for t in tables for r in t.to_pylist()]
    return sorted((r["line_id"], r["identity_status"], r["registration_event_id"]) for r in rows)


@pytest.mark.parametrize("spill", [True, False])
def test_composite_outputs_dead_letters_counts_and_metrics(policy, keys_file, tmp_path, spill):
    base = [
        raw_table([person(line_id=f"L{i}") for i in range(1, 4)], "one.csv"),
        raw_table([person(line_id="L4", name=""), person(line_id="L1", updated_at="2020-01-01T00:00:00")], "two.csv"),
    ]
    events = [
        events_table([event(line_id="L4"), event(event_id="E2", line_id="L9")], "a.jsonl"),
        events_table([event(line_id="L4"), event(event_id="E3", line_id="L2", channel="FAX")], "b.jsonl"),
    ]
    p = BeamTestPipeline(runner=RUNNER)
    out = {
        "base": p | "Base" >> beam.Create(base),
        "events": p | "Events" >> beam.Create(events),
    } | MergeCompletedRegistrations(
        policy, AS_OF, CTX, keys_file, n_buckets=3, spill_dir=str(tmp_path / "spill") if spill else None
    )
    assert_that(
        out.base | "Lines" >> beam.combiners.ToList() | beam.Map(_summary),
        equal_to(
            [[("L1", "COMPLETE", None), ("L2", "COMPLETE", None), ("L3", "COMPLETE", None), ("L4", "COMPLETE", "E1")]]
        ),
        label="assert:base",
    )
    assert_that(
        out.dead_letter
        | "Dead" >> beam.combiners.ToList()
        | beam.Map(lambda ts: sorted((r["reason"], r["event_id"]) for t in ts for r in t.to_pylist())),
        equal_to([[("BAD_ENUM", "E3"), ("DUPLICATE_LINE_ID", None), ("UNKNOWN_LINE", "E2")]]),
        label="assert:dead_letter",
    )
    assert_that(
        out.vault_keys
        | "Keys" >> beam.combiners.ToList()
        | beam.Map(lambda ts: sorted(r for t in ts for r in t.column("line_id").to_pylist())),
        equal_to([["L1", "L2", "L3", "L4"]]),
        label="assert:vault_keys",
    )

    def check_counts(counts):
        (c,) = counts
        assert c["base"] == {"rows_in": 5, "rows_out": 4, "dead_letters": {"DUPLICATE_LINE_ID": 1}}
        e = c["events"]
        assert (e["rows_in"], e["applied"], e["superseded"], e["duplicates"]) == (4, 1, 0, 1)
        assert e["dead_letters"] == {"BAD_ENUM": 1, "UNKNOWN_LINE": 1}

    assert_that(out.counts, check_counts, label="assert:counts")
    result = p.run()
    result.wait_until_finish()

    def metric(name):
        return sum(c.committed for c in result.metrics().query(MetricsFilter().with_name(name))["counters"])

    assert metric("events_applied") == 1 and metric("lines_merged") == 4 and metric("events_duplicates") == 1


def _by_bucket(elements, n: int):
    """What the composite's ``buckets`` output says: each bucket's (lines, key lines, value lines), and whether
    every line of each table is of its bucket."""
    found = {}
    for bucket, base, keys, values in elements:
        tables = (base, keys, values)
        assert bucket not in found, bucket  # one element per bucket
        assert all((bucket_of(t.column("line_id"), n) == bucket).all() for t in tables if t.num_rows)
        assert base.schema.equals(MERGED_SCHEMA)
        found[bucket] = tuple(sorted(t.column("line_id").to_pylist()) for t in tables)
    return found


def test_the_composite_gives_every_bucket_its_three_tables_together_even_an_empty_one(policy, keys_file, tmp_path):
    """``outputs.buckets``: one element per line bucket, all of them (the writer cuts the files by it), each with
    its merged lines and their vault rows; a bucket with no line has empty tables."""
    n, ids = 8, [f"L{i}" for i in range(1, 4)]
    people = {i: person(line_id=i) for i in ids}
    p = BeamTestPipeline(runner=RUNNER)
    out = {
        "base": p | "Base" >> beam.Create([raw_table(list(people.values()), "one.csv")]),
        "events": p | "Events" >> beam.Create([events_table([event(line_id="L2")], "a.jsonl")]),
    } | MergeCompletedRegistrations(policy, AS_OF, CTX, keys_file, n_buckets=n, spill_dir=str(tmp_path / "spill"))
    expected = {b: ([], [], []) for b in range(n)}
    for line, bucket in zip(ids, bucket_of(pa.array(ids), n)):
        lines, _, _ = expected[int(bucket)]
        lines.append(line)
    for bucket, (lines, keys, values) in expected.items():
        keys += lines
        # one value row per line with any identity value: the line's record (vault format 3)
        values += [line for line in lines if any(people[line].get(f) for f in IDENTITY_FIELDS)]
    assert len({int(b) for b in bucket_of(pa.array(ids), n)}) < n  # some buckets are empty
    assert_that(
        out.buckets | beam.combiners.ToList() | beam.Map(_by_bucket, n), equal_to([expected]), label="assert:buckets"
    )
    p.run().wait_until_finish()


def test_the_tokenize_and_seal_dofn_carries_the_keyset_path_not_its_keys(policy, keys_file):
    import json

    fn = TokenizeAndSealFn(keys_file, policy, AS_OF, CTX, "raw")
    blob = pickle.dumps(fn)
    with open(keys_file, encoding="utf-8") as handle:
        materials = [k["material"] for k in json.load(handle)["keys"]]
    assert keys_file.encode() in blob and not any(m.encode() in blob for m in materials)
    fn.setup()
    with pytest.raises(TypeError):
        pickle.dumps(fn._tokenizer)


def test_retokenize_moves_tokens_and_refuses_a_vault_that_does_not_match(keyset, policy):
    from transforms.merge.retokenize import retokenize_bucket

    day1, _, _ = run(
        [
            person(line_id="L1"),
            person(line_id="L2"),
            person(line_id="L3", name=None, doc_number=None, doc_type=None, address=None),
        ],
        [],
        keyset,
        policy,
    )
    day2, _, _ = run(
        [],
        [event(event_id="E2", line_id="L2", name="赵六")],
        keyset,
        policy,
        kind="merged",
        base=merged_base(day1.base),
        vault_keys=day1.vault_keys,
        vault_values=day1.vault_values,
    )
    keyset.rotate_join()
    tokenizer = Tokenizer(keyset)
    base, failures, counts = retokenize_bucket(
        merged_base(day1.base), day1.vault_keys, day1.vault_values, tokenizer, Vault(keyset), keyset
    )
    lines = rows_by_line(base)
    assert counts == {
        "lines": 3,
        "with_tokens": 2,
        "already_current": 0,
        "retokenized": 2,
        "failed": 0,
        "failed_reasons": {},
    }
    assert lines["L1"]["doc_token"] == tokenizer.token("doc_number", CANARY_NUMBER) == lines["L2"]["doc_token"]
    assert lines["L1"]["join_key_version"] == "j2" and lines["L3"]["join_key_version"] is None
    assert lines["L1"]["doc_mask"] == rows_by_line(day1.base)["L1"]["doc_mask"]
    again, _, counts = retokenize_bucket(
        merged_base(base), day1.vault_keys, day1.vault_values, tokenizer, Vault(keyset), keyset
    )
    assert counts["already_current"] == 2 and again.equals(base)  # a second run changes nothing
    # Yesterday's base with today's vault: L2's name in the vault no longer gives its token back.
    _, failures, counts = retokenize_bucket(
        merged_base(day1.base), day2.vault_keys, day2.vault_values, tokenizer, Vault(keyset), keyset
    )
    assert failures.to_pylist() == [{"line_id": "L2", "reason": "TOKEN_MISMATCH", "field": "name"}]
    assert counts["failed"] == 1 and counts["retokenized"] == 1
