"""The command line under attack, through the real ``backfill`` command: what a careless user or an attacker
types gets one line on stderr and nothing touched (each case failed before its fix).

(a) An empty or blank value (``--out "$OUT"`` with OUT unset) is an error: ``scan --out ""`` published its
    output into the working directory, exchanging it (the user's files moved into a new 0700 folder).
(b) A flag that takes one value, given twice with different values, is an error (argparse kept the last one
    silently); a list flag given twice too (``--manifests A --manifests B`` dropped A). Values are not quoted.
(c) Counts out of range: ``--shuffle-buckets -3`` ended in "unexpected OverflowError", ``--samples -1`` in
    "unexpected ArrowInvalid"; ``--progress-seconds nan`` was accepted.
(d) ``reveal --fields nmae`` was recorded as a reveal of nothing and exited 0; now refused before the vault is
    read or the audit log written. A ``--purpose`` or an incident ``--description`` holding a document number
    (which the audit log or the incident report would have kept in plaintext) is refused.
(e) A campaign's ``price_per_segment: .nan`` or ``.inf`` printed an estimated cost of nan; a 100,000-character
    value was quoted whole in the error.
(f) ``compact`` with a base that does not hold the deltas' lines said they were "older than the line's
    registration".
(g) The scan's manifest named its summary in the staged folder, gone once the output was switched in.
(h) A folder of inputs: a compressed file beside the readable ones (``part-1.csv.gz``) was left out silently,
    its rows missing; now refused. Other files are named in a warning; markers (``_SUCCESS``, ``.crc``) are not.
(i) A registration stamped years ahead by a wrong clock was applied, and as the latest it would have beaten every
    real registration after it: now a ``TIMESTAMP_IN_FUTURE`` dead letter, on both merge engines.
(j) A UTF-16 export was told to try GB18030; a ``--suppress`` file without one phone number (the base given by
    mistake) was ignored silently; now each is one line, and the lines left out of a mixed list are counted.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.support.attacks import (
    AS_OF,
    CANARIES,
    FULLWIDTH_NUMBER,
    canary_csv,
    canary_event,
    refused,
    run,
)
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAMPAIGN = os.path.join(ROOT, "examples", "campaign.yaml")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """A canary base, a keyset, its scan and a merge with one canary registration."""
    root = tmp_path_factory.mktemp("attacks")
    keys = str(root / "secure" / "keys.json")
    assert run("keys", "init", "--keys", keys).returncode == 0
    base = canary_csv(root / "base.csv", ["L0001", "L0002", "L0003"])
    scan = str(root / "scan")
    proc = run("scan", "--base", base, "--out", scan, "--as-of", AS_OF, "--progress-seconds", "0")
    assert proc.returncode == 0, proc.stderr
    event = canary_event()
    events = root / "events.jsonl"
    events.write_text(json.dumps(event, ensure_ascii=False) + "\n", encoding="utf-8")
    merged = str(root / "merge")
    argv = ["--base", base, "--registrations", str(events), "--keys", keys, "--out", merged, "--as-of", AS_OF]
    proc = run("merge", *argv, "--progress-seconds", "0")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "keys": keys, "base": base, "scan": scan, "merged": merged, "events": str(events)}


def test_the_scan_manifest_names_its_summary_where_it_is(site):
    # it named the staged folder OUT.tmp-RUN_ID/summary.json, which is gone once the output is switched in
    with open(os.path.join(site["scan"], "manifest.json"), encoding="utf-8") as handle:
        summary = json.load(handle)["outputs"]["summary"]
    assert summary == os.path.join(site["scan"], "summary.json") and os.path.isfile(summary)


# (a) empty values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command, flag",
    [
        ("scan --base {base} --out", "--out"),
        ("scan --base {base} --out={blank}", "--out"),
        ("scan --out {new} --base", "--base"),
        ("merge --registrations {events} --keys {keys} --out {new} --merged", "--merged"),
        ("notify --scan {scan} --campaign {campaign} --wave 1 --out", "--out"),
        ("report --scan {scan} --merged {merged} --out", "--out"),
        ("incident --key-version j1 --merged {merged} --out", "--out"),
        ("keys show --keys", "--keys"),
    ],
)
def test_an_empty_value_is_refused_and_the_working_directory_is_untouched(site, tmp_path, command, flag):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "mine.txt").write_text("the user's file\n", encoding="utf-8")
    before = os.stat(cwd)
    values = {k: site[k] for k in ("base", "events", "keys", "scan", "merged")}
    values.update(new=str(tmp_path / "new"), campaign=CAMPAIGN, blank="  ")
    argv = command.format(**values).split(" ")
    argv += [] if "=" in argv[-1] else [""]  # the empty value itself
    proc = run(*argv, cwd=str(cwd))
    prog = "backfill keys show" if argv[0] == "keys" else f"backfill {argv[0]}"
    refused(proc, prog, 2, f"argument {flag}: empty value")
    after = os.stat(cwd)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)  # not exchanged, not made private
    assert os.listdir(cwd) == ["mine.txt"] and not os.path.exists(tmp_path / "new")


# (b) repeated flags -------------------------------------------------------------------------------------


def test_a_flag_given_twice_with_different_values_is_refused(site, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    proc = run("scan", "--base", site["base"], "--out", a, "--out", b)
    refused(proc, "backfill scan", 2, "argument --out: given more than once with different values")
    assert not os.path.exists(a) and not os.path.exists(b)
    proc = run("scan", "--base", site["base"], "--out", a, "--as-of", AS_OF, "--as-of=2026-12-01")
    refused(proc, "backfill scan", 2, "argument --as-of: given more than once")
    # an old name and its current one are the same flag
    proc = run("notify", "--scan", site["scan"], "--classified", a, "--campaign", CAMPAIGN, "--wave", "1", "--out", b)
    refused(proc, "backfill notify", 2, "argument --scan: given more than once")
    # the values are not quoted: a purpose may hold anything
    argv = ["--keys", site["keys"], "--merged", site["merged"], "--line-id", "L0001"]
    proc = run("reveal", *argv, "--purpose", f"about {CANARY_NAME}", "--purpose", "other")
    refused(proc, "backfill reveal", 2, "argument --purpose: given more than once")
    # a list flag given twice: the second list replaced the first
    proc = run("report", "--self-inspection", "--year", "2026", "--manifests", a, "--manifests", b, "--out", a)
    refused(proc, "backfill report", 2, "argument --manifests: given more than once")
    assert not os.path.exists(a) and not os.path.exists(b)


def test_the_same_value_twice_is_accepted(site, tmp_path):
    out = str(tmp_path / "scan")
    proc = run("scan", "--base", site["base"], "--out", out, "--out=" + out, "--as-of", AS_OF, "--as-of", AS_OF)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        assert json.load(handle)["counts"]["rows_in"] == 3


# (c) counts out of range --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--shuffle-buckets", "-3"], "argument --shuffle-buckets: must be at least 1"),
        (["--shuffle-buckets", "0"], "argument --shuffle-buckets: must be at least 1"),
        (["--progress-seconds", "nan"], "argument --progress-seconds: must be at least 0 and finite"),
        (["--progress-seconds", "-1"], "argument --progress-seconds: must be at least 0"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["--workers", "0"], "argument --workers: must be at least 1"),
        (["--estimated-rows", "-1"], "argument --estimated-rows: must be at least 0"),
        # a name, an address or a document number typed into a flag is not quoted back
        (["--as-of", CANARY_NAME], "argument --as-of: --as-of (a value not shown) is not a date"),
        (["--batch-size", CANARY_ADDRESS], "argument --batch-size: invalid int value: (a value not shown)"),
        (["--spill", CANARY_NUMBER], "argument --spill: invalid choice: (a value not shown)"),
        (["--as-of", "2026-13-01"], "--as-of '2026-13-01' is not a date"),
    ],
)
def test_scan_counts_out_of_range_are_one_line(site, tmp_path, extra, expected):
    out = tmp_path / "out"
    refused(run("scan", "--base", site["base"], "--out", str(out), *extra), "backfill scan", 2, expected)
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--samples", "-1"], "argument --samples: must be at least 0"),
        (["--show-regions", "-3"], "argument --show-regions: must be at least 0"),
        (["--publish-batch", "0"], "argument --publish-batch: must be at least 1"),
        (["--shuffle-buckets", "-2"], "argument --shuffle-buckets: must be at least 1"),
    ],
)
def test_notify_counts_out_of_range_are_one_line(site, tmp_path, extra, expected):
    argv = ["--scan", site["scan"], "--campaign", CAMPAIGN, "--wave", "1", "--out", str(tmp_path / "n")]
    refused(run("notify", *argv, "--dry-run", *extra), "backfill notify", 2, expected)


# (d) reveal and incident --------------------------------------------------------------------------------


def audit_lines(site) -> int:
    path = os.path.join(site["merged"], "audit", "reveal.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as handle:
        return len(handle.readlines())


@pytest.mark.parametrize(
    "fields, expected",
    [
        ("nmae", "unknown field nmae"),
        (",,,", "no field named"),
        (f"name,{CANARY_NAME}", "unknown field (not a field name)"),
        (f"name,{CANARY_NUMBER}", "unknown field (not a field name)"),  # letters and digits: not quoted either
    ],
)
def test_reveal_refuses_unknown_fields_before_reading_or_recording(site, fields, expected):
    before = audit_lines(site)
    argv = ["--keys", site["keys"], "--merged", site["merged"], "--line-id", "L0001", "--purpose", "ticket 118"]
    refused(run("reveal", *argv, "--fields", fields), "backfill reveal", 2, expected)
    assert audit_lines(site) == before
    proc = run("reveal", *argv, "--fields", "name")  # a known field still reveals, on record
    assert proc.returncode == 0 and proc.stdout == f"name: {CANARY_NAME}\n", proc.stderr
    assert audit_lines(site) == before + 1


@pytest.mark.parametrize("number", [CANARY_NUMBER, FULLWIDTH_NUMBER, CANARY_NUMBER[:15]])
def test_a_document_number_in_a_purpose_or_a_description_is_refused(site, tmp_path, number):
    before = audit_lines(site)
    argv = ["--keys", site["keys"], "--merged", site["merged"], "--line-id", "L0001"]
    proc = run("reveal", *argv, "--purpose", f"verify holder {number} (ticket 118)")
    refused(proc, "backfill reveal", 1, "--purpose holds what looks like a document number")
    assert audit_lines(site) == before
    out = tmp_path / "incident"
    argv = ["--key-version", "j1", "--merged", site["merged"], "--out", str(out), "--as-of", AS_OF]
    proc = run("incident", *argv, "--description", f"record of {number} found on a forum")
    refused(proc, "backfill incident", 1, "--description holds what looks like a document number")
    assert not out.exists()


# (e) campaign values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("price_per_segment: 0.045", "price_per_segment: .nan", "price_per_segment: nan is not a finite number"),
        ("price_per_segment: 0.045", "price_per_segment: .inf", "price_per_segment: inf is not a finite number"),
        ("campaign_id: rn-2026-q4", "campaign_id: " + "x" * 100_000, "campaign_id: 'xxxx"),
    ],
)
def test_campaign_values_that_are_no_numbers_or_too_long_are_one_short_line(site, tmp_path, old, new, expected):
    with open(CAMPAIGN, encoding="utf-8") as handle:
        text = handle.read()
    assert old in text
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(text.replace(old, new), encoding="utf-8")
    argv = ["--scan", site["scan"], "--campaign", str(campaign), "--wave", "1", "--out", str(tmp_path / "n")]
    line = refused(run("notify", *argv, "--dry-run", "--as-of", AS_OF), "backfill notify", 1, expected)
    assert len(line) < 400


# (f) compact on a base without the deltas' lines --------------------------------------------------------


def test_compact_names_deltas_for_lines_not_in_its_base(tmp_path):
    from tests.support.compact import commit_windows, compact_command, keys_file

    keys = keys_file(str(tmp_path))
    streamed = canary_csv(tmp_path / "streamed.csv", ["L0001", "L0002"])
    other = canary_csv(tmp_path / "other.csv", ["M0001", "M0002"])
    event = canary_event(channel="STORE")
    deltas = str(tmp_path / "deltas")
    commit_windows([streamed], [[event]], deltas, keys)
    proc = run("compact", *compact_command([other], deltas, keys, str(tmp_path / "out")), "--progress-seconds", "0")
    assert proc.returncode == 0, proc.stderr
    assert (
        "1 delta rows -> 0 lines registered (1 older than the line's registration or for a line not in this base)"
        in (proc.stdout)
    )


def test_publishing_refuses_an_empty_out_itself(tmp_path, monkeypatch):
    # the flag check is one guard; the publisher is the other: a caller that passes "" (a DAG, a script calling
    # run()) must not exchange the working directory either
    from pipelines.common import UserError
    from pipelines.io.publish import publishing, writing_into

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("the user's file\n", encoding="utf-8")
    before = os.stat(tmp_path)
    for out in ("", "   "):
        with pytest.raises(UserError, match="--out is empty"), publishing(out, "scan", "r1"):
            pass
        with pytest.raises(UserError, match="--out is empty"), writing_into(out, "notify", "r1"):
            pass
    after = os.stat(tmp_path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert os.listdir(tmp_path) == ["mine.txt"]


# (h) a folder of inputs with files that are not read ----------------------------------------------------


def test_a_compressed_file_beside_the_inputs_is_refused_not_left_out(site, tmp_path):
    import gzip
    import shutil

    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(site["base"], folder / "part-0.csv")
    with open(site["base"], "rb") as src, gzip.open(folder / "part-1.csv.gz", "wb") as dst:
        dst.write(src.read())
    proc = run("scan", "--base", str(folder), "--out", str(tmp_path / "scan"), "--as-of", AS_OF)
    refused(proc, "backfill scan", 1, "1 compressed file(s)", "part-1.csv.gz", "nothing was read")
    assert not os.path.exists(tmp_path / "scan")


def test_other_files_beside_the_inputs_are_named_and_markers_are_not(site, tmp_path):
    import shutil

    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(site["base"], folder / "part-0.csv")
    for name in ("_SUCCESS", ".part-0.csv.crc", "README.txt"):
        (folder / name).write_text("x\n", encoding="utf-8")
    proc = run("scan", "--base", str(folder), "--out", str(tmp_path / "scan"), "--as-of", AS_OF)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("1 file(s) not .parquet, .avro or .csv left out (such as README.txt)") == 1
    assert "_SUCCESS" not in proc.stderr and ".crc" not in proc.stderr
    with open(tmp_path / "scan" / "manifest.json", encoding="utf-8") as handle:
        assert json.load(handle)["counts"]["rows_in"] == 3


# (i) a registration from a wrong clock ----------------------------------------------------------------------


@pytest.mark.parametrize("engine", [[], ["--direct_num_workers", "1"]], ids=["in-process", "beam-job"])
def test_a_registration_dated_after_the_merges_day_is_a_dead_letter(site, tmp_path, engine):
    # the latest registration of a line wins: one stamped years ahead by a wrong clock would beat every real
    # registration after it, so it takes nothing; the day after --as-of (any time zone's tomorrow) still counts
    import datetime as dt

    as_of = dt.datetime.now(dt.timezone.utc).date()
    late = (as_of + dt.timedelta(days=1)).isoformat() + "T23:00:00+08:00"
    ahead = (as_of + dt.timedelta(days=400)).isoformat() + "T10:00:00"
    events = tmp_path / "events.jsonl"
    rows = [canary_event(event_id="E-late", line_id="L0002", registered_at=late)]
    rows.append(canary_event(event_id="E-ahead", line_id="L0003", registered_at=ahead))
    events.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "merge"
    argv = ["--merged", site["merged"], "--registrations", str(events), "--keys", site["keys"], "--out", str(out)]
    proc = run("merge", *argv, "--as-of", as_of.isoformat(), "--progress-seconds", "0", *engine)
    assert proc.returncode == 0, proc.stderr
    with open(out / "manifest.json", encoding="utf-8") as handle:
        counts = json.load(handle)["counts"]["events"]
    assert (counts["rows_in"], counts["applied"], counts["dead_letters"]) == (2, 1, 1)
    assert counts["dead_letter_reasons"] == {"TIMESTAMP_IN_FUTURE": 1} and counts["balanced"]
    letters = [
        json.loads(line) for f in sorted(os.listdir(out / "dead_letter")) for line in open(out / "dead_letter" / f)
    ]
    assert [(d["event_id"], d["reason"], d["field"]) for d in letters] == [
        ("E-ahead", "TIMESTAMP_IN_FUTURE", "registered_at")
    ]
    import pyarrow.parquet as pq

    base = pq.read_table(out / "base", columns=["line_id", "registration_event_id"]).to_pylist()
    registered = {r["line_id"]: r["registration_event_id"] for r in base}
    assert registered["L0002"] == "E-late" and registered["L0003"] is None
    for path in [p for p in out.rglob("*") if p.is_file() and "vault" not in p.parts]:
        assert not any(c.encode("utf-8") in path.read_bytes() for c in CANARIES), path


# (j) files given in the wrong form ------------------------------------------------------------------------


def test_a_utf16_export_is_named_as_such(site, tmp_path):
    # a spreadsheet's "Unicode text" is UTF-16: the message used to suggest --encoding gb18030
    with open(site["base"], encoding="utf-8") as handle:
        (tmp_path / "base.csv").write_bytes(handle.read().encode("utf-16"))
    proc = run("scan", "--base", str(tmp_path / "base.csv"), "--out", str(tmp_path / "scan"), "--as-of", AS_OF)
    refused(proc, "backfill scan", 1, "UTF-16 text", "re-export as UTF-8 or GB18030")
    assert not os.path.exists(tmp_path / "scan")


def test_a_suppress_file_without_phone_numbers_is_refused_unquoted(site, tmp_path):
    # the base file given as the do-not-SMS list: its lines were ignored silently, every number then notified
    argv = ["--scan", site["scan"], "--campaign", CAMPAIGN, "--wave", "1", "--out", str(tmp_path / "n")]
    proc = run("notify", *argv, "--suppress", site["base"], "--dry-run")
    refused(proc, "backfill notify", 1, "--suppress", "none of its 4 lines is a phone number")
    mixed = tmp_path / "dnd.txt"
    mixed.write_text(f"# do not send\n13800138000\n{CANARY_NAME}\n+86 139-0013-9000\n", encoding="utf-8")
    proc = run("notify", *argv, "--suppress", str(mixed), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "1 of 3 lines are no phone number, left out" in proc.stderr and CANARY_NAME not in proc.stderr
