"""Inputs that do not belong together, through the real ``backfill`` command (each case failed before its fix).

(a) ``backfill notify --merged`` given the merge of ANOTHER subscriber base than the one ``--scan`` read (the same
    line ids, other lines) counted that base's registrations as this one's and planned the wave, exit 0, without a
    word; ``backfill report`` counted them complete alike. The scan and the merge now record which base they read
    (``lineage`` in manifest.json: a fingerprint of the base's files, and the raw base the chain started from);
    notify and report refuse a live state of another base in one line naming both folders. The campaign's own
    flows still pass without a word: a day-2 merge of the day-1 merge, a retention output, the base copied to
    another folder under another name; manifests from before (no ``lineage``): a warning. (A scan of a merged base
    is refused: tests/test_attacks_mistakes.py.)
(b) An Avro input whose top-level schema is not a record (a file of strings, of arrays, a union) was "not a
    readable avro file (AttributeError)" (or, for an array, "missing required column(s)"); now one line naming
    the file and saying its schema is not a record of the contract's columns.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess

import fastavro
import pytest

from schemas import field_names
from tests.support.attacks import AS_OF, canary_event, no_canary, run
from tests.support.attacks import refused as refused_by
from tests.support.rows import CANARY_NAME, person

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMPAIGN = os.path.join(ROOT, "examples", "campaign.yaml")
QUIET = ("--progress-seconds", "0")
UNSURE = "cannot tell whether"


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def write_base(path, prefix: str, region: str) -> str:
    """30 lines L000..L029 that need registration (no document number); ``prefix`` and ``region`` make another
    base of the same line ids."""
    rows = [
        person(line_id=f"L{i:03d}", msisdn=f"{prefix}{i:04d}", region=region, doc_number="", name=CANARY_NAME)
        for i in range(30)
    ]
    names = field_names("subscriber_base")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows([[r.get(c) or "" for c in names] for r in rows])
    return str(path)


def write_event(path, event_id: str, line_id: str) -> str:
    event = canary_event(event_id=event_id, line_id=line_id, registered_at="2026-12-02T10:00:00")
    path.write_text(json.dumps(event, ensure_ascii=False) + "\n", encoding="utf-8")
    return str(path)


def merge(site, out: str, *base: str, events: str, as_of: str) -> str:
    ok(run("merge", *base, "--registrations", events, "--keys", site["keys"], "--out", out, "--as-of", as_of, *QUIET))
    return out


def wave(scan: str, merged: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    argv = ["--scan", scan, "--campaign", CAMPAIGN, "--wave", "1", "--out", out, "--as-of", AS_OF]
    return run("notify", *argv, "--merged", merged, *extra)


def report(scan: str, merged: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    return run("report", "--scan", scan, "--merged", merged, "--out", out, "--as-of", "2026-12-07", *extra)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """Base A and base B (the same line ids, other numbers and region), the scan of A, a merge of each (one
    registration of L001), and A's campaign flow: a day-2 merge, a retention purge, a copy of the base scanned."""
    root = tmp_path_factory.mktemp("lineage")
    keys = str(root / "secure" / "keys.json")
    ok(run("keys", "init", "--keys", keys))
    site = {"root": root, "keys": keys}
    site["base_a"] = write_base(root / "base_a.csv", "1380013", "110105")
    site["base_b"] = write_base(root / "base_b.csv", "1390013", "310115")
    site["scan_a"] = str(root / "scan_a")
    ok(run("scan", "--base", site["base_a"], "--out", site["scan_a"], "--as-of", AS_OF, *QUIET))
    day1 = write_event(root / "day1.jsonl", "E1", "L001")
    site["merge_a"] = merge(site, str(root / "merge_a"), "--base", site["base_a"], events=day1, as_of="2026-12-02")
    site["merge_b"] = merge(site, str(root / "merge_b"), "--base", site["base_b"], events=day1, as_of="2026-12-02")
    day2 = write_event(root / "day2.jsonl", "E2", "L002")
    site["merge_a2"] = merge(site, str(root / "merge_a2"), "--merged", site["merge_a"], events=day2, as_of="2026-12-03")
    site["retention"] = str(root / "retention")
    argv = ["--merged", site["merge_a2"], "--keys", keys, "--out", site["retention"], "--as-of", "2026-12-04"]
    ok(run("retention", *argv, *QUIET))
    copied = root / "moved" / "subscribers-export.csv"  # another folder, another name, a new modification time
    copied.parent.mkdir()
    shutil.copyfile(site["base_a"], copied)
    site["scan_copy"] = str(root / "scan_copy")
    ok(run("scan", "--base", str(copied.parent), "--out", site["scan_copy"], "--as-of", AS_OF, *QUIET))
    return site


# (a) a merge of another base ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["out", "base"])
def test_notify_refuses_the_merge_of_another_base(site, tmp_path, where):
    merged = site["merge_b"] if where == "out" else os.path.join(site["merge_b"], "base")
    out = str(tmp_path / "notify")
    for extra in ((), ("--dry-run",)):  # before: exit 0, L001 of base B counted registered, the wave planned
        line = refused_by(wave(site["scan_a"], merged, out, *extra), "backfill notify", 1, f"--merged {merged}")
        assert f"--scan {site['scan_a']}" in line and "nothing was sent" in line, line
        assert "is not of the base" in line, line
        assert not os.path.exists(out)


def test_report_refuses_the_merge_of_another_base(site, tmp_path):
    out = str(tmp_path / "report")
    line = refused_by(report(site["scan_a"], site["merge_b"], out), "backfill report", 1, f"--merged {site['merge_b']}")
    assert f"--scan {site['scan_a']}" in line and "nothing was written" in line, line
    assert not os.path.exists(out)


def test_a_newer_export_of_the_base_goes_on_with_base_changed_and_a_warning(site, tmp_path):
    """The scan read a newer export of the subscriber base than the merges' chain started from (a line's number
    changed since): the fingerprints differ, so notify and report refuse unless told ``--base-changed``; then a
    warning and on."""
    newer = tmp_path / "base_a_newer.csv"
    with open(site["base_a"], encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    lines[-1] = lines[-1].replace("13800130029", "13800130129", 1)
    assert lines[-1] != open(site["base_a"], encoding="utf-8").read().splitlines()[-1]
    newer.write_text("\n".join(lines) + "\n", encoding="utf-8")
    scan_newer = str(tmp_path / "scan_newer")
    ok(run("scan", "--base", str(newer), "--out", scan_newer, "--as-of", AS_OF, *QUIET))
    out = str(tmp_path / "notify")
    line = refused_by(wave(scan_newer, site["merge_a2"], out), "backfill notify", 1, "--base-changed")
    assert "is not of the base" in line and not os.path.exists(out), line
    proc = ok(wave(scan_newer, site["merge_a2"], out, "--base-changed", "--dry-run"))
    assert "another export of the subscriber base" in proc.stderr and "registered since 2;" in proc.stdout
    refused_by(report(scan_newer, site["merge_a2"], str(tmp_path / "r1")), "backfill report", 1, "--base-changed")
    proc = ok(report(scan_newer, site["merge_a2"], str(tmp_path / "r2"), "--base-changed"))
    assert "another export of the subscriber base" in proc.stderr


def test_manifests_record_the_base_and_its_origin_without_a_value(site):
    def lineage(folder: str) -> dict:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as handle:
            return json.load(handle)["lineage"]

    scan, copy, merge_a, merge_b = (lineage(site[k]) for k in ("scan_a", "scan_copy", "merge_a", "merge_b"))
    merge_a2 = lineage(site["merge_a2"])
    assert scan == copy == merge_a and scan["origin"] == scan["base"] and scan["origin_is_raw"] is True
    assert merge_b["origin"] != scan["origin"]
    assert merge_a2["base"] != scan["base"] and merge_a2["origin"] == scan["origin"] and merge_a2["origin_is_raw"]
    no_canary(*(os.path.join(site[k], "manifest.json") for k in ("scan_a", "merge_a", "merge_a2")))


@pytest.mark.parametrize(
    "scan, merged, registered",
    [
        ("scan_a", "merge_a", 1),
        ("scan_a", "merge_a2", 2),  # day 2: the merge of the day-1 merge
        ("scan_a", "retention", 2),  # retention keeps no lineage of its own: its input's is followed
        ("scan_a", "retention/base", 2),
        ("scan_copy", "merge_a2", 2),  # the base moved and renamed before it was scanned
    ],
)
def test_the_campaigns_own_flows_pass_without_a_word(site, tmp_path, scan, merged, registered):
    folder = site[merged] if "/" not in merged else os.path.join(site[merged.split("/")[0]], "base")
    proc = ok(wave(site[scan], folder, str(tmp_path / "dry"), "--dry-run"))
    assert UNSURE not in proc.stderr, proc.stderr
    if registered is not None:
        assert f"registered since {registered};" in proc.stdout, proc.stdout


def test_a_report_of_the_campaigns_own_flow_passes(site, tmp_path):
    proc = ok(report(site["scan_a"], site["retention"], str(tmp_path / "report")))
    assert UNSURE not in proc.stderr, proc.stderr


def test_manifests_from_before_lineages_warn_and_do_not_refuse(site, tmp_path):
    def strip(name: str) -> str:
        copy = str(tmp_path / name)
        shutil.copytree(site[name], copy)
        path = os.path.join(copy, "manifest.json")
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        del manifest["lineage"]
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle)
        return copy

    old_scan, old_b, old_a = strip("scan_a"), strip("merge_b"), strip("merge_a")
    for scan, merged in ((site["scan_a"], old_b), (old_scan, site["merge_b"]), (old_scan, old_a)):
        proc = ok(wave(scan, merged, str(tmp_path / "dry"), "--dry-run"))
        warned = [line for line in proc.stderr.splitlines() if UNSURE in line]
        assert len(warned) == 1 and f"--merged {merged}" in warned[0] and f"--scan {scan}" in warned[0], proc.stderr
    proc = ok(report(old_scan, site["merge_b"], str(tmp_path / "report")))
    assert UNSURE in proc.stderr, proc.stderr


def test_a_list_of_line_ids_is_not_checked(site, tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("line_id\nL003\nL004\n", encoding="utf-8")
    proc = ok(wave(site["scan_a"], str(ids), str(tmp_path / "dry"), "--dry-run"))
    assert UNSURE not in proc.stderr and "registered since 2;" in proc.stdout, proc.stderr


# (b) an Avro file whose schema is not a record --------------------------------------------------------------------


AVRO_SCHEMAS = {
    "strings": ("string", ["L001", "L002"], "of type string"),
    "arrays": ({"type": "array", "items": "string"}, [["L001"], ["L002"]], "of type array"),
    "union": (["null", "string"], [None, "L002"], "a union"),
}


@pytest.mark.parametrize("kind", sorted(AVRO_SCHEMAS))
def test_an_avro_file_whose_schema_is_not_a_record_is_one_line(site, tmp_path, kind):
    schema, records, says = AVRO_SCHEMAS[kind]
    path = str(tmp_path / f"{kind}.avro")
    with open(path, "wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(schema), records)
    keys, out = site["keys"], str(tmp_path / "out")
    events = str(site["root"] / "day1.jsonl")
    cases = [
        ("scan", ["--base", path, "--out", out, "--as-of", AS_OF], "subscriber base"),
        ("merge", ["--base", path, "--registrations", events, "--keys", keys, "--out", out], "subscriber base"),
        ("merge", ["--base", site["base_a"], "--registrations", path, "--keys", keys, "--out", out], "registration"),
    ]
    for step, argv, contract in cases:
        line = refused_by(run(step, *argv, *QUIET), f"backfill {step}", 1, f"{path}: the Avro schema is not a record")
        assert f"of the {contract}" in line and says in line and "AttributeError" not in line, line
        assert not os.path.exists(out)


def test_a_base_copied_to_an_object_store_is_the_same_base(site, tmp_path, moto_server):
    bucket = moto_server.bucket()
    with open(site["base_a"], "rb") as handle:
        moto_server.client("s3").put_object(Bucket=bucket[5:], Key="exports/base.csv", Body=handle.read())
    scan = str(tmp_path / "scan_s3")
    ok(run("scan", "--base", f"{bucket}/exports/base.csv", "--out", scan, "--as-of", AS_OF, *QUIET))
    with open(os.path.join(scan, "manifest.json"), encoding="utf-8") as handle:
        lineage = json.load(handle)["lineage"]
    with open(os.path.join(site["scan_a"], "manifest.json"), encoding="utf-8") as handle:
        assert lineage == json.load(handle)["lineage"]
    proc = ok(wave(scan, site["merge_a2"], str(tmp_path / "dry"), "--dry-run"))
    assert UNSURE not in proc.stderr and "registered since 2;" in proc.stdout, proc.stderr


def test_a_compact_of_the_raw_base_passes_and_one_of_another_base_warns(site, tmp_path):
    """Compact records no lineage; of a raw base, the base files its manifest names confirm a match (taken now,
    they never refuse: they may have been replaced since)."""
    from tests.support.compact import commit_windows

    with open(site["root"] / "day1.jsonl", encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle if line.strip()]
    for base, warned in ((site["base_a"], False), (site["base_b"], True)):
        deltas, out = str(tmp_path / f"deltas-{warned}"), str(tmp_path / f"compact-{warned}")
        commit_windows([base], [events], deltas, site["keys"])
        argv = ["--base", base, "--deltas", deltas, "--keys", site["keys"], "--out", out, "--as-of", "2026-12-02"]
        ok(run("compact", *argv, *QUIET))
        proc = ok(wave(site["scan_a"], out, str(tmp_path / "dry"), "--dry-run"))
        assert (UNSURE in proc.stderr) is warned, proc.stderr
