"""Who holds an event id: transforms/merge/event_ids.py (body_digests, take_ids, valid_rows, resolve_copies),
the batch merge's steps over it, transforms/merge/copies.py (split_copies, line_verdicts, resolve_contested),
and the batch merge's composite under TestPipeline (transforms/merge/event_stages.py).

Run: .venv/bin/python -m pytest tests/test_event_ids.py -q
"""

from __future__ import annotations

import itertools
import random

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to

from tests.support.merge import CTX, event, events_table
from tests.support.rows import (
    AS_OF,
    CANARY_ADDRESS,
    CANARY_NAME,
    CANARY_NUMBER,
    RUNNER,
    SALT,
    organisation,
    person,
    raw_table,
)
from transforms.crypto.keyset import Keyset
from transforms.crypto.tokenize import Tokenizer
from transforms.merge.composite import MergeCompletedRegistrations
from transforms.merge.copies import line_verdicts, resolve_contested, split_copies
from transforms.merge.event_ids import (
    CONFLICT,
    DIGEST,
    DUPLICATE,
    OWN,
    TAKE,
    body_digests,
    resolve_copies,
    take_ids,
    valid_rows,
)
from transforms.merge.events import check_events, prepare_events
from transforms.merge.lines import base_lines

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
OTHER_NAME = NEW_NAME = "王五"


@pytest.fixture(scope="module")
def keyset():
    return Keyset.generate()


@pytest.fixture(scope="module")
def lines():
    from transforms.scan.policy import load_policy

    base = raw_table(
        [
            person(line_id="L1"),
            person(line_id="L2"),
            person(line_id="L3", status="TERMINATED"),
            organisation(line_id="L5"),
        ]
    )
    return base_lines(base, "raw", load_policy(), AS_OF, CTX, SALT)[0]


def checked(rows: list[dict], keyset, source: str = "events.jsonl") -> pa.Table:
    """Event rows as the merge has them after the row checks, with their body digest (arrival order kept)."""
    raw = events_table(rows, source)
    events, missing = prepare_events(raw.append_column(DIGEST, body_digests(raw, Tokenizer(keyset))), CTX)
    events, bad = check_events(events, CTX)
    assert missing.num_rows == bad.num_rows == 0
    return events


# ---- body_digests ---------------------------------------------------------------------------------------


def test_a_digest_is_the_same_for_the_same_body_and_differs_for_any_field(keyset):
    rows = [event(), event(), event(name=OTHER_NAME), event(channel="STORE"), event(agent_id=None), event(agent_id="")]
    rows.append({k: v for k, v in event().items() if k != "handler_name"})  # an absent field is a null field
    digests = body_digests(events_table(rows), Tokenizer(keyset)).to_pylist()
    assert digests[0] == digests[1] == digests[6]
    assert len(set(digests[:6])) == 5  # "store" and "STORE", null and "" are different bodies as received
    assert all(d.startswith("j1:") and not any(c in d for c in CANARIES) for d in digests)


def test_a_digest_is_keyed(keyset):
    table = events_table([event()])
    assert body_digests(table, Tokenizer(keyset)) != body_digests(table, Tokenizer(Keyset.generate()))
    assert body_digests(events_table([]), Tokenizer(keyset)).to_pylist() == []


def test_a_digest_after_a_rotation_names_its_version():
    keys = Keyset.generate()
    before = body_digests(events_table([event()]), Tokenizer(keys)).to_pylist()[0]
    keys.rotate_join()
    tokenizer = Tokenizer(keys)
    after = body_digests(events_table([event()]), tokenizer).to_pylist()[0]
    assert before.startswith("j1:") and after.startswith("j2:")
    assert body_digests(events_table([event()]), tokenizer, "j1").to_pylist()[0] == before


# ---- take_ids -------------------------------------------------------------------------------------------


def take(copies: list[tuple[str, str, bool]], held=None, same_body=None):
    ids = pa.array([c[0] for c in copies], pa.string())
    marks = pa.array([c[1] for c in copies], pa.string())
    codes, taken = take_ids(ids, marks, np.array([c[2] for c in copies], bool), held or {}, same_body)
    return list(codes), taken


def test_the_first_valid_copy_takes_the_id_and_invalid_copies_before_it_keep_their_own_letter():
    codes, taken = take([("E1", "j1:a", False), ("E1", "j1:b", False), ("E1", "j1:c", True), ("E1", "j1:a", False)])
    assert codes == [OWN, OWN, TAKE, CONFLICT] and taken == {"E1": "j1:c"}


def test_once_held_the_same_body_is_a_duplicate_and_another_a_conflict_valid_or_not():
    copies = [("E1", "j1:a", True), ("E1", "j1:a", True), ("E1", "j1:b", True), ("E1", "j1:c", False)]
    assert take(copies)[0] == [TAKE, DUPLICATE, CONFLICT, CONFLICT]


def test_ids_are_independent_and_held_ids_count_from_the_start():
    copies = [("E1", "j1:a", True), ("E2", "j1:x", True), ("E3", "j1:y", True), ("E3", "j1:z", True)]
    codes, taken = take(copies, held={"E2": None, "E3": "j1:z"})
    assert codes == [TAKE, DUPLICATE, CONFLICT, DUPLICATE] and taken == {"E1": "j1:a"}


def test_a_digest_of_another_version_is_compared_by_same_body_only():
    copies = [("E1", "j2:new", True), ("E2", "j2:new", True)]
    assert take(copies, held={"E1": "j1:old", "E2": "j1:old"})[0] == [CONFLICT, CONFLICT]
    assert take(copies, held={"E1": "j1:old", "E2": "j1:old"}, same_body=lambda i, held: i == 0)[0] == [
        DUPLICATE,
        CONFLICT,
    ]


# ---- valid_rows and resolve_copies ----------------------------------------------------------------------


def test_valid_rows_checks_each_copy_against_its_line(keyset, policy, lines):
    rows = [
        event(line_id="L1"),
        event(line_id="L9"),  # unknown
        event(line_id="L3"),  # terminated
        event(line_id="L1", name="测试"),  # policy: a placeholder name
        event(line_id="L5"),  # an organisation without its handler
        event(line_id="L2", event_id="E7"),
    ]
    carrying = lines.set_column(
        lines.schema.get_field_index("registration_event_id"),
        "registration_event_id",
        pa.array(["E7" if i == "L2" else None for i in lines.column("line_id").to_pylist()], pa.string()),
    )
    valid, carried = valid_rows(checked(rows, keyset), carrying, policy, AS_OF, CTX, SALT)
    assert list(valid) == [True, False, False, False, False, False] and list(carried) == [False] * 5 + [True]


def test_resolve_copies_sorts_every_copy_into_one_outcome(keyset, policy, lines):
    rows = [
        event(line_id="L9"),  # E1: unknown line, first: keeps UNKNOWN_LINE, takes nothing
        event(line_id="L3"),  # E1: terminated line: LINE_TERMINATED
        event(),  # E1: valid: takes the id
        event(),  # E1: the same body: a duplicate
        event(name=OTHER_NAME),  # E1: another valid body: EVENT_ID_CONFLICT
        event(line_id="L9"),  # E1: the unknown copy again, after the id is held: EVENT_ID_CONFLICT
        event(event_id="E2", line_id="L2", name="测试"),  # E2: policy-invalid, alone: its own reason
    ]
    events = checked(rows, keyset)
    resolved = resolve_copies(events, lines, {}, policy=policy, as_of=AS_OF, ctx=CTX, salt=SALT)
    assert resolved.takers.column("_src_row").to_pylist() == [3]
    assert sorted((r["reason"], r["source_row"]) for r in resolved.dead_letter.to_pylist()) == [
        ("EVENT_ID_CONFLICT", 5),
        ("EVENT_ID_CONFLICT", 6),
        ("LINE_TERMINATED", 2),
        ("NAME_PLACEHOLDER", 7),
        ("UNKNOWN_LINE", 1),
    ]
    assert resolved.duplicates == 1 and set(resolved.taken) == {"E1"}
    assert resolved.takers.num_rows + resolved.dead_letter.num_rows + resolved.duplicates == len(rows)
    assert not any(c in str(resolved.dead_letter.to_pylist()) for c in CANARIES + ("测试",))


# ---- the batch merge's steps (transforms/merge/copies.py) ------------------------------------------------


def test_split_copies_collapses_identical_copies_and_keeps_every_copy_of_a_contested_id(keyset):
    events = pa.concat_tables(
        [
            checked([event(event_id="E2", line_id="L2"), event(), event(name=OTHER_NAME)], keyset, "b.jsonl"),
            checked([event(event_id="E2", line_id="L2"), event(event_id="E3")], keyset, "a.jsonl"),
        ]
    )
    firsts, contested, duplicates = split_copies(events)
    rows = lambda t: [(r["event_id"], r["_src_file"], r["_src_row"]) for r in t.to_pylist()]  # noqa: E731
    assert rows(firsts) == [("E2", "a.jsonl", 1), ("E3", "a.jsonl", 2)] and duplicates == 1
    assert rows(contested) == [("E1", "b.jsonl", 2), ("E1", "b.jsonl", 3)]  # (file, row) order


def batch_path(events: pa.Table, lines: pa.Table, policy):
    """The batch merge's steps in one process: (takers' rows, dead letters, duplicates, firsts)."""
    firsts, contested, duplicates = split_copies(events)
    takers, dead, held = resolve_contested(line_verdicts(contested, lines, policy, AS_OF, CTX, SALT), CTX)
    return takers, dead, duplicates + held, firsts


def random_copies(seed: int) -> list[dict]:
    """Copies of a few event ids, each a valid body, another valid body or an invalid one, shuffled."""
    pick = random.Random(seed)
    variants = [
        {},
        {"name": OTHER_NAME},
        {"line_id": "L9"},
        {"line_id": "L3"},
        {"name": "测试"},
        {"registered_at": "2026-11-25T00:00:00"},
    ]
    rows = []
    for event_id, line_id in (("E1", "L1"), ("E2", "L2"), ("E3", "L1")):
        for _ in range(pick.randint(1, 5)):
            rows.append(event(**{"event_id": event_id, "line_id": line_id, **pick.choice(variants)}))
    pick.shuffle(rows)
    return rows


@pytest.mark.parametrize("seed", range(12))
def test_the_batch_steps_agree_with_resolve_copies(keyset, policy, lines, seed):
    events = checked(random_copies(seed), keyset)
    one = resolve_copies(events, lines, {}, policy=policy, as_of=AS_OF, ctx=CTX, salt=SALT)
    takers, dead, duplicates, firsts = batch_path(events, lines, policy)
    valid_firsts = firsts.filter(pa.array(valid_rows(firsts, lines, policy, AS_OF, CTX, SALT)[0]))
    rows = sorted(itertools.chain(takers.column("_src_row").to_pylist(), valid_firsts.column("_src_row").to_pylist()))
    assert rows == sorted(one.takers.column("_src_row").to_pylist())
    # An id whose copies are identical is decided by its first copy: the line merge dead-letters an invalid one,
    # the others are duplicates (resolve_copies gives each such copy its own dead letter).
    decided_later = firsts.num_rows - valid_firsts.num_rows
    assert takers.num_rows + valid_firsts.num_rows + dead.num_rows + duplicates + decided_later == events.num_rows
    contested = set(takers.column("event_id").to_pylist()) | set(dead.column("event_id").to_pylist())
    expected = sorted((r["reason"], r["source_row"]) for r in one.dead_letter.to_pylist() if r["event_id"] in contested)
    assert sorted((r["reason"], r["source_row"]) for r in dead.to_pylist()) == expected


def test_a_contested_id_that_a_line_already_carries_is_held_from_the_start(keyset, policy, lines):
    carrying = lines.set_column(
        lines.schema.get_field_index("registration_event_id"),
        "registration_event_id",
        pa.array(["E1" if i == "L1" else None for i in lines.column("line_id").to_pylist()], pa.string()),
    )
    events = checked([event(line_id="L9"), event(), event(name=OTHER_NAME)], keyset)
    takers, dead, duplicates, _ = batch_path(events, carrying, policy)
    assert (takers.num_rows, dead.num_rows, duplicates) == (0, 0, 3)


# ---- who holds an event id (docs/contract.md "Registration events"), through the composite ------------------


@pytest.fixture
def keys_file(tmp_path, keyset):
    path = str(tmp_path / "keys.json")
    keyset.save(path)
    return path


BAD_FIRST = {  # a copy that fails, by the reason it fails for (row checks, then its line's checks)
    "BAD_TIMESTAMP": {"registered_at": "2026-11-31T10:00:00"},
    "BAD_ENUM": {"verified_by": "PIGEON"},
    "UNKNOWN_LINE": {"line_id": "L9"},
    "LINE_TERMINATED": {"line_id": "L3"},
    "DOC_NUMBER_CHECKSUM": {"doc_number": "110105194912310021"},  # the policy: an invalid document
}


def merge_with_beam(policy, base_rows, event_files: dict[str, list[dict]], keys_file, tmp_path, spill=False):
    """The composite on one raw base file and event files (name -> rows); its outputs collected as lists."""
    p = BeamTestPipeline(runner=RUNNER)
    events = [events_table(rows, name) for name, rows in event_files.items()]
    out = {
        "base": p | "Base" >> beam.Create([raw_table(base_rows)]),
        "events": p | "Events" >> beam.Create(events),
    } | MergeCompletedRegistrations(
        policy, AS_OF, CTX, keys_file, n_buckets=3, spill_dir=str(tmp_path / "spill") if spill else None
    )

    def rows(label, pcoll):
        return (
            pcoll
            | label >> beam.combiners.ToList()
            | f"{label}Rows" >> beam.Map(lambda ts: [r for t in ts for r in t.to_pylist()])
        )

    return p, rows("Lines", out.base), rows("Dead", out.dead_letter), out.counts


def check_merge(p, lines, dead, counts, *, expect_lines, expect_dead, expect_counts):
    """Assert the merged lines (line -> registration, name token), dead letters and event counts; run."""

    def got_lines(rows):
        return {r["line_id"]: (r["registration_event_id"], r["name_token"]) for r in rows}

    def no_canary(rows):
        assert not any(c in str(rows) for c in CANARIES)
        return sorted((r["reason"], r["event_id"], r["source_file"], r["source_row"]) for r in rows)

    assert_that(lines | beam.Map(got_lines), equal_to([expect_lines]), label="assert:lines")
    assert_that(dead | beam.Map(no_canary), equal_to([sorted(expect_dead)]), label="assert:dead")

    def event_counts(all_counts):
        (c,) = all_counts
        e = c["events"]
        assert {k: e.get(k, 0) for k in expect_counts} == expect_counts
        assert e["rows_in"] == e["applied"] + e.get("superseded", 0) + e.get("duplicates", 0) + sum(
            e["dead_letters"].values()
        )

    assert_that(counts, event_counts, label="assert:counts")
    result = p.run()
    result.wait_until_finish()
    return result


@pytest.mark.parametrize("reason", sorted(BAD_FIRST))
def test_a_bad_copy_first_leaves_the_id_to_the_valid_copy(keyset, policy, keys_file, tmp_path, reason):
    bad = event(**{"line_id": "L2", "name": "错误副本", **BAD_FIRST[reason]})
    good = event(line_id="L2", name=NEW_NAME)
    base = [person(line_id="L1"), person(line_id="L2", name=""), person(line_id="L3", status="TERMINATED")]
    files = {"a.jsonl": [bad], "b.jsonl": [good]}  # file order: the bad copy arrives first
    p, lines, dead, counts = merge_with_beam(policy, base, files, keys_file, tmp_path, spill=reason == "UNKNOWN_LINE")
    token = Tokenizer(keyset)
    check_merge(
        p,
        lines,
        dead,
        counts,
        expect_lines={
            "L1": (None, token.token("name", person()["name"])),
            "L2": ("E1", token.token("name", NEW_NAME)),
            "L3": (None, token.token("name", person()["name"])),
        },
        expect_dead=[(reason, "E1", "a.jsonl", 1)],
        expect_counts={"rows_in": 2, "applied": 1, "duplicates": 0, "dead_letters": {reason: 1}},
    )


def test_two_valid_bodies_the_first_in_file_order_holds_the_id(keyset, policy, keys_file, tmp_path):
    first, second = event(line_id="L1", name=NEW_NAME), event(line_id="L1")  # two valid bodies under E1
    e2, bad = event(event_id="E2", line_id="L2"), event(event_id="E3", line_id="L2", channel="PIGEON")
    files = {
        "b.jsonl": [second, first, e2, bad, bad],  # identical bad copies: each a dead letter (it takes nothing)
        "a.jsonl": [first, e2],
    }
    p, lines, dead, counts = merge_with_beam(
        policy, [person(line_id="L1"), person(line_id="L2")], files, keys_file, tmp_path
    )
    token = Tokenizer(keyset)
    result = check_merge(
        p,
        lines,
        dead,
        counts,
        expect_lines={"L1": ("E1", token.token("name", NEW_NAME)), "L2": ("E2", token.token("name", CANARY_NAME))},
        expect_dead=[
            ("EVENT_ID_CONFLICT", "E1", "b.jsonl", 1),
            ("BAD_ENUM", "E3", "b.jsonl", 4),
            ("BAD_ENUM", "E3", "b.jsonl", 5),
        ],
        expect_counts={"rows_in": 7, "applied": 2, "duplicates": 2},  # b's copy of `first` and of E2
    )

    def metric(name):
        return sum(c.committed for c in result.metrics().query(MetricsFilter().with_name(name))["counters"])

    assert metric("events_contested") == 3 and metric("events_duplicates") == 2


# ---- an id a line of the previous merged base carries (transforms/merge/copies.held_elsewhere) ---------------


def held(pairs: list[tuple[str, str]]) -> pa.Table:
    from transforms.merge.copies import HELD_SCHEMA

    return pa.table([pa.array([e for e, _ in pairs]), pa.array([line for _, line in pairs])], schema=HELD_SCHEMA)


def test_held_pairs_are_the_lines_that_carry_a_registration():
    from transforms.merge.copies import held_pairs

    base = pa.table(
        {"line_id": ["L1", "L2", "L3"], "registration_event_id": ["E1", None, "E3"], "name_token": ["a"] * 3}
    )
    assert held_pairs(base).to_pylist() == [{"event_id": "E1", "line_id": "L1"}, {"event_id": "E3", "line_id": "L3"}]


def test_a_copy_of_an_id_another_line_carries_is_a_conflict_whatever_its_order_or_validity(keyset):
    from transforms.merge.event_steps import split_bucket

    rows = [
        event(event_id="E1", line_id="L2"),  # E1 is L1's: another line, valid -> conflict
        event(event_id="E1", line_id="L1"),  # its own line: goes on (the line merge counts it a duplicate)
        event(event_id="E1", line_id="L9"),  # another, unknown line -> conflict (not UNKNOWN_LINE)
        event(event_id="E2", line_id="L2"),  # not carried: goes on
        event(event_id="E4", line_id="L5"),  # carried by two lines (an older run's): either one's copy goes on
        event(event_id="E4", line_id="L2"),
        event(event_id="E4", line_id="L3"),  # ... a third line's is a conflict
    ]
    events = checked(rows, keyset)
    carried = held([("E1", "L1"), ("E3", "L3"), ("E4", "L5"), ("E4", "L2")])
    firsts, contested, dead, counts = split_bucket(events, carried, CTX)
    letters = sorted((r["reason"], r["event_id"], r["line_id"], r["source_row"]) for r in dead.to_pylist())
    conflicts = [
        i for i, r in enumerate(rows, 1) if (r["event_id"], r["line_id"]) in {("E1", "L2"), ("E1", "L9"), ("E4", "L3")}
    ]
    assert letters == sorted(
        ("EVENT_ID_CONFLICT", rows[i - 1]["event_id"], rows[i - 1]["line_id"], i) for i in conflicts
    )
    assert set(dead.column("detail").to_pylist()) == {"a line of the previous merge carries this event_id"}
    kept = sorted(
        (r["event_id"], r["line_id"])
        for t in (firsts, contested)
        for r in t.select(["event_id", "line_id"]).to_pylist()
    )
    assert kept == sorted(
        (r["event_id"], r["line_id"])
        for r in rows
        if (r["event_id"], r["line_id"]) not in {("E1", "L2"), ("E1", "L9"), ("E4", "L3")}
    )
    assert counts["events"]["dead_letters"] == {"EVENT_ID_CONFLICT": len(conflicts)}
    total = firsts.num_rows + contested.num_rows + dead.num_rows + counts["events"]["duplicates"]
    assert total == events.num_rows
    assert not any(c in str(dead.to_pylist()) for c in CANARIES)


def test_without_held_ids_a_bucket_splits_as_before(keyset):
    from transforms.merge.event_steps import split_bucket

    events = checked(
        [event(event_id="E1", line_id="L2"), event(event_id="E1", line_id="L2"), event(event_id="E2")], keyset
    )
    firsts, contested, dead, counts = split_bucket(events, None, CTX)
    again, contested_again, duplicates = split_copies(events)
    assert dead.num_rows == 0 and counts["events"]["duplicates"] == duplicates == 1
    assert firsts.num_rows == again.num_rows and contested.num_rows == contested_again.num_rows
