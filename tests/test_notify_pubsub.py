"""Publishing jobs and pulling receipts against the real Pub/Sub emulator (tests/support/pubsub.py)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipelines.io.pubsub import PublishFn
from tests.support.notify import EXAMPLE, line, make_campaign, write_classified
from transforms.notify.jobs import finish_jobs, keys_of, with_job_ids
from transforms.notify.schedule import Schedule, day_bounds

pytestmark = pytest.mark.e2e  # the Pub/Sub emulator; `backfill notify` in subprocesses

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")


def notify(*args, check=True):
    proc = subprocess.run([BACKFILL, "notify", *args], capture_output=True, text=True, timeout=600, env=os.environ)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    rows = [line(f"M{i:03d}", f"1390013{i:04d}", region=["110105", "310115"][i % 2]) for i in range(150)]
    rows += [line(f"F{i}", f"0106552990{i}", "FIXED") for i in range(5)] + [line("BAD", "999")]
    return write_classified(tmp_path_factory.mktemp("classified"), rows)


def plan(classified, out, *extra, check=True):
    return notify(
        "--classified",
        classified,
        "--campaign",
        EXAMPLE,
        "--wave",
        "1",
        "--out",
        out,
        "--as-of",
        "2026-11-30",
        *extra,
        check=check,
    )


def test_publish_jobs_with_attributes(pubsub_emulator, fresh_topic, classified, tmp_path):
    topic, subscription = fresh_topic
    out = str(tmp_path / "out")
    proc = plan(classified, out, "--topic", topic, "--publish-batch", "50")
    messages = pubsub_emulator.pull_all(subscription)
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["mode"] == "pubsub" and manifest["outputs"]["topic"] == topic and manifest["counts"]["balanced"]
    assert len(messages) == 150 + 5 + 2 == sum(manifest["counts"]["handed_over"].values())
    by_channel: dict[str, int] = {}
    for m in messages:
        body = json.loads(m.data.decode("utf-8"))
        assert set(m.attributes) == {"job_id", "channel", "campaign_id"}
        assert m.attributes["job_id"] == body["job_id"] and m.attributes["channel"] == body["channel"]
        assert m.attributes["campaign_id"] == body["campaign_id"] == "rn-2026-q4"
        by_channel[body["channel"]] = by_channel.get(body["channel"], 0) + 1
        if body["channel"] == "sms":
            assert body["msisdn_masked"] in body["text"] and body["msisdn"] not in body["text"]
            parts = 1 if len(body["text"]) <= 70 else math.ceil(len(body["text"]) / 67)  # UCS-2
            assert body["not_before"].endswith("Z") and body["segments"] == parts
        # the example's wave 1 splits its lines between two variants; an announcement has none
        assert body["variant"] in (("control", "short") if body["channel"] != "announcement" else (None,))
    assert by_channel == {"sms": 150, "call": 5, "announcement": 2}
    assert len({m.attributes["job_id"] for m in messages}) == len(messages)
    history = pq.read_table(os.path.join(out, "history", "jobs"))
    assert set(history.column("job_id").to_pylist()) == {m.attributes["job_id"] for m in messages}
    sent = {json.loads(m.data)["job_id"]: json.loads(m.data)["variant"] for m in messages}
    assert dict(zip(history.column("job_id").to_pylist(), history.column("variant").to_pylist())) == sent
    assert not os.path.exists(os.path.join(out, "jobs")) and "published 157" in proc.stdout
    # The same folder again: its history holds every job, nothing is published twice.
    plan(classified, out, "--topic", topic)
    assert pubsub_emulator.pull_all(subscription) == []


def test_missing_topic_is_one_line_and_nothing_is_sent(pubsub_emulator, fresh_topic, classified, tmp_path):
    topic, subscription = fresh_topic
    missing = topic + "-missing"
    out = str(tmp_path / "out")
    proc = plan(classified, out, "--topic", missing, check=False)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert f"--topic {missing} does not exist" in proc.stderr
    assert not os.path.exists(out) and pubsub_emulator.pull_all(subscription) == []


def test_dry_run_with_a_topic_sends_nothing(pubsub_emulator, fresh_topic, classified, tmp_path):
    topic, subscription = fresh_topic
    proc = plan(classified, str(tmp_path / "out"), "--topic", topic, "--dry-run")
    assert "DRY RUN" in proc.stdout and not os.path.exists(tmp_path / "out")
    assert pubsub_emulator.pull_all(subscription) == []


def test_receipts_from_a_subscription(pubsub_emulator, fresh_topic, classified, tmp_path):
    out = str(tmp_path / "out")
    plan(classified, out)  # to files: the history to record against
    ids = pq.read_table(os.path.join(out, "history", "jobs")).column("job_id").to_pylist()
    receipts_topic, receipts_sub = fresh_topic
    body = [
        json.dumps({"job_id": j, "status": "FAILED" if i % 2 else "DELIVERED", "at": "2026-12-01T03:00:00Z"}).encode()
        for i, j in enumerate(ids[:10])
    ]
    pubsub_emulator.publish(receipts_topic, body)
    pubsub_emulator.publish(receipts_topic, [b""], job_id=ids[10], status="FAILED", at="2026-12-01T04:00:00Z")
    proc = notify("--receipts-subscription", receipts_sub, "--out", out)
    assert "11 in -> 11 recorded (DELIVERED 5, FAILED 6)" in proc.stdout
    assert pubsub_emulator.pull_all(receipts_sub) == []  # acknowledged once recorded
    recorded = pq.read_table(os.path.join(out, "history", "receipts"))
    assert recorded.num_rows == 11 and set(recorded.column("job_id").to_pylist()) == set(ids[:11])


def test_publish_dofn_builds_its_client_in_setup(pubsub_emulator, fresh_topic, tmp_path):
    topic, subscription = fresh_topic
    campaign = make_campaign()
    import pyarrow as pa

    jobs = pa.table(
        {
            "line_id": ["A", "B"],
            "msisdn": ["13800138000", "13900139000"],
            "line_type": ["MOBILE"] * 2,
            "region": ["110105", None],
            "channel": ["sms"] * 2,
            "route": ["PRIMARY"] * 2,
        }
    )
    jobs = with_job_ids(jobs, campaign.campaign_id, 1, "sms")
    first = dt.date(2026, 12, 1)
    table = finish_jobs(
        jobs, "sms", campaign, 1, Schedule.of(campaign), day_bounds(keys_of(jobs.column("_key")), 10, {}, first), first
    )
    fn = PublishFn(topic, str(tmp_path), "run-1", max_messages=10, max_latency=0.01, in_flight=100)
    import pickle

    fn = pickle.loads(pickle.dumps(fn))  # what a worker receives: no client inside
    assert not hasattr(fn, "_client")
    fn.setup()
    fn.start_bundle()
    fn.process(table)
    (stats,) = list(fn.finish_bundle())
    fn.teardown()
    assert stats.value["handed_over"] == {"sms": 2}
    messages = pubsub_emulator.pull_all(subscription)
    assert sorted(m.attributes["job_id"] for m in messages) == sorted(table.column("job_id").to_pylist())
    assert json.loads(messages[0].data)["region"] in ("110105", None)
    assert pq.read_table(os.path.join(tmp_path, "history", "jobs")).num_rows == 2
