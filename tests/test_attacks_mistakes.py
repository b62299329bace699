"""Three operator mistakes the last review found accepted without a word, through the real ``backfill`` command
(each case failed before its fix).

(a) ``backfill scan --base`` a merged base (a merge's ``OUT/base``, its ``OUT``, or a copy of its files): every
    line classified INCOMPLETE/MISSING (tokens and masks, no plaintext identity), so the campaign would have
    notified the whole base again. Now refused in one line, nothing written, naming what to do instead. A raw
    export without identity columns still scans (every line MISSING: a legitimate case).
(b) Registration files as JSON Lines: their keys did not go through the column aliases the CSV, Parquet and Avro
    headers go through (schemas/column_aliases.yaml), so an export's 登记流水号, 用户编号, 证件号码 ... keys
    were dropped (the events dead-lettered, or their identity lost). Now mapped the same way; one field under two
    keys is that line's dead letter. The streaming merge's message bodies take the same mapping.
(c) ``backfill compact --base`` a raw base other than the one the streaming merge ran on folded the stream's
    registrations into that other base. The streaming merge now records the base's lineage in its manifests and
    compact refuses another base in one line (``--base-changed``: a newer export of the same base, a warning);
    when the manifests do not tell, a warning.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from schemas import field_names
from tests.support.attacks import AS_OF, canary_event, no_canary, run
from tests.support.attacks import refused as refused_by
from tests.support.rows import CANARY_NAME, person

pytestmark = pytest.mark.e2e

QUIET = ("--progress-seconds", "0")
BASE_COLUMNS = field_names("subscriber_base")


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def write_csv(path, rows: list[dict], columns=BASE_COLUMNS) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([[r.get(c) or "" for c in columns] for r in rows])
    return str(path)


def write_jsonl(path, events: list[dict]) -> str:
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """A raw base of 6 lines (L000 without a document number), a keyset, and the merge of one registration."""
    root = tmp_path_factory.mktemp("mistakes")
    keys = str(root / "secure" / "keys.json")
    ok(run("keys", "init", "--keys", keys))
    rows = [person(line_id=f"L{i:03d}", msisdn=f"1380013{i:04d}", name=CANARY_NAME) for i in range(6)]
    rows[0]["doc_number"] = ""
    base = write_csv(root / "base.csv", rows)
    events = write_jsonl(root / "day1.jsonl", [canary_event(event_id="E1", line_id="L000")])
    merged = str(root / "merge")
    argv = ["--base", base, "--registrations", events, "--keys", keys, "--out", merged, "--as-of", "2026-12-02"]
    ok(run("merge", *argv, *QUIET))
    return {"root": root, "keys": keys, "base": base, "rows": rows, "merged": merged}


# (a) a scan of a merged base ------------------------------------------------------------------------------------


def scan(base: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    return run("scan", "--base", base, "--out", out, "--as-of", AS_OF, *QUIET, *extra)


# planned by the launcher, or (--estimated-rows) by the Beam job's first step: a launcher that reads no base file
# scanned a merged base's files (every line INCOMPLETE or MISSING) until the job's planning refused it too
PLANNED = {"by the launcher": (), "in the job": ("--estimated-rows", "10")}


@pytest.mark.parametrize("planned", PLANNED)
@pytest.mark.parametrize("given", ["base", "out", "copy", "file"])
def test_a_scan_of_a_merged_base_is_refused_before_anything_is_written(site, tmp_path, given, planned):
    merged_base = os.path.join(site["merged"], "base")
    if given == "copy":  # its files copied elsewhere, without the merge's manifest: told by their columns
        target = tmp_path / "copied"
        shutil.copytree(merged_base, target)
        path = str(target)
    elif given == "file":
        path = sorted(os.path.join(merged_base, f) for f in os.listdir(merged_base) if f.endswith(".parquet"))[0]
    else:
        path = merged_base if given == "base" else site["merged"]
    out = str(tmp_path / "scan")
    line = refused_by(
        scan(path, out, *PLANNED[planned]), "backfill scan", 1, "is a merged base" if given != "copy" else "merged base"
    )
    assert "scan the raw export" in line and "backfill report --merged" in line and "nothing was written" in line
    assert "identity_status" in line, line
    assert not os.path.exists(out)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_raw_export_without_identity_columns_still_scans(site, tmp_path, fmt):
    """No name, document number or address column (and no token column): a raw export, every line MISSING."""
    columns = [c for c in BASE_COLUMNS if c not in ("doc_number", "name", "address", "handler_doc_number")]
    path = write_csv(tmp_path / "bare.csv", site["rows"], columns)
    if fmt == "parquet":
        table = pacsv.read_csv(path)
        path = str(tmp_path / "bare.parquet")
        pq.write_table(table.cast(pa.schema([(n, pa.string()) for n in table.column_names])), path)
    out = tmp_path / "scan"
    proc = ok(scan(path, str(out)))
    assert "no such column" in proc.stderr, proc.stderr  # the warning a base without identity columns gets
    classified = pq.read_table(out / "classified").to_pylist()
    assert len(classified) == 6 and all(r["needs_registration"] for r in classified)
    no_canary(str(out))


# (b) registration files as JSON Lines under an export's key names --------------------------------------------------


EXPORT_KEYS = {  # schemas/column_aliases.yaml, registration events: one of each field's names
    "event_id": "登记流水号", "line_id": "用户编号", "doc_type": "证件类型", "doc_number": "证件号码",
    "name": "姓名", "address": "证件地址", "channel": "登记渠道", "agent_id": "受理工号",
    "verified_by": "核验方式", "registered_at": "登记时间",
}  # fmt: skip


def merged_lines(out: str) -> dict[str, dict]:
    return {r["line_id"]: r for r in pq.read_table(os.path.join(out, "base")).to_pylist()}


def dead_letters(out: str) -> list[dict]:
    folder = os.path.join(out, "dead_letter")
    return [json.loads(line) for f in sorted(os.listdir(folder)) for line in open(os.path.join(folder, f))]


def test_json_lines_keys_under_an_exports_names_are_the_contracts_fields(site, tmp_path):
    """A registration export as JSON Lines keyed 登记流水号, 用户编号, 证件号码...: before, every field was dropped
    (no event_id, no line_id: the line stayed unregistered). Now read as under the contract's names, the same
    merged line as the English keys give; a field under two keys is that line's dead letter, the rest applied."""
    event = canary_event(event_id="E1", line_id="L000", registered_at="2026-12-01T10:00:00")
    chinese = {EXPORT_KEYS[k]: v for k, v in event.items()}
    twice = {**canary_event(event_id="E2", line_id="L003"), "用户编号": "L004"}  # line_id under two names
    outs = {}
    for name, events in (("en", [event]), ("zh", [chinese, twice])):
        outs[name] = str(tmp_path / f"merge-{name}")
        path = write_jsonl(tmp_path / f"{name}.jsonl", events)
        argv = ["--base", site["base"], "--registrations", path, "--keys", site["keys"], "--out", outs[name]]
        ok(run("merge", *argv, "--as-of", "2026-12-02", *QUIET))
    en, zh = merged_lines(outs["en"]), merged_lines(outs["zh"])
    assert zh["L000"]["registration_event_id"] == "E1" and zh["L000"]["identity_status"] == "COMPLETE"
    assert {k: v for k, v in zh["L000"].items() if "token" not in k} == {
        k: v for k, v in en["L000"].items() if "token" not in k
    }
    assert zh["L003"]["registration_event_id"] is None and zh["L004"]["registration_event_id"] is None
    dead = [d for d in dead_letters(outs["zh"]) if d.get("source_row") == 2]
    assert len(dead) == 1 and dead[0]["field"] == "line_id" and "under two keys" in dead[0]["detail"], dead
    no_canary(outs["zh"])


def test_a_field_given_twice_in_one_json_object_is_a_dead_letter_not_its_last_value(site, tmp_path):
    """``{"name": A, ..., "name": B}``: json.loads kept the last value, so a checker reading the first saw one
    person and the merge sealed another. Now that event is a ROW_MALFORMED dead letter naming the field (never
    a value), in the batch merge and in the stream's body parser; a key repeated outside the contract is
    ignored as the key itself is."""
    from transforms.merge.messages import parse_bodies

    first = canary_event(event_id="E1", line_id="L000", registered_at="2026-12-01T10:00:00")
    other = canary_event(event_id="E2", line_id="L003", registered_at="2026-12-01T10:00:00")
    twice = json.dumps(first, ensure_ascii=False)[:-1] + ', "name": "王五"}'
    ignored = json.dumps(other, ensure_ascii=False)[:-1] + ', "note": 1, "note": 2}'
    path = tmp_path / "events.jsonl"
    path.write_text(twice + "\n" + ignored + "\n", encoding="utf-8")
    out = str(tmp_path / "merge")
    argv = ["--base", site["base"], "--registrations", str(path), "--keys", site["keys"], "--out", out]
    ok(run("merge", *argv, "--as-of", "2026-12-02", *QUIET))
    lines = merged_lines(out)
    assert lines["L000"]["registration_event_id"] is None and lines["L003"]["registration_event_id"] == "E2"
    dead = [d for d in dead_letters(out) if d.get("event_id") == "E1"]
    assert len(dead) == 1 and dead[0]["reason"] == "ROW_MALFORMED" and dead[0]["field"] == "name", dead
    assert dead[0]["detail"] == "field name given twice in one object"
    no_canary(out)
    bodies = pa.array([twice.encode(), ignored.encode()], pa.binary())
    raw, bad = parse_bodies(np.array([1, 2], np.int64), bodies, 10_000)
    assert raw.column("event_id").to_pylist() == ["E2"]
    assert [(b.source_row, b.field, b.detail) for b in bad] == [(1, "name", "field name given twice in one object")]


def test_a_csv_and_a_json_lines_export_under_the_same_names_merge_alike(site, tmp_path):
    """The CSV path took the export's names already: the JSON Lines one now gives the same merged base."""
    event = canary_event(event_id="E1", line_id="L000", registered_at="2026-12-01T10:00:00")
    csv_path = tmp_path / "zh.csv"
    write_csv(csv_path, [event], columns=list(event))
    csv_path.write_text(
        csv_path.read_text(encoding="utf-8").replace(",".join(event), ",".join(EXPORT_KEYS[k] for k in event), 1),
        encoding="utf-8",
    )
    json_path = write_jsonl(tmp_path / "zh.jsonl", [{EXPORT_KEYS[k]: v for k, v in event.items()}])
    bases = {}
    for name, path in (("csv", str(csv_path)), ("jsonl", json_path)):
        out = str(tmp_path / f"merge-{name}")
        argv = ["--base", site["base"], "--registrations", path, "--keys", site["keys"], "--out", out]
        ok(run("merge", *argv, "--as-of", "2026-12-02", *QUIET))
        bases[name] = merged_lines(out)
    assert bases["csv"]["L000"]["registration_event_id"] == "E1"
    assert bases["csv"] == bases["jsonl"]


# (c) compact of a base the stream did not run on (and (b) for the stream's message bodies) ---------------------


def stream(sub: str, base: str, keys: str, out: str) -> subprocess.CompletedProcess:
    """``backfill merge --streaming`` until 3 s without a message."""
    argv = ["--streaming", "--subscription", sub, "--base", base, "--keys", keys, "--out", out, "--as-of", AS_OF]
    return run("merge", *argv, "--window-seconds", "1", "--stop-after-idle", "3")


def compact(base: str, deltas: str, keys: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    return run("compact", "--base", base, "--deltas", deltas, "--keys", keys, "--out", out, *extra, *QUIET)


def strip_lineage(stream_out: str, copy: str) -> str:
    shutil.copytree(stream_out, copy, ignore=shutil.ignore_patterns("landing", "state", ".lock"))
    for path in [os.path.join(copy, "manifest.json")] + [
        os.path.join(copy, "runs", n) for n in os.listdir(os.path.join(copy, "runs"))
    ]:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        manifest.pop("lineage")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle)
    return copy


def test_compact_refuses_a_base_the_streaming_merge_did_not_run_on(site, tmp_path, pubsub_emulator):
    from tests.support.stream_cli import as_message, publish

    topic, sub = pubsub_emulator.topic_and_subscription("mistakes", ack_deadline_seconds=10)
    body = {EXPORT_KEYS[k]: v for k, v in canary_event(event_id="S1", line_id="L000").items()}  # an export's keys
    publish(topic, [as_message(body, {"event_id": "S1", "line_id": "L000"})])
    out = str(tmp_path / "stream")
    ok(stream(sub, site["base"], site["keys"], out))
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    assert manifest["all_windows"]["applied"] == 1, manifest["all_windows"]  # before: ATTRIBUTE_MISMATCH
    assert manifest["lineage"]["origin_is_raw"] is True
    other = [{**r, "msisdn": "1390013" + r["msisdn"][-4:], "region": "310115"} for r in site["rows"]]
    other_base = write_csv(tmp_path / "other.csv", other)

    refused_out = str(tmp_path / "refused")
    line = refused_by(
        compact(other_base, out, site["keys"], refused_out), "backfill compact", 1, f"--base {other_base}"
    )
    assert "is not the base the streaming merge of --deltas" in line and "--base-changed" in line, line
    assert "nothing was written" in line and not os.path.exists(refused_out)

    proc = ok(compact(other_base, out, site["keys"], str(tmp_path / "changed"), "--base-changed"))
    assert "another export of the subscriber base" in proc.stderr, proc.stderr
    proc = ok(compact(site["base"], out, site["keys"], str(tmp_path / "same")))
    assert "cannot tell" not in proc.stderr and "another export" not in proc.stderr, proc.stderr
    assert merged_lines(str(tmp_path / "same"))["L000"]["registration_event_id"] == "S1"

    old = strip_lineage(out, str(tmp_path / "stream-before-lineages"))  # a stream run before lineages: unsure
    proc = ok(compact(other_base, os.path.join(old, "deltas"), site["keys"], str(tmp_path / "unsure")))
    warned = [line for line in proc.stderr.splitlines() if "cannot tell whether" in line]
    assert len(warned) == 1 and f"--base {other_base}" in warned[0], proc.stderr
    no_canary(out, str(tmp_path / "same"))
