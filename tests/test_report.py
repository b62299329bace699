"""`backfill report` over a real small campaign: every table against an independent per-row count.

The campaign is made by the real steps (generate, scan, keys, notify waves 1
and 2, two rounds of simulated registrations, two daily merges); canary
identity values are planted in the base and in an event. The expected
figures are computed here from the step outputs with plain Python loops,
not with the code under test. Run:
.venv/bin/python -m pytest tests/test_report.py -q
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import json
import os
import shutil
import statistics
import zoneinfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from dev import generate
from dev.simulate import CARELESS_AGENT
from pipelines import merge, notify, report, scan
from schemas import policy_path
from tests.support.report import AFTER_DEADLINE, CANARIES, REG1, SCAN_DAY, build_campaign
from tests.support.report import report_args
from tests.support.rows import CANARY_NAME
from transforms.core.reasons import LINE_REASONS

TZ = zoneinfo.ZoneInfo("Asia/Shanghai")


def _strict_policy(tmp: str) -> str:
    """The default policy with agent thresholds small data can reach."""
    with open(policy_path(), encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    raw["agents"] = {"min_registrations": 5, "max_failed_share": 0.2, "min_lines_opened": 10, "max_flagged_share": 0.05}
    path = os.path.join(tmp, "policy.yaml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(raw, handle, allow_unicode=True)
    return path


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    built = build_campaign(str(tmp_path_factory.mktemp("campaign")))
    path, policy = built["path"], _strict_policy(built["root"])
    manifest = report.run(report_args(path, path("report"), AFTER_DEADLINE, "--policy", policy))
    return {**built, "manifest": manifest, "policy": policy}


# -- the oracle: plain loops over the step outputs ------------------------------------------------------------------


def _rows(folder: str) -> list[dict]:
    return pq.read_table(folder).to_pylist()


def _events(paths) -> dict[str, str | None]:
    agents = {}
    for p in paths:
        with open(p, encoding="utf-8") as handle:
            for line in handle:
                e = json.loads(line)
                agents.setdefault(e["event_id"], (e.get("agent_id") or "").strip() or None)
    return agents


def _dead(paths) -> dict[str, str]:
    out = {}
    for p in paths:
        for name in os.listdir(os.path.join(p, "dead_letter")):
            with open(os.path.join(p, "dead_letter", name), encoding="utf-8") as handle:
                for line in handle:
                    d = json.loads(line)
                    if d.get("event_id"):
                        out[d["event_id"]] = min(d["reason"], out.get(d["event_id"], d["reason"]))
    return out


def _first_notices(path) -> dict:
    """line -> wave -> its first notice of the campaign."""
    history = [r for r in _rows(path("notify", "history", "jobs")) if r["line_id"] and r["campaign_id"] == "rn-2026-q4"]
    notices = collections.defaultdict(dict)
    for h in history:
        prev = notices[h["line_id"]].get(h["wave"])
        notices[h["line_id"]][h["wave"]] = h["sent_at"] if prev is None else min(prev, h["sent_at"])
    return notices


def _expected(path, thresholds, as_of: dt.date) -> dict:
    scan_rows = _rows(path("scan", "classified"))
    merged = {r["line_id"]: r for r in _rows(path("merge-2", "base"))}
    needed = [r for r in scan_rows if r["needs_registration"]]
    notices = _first_notices(path)
    deadline, last_wave = dt.date(2027, 1, 31), dt.date(2026, 12, 15)
    past_on = as_of > deadline and as_of >= last_wave
    out = {
        "needed": len(needed),
        "complete": 0,
        "registered": 0,
        "region": collections.defaultdict(collections.Counter),
        "line_type": collections.defaultdict(collections.Counter),
        "channel": collections.Counter(),
        "wave_notified": collections.Counter(),
        "wave_registered": collections.Counter(),
        "day": collections.Counter(),
        "backlog": collections.Counter(),
        "hours": [],
        "past": set(),
    }
    needed_ids = {r["line_id"] for r in needed}
    for line_id, waves in notices.items():
        if line_id in needed_ids:
            for w in waves:
                out["wave_notified"][w] += 1
    for r in needed:
        m = merged.get(r["line_id"])
        complete = m is not None and m["identity_status"] == "COMPLETE"
        registered = complete and m["registration_event_id"] is not None
        region, line_type = out["region"][r["region"]], out["line_type"][r["line_type"]]
        region["needed"] += 1
        line_type["needed"] += 1
        if complete:
            out["complete"] += 1
            region["complete"] += 1
            line_type["complete"] += 1
        else:
            for reason in m["reasons"] if m else []:
                out["backlog"][("reason", reason)] += 1
            out["backlog"][("identity_status", m["identity_status"] if m else "NOT_IN_MERGE")] += 1
            if past_on and not (m and m["status"] == "TERMINATED"):
                out["past"].add(r["line_id"])
                region["past_deadline"] += 1
        if registered:
            out["registered"] += 1
            region["registered"] += 1
            line_type["registered"] += 1
            out["channel"][m["registration_channel"]] += 1
            at = m["registered_at"]
            out["day"][at.astimezone(TZ).date()] += 1
            before = {w: s for w, s in notices.get(r["line_id"], {}).items() if s <= at}
            out["wave_registered"][max(before) if before else 0] += 1
            if before:
                out["hours"].append((at - min(before.values())).total_seconds() / 3600)
    out["agents"], out["over"] = _expected_agents(path, scan_rows, thresholds)
    return out


def _expected_agents(path, scan_rows: list[dict], thresholds) -> tuple[dict, set]:
    """Per agent: registrations taken and failed (first copy of each event), lines opened; those over a threshold."""
    events = _events([path("events", "r1.jsonl"), path("events", "r2.jsonl")])
    dead = _dead([path("merge-1"), path("merge-2")])
    agents = collections.defaultdict(collections.Counter)
    for event_id, agent in events.items():
        if agent:
            agents[agent]["registrations"] += 1
            if event_id in dead:
                agents[agent]["dead_letters"] += 1
                agents[agent]["failed_policy"] += dead[event_id] in LINE_REASONS
    for r in scan_rows:
        if r["agent_id"]:
            agents[r["agent_id"]]["lines_opened"] += 1
            agents[r["agent_id"]]["opened_flagged"] += bool(r["flags"])
            agents[r["agent_id"]]["opened_needing_registration"] += bool(r["needs_registration"])
    over = set()
    for agent, c in agents.items():
        if (
            c["registrations"] >= thresholds["min_registrations"]
            and c["dead_letters"] / c["registrations"] > thresholds["max_failed_share"]
        ):
            over.add(agent)
        if (
            c["lines_opened"] >= thresholds["min_lines_opened"]
            and c["opened_flagged"] / c["lines_opened"] > thresholds["max_flagged_share"]
        ):
            over.add(agent)
    return agents, over


def _csv(path, name) -> list[dict]:
    with open(path("report", "csv", f"{name}.csv"), encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def expected(campaign):
    return _expected(
        campaign["path"],
        {"min_registrations": 5, "max_failed_share": 0.2, "min_lines_opened": 10, "max_flagged_share": 0.05},
        dt.date.fromisoformat(AFTER_DEADLINE),
    )


def test_headline_figures_match_a_direct_count(campaign, expected):
    c = campaign["manifest"]["completion"]
    assert expected["needed"] > 500 and expected["registered"] > 300  # the data exercises the figures
    assert c["needed"] == expected["needed"]
    assert c["complete"] == expected["complete"]
    assert c["registered"] == expected["registered"]
    assert c["completion_rate"] == pytest.approx(expected["complete"] / expected["needed"], abs=1e-6)
    assert c["remaining"] == expected["needed"] - expected["complete"]
    assert c["past_deadline"] == len(expected["past"]) > 0
    assert c["hours_to_register_median"] == pytest.approx(statistics.median(expected["hours"]), abs=1e-3)
    assert c["hours_to_register_p90"] == pytest.approx(float(np.quantile(expected["hours"], 0.9)), abs=1e-3)
    assert c["registrations_timed"] == len(expected["hours"])


def test_region_and_line_type_tables(campaign, expected):
    path = campaign["path"]
    regions = {r["region"]: r for r in _csv(path, "by_region")}
    assert set(regions) == set(expected["region"])
    for region, want in expected["region"].items():
        got = regions[region]
        assert int(got["needed"]) == want["needed"]
        assert int(got["complete"]) == want["complete"]
        assert int(got["registered"]) == want["registered"]
        assert int(got["remaining"]) == want["needed"] - want["complete"]
        assert int(got["past_deadline"]) == want["past_deadline"]
        assert float(got["completion_rate"]) == pytest.approx(want["complete"] / want["needed"], abs=1e-6)
    types = {r["line_type"]: r for r in _csv(path, "by_line_type")}
    assert {k: (int(v["needed"]), int(v["complete"])) for k, v in types.items()} == {
        k: (v["needed"], v["complete"]) for k, v in expected["line_type"].items()
    }


def test_channel_wave_and_day_tables(campaign, expected):
    path = campaign["path"]
    channels = {r["channel"]: int(r["registrations"]) for r in _csv(path, "by_channel")}
    assert channels == dict(expected["channel"])
    waves = {int(r["wave"]): (int(r["notified"]), int(r["registered_after"])) for r in _csv(path, "by_wave")}
    want = {
        w: (expected["wave_notified"][w], expected["wave_registered"][w])
        for w in set(expected["wave_notified"]) | set(expected["wave_registered"])
    }
    assert waves == want
    assert waves[1][1] > 0 and waves[2][1] > 0  # both waves converted someone
    days = _csv(path, "by_day")
    per_day = {dt.date.fromisoformat(r["day"]): int(r["registrations"]) for r in days}
    assert {d: n for d, n in per_day.items() if n} == dict(expected["day"])
    assert days[0]["day"] == SCAN_DAY and days[-1]["day"] == AFTER_DEADLINE
    cumulative = np.cumsum([int(r["registrations"]) for r in days])
    assert [int(r["complete"]) for r in days] == list(cumulative + (expected["complete"] - expected["registered"]))


def test_backlog_and_past_deadline_list(campaign, expected):
    path = campaign["path"]
    backlog = {(r["kind"], r["code"]): int(r["lines"]) for r in _csv(path, "backlog_by_reason")}
    assert backlog == dict(expected["backlog"])
    past = _csv(path, "past_deadline")
    assert {r["line_id"] for r in past} == expected["past"]
    assert set(past[0]) == {"line_id", "region", "line_type", "identity_status", "last_wave", "last_notice_at"}


def test_agent_compliance_lists_the_agents_over_the_policy_thresholds(campaign, expected):
    path = campaign["path"]
    rows = {r["agent_id"]: r for r in _csv(path, "agents")}
    assert set(rows) == set(expected["agents"])
    for agent, want in expected["agents"].items():
        got = rows[agent]
        for column in (
            "registrations",
            "dead_letters",
            "failed_policy",
            "lines_opened",
            "opened_flagged",
            "opened_needing_registration",
        ):
            assert int(got[column]) == want[column], (agent, column)
    listed = {a for a, r in rows.items() if r["over_threshold"] == "true"}
    assert listed == expected["over"]
    assert CARELESS_AGENT in listed  # the simulated careless agent took every policy failure
    assert "NAME_PLACEHOLDER" in rows[CARELESS_AGENT]["dead_letter_reasons"]
    assert campaign["manifest"]["counts"]["agents_over_threshold"] == len(listed)


def test_parquet_tables_are_partitioned_by_report_date_and_equal_the_csv(campaign):
    path = campaign["path"]
    dataset = pq.read_table(path("report", "parquet", "by_region"))
    assert dataset["as_of"].unique().to_pylist() == [AFTER_DEADLINE] or [
        str(v) for v in dataset["as_of"].unique().to_pylist()
    ] == [AFTER_DEADLINE]
    assert dataset.num_rows == len(_csv(path, "by_region"))
    assert os.path.isdir(path("report", "parquet", "agents", f"as_of={AFTER_DEADLINE}"))


def test_rerun_of_the_same_day_replaces_its_partition(campaign, tmp_path):
    path = campaign["path"]
    out = str(tmp_path / "report")
    args = [
        "--scan",
        path("scan"),
        "--merge",
        path("merge-2"),
        "--earlier-merges",
        path("merge-1"),
        "--notify",
        path("notify"),
        "--campaign",
        campaign["campaign"],
        "--out",
        out,
        "--as-of",
        AFTER_DEADLINE,
        "--policy",
        campaign["policy"],
    ]
    first = report.run(args)
    second = report.run(args)
    assert first["completion"] == second["completion"]
    assert len(os.listdir(os.path.join(out, "parquet", "by_region", f"as_of={AFTER_DEADLINE}"))) == 1
    assert (
        pq.read_table(os.path.join(out, "parquet", "by_region")).num_rows
        == pq.read_table(path("report", "parquet", "by_region")).num_rows
    )


def test_no_identity_value_in_any_report_output(campaign, capfd):
    path = campaign["path"]
    # the canaries are really in the inputs
    assert CANARY_NAME in pq.read_table(path("base.parquet"), columns=["name"])["name"].to_pylist()
    report.main(
        [
            "--scan",
            path("scan"),
            "--merge",
            path("merge-2"),
            "--notify",
            path("notify"),
            "--campaign",
            campaign["campaign"],
            "--out",
            path("report-canary"),
            "--as-of",
            AFTER_DEADLINE,
        ]
    )
    captured = capfd.readouterr()
    for folder in (path("report"), path("report-canary")):
        for dirpath, _, files in os.walk(folder):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as handle:
                    data = handle.read()
                for canary in CANARIES:
                    assert canary.encode("utf-8") not in data, (name, canary)
    for canary in CANARIES:
        assert canary not in captured.out and canary not in captured.err


# -- inputs that do not belong together --------------------------------------------------------------------------


def _fails(capfd, args, *fragments):
    assert report.main(args) != 0
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_a_merge_of_another_base_is_refused(campaign, tmp_path, capfd):
    path = campaign["path"]
    other = str(tmp_path)
    generate.write_base(os.path.join(other, "other.parquet"), 300, 991)
    table = pq.read_table(os.path.join(other, "other.parquet"))
    ids = pa.array([f"X{i:06d}" for i in range(table.num_rows)])
    pq.write_table(table.set_column(0, "line_id", ids), os.path.join(other, "other.parquet"))
    assert (
        merge.main(
            [
                "--base",
                os.path.join(other, "other.parquet"),
                "--registrations",
                path("events", "r1.jsonl"),
                "--keys",
                path("keys", "keyset.json"),
                "--out",
                os.path.join(other, "merge"),
                "--as-of",
                REG1,
            ]
        )
        == 0
    )
    capfd.readouterr()
    args = ["--scan", path("scan"), "--merge", os.path.join(other, "merge"), "--out", os.path.join(other, "r")]
    # the manifests say which base each read (their lineage): refused before the job
    _fails(capfd, args, f"--merged {os.path.join(other, 'merge')} is not of the base --scan", "nothing was written")
    # a merge from before lineages were recorded (a warning, in the log here): the job's own count refuses it
    manifest_path = os.path.join(other, "merge", "manifest.json")
    with open(manifest_path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    del manifest["lineage"]
    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    _fails(capfd, args, "not in the merged base", "another base or campaign")
    assert not os.path.exists(os.path.join(other, "r", "report.html"))


def test_notices_of_another_campaign_are_refused(campaign, tmp_path, capfd):
    path = campaign["path"]
    with open(campaign["campaign"], encoding="utf-8") as handle:
        text = handle.read().replace("campaign_id: rn-2026-q4", "campaign_id: rn-2027-q1")
    other = tmp_path / "other.yaml"
    other.write_text(text, encoding="utf-8")
    _fails(
        capfd,
        [
            "--scan",
            path("scan"),
            "--merge",
            path("merge-2"),
            "--notify",
            path("notify"),
            "--campaign",
            str(other),
            "--out",
            str(tmp_path / "r"),
        ],
        "no run of campaign rn-2027-q1",
    )


def test_a_scan_of_another_date_is_refused(campaign, tmp_path, capfd):
    path = campaign["path"]
    late = str(tmp_path / "late-scan")
    scan.run(["--base", path("base.parquet"), "--out", late, "--as-of", "2026-12-10"])
    capfd.readouterr()
    _fails(
        capfd,
        ["--scan", late, "--merge", path("merge-2"), "--campaign", campaign["campaign"], "--out", str(tmp_path / "r")],
        "after wave 1",
        "first scan",
    )
    _fails(capfd, ["--scan", late, "--merge", path("merge-1"), "--out", str(tmp_path / "r")], "before the scan")


def test_missing_inputs_are_one_line_errors(campaign, tmp_path, capfd):
    path = campaign["path"]
    _fails(capfd, ["--scan", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], "no manifest.json")
    _fails(capfd, ["--scan", path("merge-1"), "--out", str(tmp_path / "r")], "not of 'scan'")
    _fails(capfd, ["--out", str(tmp_path / "r")], "--scan is required")
    _fails(
        capfd,
        ["--scan", path("scan"), "--merge", path("merge-2"), "--as-of", "2026-12-01", "--out", str(tmp_path / "r")],
        "before the merge",
    )


def test_without_a_merge_the_report_says_so_and_counts_nothing_complete(campaign, tmp_path):
    path = campaign["path"]
    manifest = report.run(["--scan", path("scan"), "--out", str(tmp_path / "r")])
    assert manifest["completion"]["complete"] == 0
    assert manifest["completion"]["needed"] == campaign["manifest"]["completion"]["needed"]
    assert any("No merge output" in f for f in manifest["findings"])
    with open(tmp_path / "r" / "report.html", encoding="utf-8") as handle:
        assert "No merge output" in handle.read()


def test_a_scan_with_nothing_to_register_draws_no_chart(tmp_path):
    base = tmp_path / "base.parquet"
    generate.write_base(str(base), 200, 3)
    table = pq.read_table(base)
    pq.write_table(table.filter(pc.equal(table["status"], "TERMINATED")), base)
    scan.run(["--base", str(base), "--out", str(tmp_path / "scan"), "--as-of", SCAN_DAY])
    manifest = report.run(["--scan", str(tmp_path / "scan"), "--out", str(tmp_path / "r")])
    assert manifest["completion"]["needed"] == 0 and manifest["completion"]["completion_rate"] is None
    with open(tmp_path / "r" / "report.html", encoding="utf-8") as handle:
        page = handle.read()
    assert "data:image/png" not in page and "nothing to complete" in page


def test_self_inspection_through_the_report_command(campaign, tmp_path, capfd):
    year = int(campaign["manifest"]["started"][:4])
    assert (
        report.main(
            [
                "--self-inspection",
                "--year",
                str(year),
                "--manifests",
                campaign["root"],
                "--out",
                str(tmp_path / "inspection"),
            ]
        )
        == 0
    )
    out = capfd.readouterr().out
    assert f"self-inspection {year}:" in out
    with open(tmp_path / "inspection" / f"self_inspection_{year}.json", encoding="utf-8") as handle:
        doc = json.load(handle)
    steps = doc["runs_by_step"]
    assert steps["scan"]["runs"] >= 1 and steps["merge"]["runs"] >= 2
    assert steps["notify"]["runs"] == 4  # two waves, two receipt runs
    assert steps["report"]["runs"] >= 1
    assert os.path.exists(tmp_path / "inspection" / f"self_inspection_{year}.html")
    _fails(capfd, ["--self-inspection", "--manifests", campaign["root"], "--out", str(tmp_path / "x")], "--year")
    _fails(
        capfd,
        ["--self-inspection", "--year", "1999", "--manifests", campaign["root"], "--out", str(tmp_path / "x")],
        "1999",
    )


def test_earlier_merges_as_a_pattern_take_only_the_merges_before(campaign, tmp_path):
    path = campaign["path"]
    common = [
        "--scan",
        path("scan"),
        "--notify",
        path("notify"),
        "--campaign",
        campaign["campaign"],
        "--as-of",
        AFTER_DEADLINE,
        "--policy",
        campaign["policy"],
    ]
    listed = report.run(
        [*common, "--merge", path("merge-2"), "--earlier-merges", path("merge-1"), "--out", str(tmp_path / "a")]
    )
    pattern = report.run(
        [
            *common,
            "--merge",
            path("merge-2"),
            "--earlier-merges",
            os.path.join(campaign["root"], "merge-*"),
            "--out",
            str(tmp_path / "b"),
        ]
    )
    report.run(
        [
            *common,
            "--merge",
            path("merge-1"),
            "--earlier-merges",
            os.path.join(campaign["root"], "merge-*"),
            "--out",
            str(tmp_path / "c"),
        ]
    )

    def agents(out):
        return (
            pq.read_table(os.path.join(out, "parquet", "agents"))
            .select(["agent_id", "registrations", "dead_letters"])
            .sort_by("agent_id")
            .to_pylist()
        )

    assert agents(str(tmp_path / "a")) == agents(str(tmp_path / "b"))  # merge-2 itself is not counted twice
    first_only = sum(r["registrations"] for r in agents(str(tmp_path / "c")))
    both = sum(r["registrations"] for r in agents(str(tmp_path / "b")))
    assert 0 < first_only < both  # merge-2 is after merge-1: not an earlier merge of it
    assert listed["completion"] == pattern["completion"]
    # the first day's report with the DAG's pattern says nothing (it matches merges, none earlier); a mistyped
    # pattern is said: the earlier days' registrations would be missing from the agents' tables unsaid
    first_day = json.load(open(os.path.join(str(tmp_path / "c"), "manifest.json"), encoding="utf-8"))
    assert not any("--earlier-merges" in w for w in first_day["warnings"])
    typo = os.path.join(campaign["root"], "merges-*")
    mistyped = report.run([*common, "--merge", path("merge-2"), "--earlier-merges", typo, "--out", str(tmp_path / "d")])
    said = [w for w in mistyped["warnings"] if w.startswith(f"--earlier-merges {typo} matches no merge output")]
    assert len(said) == 1 and said[0] in mistyped["findings"]
    assert agents(str(tmp_path / "d")) != agents(str(tmp_path / "b"))


def test_daily_partitions_read_as_one_history(campaign, tmp_path):
    """Two report days into one folder, one without notices (no timed registrations: null figures):
    Arrow and DuckDB read every table across the days."""
    import duckdb

    path = campaign["path"]
    out = str(tmp_path / "history")
    report.run(["--scan", path("scan"), "--merge", path("merge-1"), "--out", out, "--as-of", REG1])
    report.run(
        [
            "--scan",
            path("scan"),
            "--merge",
            path("merge-2"),
            "--notify",
            path("notify"),
            "--campaign",
            campaign["campaign"],
            "--out",
            out,
            "--as-of",
            AFTER_DEADLINE,
        ]
    )
    for name in ("completion", "by_region", "agents", "by_day", "past_deadline"):
        table = pq.read_table(os.path.join(out, "parquet", name))
        assert (
            sorted({str(v) for v in table["as_of"].to_pylist()}) == sorted({REG1, AFTER_DEADLINE})
            or name == "past_deadline"
        )
    history = duckdb.sql(
        f"SELECT as_of, needed, complete, hours_to_register_median FROM read_parquet("
        f"'{out}/parquet/completion/*/*.parquet', hive_partitioning=true) ORDER BY as_of"
    ).fetchall()
    assert [str(r[0]) for r in history] == [REG1, AFTER_DEADLINE]
    assert history[0][3] is None and history[1][3] is not None
    assert history[0][1] == history[1][1] and history[0][2] < history[1][2]  # same needed lines, more complete


def test_a_missing_registration_file_is_said_and_the_rest_still_counted(campaign, tmp_path):
    path = campaign["path"]
    moved = path("events", "r1.jsonl") + ".away"
    os.rename(path("events", "r1.jsonl"), moved)
    try:
        manifest = report.run(
            [
                "--scan",
                path("scan"),
                "--merge",
                path("merge-2"),
                "--earlier-merges",
                path("merge-1"),
                "--out",
                str(tmp_path / "r"),
                "--as-of",
                AFTER_DEADLINE,
            ]
        )
    finally:
        os.rename(moved, path("events", "r1.jsonl"))
    assert any("registration file(s) the merges read are gone" in f for f in manifest["findings"])
    agents = pq.read_table(str(tmp_path / "r" / "parquet" / "agents"))
    with open(path("events", "r2.jsonl"), encoding="utf-8") as handle:
        r2 = {json.loads(line)["event_id"] for line in handle if json.loads(line).get("agent_id")}
    assert pc.sum(agents["registrations"]).as_py() == len(r2) > 0  # the second round's events still count


def test_events_given_to_the_merge_by_relative_path_are_found_from_any_directory(campaign, tmp_path, monkeypatch):
    path = campaign["path"]
    monkeypatch.chdir(campaign["root"])
    assert (
        merge.main(
            [
                "--base",
                "base.parquet",
                "--registrations",
                os.path.join("events", "r1.jsonl"),
                "--keys",
                path("keys", "keyset.json"),
                "--out",
                str(tmp_path / "merge-rel"),
                "--as-of",
                REG1,
            ]
        )
        == 0
    )
    monkeypatch.chdir(tmp_path)
    manifest = report.run(
        ["--scan", path("scan"), "--merge", str(tmp_path / "merge-rel"), "--out", str(tmp_path / "r"), "--as-of", REG1]
    )
    assert not any("gone" in f or "no registration files" in f for f in manifest["findings"])
    assert pc.sum(pq.read_table(str(tmp_path / "r" / "parquet" / "agents"))["registrations"]).as_py() > 0


def test_without_a_campaign_file_the_notify_runs_campaign_is_used(campaign, tmp_path):
    path = campaign["path"]
    manifest = report.run(
        [
            "--scan",
            path("scan"),
            "--merge",
            path("merge-2"),
            "--notify",
            path("notify"),
            "--out",
            str(tmp_path / "r"),
            "--as-of",
            AFTER_DEADLINE,
        ]
    )
    assert manifest["campaign_id"] == "rn-2026-q4" and manifest["inputs"]["campaign"] == os.path.abspath(
        campaign["campaign"]
    )
    assert manifest["completion"]["past_deadline"] == campaign["manifest"]["completion"]["past_deadline"] > 0


def test_a_receipts_run_does_not_hide_the_campaign(campaign, tmp_path):
    """After ``notify --receipts`` the latest notify run names no campaign: the report still finds the
    campaign of the runs that planned the waves, and credits its notices."""
    path = campaign["path"]
    folder = str(tmp_path / "notify")
    shutil.copytree(path("notify"), folder)
    jobs = pq.read_table(os.path.join(folder, "history", "jobs"), columns=["job_id", "line_id"]).to_pylist()
    sent = [j["job_id"] for j in jobs if j["line_id"]][:3]
    receipts = tmp_path / "receipts.csv"
    receipts.write_text("job_id,status,at\n" + "".join(f"{j},DELIVERED,2026-12-02T10:00:00\n" for j in sent))
    assert notify.main(["--receipts", str(receipts), "--out", folder]) == 0
    args = ["--scan", path("scan"), "--merge", path("merge-2"), "--as-of", AFTER_DEADLINE]
    before = report.run([*args, "--notify", path("notify"), "--out", str(tmp_path / "before")])
    after = report.run([*args, "--notify", folder, "--out", str(tmp_path / "after")])
    assert after["campaign_id"] == before["campaign_id"] == "rn-2026-q4"
    assert after["inputs"]["campaign"] == os.path.abspath(campaign["campaign"])
    assert after["completion"] == before["completion"]


# -- the Beam job: the same report on any number of workers, its counts balanced ---------------------------------


def _tables(out: str) -> dict:
    """Every CSV table (the past-deadline list as a set of rows: its order follows the buckets) and Parquet table."""
    found = {}
    for name in sorted(os.listdir(os.path.join(out, "csv"))):
        with open(os.path.join(out, "csv", name), encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        found[name] = (rows[0], sorted(rows[1:])) if name == "past_deadline.csv" else rows
    for name in sorted(os.listdir(os.path.join(out, "parquet"))):
        table = pq.read_table(os.path.join(out, "parquet", name))
        found[name] = (table.schema.remove_metadata(), sorted(map(str, table.to_pylist())))
    return found


def test_two_worker_processes_and_more_buckets_make_the_same_report(campaign, tmp_path):
    path = campaign["path"]
    out = str(tmp_path / "report")
    manifest = report.run(
        [
            "--scan",
            path("scan"),
            "--merge",
            path("merge-2"),
            "--earlier-merges",
            path("merge-1"),
            "--notify",
            path("notify"),
            "--campaign",
            campaign["campaign"],
            "--out",
            out,
            "--as-of",
            AFTER_DEADLINE,
            "--policy",
            campaign["policy"],
            "--shuffle-buckets",
            "5",
            "--direct_num_workers",
            "2",
            "--direct_running_mode",
            "multi_processing",
        ]
    )
    one = campaign["manifest"]
    assert one["shuffle"]["buckets"] == 1 and manifest["shuffle"]["buckets"] == 5
    assert manifest["completion"] == one["completion"] and manifest["counts"] == one["counts"]
    assert _tables(out) == _tables(path("report"))
    assert len(os.listdir(os.path.join(out, "parquet", "past_deadline", f"as_of={AFTER_DEADLINE}"))) >= 1


def test_in_process_with_spilled_buckets_makes_the_same_report_as_the_beam_job(campaign, tmp_path):
    path = campaign["path"]
    args = report_args(path, "", AFTER_DEADLINE, "--policy", campaign["policy"], "--shuffle-buckets", "3")
    out_at = args.index("--out") + 1
    local, beam = str(tmp_path / "local"), str(tmp_path / "beam")
    args[out_at] = local
    in_process = report.run(args)
    args[out_at] = beam
    job = report.run([*args, "--direct_num_workers", "1"])  # a worker option: the Beam job
    assert in_process["runner"] == "in-process" and job["runner"] == "FnApiRunner"
    assert in_process["shuffle"] == job["shuffle"] == {"buckets": 3, "spill": True}
    assert in_process["completion"] == job["completion"] == campaign["manifest"]["completion"]
    assert in_process["counts"] == job["counts"] == campaign["manifest"]["counts"]
    assert _tables(local) == _tables(beam) == _tables(path("report"))


def test_the_job_counts_every_line_and_event_and_says_they_balance(campaign, expected):
    counts = campaign["manifest"]["counts"]
    path = campaign["path"]
    scan_rows = _rows(path("scan", "classified"))
    history = _rows(path("notify", "history", "jobs"))
    events = sum(
        1 for p in ("r1.jsonl", "r2.jsonl") for line in open(path("events", p), encoding="utf-8") if line.strip()
    )
    assert counts["scan_lines"] == {
        "read": len(scan_rows),
        "needed": expected["needed"],
        "not_needed": len(scan_rows) - expected["needed"],
        "balanced": True,
    }
    assert counts["needed_lines"] == {
        "in": expected["needed"],
        "joined": expected["needed"],
        "not_in_merge": 0,
        "balanced": True,
    }
    assert counts["base_rows"]["read"] == len(_rows(path("merge-2", "base"))) and counts["base_rows"]["balanced"]
    assert counts["notices"]["read"] == len(history) and counts["notices"]["balanced"]
    assert counts["events"]["read"] == events and counts["events"]["distinct"] == len(
        _events([path("events", "r1.jsonl"), path("events", "r2.jsonl")])
    )
    assert counts["events"]["balanced"] and counts["dead_letters"]["balanced"]
    assert counts["past_deadline"] == len(expected["past"]) and counts["agents"] == len(expected["agents"])
