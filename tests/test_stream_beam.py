"""The Dataflow streaming merge (MergeStreamWindows, pipelines.merge_streaming.build_streaming_pipeline) on the
local runner: the event-id rule's outcomes in two fixed windows, folders named by window, pane and shard (the
same on a second run, with the same deltas), `backfill compact` of them equal to the batch merge of the same
events, and no DoFn that loads the base in setup() (its memory would grow with the base).

Messages are created in the pipeline at their publish time (TimestampedValue) in place of the Pub/Sub read;
the stateful steps and their event-time timers run on the FnApiRunner as on Dataflow. Expected numbers come
from the plan (tests/support/stream_beam.py): each message with the outcome the rule gives it.
"""

from __future__ import annotations

import collections
import glob
import json
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from tests.support.compact import assert_same_identities, keys_file, write_csv_base
from tests.support.rows import AS_OF, CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, RUNNER, SALT, raw_table
from tests.support.stream_beam import CTX, SOURCE, START, WINDOW, LoadsTheBaseInSetup, base_readers, base_rows
from tests.support.stream_beam import batch_lines, copies, dofns, plan, records, run_stream, seed
from tests.support.stream_cli import assert_same_base, batch_merge_lines, compact

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keys_file(str(tmp_path_factory.mktemp("keys")))


def _reason(sent, policy) -> str:
    """The dead letter a copy gets: its plan's, or (``OWN``) what the line checks say of it."""
    if sent.outcome != "OWN":
        return sent.outcome
    from tests.support.merge import events_table
    from transforms.merge.events import check_events, prepare_events, validate_events
    from transforms.merge.lines import raw_lines

    lines = raw_lines(raw_table(base_rows()), policy, AS_OF, CTX, SALT)[0]
    checked = check_events(prepare_events(events_table([sent.body]), CTX)[0], CTX)[0]
    return validate_events(checked, lines, policy, AS_OF, CTX, SALT)[1].column("reason")[0].as_py()


def _expected(windows, policy) -> dict:
    """Per window start: counts, registered (line, event) pairs, (event_id, reason) of the dead letters."""
    out = {}
    for w, sent in enumerate(windows):
        counts = collections.Counter(messages_in=len(sent))
        dead, registered = collections.Counter(), set()
        for s in sent:
            if s.outcome in ("applied", "superseded"):
                counts[s.outcome] += 1
            elif s.outcome == "duplicate":
                counts["duplicates"] += 1
            else:
                dead[(s.body["event_id"], _reason(s, policy))] += 1
            if s.outcome == "applied":
                registered.add((s.body["line_id"], s.body["event_id"]))
        out[START + w * WINDOW] = {"counts": counts, "dead": dead, "registered": registered}
    return out


def _folder_names(windows) -> set[str]:
    """The folder of each message: its window's start and the shard of its line (else of its source)."""
    from transforms.merge.stream_records import folder_name, shards_of

    recs = records(windows)
    keys = [r["attributes"].get("line_id") or f"{SOURCE}/{r['message_id']}" for r, _ in recs]
    shards = shards_of(pa.array(keys), 4)
    return {folder_name(t - (t % WINDOW), 0, int(s), 4) for (_, t), s in zip(recs, shards)}


def _observed(folders: list[dict]) -> dict:
    out = {}
    for f in folders:
        seen = out.setdefault(int(f["window"][0]), {"counts": collections.Counter(), "dead": collections.Counter()})
        c = f["counts"]
        assert c["messages_in"] == c["applied"] + c["superseded"] + c["duplicates"] + sum(c["dead_letters"].values())
        seen["counts"].update({k: v for k, v in c.items() if k != "dead_letters" and v})
        letters = f["dead_letter"]
        seen["dead"].update(zip(letters.column("event_id").to_pylist(), letters.column("reason").to_pylist()))
        pairs = zip(f["delta"].column("line_id").to_pylist(), f["delta"].column("registration_event_id").to_pylist())
        seen.setdefault("registered", set()).update(pairs)
    return out


def test_the_event_id_rule_in_two_fixed_windows(keys, policy):
    from transforms.merge.stream_composite import MergeStreamWindows

    windows = plan()
    expected, names = _expected(windows, policy), _folder_names(windows)

    def check(folders):
        assert {f["name"] for f in folders} == names and len(folders) == len(names)
        assert {f["name"][:17] for f in folders} == {"w-20261130T100000", "w-20261130T100010"}
        assert all(f["pane"]["index"] == 0 and f["pane"]["timing"] == "ON_TIME" for f in folders)
        assert _observed(folders) == expected
        for f in folders:  # tokens, masks and sealed values only: no identity value in a folder
            text = json.dumps([f["delta"].to_pylist(), f["dead_letter"].to_pylist()], ensure_ascii=False, default=str)
            assert not any(c in text for c in CANARIES)

    with BeamTestPipeline(runner=RUNNER) as p:
        messages = (
            p
            | "Messages" >> beam.Create(records(windows), reshuffle=False)
            | beam.MapTuple(lambda r, t: beam.window.TimestampedValue(r, t))
        )
        base = p | "Base" >> beam.Create([raw_table(base_rows())])
        out = {"messages": messages, "base": base} | MergeStreamWindows(
            keys, policy, AS_OF, CTX, WINDOW, base_kind="raw", source=SOURCE
        )
        assert_that(out.folders, check)
        assert_that(out.base_dead_letter, lambda tables: _no_rows(tables), label="NoBaseDeadLetters")


def _no_rows(tables):
    assert sum(t.num_rows for t in tables) == 0


def _folders(out: str) -> dict[str, str]:
    return {
        os.path.basename(os.path.dirname(p)): os.path.dirname(p) for p in glob.glob(f"{out}/deltas/w-*/window.json")
    }


def test_folders_are_deterministic_and_compact_to_the_batch_merge(keys, policy, tmp_path):
    windows = plan()
    base = str(tmp_path / "base.csv")
    write_csv_base(base, base_rows() + [base_rows()[0] | {"updated_at": "2023-01-01T00:00:00"}])  # L1 twice
    runs = [str(tmp_path / "run1"), str(tmp_path / "run2")]
    for out in runs:
        run_stream(base, keys, out, windows)
    first, second = _folders(runs[0]), _folders(runs[1])
    assert sorted(first) == sorted(second) == sorted(_folder_names(windows))
    totals = collections.Counter()
    for name, folder in first.items():
        delta = pq.read_table(os.path.join(folder, "delta.parquet"))
        assert delta.equals(pq.read_table(os.path.join(second[name], "delta.parquet")))
        with open(os.path.join(folder, "window.json"), encoding="utf-8") as f:
            info = json.load(f)
        assert info["balanced"] and info["pane"]["index"] == 0
        totals.update({k: v for k, v in info["counts"].items() if k != "dead_letters"})
    want = sum((e["counts"] for e in _expected(windows, policy).values()), collections.Counter())
    assert +totals == want
    dead = [json.loads(line) for p in glob.glob(f"{runs[0]}/base_dead_letter/*.jsonl") for line in open(p)]
    assert [(d["reason"], d["line_id"]) for d in dead] == [("DUPLICATE_LINE_ID", "L1")]

    batch_merge_lines(base, batch_lines(windows), keys, str(tmp_path / "batch"))
    compact(base, runs[0], keys, str(tmp_path / "compact"))
    assert_same_base(str(tmp_path / "batch"), str(tmp_path / "compact"))
    registered = [s.body["line_id"] for sent in windows for s in sent if s.outcome == "applied"]
    vaults = (str(tmp_path / "batch" / "vault"), str(tmp_path / "compact" / "vault"))
    assert assert_same_identities(keys, *vaults, registered) == len(registered)


def _built(tmp_path, keys, policy) -> tuple[beam.Pipeline, str]:
    """The streaming merge's pipeline over a CSV base, built (not run); (pipeline, base path)."""
    from pipelines.io.planning import plan_splits
    from pipelines.merge_streaming import build_streaming_pipeline

    base = str(tmp_path / "base.csv")
    write_csv_base(base, base_rows())
    p = beam.Pipeline(runner=RUNNER)
    messages = (
        p
        | "Messages" >> beam.Create(records(plan()), reshuffle=False)
        | "AtPublishTime" >> beam.MapTuple(lambda r, t: beam.window.TimestampedValue(r, t))
    )
    kwargs = dict(subscription=SOURCE, base_kind="raw", encoding="utf-8", keys_path=keys, policy=policy)
    build_streaming_pipeline(
        p,
        base_splits=plan_splits([base], encoding="utf-8")[0],
        as_of=AS_OF,
        ctx=CTX,
        out=str(tmp_path / "out"),
        window_seconds=WINDOW,
        shards=4,
        max_bytes=256 * 1024,
        messages=messages,
        **kwargs,
    )
    return p, base


def test_no_dofn_loads_the_base_in_setup(keys, policy, tmp_path):
    """Memory per worker flat in the base's size, checked on the graph (not timed): the base reaches the job
    only as a bounded read (splits -> batches -> seeds in keyed state); no other DoFn names it or needs it."""
    p, base = _built(tmp_path, keys, policy)
    found = dofns(p)
    kinds = {type(fn).__name__ for _, fn in found}
    assert {
        "IntakeFn",
        "SeedFn",
        "LineContextFn",
        "ValidateFn",
        "EventIdFn",
        "RegistrationFn",
        "BuildFolderFn",
    } <= kinds
    assert any(label.startswith("ReadBase/") for label, _ in found)  # the base: a bounded read in the job
    assert base_readers(found, base) == []
    control = [("MergeStreamWindows/ProcessWindow", LoadsTheBaseInSetup(base))]
    assert base_readers(control, base) == ["MergeStreamWindows/ProcessWindow"]  # the check sees the old design


def test_lines_and_event_ids_live_in_keyed_state(keys, policy, tmp_path):
    """The job's stateful steps, read from its portable graph: what each keeps per key, and its timers."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    p, _ = _built(tmp_path, keys, policy)
    stateful = {}
    for t in p.to_runner_api().components.transforms.values():
        if t.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
            if payload.state_specs or payload.timer_family_specs:
                step = t.unique_name.split("/")[1]
                timers = payload.timer_family_specs
                stateful[step] = (sorted(payload.state_specs), sorted(timers))
                event_time = beam_runner_api_pb2.TimeDomain.EVENT_TIME
                assert all(spec.time_domain == event_time for spec in timers.values()), step
    assert stateful == {
        "LineContext": (["context", "wait_at", "waiting"], ["ts-release"]),
        "TakeEventIds": (["carriers", "held", "wait_at", "waiting"], ["ts-expiry", "ts-release"]),
        "ApplyOrSupersede": (["current"], []),
    }


def test_an_id_held_before_a_join_key_rotation_knows_its_body(tmp_path):
    """A copy taken under the old join key, then the same body digested under the new one: a duplicate; another
    body: EVENT_ID_CONFLICT (the digest under the old version, kept with the copy, is compared)."""
    from tests.support.stream_beam import event
    from transforms.crypto.keyset import Keyset
    from transforms.merge.stream_keyed import EventIdFn

    keyset = Keyset.generate()
    old = keyset.primary_join_version
    new = keyset.rotate_join()
    keys = str(tmp_path / "keys.json")
    keyset.save(keys)
    body = event("E1", "L1", "2026-11-20T10:00:00")
    taker = copies(keys, [body], [old])[0]
    same, other = copies(keys, [body, {**body, "channel": "STORE"}], [new, old])
    sent = [("E1", (e, None, True, False, None)) for e in (taker, same, other)]
    with BeamTestPipeline(runner=RUNNER) as p:
        out = (
            p | beam.Create(sent, reshuffle=False) | beam.ParDo(EventIdFn(CTX)).with_outputs("outcomes", main="takers")
        )
        assert_that(out.takers | beam.Map(lambda kv: kv[1][0][0]), lambda ids: _equal(ids, ["E1"]), label="Takes")
        kinds = out.outcomes | beam.Map(lambda o: o[1][1][1] if o[1][0] == "dead" else o[1][0])
        assert_that(kinds, lambda got: _equal(sorted(got), ["EVENT_ID_CONFLICT", "duplicate"]), label="Outcomes")


def _equal(got, want):
    assert list(got) == want


def test_copies_wait_for_the_carriers_then_go_in_time_order(keys):
    """EventIdFn alone, elements in this order: E1's copies come before the base's carrier of E1 (line L1): they
    wait for the watermark, so the copy on L2 (valid, first) is EVENT_ID_CONFLICT with the batch merge's detail
    and L1's own copy a duplicate; E2's copies are decided by their time, not their arrival: the earlier one,
    sent second, takes the id."""
    from tests.support.stream_beam import event
    from transforms.crypto.keyset import Keyset
    from transforms.merge.copies import HELD_DETAIL
    from transforms.merge.stream_keyed import EventIdFn
    from transforms.merge.stream_records import DEAD_SCHEMA, E_TS

    bodies = [
        event("E1", "L2", "2026-11-21T10:00:00"),
        event("E1", "L1", "2026-11-20T10:00:00"),
        event("E2", "L3", "2026-11-20T10:00:00"),
        event("E2", "L3", "2026-11-20T11:00:00"),
    ]
    ev = copies(keys, bodies, [Keyset.load(keys).primary_join_version])
    late, early = (e[:E_TS] + (e[E_TS] + shift,) + e[E_TS + 1 :] for e, shift in ((ev[2], 5), (ev[3], 0)))
    sent = [
        ("E1", (ev[0], None, True, False, None)),
        ("E1", (ev[1], None, False, True, None)),  # its line carries E1
        ("E2", (late, None, True, False, None)),
        ("E2", (early, None, True, False, None)),
        ("E1", ("c", "L1")),
    ]
    reason, line, detail = (DEAD_SCHEMA.names.index(n) for n in ("reason", "line_id", "detail"))

    def outcome(o):
        kind, payload = o[1]
        return (payload[reason], payload[line], payload[detail]) if kind == "dead" else (kind, None, None)

    with BeamTestPipeline(runner=RUNNER) as p:
        out = (
            p | beam.Create(sent, reshuffle=False) | beam.ParDo(EventIdFn(CTX)).with_outputs("outcomes", main="takers")
        )
        takers = out.takers | beam.Map(lambda kv: (kv[1][0][0], kv[1][0][E_TS]))
        assert_that(takers, lambda got: _equal(got, [("E2", early[E_TS])]), label="Takes")
        want = [("EVENT_ID_CONFLICT", "L2", HELD_DETAIL), ("duplicate", None, None)]
        want.append(("EVENT_ID_CONFLICT", "L3", "another copy of this event_id with a different body holds the id"))
        got = out.outcomes | beam.Map(outcome)
        assert_that(got, lambda got: _equal(sorted(got, key=str), sorted(want, key=str)), label="Outcomes")


def test_a_line_context_takes_seeds_and_events_in_any_order(keys):
    """LineContextFn alone, elements in this order: an event of a seeded line goes on at once with its context
    (a later, newer seed replaces it: DUPLICATE_LINE_ID for the older); an event of a line not seeded waits
    for the watermark, behind any earlier waiting event of its line, then goes on with the line's context or
    with none."""
    from apache_beam.metrics.metric import MetricsFilter

    from tests.support.rows import person
    from tests.support.stream_beam import event
    from transforms.crypto.keyset import Keyset
    from transforms.merge.stream_keyed import LineContextFn
    from transforms.merge.stream_records import C_ROW

    old = seed(person(line_id="L1", updated_at="2023-01-01T00:00:00"), 1)
    line2 = seed(person(line_id="L2"), 2)
    new = seed(person(line_id="L1", updated_at="2024-06-01T00:00:00"), 3)
    lines = ["L1", "L1", "L9", "L2", "L2"]
    bodies = [event(f"E{i}", line, "2026-11-20T10:00:00") for i, line in enumerate(lines)]
    ev = copies(keys, bodies, [Keyset.load(keys).primary_join_version])
    order = [("s", old), ("e", ev[0]), ("s", new), ("e", ev[1]), ("e", ev[2]), ("e", ev[3]), ("s", line2), ("e", ev[4])]
    elements = [(v[0] if k == "s" else v[1], (k, v)) for k, v in order]
    want = [("E0", 1), ("E1", 3), ("E2", None), ("E3", 2), ("E4", 2)]
    p = beam.Pipeline(runner=RUNNER)
    out = (
        p
        | beam.Create(elements, reshuffle=False)
        | beam.ParDo(LineContextFn(CTX)).with_outputs("base_dead_letter", main="events")
    )
    pairs = out.events | beam.Map(lambda ec: (ec[0][0], None if ec[1] is None else ec[1][C_ROW]))
    assert_that(pairs, lambda got: _equal(sorted(got, key=str), sorted(want, key=str)), label="Contexts")
    dead = out.base_dead_letter | beam.FlatMap(lambda t: zip(t["reason"].to_pylist(), t["source_row"].to_pylist()))
    assert_that(dead, lambda got: _equal(got, [("DUPLICATE_LINE_ID", 1)]), label="Duplicate")
    result = p.run()
    result.wait_until_finish()
    waited = result.metrics().query(MetricsFilter().with_name("stream_events_waited"))["counters"]
    assert sum(c.committed for c in waited) == 3  # E2, E3 (no seed yet) and E4 (behind E3)


def test_on_a_merged_base_a_line_that_carries_the_event_holds_its_id(keys, tmp_path):
    """The stream on a merge's OUT/base: a copy of an event its line already carries is a duplicate (whatever
    its body), an event older than the line's registration is superseded; compacted with the base's vault,
    the result is the daily batch merge of the same events onto the same base."""
    from tests.support.compact import batch_merge
    from tests.support.compact import compact as compact_with
    from tests.support.stream_beam import Sent, event

    raw = str(tmp_path / "base.csv")
    write_csv_base(raw, base_rows())
    e1, e7 = event("E1", "L1", "2026-11-20T10:00:00"), event("E7", "L5", "2026-11-21T10:00:00")
    day1 = str(tmp_path / "day1")
    batch_merge([raw], [e1, e7], keys, day1)
    windows = [
        [
            Sent(e1, "duplicate"),
            Sent({**e1, "channel": "STORE"}, "duplicate"),  # the line holds E1: any copy is a duplicate
            Sent(event("E8", "L5", "2026-11-20T09:00:00"), "superseded"),  # older than the base's E7
            Sent(event("E2", "L2", "2026-11-20T10:00:00"), "applied"),
        ]
    ]
    stream = str(tmp_path / "stream")
    run_stream(os.path.join(day1, "base"), keys, stream, windows)
    totals = collections.Counter()
    for folder in _folders(stream).values():
        with open(os.path.join(folder, "window.json"), encoding="utf-8") as f:
            totals.update({k: v for k, v in json.load(f)["counts"].items() if k != "dead_letters"})
    assert +totals == collections.Counter(messages_in=4, duplicates=2, superseded=1, applied=1)
    vault = ("--vault", os.path.join(day1, "vault"))
    batch_merge([os.path.join(day1, "base")], [s.body for s in windows[0]], keys, str(tmp_path / "day2"), *vault)
    compact_with([os.path.join(day1, "base")], stream, keys, str(tmp_path / "compact"), *vault)
    assert_same_base(str(tmp_path / "day2"), str(tmp_path / "compact"))


def test_on_a_merged_base_an_id_a_line_carries_is_held_from_the_start(keys, tmp_path):
    """The batch merge's rule (transforms/merge/copies.py ``held_elsewhere``): an event id that a line of the
    previous merge carries is held by that line from the start. A copy of it on another line, valid on its
    own and first in its window, is EVENT_ID_CONFLICT (the batch merge's detail) and takes nothing; the
    copy on the carrying line is a duplicate; compacted, the stream is the daily batch merge."""
    from tests.support.compact import batch_merge
    from tests.support.compact import compact as compact_with
    from tests.support.stream_beam import Sent, event
    from transforms.merge.copies import HELD_DETAIL

    raw = str(tmp_path / "base.csv")
    write_csv_base(raw, base_rows())
    e1 = event("E1", "L1", "2026-11-20T10:00:00")
    day1 = str(tmp_path / "day1")
    batch_merge([raw], [e1], keys, day1)
    windows = [
        [
            Sent(event("E1", "L2", "2026-11-21T10:00:00"), "EVENT_ID_CONFLICT"),  # L1 holds E1: first, valid, no
            Sent(e1, "duplicate"),  # the carrying line's own copy
            Sent(event("E2", "L3", "2026-11-20T10:00:00"), "applied"),
        ]
    ]
    stream = str(tmp_path / "stream")
    run_stream(os.path.join(day1, "base"), keys, stream, windows)
    totals, letters = collections.Counter(), []
    for folder in _folders(stream).values():
        with open(os.path.join(folder, "window.json"), encoding="utf-8") as f:
            counts = json.load(f)["counts"]
        dead = sum(counts["dead_letters"].values())
        assert counts["messages_in"] == counts["applied"] + counts["superseded"] + counts["duplicates"] + dead
        totals.update({k: v for k, v in counts.items() if k != "dead_letters"} | {"dead_letters": dead})
        with open(os.path.join(folder, "dead_letter.jsonl"), encoding="utf-8") as f:
            letters += [json.loads(line) for line in f]
    assert +totals == collections.Counter(messages_in=3, applied=1, duplicates=1, dead_letters=1)
    got = [(d["reason"], d["event_id"], d["line_id"], d["detail"]) for d in letters]
    assert got == [("EVENT_ID_CONFLICT", "E1", "L2", HELD_DETAIL)]
    vault = ("--vault", os.path.join(day1, "vault"))
    batch_merge([os.path.join(day1, "base")], [s.body for s in windows[0]], keys, str(tmp_path / "day2"), *vault)
    compact_with([os.path.join(day1, "base")], stream, keys, str(tmp_path / "compact"), *vault)
    assert_same_base(str(tmp_path / "day2"), str(tmp_path / "compact"))
    before, after = (_registrations(out) for out in (day1, str(tmp_path / "compact")))
    assert after["L2"] == before["L2"] is None and after["L1"] == before["L1"] == "E1"  # L2 did not move


def _registrations(out: str) -> dict:
    """line_id -> registration_event_id of a merge's or compact's OUT/base."""
    base = pq.read_table(os.path.join(out, "base"))
    return dict(zip(base["line_id"].to_pylist(), base["registration_event_id"].to_pylist()))
