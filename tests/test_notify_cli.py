"""`backfill notify` as a user runs it: files, re-runs, dry run, receipts and fallback, bad input."""

from __future__ import annotations

import csv
import glob
import importlib.resources
import json
import math
import os
import subprocess
import sys

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import field_names
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person
from tests.support.notify import EXAMPLE, IDENTITY_FIELDS, line, write_campaign, write_classified
from transforms.notify.campaign import load_campaign
from transforms.scan.divisions import full_names
from transforms.scan.policy import load_policy

pytestmark = pytest.mark.e2e  # every test runs the backfill CLI (scan, notify) in subprocesses

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF = "2026-11-30"


def notify(*args, check=True, module=False):
    command = [sys.executable, "-m", "pipelines.notify"] if module else [BACKFILL, "notify"]
    proc = subprocess.run([*command, *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def plan(scan_out, out, *extra, wave="1", campaign=EXAMPLE, **kw):
    return notify(
        "--classified", scan_out, "--campaign", campaign, "--wave", wave, "--out", out, "--as-of", AS_OF, *extra, **kw
    )


def avro_rows(out, channel):
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "jobs", channel, "*.avro"))):
        with open(path, "rb") as handle:
            rows += list(fastavro.reader(handle))
    return rows


def tree(folder) -> dict:
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = os.path.getsize(path)
    return found


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A small base with canary identity values, scanned."""
    folder = tmp_path_factory.mktemp("notify_cli")
    rows = [
        person(
            line_id=f"L{i:03d}",
            msisdn=f"1380013{i:04d}",
            region=["110105", "310115", "440305"][i % 3],
            doc_type="" if i % 2 else "RESIDENT_ID",
            name=CANARY_NAME,
            doc_number=CANARY_NUMBER,
            address=CANARY_ADDRESS,
        )
        for i in range(60)
    ]
    rows += [
        person(line_id=f"F{i:02d}", msisdn=f"+86 10 6552 99{i:02d}", line_type="FIXED", doc_type="", region="110105")
        for i in range(6)
    ]
    rows += [person(line_id="BAD1", msisdn="12345", doc_type=""), person(line_id="DONE1")]
    base = folder / "base.csv"
    names = field_names("subscriber_base")
    with open(base, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in names})
    scan_out = str(folder / "scan")
    subprocess.run(
        [BACKFILL, "scan", "--base", str(base), "--out", scan_out, "--as-of", AS_OF],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return scan_out


@pytest.fixture(scope="module")
def wave1(scanned, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("wave1") / "out")
    proc = plan(scanned, out)
    return out, proc


def test_wave_to_files(scanned, wave1):
    out, proc = wave1
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    counts = manifest["counts"]
    sms, call, ann = avro_rows(out, "sms"), avro_rows(out, "call"), avro_rows(out, "announcement")
    assert counts["balanced"] and counts["targeted"] == 37  # 30 MOBILE without doc_type + 6 FIXED + BAD1
    assert (
        counts["jobs"]
        == {"sms": 30, "call": 6, "announcement": 3}
        == {"sms": len(sms), "call": len(call), "announcement": len(ann)}
    )
    assert counts["outcomes"]["invalid_number"] == 1 and counts["handed_over"] == counts["jobs"]
    assert sorted((r["region"], r["count"], r["unreachable"]) for r in ann) == [
        ("110105", 17, 1),
        ("310115", 10, 0),
        ("440305", 10, 0),
    ]
    assert {r["msisdn"] for r in call} == {f"010655299{i:02d}" for i in range(6)}  # trunk 0 restored
    assert all(r["msisdn_masked"] == r["msisdn"][:3] + "****" + r["msisdn"][-4:] for r in sms)
    assert all(
        r["text"].startswith("【某某通信】") and r["msisdn_masked"] in r["text"] and r["msisdn"] not in r["text"]
        for r in sms
    )
    for r in sms:  # UCS-2 (the signature's 【】): 70 in one part, 67 a part beyond
        parts = 1 if len(r["text"]) <= 70 else math.ceil(len(r["text"]) / 67)
        assert r["units"] == len(r["text"]) and r["segments"] == parts and abs(r["cost"] - parts * 0.045) < 1e-12
    assert counts["segments"] == sum(r["segments"] for r in sms)
    assert len({r["job_id"] for r in sms + call + ann}) == 39
    history = pq.read_table(os.path.join(out, "history", "jobs"))
    assert history.num_rows == 39 and set(history.column("job_id").to_pylist()) == {
        r["job_id"] for r in sms + call + ann
    }
    assert dict(zip(history.column("job_id").to_pylist(), history.column("variant").to_pylist())) == {
        r["job_id"]: r["variant"] for r in sms + call + ann
    }
    assert not os.path.exists(os.path.join(out, "_tmp"))
    assert manifest["runner"] == "in-process" and manifest["workers"] >= 1 and manifest["campaign"]["sha256"]
    assert "handed over 39 job(s)" in proc.stdout and "balanced" in proc.stdout


def test_the_example_splits_wave_1_between_its_variants(wave1):
    """The example campaign's A/B test: each line job carries its variant and that variant's text; the
    manifest names the split and counts the jobs by variant; announcements name their region."""
    out, proc = wave1
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    campaign = load_campaign(EXAMPLE)
    assert manifest["campaign"]["variants"] == [{"name": "control", "weight": 1}, {"name": "short", "weight": 1}]
    sms, call, ann = avro_rows(out, "sms"), avro_rows(out, "call"), avro_rows(out, "announcement")
    counted: dict = {}
    names = full_names(load_policy(None).code_tables.divisions)
    for channel, rows in (("sms", sms), ("call", call)):
        for r in rows:
            values = {"msisdn_masked": r["msisdn_masked"], "region": names[r["region"]]}
            body = r["text"] if channel == "sms" else r["script"]
            assert body == campaign.template(channel, 1, variant=r["variant"]).render_one(values)
            counted.setdefault(r["variant"], {}).setdefault(channel, 0)
            counted[r["variant"]][channel] += 1
    assert set(counted) == {"control", "short"} and manifest["counts"]["variants"] == counted
    short = [r for r in sms if r["variant"] == "short"]
    assert short and all(r["segments"] == 1 for r in short)  # the short variant fits one part
    assert all(r["variant"] is None for r in ann)
    assert {r["region"]: r["text"] for r in ann} == {
        r["region"]: campaign.template("announcement", 1).render_one(
            {"region": names[r["region"]], "count": r["count"]}
        )
        for r in ann
    }
    assert all(f"（{names[r['region']]}）" in r["text"] and r["region"] not in r["text"] for r in ann)
    line = next(x for x in proc.stdout.splitlines() if "variants:" in x)
    assert f"control (weight 1) {counted['control']['sms']} SMS" in line and "short (weight 1)" in line


def test_no_identity_values_anywhere(wave1):
    out, _ = wave1
    for channel in ("sms", "call", "announcement"):
        rows = avro_rows(out, channel)
        assert rows and not IDENTITY_FIELDS & set(rows[0])
    for path in glob.glob(os.path.join(out, "**", "*"), recursive=True):
        if os.path.isfile(path):
            data = open(path, "rb").read()
            for canary in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS):
                assert canary.encode() not in data, (canary, path)


def test_rerun_same_folder_emits_nothing_new(scanned, wave1, tmp_path):
    out, _ = wave1
    before = tree(os.path.join(out, "jobs"))
    again = out + "-copy"
    subprocess.run(["cp", "-r", out, again], check=True)
    proc = plan(scanned, again)
    manifest = json.load(open(os.path.join(again, "manifest.json")))
    assert manifest["counts"]["jobs"] == {"sms": 0, "call": 0, "announcement": 0}
    assert (
        manifest["counts"]["outcomes"]["already_sent"] == 36 and manifest["counts"]["announcements_already_sent"] == 3
    )
    assert tree(os.path.join(again, "jobs")) == before and len(os.listdir(os.path.join(again, "runs"))) == 2
    assert "handed over 0 job(s)" in proc.stdout


def test_rerun_new_folder_emits_the_same_ids_and_files(scanned, wave1, tmp_path):
    out, _ = wave1
    fresh = str(tmp_path / "fresh")
    plan(scanned, fresh, module=True)
    for channel in ("sms", "call", "announcement"):
        assert sorted(os.listdir(os.path.join(fresh, "jobs", channel))) == sorted(
            os.listdir(os.path.join(out, "jobs", channel))
        )
        for name in os.listdir(os.path.join(fresh, "jobs", channel)):
            assert (
                open(os.path.join(fresh, "jobs", channel, name), "rb").read()
                == open(os.path.join(out, "jobs", channel, name), "rb").read()
            )


def test_dry_run_writes_and_sends_nothing(scanned, wave1, tmp_path):
    missing = str(tmp_path / "never")
    proc = plan(scanned, missing, "--dry-run", "--samples", "2")
    assert not os.path.exists(missing)
    out, _ = wave1
    cost = sum(r["cost"] for r in avro_rows(out, "sms"))  # the same plan, sent
    assert "DRY RUN: nothing written, nothing sent." in proc.stdout and f"estimated cost {cost:,.2f}" in proc.stdout
    assert "jobs by channel and send day" in proc.stdout and "jobs by channel, region and send day" in proc.stdout
    assert "[sms/control]" in proc.stdout and "[sms/short]" in proc.stdout and "[call/" in proc.stdout
    assert "****" in proc.stdout and "13800130001" not in proc.stdout
    before = tree(out)
    proc = plan(scanned, out, "--dry-run", wave="2")
    assert tree(out) == before and "wave 2" in proc.stdout


def test_region_names_come_from_the_policy_s_table(scanned, tmp_path):
    """--policy: a policy whose division table renames a region; the announcement names it so."""
    default = importlib.resources.files("schemas").joinpath("decree25_policy.yaml").read_text("utf-8")
    assert default.count("    extra: {}\n") == 1
    policy = tmp_path / "policy.yaml"
    policy.write_text(default.replace("    extra: {}\n", '    extra: {"110105": "测试新区"}\n'), "utf-8")
    proc = plan(scanned, str(tmp_path / "out"), "--dry-run", "--samples", "3", "--policy", str(policy))
    said = [x for x in proc.stdout.splitlines() if x.startswith("  [announcement]") and "region 110105" in x]
    assert len(said) == 1 and "本地区（北京市测试新区）" in said[0], proc.stdout
    one_line_error(
        plan(scanned, str(tmp_path / "out"), "--policy", str(tmp_path / "none.yaml"), check=False), "none.yaml"
    )
    assert not os.path.exists(tmp_path / "out")


def test_receipts_and_fallback_in_the_next_wave(scanned, tmp_path):
    out = str(tmp_path / "out")
    plan(scanned, out)
    sms = sorted(avro_rows(out, "sms"), key=lambda r: r["line_id"])
    failed, delivered = sms[:3], sms[3:5]
    with open(tmp_path / "r.csv", "w") as handle:
        handle.write("job_id,status,at\n")
        for r in failed:
            handle.write(f"{r['job_id']},FAILED,2026-12-01T10:00:00+08:00\n")
        handle.write("unknown-job,FAILED,2026-12-01T10:00:00\n")
    with open(tmp_path / "r.jsonl", "w") as handle:
        for r in delivered:
            handle.write(json.dumps({"job_id": r["job_id"], "status": "delivered", "at": "2026-12-01 11:00:00"}) + "\n")
        handle.write(json.dumps({"job_id": delivered[0]["job_id"], "status": "LOST", "at": "2026-12-01"}) + "\n")
    proc = notify("--receipts", str(tmp_path / "r.csv"), "--receipts", str(tmp_path / "r.jsonl"), "--out", out)
    assert "7 in -> 5 recorded (DELIVERED 2, FAILED 3), 0 duplicates, 2 dead letters" in proc.stdout
    proc = notify("--receipts", str(tmp_path / "r.csv"), "--out", out)
    assert "0 recorded" in proc.stdout and "3 duplicates" in proc.stdout
    dead = [json.loads(x) for f in glob.glob(os.path.join(out, "dead_letter", "*.jsonl")) for x in open(f)]
    assert {d["reason"] for d in dead} == {"RECEIPT_UNKNOWN_JOB", "RECEIPT_BAD_STATUS"}
    plan(scanned, out, wave="2")  # 2026-12-15: 14 days later, beyond min_days_between
    wave2 = [r for r in avro_rows(out, "call") if r["wave"] == 2]
    fallback = {r["line_id"]: r["route"] for r in wave2 if r["route"] != "PRIMARY"}
    assert fallback == {r["line_id"]: "SMS_FAILED" for r in failed}
    resent = {r["line_id"] for r in avro_rows(out, "sms") if r["wave"] == 2}
    assert not resent & {r["line_id"] for r in failed} and {r["line_id"] for r in delivered} <= resent


def test_registered_and_suppressed_lines(scanned, tmp_path):
    merged = tmp_path / "merge" / "base" / "region=110105"
    merged.mkdir(parents=True)
    pq.write_table(
        pa.table({"line_id": ["L001", "L003", "L005"], "identity_status": ["COMPLETE", "COMPLETE", "INVALID"]}),
        merged / "part-0.parquet",
    )
    (tmp_path / "dnd.txt").write_text("# do not SMS\n+86 138-0013-0007\n\n13800130009  # asked twice\n")
    out = str(tmp_path / "out")
    plan(scanned, out, "--registered", str(tmp_path / "merge"), "--suppress", str(tmp_path / "dnd.txt"))
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["counts"]["outcomes"]["registered"] == 2 and manifest["counts"]["suppressed_lines"] == 2
    calls = {r["line_id"]: r["route"] for r in avro_rows(out, "call")}
    assert calls["L007"] == calls["L009"] == "SMS_SUPPRESSED"
    assert not {"L001", "L003", "L007", "L009"} & {r["line_id"] for r in avro_rows(out, "sms")}
    (tmp_path / "ids.csv").write_text("line_id\nL011\nL013\n")
    proc = plan(scanned, str(tmp_path / "out2"), "--registered", str(tmp_path / "ids.csv"), "--dry-run")
    assert "registered since 2" in proc.stdout
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "ids.csv").write_text("L011\nL013\nL015\n")  # no header: one line id a line
    proc = plan(scanned, str(tmp_path / "out3"), "--registered", str(tmp_path / "bare"), "--dry-run")
    assert "registered since 3" in proc.stdout


def one_line_error(proc, *expected):
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr


def test_bad_input_is_one_line_and_writes_nothing(scanned, tmp_path):
    out = str(tmp_path / "out")
    one_line_error(plan(str(tmp_path / "nothing"), out, check=False), "no classified lines")
    other = tmp_path / "other" / "classified"
    other.mkdir(parents=True)
    pq.write_table(pa.table({"line_id": ["a"], "colour": ["red"]}), other / "x.parquet")
    one_line_error(plan(str(tmp_path / "other"), out, check=False), "not a scan output", "msisdn")
    empty = write_classified(tmp_path / "empty", [line("x")])
    pq.write_table(
        pq.read_table(os.path.join(empty, "classified")).slice(0, 0),
        os.path.join(empty, "classified", "part-00000-of-00001.parquet"),
    )
    one_line_error(plan(empty, out, check=False), "holds no lines")
    one_line_error(plan(scanned, out, wave="9", check=False), "--wave 9 is not defined (waves: 1, 2)")
    bad = write_campaign(
        tmp_path / "fee.yaml",
        templates={
            "sms": {"zh-CN": "免费办理，另收取费用"},
            "call": {"zh-CN": "免费"},
            "announcement": {"zh-CN": "免费"},
        },
    )
    one_line_error(plan(scanned, out, campaign=bad, check=False), "templates.sms.zh-CN", "Art. 23")
    one_line_error(notify("--classified", scanned, "--wave", "1", "--out", out, check=False), "--campaign is required")
    one_line_error(plan(scanned, out, "--topic", "my-topic", check=False), "projects/PROJECT/topics/TOPIC")
    one_line_error(notify("--receipts", str(tmp_path / "none.csv"), "--out", out, check=False), "no .csv or .jsonl")
    one_line_error(plan(scanned, out, "--suppress", str(tmp_path / "none.txt"), check=False), "--suppress")
    assert not os.path.exists(out)


def test_cli_lists_notify():
    proc = subprocess.run([BACKFILL, "--help"], capture_output=True, text=True)
    assert "notify" in proc.stdout
