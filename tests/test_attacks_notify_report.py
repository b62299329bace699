"""``backfill notify`` and ``backfill report`` under attack, through the real ``backfill`` command (and the campaign
loader): what a careless user or an attacker hands them gets one line on stderr or a dead letter without plaintext,
and nothing is sent twice (each case failed before its fix).

(a) ``--merged`` given the raw subscriber base, a merge's vault, a notify folder or a scan: every line it held
    was counted REGISTERED and the wave sent nothing, silently. Now refused; a list of line ids and a merge work.
(b) A delivery receipt whose job id column held a document number, a name or a subscriber's phone number became
    a dead letter quoting it in plaintext. Now only job-id-shaped text is quoted.
(c) Campaign files: a YAML alias bomb ("billion laughs", a few lines) took the schema check minutes and
    gigabytes; a file of several MB (or /dev/zero) was read and parsed whole; a deeply nested value ended in
    "unexpected RecursionError"; ``wave: 99999999999999999999`` in "unexpected OverflowError"; ``wave: 1.0`` named
    the wave's files and job ids ``1.0``, so a re-run with ``wave: 1`` sent its announcements again.
(d) Two notify runs into the same folder at once both read the same history and both handed the whole wave
    over; now the second is refused in one line before it reads the history.
(e) A file that is not a notify history in ``OUT/history/`` ended in "unexpected ArrowInvalid" / "KeyError".
(f) Report: ``--as-of 9999-12-31`` (a typo) built a daily table of millions of days (over 11 GB, never ended);
    a region or province name holding ``$...$`` (the policy's GB/T 2260 table) was read as matplotlib mathtext
    and failed the report ("unexpected ValueError"); a ``--previous`` folder that holds no report was ignored.
"""

from __future__ import annotations

import csv
import fcntl
import glob
import json
import os
import shutil
import subprocess
import time

import fastavro
import pyarrow.parquet as pq
import pytest

from schemas import field_names, policy_path
from tests.support.attacks import AS_OF, no_canary, run
from tests.support.attacks import refused as refused_by
from tests.support.compact import snapshot
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person
from transforms.notify.campaign import CampaignError, parse_campaign

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMPAIGN = os.path.join(ROOT, "examples", "campaign.yaml")
REGIONS = ("110105", "310115", "440305")


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def refused(proc: subprocess.CompletedProcess, prog: str, *expected: str) -> str:
    return refused_by(proc, prog, 1, *expected)


def wave(site, out: str, *extra: str, campaign: str = CAMPAIGN) -> subprocess.CompletedProcess:
    argv = ["--scan", site["scan"], "--campaign", campaign, "--wave", "1", "--out", out, "--as-of", AS_OF]
    return run("notify", *argv, *extra)


def jobs(out: str, channel: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "jobs", channel, "*.avro"))):
        with open(path, "rb") as handle:
            rows += list(fastavro.reader(handle))
    return rows


def no_canary_in(folder: str, *also: str) -> None:
    no_canary(folder, also=also)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """A canary base (every line needs registration: no document number), its scan, wave 1, a keyset and a
    merge of one canary registration."""
    root = tmp_path_factory.mktemp("attacks_notify")
    keys = str(root / "secure" / "keys.json")
    ok(run("keys", "init", "--keys", keys))
    rows = [
        person(
            line_id=f"L{i:03d}",
            msisdn=f"1380013{i:04d}",
            region=REGIONS[i % 3],
            doc_number="",
            name=CANARY_NAME,
            address=CANARY_ADDRESS,
        )
        for i in range(30)
    ]
    base = str(root / "base.csv")
    names = field_names("subscriber_base")
    with open(base, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows([[r.get(c) or "" for c in names] for r in rows])
    scan = str(root / "scan")
    ok(run("scan", "--base", base, "--out", scan, "--as-of", AS_OF, "--progress-seconds", "0"))
    site = {"root": root, "keys": keys, "base": base, "scan": scan, "lines": len(rows)}
    notify = str(root / "notify")
    ok(wave(site, notify))
    event = {
        "event_id": "E1",
        "line_id": "L001",
        "doc_type": "RESIDENT_ID",
        "doc_number": CANARY_NUMBER,
        "name": CANARY_NAME,
        "address": CANARY_ADDRESS,
        "channel": "STORE",
        "verified_by": "FACE_MATCH",
        "registered_at": "2026-12-02T10:00:00",
    }
    events = root / "events.jsonl"
    events.write_text(json.dumps(event, ensure_ascii=False) + "\n", encoding="utf-8")
    merged = str(root / "merge")
    argv = ["--base", base, "--registrations", str(events), "--keys", keys, "--out", merged, "--as-of", "2026-12-05"]
    ok(run("merge", *argv, "--progress-seconds", "0"))
    return {**site, "notify": notify, "merged": merged}


# (a) --merged that is no merge -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ("base", "nor a list of line ids"),
        ("vault", "nor a list of line ids"),
        ("notify", "nor a list of line ids"),
        ("scan", "is a scan's classified lines"),
    ],
)
def test_merged_given_another_data_set_is_refused_not_counted_as_registered(site, tmp_path, given, expected):
    path = {
        "base": site["base"],
        "vault": os.path.join(site["merged"], "vault"),
        "notify": site["notify"],
        "scan": site["scan"],
    }[given]
    out = str(tmp_path / "out")
    refused(wave(site, out, "--merged", path), "backfill notify", f"--merged {path}", expected)
    assert not os.path.exists(out)
    refused(wave(site, out, "--merged", path, "--dry-run"), "backfill notify", expected)


def test_a_list_of_line_ids_and_a_merge_still_count_as_registered(site, tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("line_id\nL003\nL004\n", encoding="utf-8")
    for merged, registered in ((str(ids), 2), (site["merged"], 1)):
        proc = ok(wave(site, str(tmp_path / "dry"), "--merged", merged, "--dry-run"))
        assert f"registered since {registered};" in proc.stdout


# (b) receipts -------------------------------------------------------------------------------------------------


def test_receipt_dead_letters_quote_no_phone_number_name_or_document_number(site, tmp_path):
    out = str(tmp_path / "notify")
    shutil.copytree(site["notify"], out)
    sms = jobs(out, "sms")
    phone = sms[0]["msisdn"]
    unknown = "0123456789abcdef0123456789abcdef"
    rows = [
        (sms[0]["job_id"], "DELIVERED", "2026-12-01T10:00:00"),
        (CANARY_NUMBER, "DELIVERED", "2026-12-01T10:00:00"),
        (CANARY_NAME, "FAILED", "2026-12-01T10:00:00"),
        (phone, "DELIVERED", "2026-12-01T10:00:00"),
        (f"+86 {phone}", "DELIVERED", "2026-12-01T10:00:00"),
        (unknown, "DELIVERED", "2026-12-01T10:00:00"),
        (sms[1]["job_id"], "READ", "2026-12-01T10:00:00"),
        (f" {sms[2]['job_id'].upper()} ", "FAILED", "2026-12-01T10:00:00"),  # a gateway that upper-cases ids
    ]
    receipts = tmp_path / "receipts.csv"
    with open(receipts, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("job_id", "status", "at"), *rows])
    proc = ok(run("notify", "--receipts", str(receipts), "--out", out))
    dead = len(rows) - 2  # all but the first and the last: in = recorded + dead letters
    assert f"{len(rows)} in -> 2 recorded" in proc.stdout and f"{dead} dead letters" in proc.stdout, proc.stdout
    letters = [json.loads(x) for f in glob.glob(os.path.join(out, "dead_letter", "*.jsonl")) for x in open(f)]
    assert len(letters) == dead
    quoted = {d["event_id"]: d["reason"] for d in letters if d["event_id"] is not None}
    assert quoted == {unknown: "RECEIPT_UNKNOWN_JOB", sms[1]["job_id"]: "RECEIPT_BAD_STATUS"}
    assert not any(phone in json.dumps(d) for d in letters)
    no_canary_in(os.path.join(out, "dead_letter"), phone)
    no_canary_in(os.path.join(out, "history"), phone)


# (c) campaign files -------------------------------------------------------------------------------------------


def example_text() -> str:
    with open(CAMPAIGN, encoding="utf-8") as handle:
        return handle.read()


def bomb(indent: str, levels: int = 9) -> str:
    """A list of 9**levels strings, written in a few lines with YAML aliases."""
    lines = [f'{indent}- &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"{indent}- &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["signature", "channels"])
def test_a_yaml_alias_bomb_is_refused_at_once(where):
    text = example_text()
    if where == "signature":  # a locale's signature: its type error quoted the whole expansion
        anchor = "  en: Moumou Telecom\n"
        text = text.replace(anchor, anchor + "  xx-YY:\n" + bomb("    "), 1)
    else:  # a wave's channels, checked item by item and for unique items
        anchor = "    channels: [sms, call, announcement]\n"
        text = text.replace(anchor, "    channels:\n" + bomb("      "), 1)
    assert "*a7" in text
    started = time.monotonic()
    with pytest.raises(CampaignError, match="over 100,000 values once its YAML aliases are expanded") as caught:
        parse_campaign(text, "bomb.yaml")
    assert time.monotonic() - started < 10  # it took minutes (14 s at one level fewer) and gigabytes
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_shared_yaml_anchors_of_a_real_campaign_are_fine():
    text = example_text().replace(
        "    variants: [{name: control, weight: 1}, {name: short, weight: 1}]   # an A/B test: which SMS registers more",
        "    variants: &split [{name: control, weight: 1}, {name: short, weight: 1}]",
    )
    text = text.replace(
        "    variants: [{name: control, weight: 1}, {name: short, weight: 1}]   # a line keeps its variant in every wave",
        "    variants: *split",
    )
    assert "*split" in text
    campaign = parse_campaign(text, "anchors.yaml")
    assert campaign.wave(2).variants == campaign.wave(1).variants


def test_a_campaign_file_too_large_too_deep_or_endless_is_one_line(site, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(example_text() + "# " + "x" * (4 << 20) + "\n", encoding="utf-8")  # it took 15 s per 4 MB
    deep = tmp_path / "deep.yaml"
    deep.write_text(example_text().replace("campaign_id: rn-2026-q4", "campaign_id: " + "[" * 5000 + "]" * 5000))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # nothing writes into it: opened, it would block the command for ever
    cases = [(big, "bytes: not a campaign file"), (deep, "nested too deeply"), ("/dev/zero", "is a device")]
    for path, expected in [*cases, (fifo, "is a named pipe, not a campaign file")]:
        proc = wave(site, str(tmp_path / "out"), "--dry-run", campaign=str(path))
        refused(proc, "backfill notify", f"campaign {path}:", expected)
    proc = wave(site, str(tmp_path / "out"), "--dry-run", "--suppress", str(fifo))
    refused(proc, "backfill notify", f"--suppress {fifo}: is a named pipe, not a list of numbers")


def test_a_wave_number_beyond_the_job_files_range_is_refused(site, tmp_path):
    text = example_text().replace("  - wave: 2", "  - wave: 99999999999999999999")
    path = tmp_path / "huge.yaml"
    path.write_text(text, encoding="utf-8")
    argv = ["--scan", site["scan"], "--campaign", str(path), "--wave", "99999999999999999999", "--as-of", AS_OF]
    out = str(tmp_path / "out")
    refused(run("notify", *argv, "--out", out), "backfill notify", "waves[1].wave", "maximum of 2147483647")
    assert not os.path.exists(out)


def test_wave_written_1_0_is_wave_1_and_a_rerun_sends_nothing_again(site, tmp_path):
    decimal = tmp_path / "decimal.yaml"
    decimal.write_text(example_text().replace("  - wave: 1\n", "  - wave: 1.0\n"), encoding="utf-8")
    assert "wave: 1.0" in decimal.read_text(encoding="utf-8")
    out = str(tmp_path / "out")
    ok(wave(site, out, campaign=str(decimal)))
    written = snapshot(os.path.join(out, "jobs"))
    assert written == snapshot(os.path.join(site["notify"], "jobs"))  # the same file names, ids and bytes
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        assert json.load(handle)["campaign"]["wave"] == 1
    proc = ok(wave(site, out))  # the file edited to `wave: 1`: nothing is handed over again
    assert "handed over 0 job(s)" in proc.stdout, proc.stdout
    assert snapshot(os.path.join(out, "jobs")) == written


# (d) one run at a time ----------------------------------------------------------------------------------------


def test_a_second_notify_into_the_same_folder_meanwhile_is_refused(site, tmp_path):
    out = str(tmp_path / "notify")
    shutil.copytree(site["notify"], out)
    shutil.rmtree(os.path.join(out, "history"))  # as if the first run had not recorded its jobs yet
    before = snapshot(out)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held as a running notify holds it
        refused(wave(site, out), "backfill notify", "another notify run is writing into it")
        assert snapshot(out) == before  # nothing planned from the history-less folder, nothing handed over
        receipts = tmp_path / "r.csv"
        receipts.write_text("job_id,status,at\n", encoding="utf-8")
        refused(run("notify", "--receipts", str(receipts), "--out", out), "backfill notify", "another notify run")
    finally:
        os.close(fd)
    proc = ok(wave(site, out))
    assert "handed over" in proc.stdout


# (e) a foreign file in the history ----------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"not parquet", "parquet"])
def test_a_foreign_file_in_the_history_is_one_line(site, tmp_path, content):
    out = str(tmp_path / "notify")
    shutil.copytree(site["notify"], out)
    foreign = os.path.join(out, "history", "jobs", "zz.parquet")
    if content == "parquet":
        import pyarrow as pa

        pq.write_table(pa.table({"line_id": ["L001"]}), foreign)
    else:
        with open(foreign, "wb") as handle:
            handle.write(content)
    expected = "is not a notify history file" if content == "parquet" else "is not a readable notify history file"
    refused(wave(site, out), "backfill notify", foreign, expected)
    refused(wave(site, out, "--dry-run"), "backfill notify", foreign, expected)
    receipts = tmp_path / "r.csv"
    receipts.write_text("job_id,status,at\n", encoding="utf-8")
    refused(run("notify", "--receipts", str(receipts), "--out", out), "backfill notify", foreign, expected)


# (f) report ---------------------------------------------------------------------------------------------------


def report(site, out: str, *extra: str) -> subprocess.CompletedProcess:
    argv = ["--scan", site["scan"], "--merged", site["merged"], "--notify", site["notify"], "--out", out]
    return run("report", *argv, "--progress-seconds", "0", *extra)


def test_a_report_date_years_ahead_is_refused_at_once(site, tmp_path):
    out = str(tmp_path / "report")
    started = time.monotonic()
    refused(report(site, out, "--as-of", "9999-12-31"), "backfill report", "--as-of 9999-12-31", "at most 3,660 days")
    assert time.monotonic() - started < 60 and not os.path.exists(out)


def test_a_previous_report_folder_that_holds_none_is_refused(site, tmp_path):
    out = str(tmp_path / "report")
    missing = str(tmp_path / "no-such-report")
    refused(report(site, out, "--previous", missing), "backfill report", f"--previous {missing}")
    refused(report(site, out, "--previous", site["scan"]), "backfill report", "holds no report")
    assert not os.path.exists(out)


def test_dollar_signs_in_region_names_are_drawn_as_text_and_escaped_in_the_page(site, tmp_path):
    policy = tmp_path / "policy" / "policy.yaml"
    policy.parent.mkdir()
    with open(policy_path(), encoding="utf-8") as handle:
        text = handle.read()
    assert "python_stdnum: true" in text and "files: [gbt2260_supplement.csv]" in text
    text = text.replace("python_stdnum: true", "python_stdnum: false")
    policy.write_text(text.replace("files: [gbt2260_supplement.csv]", "files: [names.csv]"), encoding="utf-8")
    names = ["code,name,first_listed,last_listed,listed_by"]
    for region in REGIONS:
        names.append(f'{region[:2]}0000,"$\\frac{{a}}$ <script>alert({region[:2]})</script>",198001,202001,TEST')
        names.append(f'{region},"$x^2$ <img src=x onerror=alert(1)>",198001,202001,TEST')
    (policy.parent / "names.csv").write_text("\n".join(names) + "\n", encoding="utf-8")
    out = str(tmp_path / "report")
    ok(report(site, out, "--policy", str(policy)))
    with open(os.path.join(out, "report.html"), encoding="utf-8") as handle:
        page = handle.read()
    assert "<script>" not in page and "<img src=x" not in page and "&lt;script&gt;alert(11)" in page
    with open(os.path.join(out, "csv", "by_province.csv"), encoding="utf-8") as handle:
        provinces = list(csv.DictReader(handle))
    assert {r["province_name"] for r in provinces} == {
        f"$\\frac{{a}}$ <script>alert({r[:2]})</script>" for r in REGIONS
    }
    assert sum(int(r["needed"]) for r in provinces) == site["lines"]
    no_canary_in(out)
