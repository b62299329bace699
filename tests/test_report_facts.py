"""The report's Beam job (transforms/compliance/report_facts.py) under TestPipeline, against plain loops.

Random lines, merged-base rows, notices, events and dead letters are made
here; every fact, the past-deadline list, the time to register and the counts
the balance is checked on are computed again with Python loops over the same
rows and compared (assert_that). Run:
.venv/bin/python -m pytest tests/test_report_facts.py -q
"""

from __future__ import annotations

import collections
import datetime as dt
import random
import zoneinfo

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to

from pipelines.io.report_files import HISTORY_SCHEMA, RECEIPTS_SCHEMA, SCAN_SCHEMA
from pipelines.report_finish import summarise
from tests.support.report_oracle import funnel_counts, variant_counts
from tests.support.rows import RUNNER
from transforms.compliance.report_agents import DEAD_LETTER_SCHEMA, EVENT_AGENT_SCHEMA, POLICY_FAILURES, event_agents
from transforms.compliance.report_facts import ReportFacts
from transforms.compliance.report_groups import FACTS
from transforms.compliance.report_lines import BASE_SCHEMA
from transforms.compliance.report_quantiles import first_ranks, pick, quantile_hours, ranks

TZ = "Asia/Shanghai"
CAMPAIGN = "rn-test"
T0 = dt.datetime(2026, 12, 1, 1, 0, tzinfo=dt.timezone.utc)
REGIONS = ["110105", "310101", "440305", None]
STATUSES = ["COMPLETE", "INCOMPLETE", "INVALID"]
REASONS = ["NAME_PLACEHOLDER", "DOC_MISSING", "ADDRESS_MISSING"]
CHANNELS = ["STORE", "AGENT", "ONLINE", None]
AGENTS = ["AG1", "AG2", "AG3", " ", None]
DEAD_REASONS = sorted(POLICY_FAILURES)[:2] + ["UNKNOWN_LINE"]


def _data(seed: int, n: int = 600) -> dict:
    """Rows of every input; some needed lines missing from the base, notices of another campaign, repeats."""
    rng = random.Random(seed)
    scan, base, history = [], [], []
    for i in range(n):
        line = f"L{i:05d}"
        scan.append(
            {
                "line_id": line,
                "region": rng.choice(REGIONS),
                "line_type": rng.choice(["PREPAID", "POSTPAID", "IOT"]),
                "agent_id": rng.choice(AGENTS[:3] + [None]),
                "needs_registration": rng.random() < 0.6,
                "flags": rng.choice([[], [], ["DOC_NAME_CONFLICT"]]),
            }
        )
        if rng.random() < 0.95:
            status = rng.choice(STATUSES)
            event = f"E{i}" if status == "COMPLETE" and rng.random() < 0.8 else None
            at = T0 + dt.timedelta(minutes=rng.randrange(0, 60 * 24 * 30)) if event else None
            base.append(
                {
                    "line_id": line,
                    "status": rng.choice(["ACTIVE", "ACTIVE", "TERMINATED"]),
                    "identity_status": status,
                    "reasons": [] if status == "COMPLETE" else rng.sample(REASONS, rng.randrange(0, 3)),
                    "registered_at": at,
                    "registration_event_id": event,
                    "registration_channel": rng.choice(CHANNELS) if event else None,
                }
            )
        for wave in (1, 2):
            for _ in range(rng.randrange(0, 3)):
                sent = T0 + dt.timedelta(days=14 * (wave - 1), minutes=rng.randrange(0, 60 * 24 * 10))
                campaign = CAMPAIGN if rng.random() < 0.9 else "other"
                channel = rng.choice(["sms", "sms", "call"])  # the same job twice, at times: counted once
                history.append(
                    {
                        "line_id": line,
                        "campaign_id": campaign,
                        "wave": wave,
                        "sent_at": sent,
                        "channel": channel,
                        "job_id": f"{campaign}|{wave}|{channel}|{line}",
                        "variant": ("A", "B")[i % 2] if wave == 1 else None,
                    }
                )
    announcement = {"line_id": None, "campaign_id": CAMPAIGN, "wave": 3, "sent_at": T0, "channel": "announcement"}
    history.append({**announcement, "job_id": f"{CAMPAIGN}|3|announcement|110105"})
    events = [
        {"event_id": rng.choice([f"E{k}" for k in range(n // 2)] + [None]), "agent_id": rng.choice(AGENTS), "order": k}
        for k in range(n)
    ]
    dead = [{"event_id": rng.choice([f"E{k}" for k in range(n)] + [None]), "reason": rng.choice(DEAD_REASONS)}]
    dead += [{"event_id": f"E{k}", "reason": rng.choice(DEAD_REASONS)} for k in range(0, n, 7)]
    data = {"scan": scan, "base": base, "history": history, "events": events, "dead_letters": dead}
    return {**data, "receipts": _receipts(rng, history)}


def _receipts(rng: random.Random, history: list[dict]) -> list[dict]:
    """None, one or two delivery receipts per job, an hour or two after it, of any status."""
    out = []
    for h in history:
        for _ in range(rng.choice([0, 1, 1, 2])):
            late = dt.timedelta(hours=rng.choice([1, 2]))
            status = rng.choice(["DELIVERED", "FAILED"])
            out.append(
                {**{k: h[k] for k in ("line_id", "job_id", "campaign_id")}, "status": status, "at": h["sent_at"] + late}
            )
    return out


SCHEMAS = {
    "scan": SCAN_SCHEMA,
    "base": BASE_SCHEMA,
    "history": HISTORY_SCHEMA,
    "receipts": RECEIPTS_SCHEMA,
    "events": EVENT_AGENT_SCHEMA,
    "dead_letters": DEAD_LETTER_SCHEMA,
}


def _batches(rows: list[dict], schema: pa.Schema, size: int = 97) -> list[pa.Table]:
    tables = [pa.Table.from_pylist(rows[i : i + size], schema=schema) for i in range(0, len(rows), size)]
    if schema is EVENT_AGENT_SCHEMA:  # as the reader makes them: a blank agent is none
        tables = [event_agents(t.select(["event_id", "agent_id"]), t["order"]) for t in tables]
    return tables


# -- the oracle ------------------------------------------------------------------------------------------------


def _notices(data) -> dict:
    first = collections.defaultdict(dict)  # line -> wave -> first sent
    for h in data["history"]:
        if h["campaign_id"] == CAMPAIGN and h["line_id"] is not None:
            waves = first[h["line_id"]]
            waves[h["wave"]] = min(waves.get(h["wave"], h["sent_at"]), h["sent_at"])
    return first


def _expected_lines(data, past_on: bool) -> dict:
    base = {r["line_id"]: r for r in data["base"]}
    notices = _notices(data)
    c = collections.defaultdict(collections.Counter)
    past, micros = set(), []
    for r in (r for r in data["scan"] if r["needs_registration"]):
        m = base.get(r["line_id"])
        complete = m is not None and m["identity_status"] == "COMPLETE"
        registered = complete and m["registration_event_id"] is not None
        waves = notices.get(r["line_id"], {})
        late = past_on and not complete and not (m and m["status"] == "TERMINATED")
        c["headline"].update(needed=1, complete=complete, registered=registered, not_in_merge=m is None)
        c["headline"].update(notified=bool(waves), past_deadline=late)
        c[("region", r["region"])].update(needed=1, complete=complete, registered=registered, past_deadline=late)
        c[("line_type", r["line_type"])].update(needed=1, complete=complete, registered=registered)
        for w in waves:
            c["wave_notified"][w] += 1
        if late:
            past.add(r["line_id"])
        if not complete:
            for reason in m["reasons"] if m else []:
                c["backlog"][("reason", reason)] += 1
            c["backlog"][("identity_status", m["identity_status"] if m else "NOT_IN_MERGE")] += 1
        if registered:
            at = m["registered_at"]
            c["channel"][m["registration_channel"] or "UNKNOWN"] += 1
            c["day"][at.astimezone(zoneinfo.ZoneInfo(TZ)).date()] += 1
            before = {w: s for w, s in waves.items() if s <= at}
            c["wave_registered"][max(before) if before else 0] += 1
            if before:
                micros.append((at - min(before.values())) // dt.timedelta(microseconds=1))
    return {"counters": c, "past": past, "micros": micros}


def _credited(data) -> dict[str, int]:
    base, notices, out = {r["line_id"]: r for r in data["base"]}, _notices(data), {}
    for r in (r for r in data["scan"] if r["needs_registration"]):
        m = base.get(r["line_id"])
        if m and m["identity_status"] == "COMPLETE" and m["registration_event_id"] is not None:
            before = [w for w, s in notices.get(r["line_id"], {}).items() if s <= m["registered_at"]]
            out[r["line_id"]] = max(before) if before else 0
    return out


def _expected_funnel(data) -> dict:
    """wave_channel and wave_variant counted with loops (tests/support/report_oracle.py)."""
    needed, credited = {r["line_id"] for r in data["scan"] if r["needs_registration"]}, _credited(data)
    jobs = [h for h in data["history"] if h["campaign_id"] == CAMPAIGN]
    receipts = [r for r in data["receipts"] if r["campaign_id"] == CAMPAIGN]
    return {
        "wave_channel": funnel_counts(needed, jobs, receipts, credited),
        "wave_variant": variant_counts(needed, jobs, credited),
    }


def _expected_agents(data) -> dict:
    first: dict[str, tuple[int, str | None]] = {}
    for e in data["events"]:
        if e["event_id"] is not None:
            agent = e["agent_id"] if (e["agent_id"] or "").strip() else None
            if e["event_id"] not in first or e["order"] < first[e["event_id"]][0]:
                first[e["event_id"]] = (e["order"], agent)
    reason = {}
    for d in data["dead_letters"]:
        if d["event_id"] is not None:
            reason[d["event_id"]] = min(reason.get(d["event_id"], d["reason"]), d["reason"])
    taken, reasons = collections.defaultdict(collections.Counter), collections.Counter()
    for event_id, (_, agent) in first.items():
        if agent is not None:
            taken[agent]["registrations"] += 1
            if event_id in reason:
                taken[agent]["dead_letters"] += 1
                taken[agent]["failed_policy"] += reason[event_id] in POLICY_FAILURES
                reasons[(agent, reason[event_id])] += 1
    opened = collections.defaultdict(collections.Counter)
    for r in data["scan"]:
        if r["agent_id"] is not None:
            opened[r["agent_id"]].update(
                lines_opened=1, opened_flagged=bool(r["flags"]), opened_needing_registration=r["needs_registration"]
            )
    return {"taken": taken, "reasons": reasons, "opened": opened, "distinct": len(first)}


# -- the pipeline under test -------------------------------------------------------------------------------------


def _as_dicts(facts: dict) -> dict:
    """The facts as {name: {key tuple: {count: n}}} with zero counts left out (as the oracle's Counters)."""
    out = {}
    for name, table in facts.items():
        keys = FACTS[name][0]
        out[name] = {
            tuple(r[k] for k in keys): {k: v for k, v in r.items() if k not in keys and v} for r in table.to_pylist()
        }
    return out


def _check_facts(data, past_on: bool):
    lines, agents = _expected_lines(data, past_on), _expected_agents(data)
    c = lines["counters"]

    def check(found):
        (facts,) = found
        got = _as_dicts(facts)
        assert got["headline"] == {(): {k: v for k, v in c["headline"].items() if v}}
        region = {k[1]: v for k, v in c.items() if isinstance(k, tuple) and k[0] == "region"}
        assert got["region"] == {(r,): {k: v for k, v in cnt.items() if v} for r, cnt in region.items()}
        line_type = {k[1]: v for k, v in c.items() if isinstance(k, tuple) and k[0] == "line_type"}
        assert got["line_type"] == {(t,): {k: v for k, v in cnt.items() if v} for t, cnt in line_type.items()}
        assert got["channel"] == {(k,): {"registrations": v} for k, v in c["channel"].items()}
        assert got["day"] == {(k,): {"registrations": v} for k, v in c["day"].items()}
        assert got["wave_notified"] == {(k,): {"notified": v} for k, v in c["wave_notified"].items()}
        assert got["wave_registered"] == {(k,): {"registered_after": v} for k, v in c["wave_registered"].items()}
        assert got["backlog"] == {k: {"lines": v} for k, v in c["backlog"].items()}
        hours = collections.Counter(m // 3_600_000_000 for m in lines["micros"])
        assert got["hours_to_register"] == {(h,): {"registrations": n} for h, n in hours.items()}
        assert got["history_waves"] == {
            (w,): {"notices": n}
            for w, n in collections.Counter(h["wave"] for h in data["history"] if h["campaign_id"] == CAMPAIGN).items()
        }
        assert got["agent_opened"] == {(a,): dict(v) for a, v in agents["opened"].items()}
        assert got["agent_taken"] == {(a,): {k: n for k, n in v.items() if n} for a, v in agents["taken"].items()}
        assert got["agent_reasons"] == {k: {"n": v} for k, v in agents["reasons"].items()}
        funnel = _expected_funnel(data)
        assert got["wave_channel"] == {k: {n: v for n, v in c.items() if v} for k, c in funnel["wave_channel"].items()}
        assert got["wave_variant"] == {k: {n: v for n, v in c.items() if v} for k, c in funnel["wave_variant"].items()}
        assert funnel["wave_channel"][(1, "sms")]["fell_back_to_call"] > 0 and {
            w for w, _ in funnel["wave_variant"]
        } == {1}

    return check


def _check_time(micros):
    def check(found):
        (time,) = found
        hours = np.array(micros, np.float64) / 3_600_000_000.0
        median, p90 = np.quantile(hours, [0.5, 0.9])
        assert time == (round(float(median), 3), round(float(p90), 3), len(micros))

    return check


def _check_counts(data, past_on):
    lines = _expected_lines(data, past_on)["counters"]["headline"]
    agents = _expected_agents(data)

    def check(found):
        (counts,) = found
        block, problems = summarise(counts)  # every balance (the data lacks 5 % of the lines: no merge named)
        assert problems == [] and all(b["balanced"] for b in block.values() if isinstance(b, dict))
        needed = sum(r["needs_registration"] for r in data["scan"])
        assert block["needed_lines"] == {
            "in": needed,
            "joined": needed - lines["not_in_merge"],
            "not_in_merge": lines["not_in_merge"],
            "balanced": True,
        }
        assert block["base_rows"]["read"] == len(data["base"])
        mine = [h for h in data["history"] if h["campaign_id"] == CAMPAIGN]
        assert block["notices"]["other_campaigns"] == len(data["history"]) - len(mine)
        assert block["notices"]["without_line"] == sum(h["line_id"] is None for h in mine)
        assert block["events"]["distinct"] == agents["distinct"]
        assert block["dead_letters"]["without_event_id"] == sum(d["event_id"] is None for d in data["dead_letters"])
        mine = [r for r in data["receipts"] if r["campaign_id"] == CAMPAIGN]
        assert block["receipts"]["read"] == len(data["receipts"]) and block["receipts"]["balanced"]
        assert block["receipts"]["without_line"] == sum(r["line_id"] is None for r in mine)

    return check


@pytest.mark.parametrize("spill, buckets, past_on", [(True, 5, True), (False, 1, False), (True, 3, False)])
def test_the_facts_equal_a_count_over_every_line(tmp_path, spill, buckets, past_on):
    data = _data(seed=buckets)
    p = BeamTestPipeline(runner=RUNNER)
    inputs = {
        name: p | f"Create{name}" >> beam.Create(_batches(rows, SCHEMAS[name])).with_output_types(pa.Table)
        for name, rows in data.items()
    }
    out = inputs | ReportFacts(
        campaign_id=CAMPAIGN,
        merged=True,
        timezone=TZ,
        past_on=past_on,
        n_buckets=buckets,
        spill_dir=str(tmp_path / "spill") if spill else None,
    )
    expected = _expected_lines(data, past_on)
    assert past_on is bool(expected["past"])  # the data exercises the list when it is on
    assert_that(out.facts, _check_facts(data, past_on), label="facts")
    assert_that(
        out.past | beam.FlatMap(lambda t: t["line_id"].to_pylist()), equal_to(sorted(expected["past"])), label="past"
    )
    assert_that(out.time, _check_time(expected["micros"]), label="time")
    assert_that(out.counts, _check_counts(data, past_on), label="counts")
    p.run().wait_until_finish()


def test_without_a_merge_every_needed_line_is_unmerged_and_nothing_registered():
    data = _data(seed=11, n=200)
    needed = [r for r in data["scan"] if r["needs_registration"]]
    p = BeamTestPipeline(runner=RUNNER)
    scan = p | beam.Create(_batches(data["scan"], SCAN_SCHEMA)).with_output_types(pa.Table)
    out = {"scan": scan} | ReportFacts(
        campaign_id=None, merged=False, timezone=TZ, past_on=True, n_buckets=2, spill_dir=None
    )

    def check(found):
        (facts,) = found
        got = _as_dicts(facts)
        assert got["headline"] == {(): {"needed": len(needed), "past_deadline": len(needed)}}
        assert got["backlog"] == {("identity_status", "UNMERGED"): {"lines": len(needed)}}
        assert "agent_taken" not in got and "channel" in got and got["channel"] == {}

    assert_that(out.facts, check, label="facts")
    assert_that(out.time, equal_to([(None, None, 0)]), label="time")
    p.run().wait_until_finish()


def test_an_unbalanced_count_and_another_base_are_problems():
    counts = {
        "scan_lines": {"read": 10, "needed": 6, "not_needed": 4},
        "needed_lines": {"joined": 5, "not_in_merge": 0},
    }
    block, problems = summarise(counts, scan="s", merge="m")
    assert not block["needed_lines"]["balanced"] and problems == [
        "report counts do not balance for the needed_lines (in 6, joined 5, not_in_merge 0)"
    ]
    counts["needed_lines"] = {"joined": 3, "not_in_merge": 3}
    _, problems = summarise(counts, scan="s", merge="m")
    assert problems == [
        "3 of the 6 lines the scan at s found needing registration are not in the merged base at m: "
        "is it a merge of another base or campaign?"
    ]
    assert summarise(counts, scan="s", merge=None)[1] == []  # without a merge every line is UNMERGED


@pytest.mark.parametrize("seed", range(20))
def test_the_quantiles_by_hour_equal_numpys_over_every_value(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    values = (rng.exponential(rng.uniform(0.1, 100), n) * 3_600_000_000).astype(np.int64)
    if seed % 2:
        values = values // 60_000_000 * 60_000_000  # whole minutes: many ties
    hours = values // 3_600_000_000
    per_hour = collections.Counter(hours.tolist())
    first, wanted, picked = first_ranks(per_hour), ranks(n), {}
    for hour in per_hour:
        picked.update(pick(values[hours == hour], first[hour], wanted))
    assert set(picked) == set(wanted) and len(wanted) <= 4
    median, p90 = np.quantile(values / 3_600_000_000.0, [0.5, 0.9])
    assert quantile_hours(n, picked) == (round(float(median), 3), round(float(p90), 3))
