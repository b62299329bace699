"""`backfill merge`, `backfill reveal` and `backfill keys rotate/retokenize` as a user runs them.

Canaries are planted in the base and in the events; every output file, the
logs and the dead letters are searched for them. Run:
.venv/bin/python -m pytest tests/test_merge_cli.py -q
"""

from __future__ import annotations

import collections
import csv
import json
import os
import shutil
import subprocess
import sys

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import avro_schema, field_names
from tests.support.merge import event as canary_registration
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, organisation, person
from tests.support.vault_rows import flip_first, replace_row, rewrite_values, value_row, without_row
from transforms.crypto.keyset import Keyset
from transforms.crypto.vault import Vault
from pipelines.io.vault_files import read_vault

pytestmark = pytest.mark.e2e  # every test runs the backfill CLI in subprocesses (keys, merge, reveal)

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF = "2026-11-30"
CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS, "金丝雀代办人")
MEGA = "北" * 1_000_000


def run(*args, check=True):
    proc = subprocess.run([BACKFILL, *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def one_line_error(proc, prog: str) -> str:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"{prog}: error: "), proc.stderr
    return lines[-1]


def base_rows() -> list[dict]:
    rows = [
        person(line_id="L01", name=CANARY_NAME, address=CANARY_ADDRESS),
        person(line_id="L02", name="", address=None),
        person(line_id="L03", status="TERMINATED"),
        organisation(line_id="L04"),
        person(line_id="L05", name="旧名", updated_at="2023-01-01T00:00:00"),
        person(line_id="L05", name="新名", updated_at="2025-01-01T00:00:00"),
        person(line_id="L06", doc_type=None, doc_number=None, name=None, address=None),
        person(line_id="L07", doc_number="440308199901101512", name="周七"),
        person(line_id="L08", status="SOMETIMES"),
        person(line_id="L09", name=MEGA),
    ]
    rows += [
        person(
            line_id=f"L{i:02d}",
            doc_number="110101199003070011" if i % 2 else "440308199901101512",
            name="张三" if i % 3 else "李四",
        )
        for i in range(10, 20)
    ]
    return rows


def event(**fields) -> dict:
    """tests/support/merge.py's canary registration, of line L02 by an agent's ID card reader."""
    plain = {"event_id": "E01", "line_id": "L02", "channel": "AGENT", "agent_id": "AG00777"}
    return canary_registration(**{**plain, "verified_by": "ID_CARD_READER", **fields})


EVENTS = [
    event(),
    event(),  # redelivered: a duplicate
    event(event_id="E02", line_id="L03"),  # TERMINATED
    event(event_id="E03", line_id="L99"),  # unknown
    event(event_id="E04", line_id="L07", registered_at="2026-11-01T00:00:00"),  # superseded
    event(event_id="E05", line_id="L07", registered_at="2026-11-02T08:00:00+08:00"),  # superseded (tie, smaller id)
    event(event_id="E06", line_id="L07", registered_at="2026-11-02T00:00:00Z", name="吴六"),  # wins
    event(event_id="E07", line_id="L10", registered_at="yesterday"),
    {k: v for k, v in event(line_id="L10").items() if k != "event_id"},  # no event_id at all
    event(event_id="E09", line_id="L10", address=MEGA),  # a megabyte field
    {"event_id": "E10", "line_id": "L11"},  # every other field missing
    event(event_id="E11", line_id="L12", name="测试"),  # policy
    event(
        event_id="E12",
        line_id="L04",
        doc_type="USCC",
        doc_number="91110000600037341L",
        name="北京星辰科技有限公司",
        handler_doc_type="身份证",
        handler_doc_number=CANARY_NUMBER,
        handler_name="金丝雀代办人",
    ),
    event(event_id="E13", line_id="L13", channel=5),  # a number: its text, not a channel
    event(event_id="E14", line_id="L14", name={"given": "x"}),  # not text
]
APPLIED, SUPERSEDED, DUPLICATES = 3, 2, 1  # E01, E06, E12; E04, E05; E01 again


def write_events(path: str) -> int:
    with open(path, "w", encoding="utf-8") as handle:
        for row in EVENTS:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.write("\n")  # a blank line is not an event
        handle.write('{"event_id": "E15", "line_id": \n')  # cut short
    return len(EVENTS) + 1


def write_base(path: str, rows: list[dict]) -> None:
    names = field_names("subscriber_base")
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in rows:
            writer.writerow(["" if row.get(n) is None else row[n] for n in names])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    keys = str(root / "secure" / "keys.json")
    run("keys", "init", "--keys", keys)
    write_base(str(root / "base.csv"), base_rows())
    events_in = write_events(str(root / "events.jsonl"))
    out = str(root / "out")
    proc = run(
        "merge",
        "--base",
        str(root / "base.csv"),
        "--registrations",
        str(root / "events.jsonl"),
        "--keys",
        keys,
        "--out",
        out,
        "--as-of",
        AS_OF,
    )
    return {"root": root, "keys": keys, "out": out, "proc": proc, "events_in": events_in}


def manifest(out: str) -> dict:
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def dead_letters(out: str) -> list[dict]:
    rows = []
    for name in sorted(os.listdir(os.path.join(out, "dead_letter"))):
        with open(os.path.join(out, "dead_letter", name), encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle]
    return rows


def lines(out: str) -> dict[str, dict]:
    return {r["line_id"]: r for r in pq.read_table(os.path.join(out, "base")).to_pylist()}


def reveal(site_or_keys, vault: str, line_id: str, check=True):
    keys = site_or_keys["keys"] if isinstance(site_or_keys, dict) else site_or_keys
    proc = run("reveal", "--keys", keys, "--vault", vault, "--line-id", line_id, "--purpose", "test", check=check)
    return dict(line.split(": ", 1) for line in proc.stdout.splitlines()) if proc.returncode == 0 else proc


def copy_keys(site, tmp_path) -> str:
    keys = str(tmp_path / "secure" / "keys.json")
    os.makedirs(os.path.dirname(keys), mode=0o700)
    shutil.copy(site["keys"], keys)
    os.chmod(keys, 0o600)
    return keys


def test_counts_balance_against_the_fixture(site):
    counts = manifest(site["out"])["counts"]
    base, events = counts["base"], counts["events"]
    assert base["rows_in"] == len(base_rows()) and base["balanced"] and events["balanced"]
    assert base["dead_letter_reasons"] == {"BAD_ENUM": 1, "DUPLICATE_LINE_ID": 1, "ROW_MALFORMED": 1}
    assert base["lines_out"] == len(base_rows()) - 3
    assert events["rows_in"] == site["events_in"]
    assert (events["applied"], events["superseded"], events["duplicates"]) == (APPLIED, SUPERSEDED, DUPLICATES)
    assert events["rows_in"] == APPLIED + SUPERSEDED + DUPLICATES + events["dead_letters"]
    assert events["dead_letter_reasons"] == {
        "BAD_ENUM": 1,
        "BAD_TIMESTAMP": 2,
        "EVENT_ID_MISSING": 1,
        "LINE_TERMINATED": 1,
        "NAME_PLACEHOLDER": 1,
        "ROW_MALFORMED": 3,
        "UNKNOWN_LINE": 1,
    }
    m = manifest(site["out"])
    assert m["keys"]["join"] == "j1" and m["keys"]["vault"] == "v1" and m["runner"] == "in-process"
    assert m["policy"]["version"] and m["inputs"]["base_kind"] == "raw" and m["timings"]["seconds_total"] > 0
    assert "balanced" in site["proc"].stdout and "NOT BALANCED" not in site["proc"].stdout


def test_dead_letters_name_the_event_and_the_reason(site):
    dead = [d for d in dead_letters(site["out"]) if d["source_file"].endswith("events.jsonl")]
    by_event = collections.defaultdict(list)
    for d in dead:
        by_event[d["event_id"]].append((d["reason"], d["field"]))
    assert by_event["E09"] == [("ROW_MALFORMED", "address")] and by_event["E14"] == [("ROW_MALFORMED", "name")]
    assert by_event["E10"] == [("BAD_TIMESTAMP", "registered_at")] and by_event["E13"] == [("BAD_ENUM", "channel")]
    assert by_event["E02"] == [("LINE_TERMINATED", "status")] and by_event["E03"] == [("UNKNOWN_LINE", "line_id")]
    assert sorted(by_event[None]) == [("EVENT_ID_MISSING", "event_id"), ("ROW_MALFORMED", None)]
    assert all(d["step"] == "merge" and d["run_id"] == manifest(site["out"])["run_id"] for d in dead)
    assert {d["source_row"] for d in dead if d["event_id"] is None} == {9, len(EVENTS) + 2}  # line numbers


def test_registrations_and_base_lines_in_the_merged_base(site):
    got = lines(site["out"])
    assert sorted(got) == sorted({r["line_id"] for r in base_rows()} - {"L08", "L09"})
    assert got["L02"]["registration_event_id"] == "E01" and got["L02"]["identity_status"] == "COMPLETE"
    assert got["L02"]["registration_agent_id"] == "AG00777" and got["L02"]["agent_id"] == "AG00001"
    assert got["L07"]["registration_event_id"] == "E06" and got["L04"]["registration_channel"] == "AGENT"
    assert got["L04"]["handler_doc_token"] == got["L01"]["doc_token"] == got["L02"]["doc_token"]
    assert got["L06"]["identity_status"] == "MISSING" and got["L06"]["join_key_version"] is None
    assert got["L01"]["registration_event_id"] is None and got["L01"]["needs_registration"] is False
    assert pq.read_schema(
        os.path.join(site["out"], "base", os.listdir(os.path.join(site["out"], "base"))[0])
    ).names == field_names("merged_line")


def test_reveal_gives_the_original_values(site):
    vault = os.path.join(site["out"], "vault")
    assert reveal(site, vault, "L02") == {
        "doc_type": "身份证",
        "doc_number": CANARY_NUMBER,
        "name": CANARY_NAME,
        "address": CANARY_ADDRESS,
    }
    assert reveal(site, vault, "L07")["name"] == "吴六"
    assert reveal(site, vault, "L04")["handler_name"] == "金丝雀代办人"
    assert reveal(site, vault, "L01")["name"] == CANARY_NAME  # a complete base line is sealed too


def test_no_canary_outside_the_vault_ciphertext(site):
    reveal(site, os.path.join(site["out"], "vault"), "L01")  # the audit log it writes is searched too
    needles = [c.encode("utf-8") for c in CANARIES]
    searched = 0
    for folder, _, files in os.walk(site["out"]):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                data = handle.read()
            searched += 1
            assert not any(n in data for n in needles), os.path.join(folder, name)
    assert searched >= 7  # base, vault keys and values, dead letters, manifest, summary, audit log
    for text in (site["proc"].stdout, site["proc"].stderr):
        assert not any(c in text for c in CANARIES)


def test_a_rerun_gives_the_same_base_rows(site, tmp_path):
    out = str(tmp_path / "again")
    run(
        "merge",
        "--base",
        str(site["root"] / "base.csv"),
        "--registrations",
        str(site["root"] / "events.jsonl"),
        "--keys",
        site["keys"],
        "--out",
        out,
        "--as-of",
        AS_OF,
    )
    assert lines(out) == lines(site["out"])
    first = pq.read_table(os.path.join(site["out"], "vault", "values")).sort_by(
        [("line_id", "ascending"), ("field", "ascending")]
    )
    second = pq.read_table(os.path.join(out, "vault", "values")).sort_by(
        [("line_id", "ascending"), ("field", "ascending")]
    )
    assert first.column("ciphertext") != second.column("ciphertext")  # fresh keys and nonces...
    assert reveal(site, os.path.join(out, "vault"), "L02") == reveal(site, os.path.join(site["out"], "vault"), "L02")


def doc_groups(got: dict[str, dict]) -> list[list[str]]:
    groups = collections.defaultdict(list)
    for line_id, row in got.items():
        if row["doc_token"]:
            groups[row["doc_token"]].append(line_id)
    return sorted(sorted(g) for g in groups.values())


def test_rotations_keep_every_line_revealable_and_joins_intact(site, tmp_path):
    keys = copy_keys(site, tmp_path)
    vault = str(tmp_path / "vault")
    shutil.copytree(os.path.join(site["out"], "vault"), vault)
    before = {line_id: reveal(keys, vault, line_id) for line_id in ("L01", "L02", "L04", "L07")}
    run("keys", "rotate", "--keys", keys, "--vault", "--vault-dir", vault)
    assert {line_id: reveal(keys, vault, line_id) for line_id in before} == before
    every = manifest(site["out"])["counts"]["vault"]["values_sealed"]
    assert Vault(Keyset.load(keys)).open_many(*read_vault(vault)).num_rows == every  # every line still opens
    assert set(pq.read_table(os.path.join(vault, "keys")).column("vault_key_version").to_pylist()) == {"v2"}
    run("keys", "rotate", "--keys", keys, "--join")
    stale = run(
        "merge",
        "--base",
        os.path.join(site["out"], "base"),
        "--vault",
        vault,
        "--registrations",
        str(site["root"] / "events.jsonl"),
        "--keys",
        keys,
        "--out",
        str(tmp_path / "m"),
        check=False,
    )
    assert "keys retokenize" in one_line_error(stale, "backfill merge")
    proc = run(
        "keys",
        "retokenize",
        "--keys",
        keys,
        "--base",
        os.path.join(site["out"], "base"),
        "--vault",
        vault,
        "--out",
        str(tmp_path / "retok"),
    )
    assert "(100.00%)" in proc.stdout
    old, new = lines(site["out"]), lines(str(tmp_path / "retok"))
    assert doc_groups(new) == doc_groups(old) and len(doc_groups(new)) >= 3
    assert {r["join_key_version"] for r in new.values()} == {"j2", None}
    assert all(r["doc_token"].startswith("j2:") for r in new.values() if r["doc_token"])
    assert all(new[k]["doc_mask"] == old[k]["doc_mask"] for k in old)
    counts = manifest(str(tmp_path / "retok"))["counts"]
    assert counts["coverage"] == 1.0 and counts["retokenized"] == counts["with_tokens"] > 0
    assert {line_id: reveal(keys, vault, line_id) for line_id in before} == before
    assert Vault(Keyset.load(keys)).open_many(*read_vault(vault)).num_rows == every
    with open(os.path.join(os.path.dirname(keys), "audit", "keys.jsonl"), encoding="utf-8") as handle:
        audit = [json.loads(line) for line in handle]
    assert audit[-1]["event"] == "keys_retokenize" and audit[-1]["failed"] == 0


def test_a_daily_merge_carries_untouched_lines_forward(site, tmp_path):
    events = str(tmp_path / "day2.jsonl")
    with open(events, "w", encoding="utf-8") as handle:
        for row in (
            event(event_id="E20", line_id="L01", name="钱八", registered_at="2026-12-01T09:00:00"),
            event(),
        ):  # yesterday's event again: already applied
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    out = str(tmp_path / "day2")
    proc = run(
        "merge",
        "--base",
        os.path.join(site["out"], "base"),
        "--vault",
        os.path.join(site["out"], "vault"),
        "--registrations",
        events,
        "--keys",
        site["keys"],
        "--out",
        out,
        "--as-of",
        "2026-12-01",
    )
    before, after = lines(site["out"]), lines(out)
    assert sorted(before) == sorted(after)
    assert all(after[k] == before[k] for k in before if k != "L01")
    assert after["L01"]["registration_event_id"] == "E20" and after["L01"]["as_of"].isoformat() == "2026-12-01"
    counts = manifest(out)["counts"]["events"]
    assert (counts["applied"], counts["duplicates"], counts["dead_letters"]) == (1, 1, 0)
    assert manifest(out)["inputs"]["base_kind"] == "merged" and "carried" in proc.stdout
    assert reveal(site, os.path.join(out, "vault"), "L01")["name"] == "钱八"
    assert reveal(site, os.path.join(out, "vault"), "L02") == reveal(site, os.path.join(site["out"], "vault"), "L02")


# Copies of one event_id (docs/contract.md "Registration events"): (row, outcome today, outcome on a re-run over
# today's merged base). A bad copy first takes nothing; the first valid copy holds the id; a re-run finds every
# id held by its line from the start: a copy on that line is a duplicate, one on another line EVENT_ID_CONFLICT
# (it was a dead letter the first time too), and the copies that fail the row checks are dead letters again.
COPIES = [
    (event(event_id="X1", line_id="L10", registered_at="never"), "BAD_TIMESTAMP", "BAD_TIMESTAMP"),
    (event(event_id="X1", line_id="L10", name="甲一"), "applied", "duplicate"),
    (event(event_id="X2", line_id="L99"), "UNKNOWN_LINE", "EVENT_ID_CONFLICT"),
    (event(event_id="X2", line_id="L11", name="乙二"), "applied", "duplicate"),
    (event(event_id="X3", line_id="L03"), "LINE_TERMINATED", "EVENT_ID_CONFLICT"),
    (event(event_id="X3", line_id="L12", name="丙三"), "applied", "duplicate"),
    (event(event_id="X4", line_id="L13", name="测试"), "NAME_PLACEHOLDER", "duplicate"),
    (event(event_id="X4", line_id="L13", name="丁四"), "applied", "duplicate"),
    (event(event_id="X5", line_id="L14", name="戊五"), "applied", "duplicate"),
    (event(event_id="X5", line_id="L14", name="己六"), "EVENT_ID_CONFLICT", "duplicate"),
    (event(event_id="X5", line_id="L14", name="戊五"), "duplicate", "duplicate"),
    (event(event_id="X6", line_id="L15", channel="PIGEON"), "BAD_ENUM", "BAD_ENUM"),
    (event(event_id="X6", line_id="L15", channel="PIGEON"), "BAD_ENUM", "BAD_ENUM"),
]


def expected_events(outcomes: list[str]) -> dict:
    tally = collections.Counter(outcomes)
    applied, duplicates = tally.pop("applied", 0), tally.pop("duplicate", 0)
    return {"rows_in": len(outcomes), "applied": applied, "duplicates": duplicates, "dead_letter_reasons": dict(tally)}


def test_a_bad_copy_first_takes_nothing_and_a_rerun_on_the_merged_base_changes_nothing(site, tmp_path):
    events = str(tmp_path / "copies.jsonl")
    with open(events, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row, _, _ in COPIES)
    common = ["--registrations", events, "--keys", site["keys"], "--as-of", AS_OF, "--shuffle-buckets", "3"]
    first, again = str(tmp_path / "first"), str(tmp_path / "again")
    run("merge", "--base", str(site["root"] / "base.csv"), "--out", first, *common)
    run(
        "merge", "--base", os.path.join(first, "base"), "--vault", os.path.join(first, "vault"), "--out", again, *common
    )
    for out, column in ((first, 1), (again, 2)):
        counts = manifest(out)["counts"]["events"]
        got = {k: counts[k] for k in ("rows_in", "applied", "duplicates", "dead_letter_reasons")}
        assert got == expected_events([c[column] for c in COPIES]) and counts["balanced"], out
    held = {row["event_id"]: row for row, outcome, _ in COPIES if outcome == "applied"}
    got = lines(first)
    assert {got[r["line_id"]]["registration_event_id"] for r in held.values()} == set(held)
    assert reveal(site, os.path.join(first, "vault"), "L14")["name"] == held["X5"]["name"]
    assert lines(again) == got  # the merged base again: nothing changes
    dead = [d for d in dead_letters(first) if d["event_id"] == "X5"]
    assert [(d["reason"], d["source_row"]) for d in dead] == [("EVENT_ID_CONFLICT", 10)]
    text = "".join(json.dumps(d, ensure_ascii=False) for d in dead_letters(first) + dead_letters(again))
    assert not any(c in text for c in CANARIES + ("测试", "己六"))


def test_tampered_or_moved_vault_records_fail(site, tmp_path):
    """A line's value row is its record (every sealed field, ``field`` ``*``): flipped, or another line's put
    in its place, it fails authentication, and nothing of it is shown."""
    tampered, moved = str(tmp_path / "tampered"), str(tmp_path / "moved")
    shutil.copytree(os.path.join(site["out"], "vault"), tampered)
    shutil.copytree(os.path.join(site["out"], "vault"), moved)

    def flip(values):
        return replace_row(
            values, "L02", None, ciphertext=flip_first(value_row(values, "L02")["ciphertext"][0].as_py())
        )

    def move(values):  # L02's record put in place of L01's
        return pa.concat_tables(
            [without_row(values, "L01"), replace_row(value_row(values, "L02"), "L02", None, line_id="L01")]
        )

    rewrite_values(tampered, flip)
    rewrite_values(moved, move)
    for vault, line_id in ((tampered, "L02"), (moved, "L01")):
        proc = reveal(site, vault, line_id, check=False)
        message = one_line_error(proc, "backfill reveal")
        assert f"vault record of line {line_id} failed authentication" in message
        assert not any(c in proc.stdout + proc.stderr for c in CANARIES)


def test_events_from_csv_parquet_and_avro(site, tmp_path):
    good = [
        event(event_id="C1", line_id="L10", name="陈九"),
        event(event_id="P1", line_id="L11", name="孙十"),
        event(event_id="A1", line_id="L12", name="冯一"),
    ]
    names = field_names("registration_event")
    with open(tmp_path / "ev.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerow([good[0].get(n) or "" for n in names])
    pq.write_table(pa.Table.from_pylist([{n: good[1].get(n) for n in names}]), tmp_path / "ev.parquet")
    with open(tmp_path / "ev.avro", "wb") as handle:
        fastavro.writer(
            handle, fastavro.parse_schema(avro_schema("registration_event")), [{n: good[2].get(n) for n in names}]
        )
    out = str(tmp_path / "out")
    run(
        "merge",
        "--base",
        str(site["root"] / "base.csv"),
        "--registrations",
        str(tmp_path / "ev.csv"),
        "--registrations",
        str(tmp_path / "ev.parquet"),
        "--registrations",
        str(tmp_path / "ev.avro"),
        "--keys",
        site["keys"],
        "--out",
        out,
        "--as-of",
        AS_OF,
    )
    got = lines(out)
    assert [got[k]["registration_event_id"] for k in ("L10", "L11", "L12")] == ["C1", "P1", "A1"]
    assert manifest(out)["counts"]["events"]["applied"] == 3
    assert reveal(site, os.path.join(out, "vault"), "L12")["name"] == "冯一"


def test_a_loose_keyset_is_refused_in_one_line(site, tmp_path):
    keys = copy_keys(site, tmp_path)
    os.chmod(keys, 0o644)
    proc = run(
        "merge",
        "--base",
        str(site["root"] / "base.csv"),
        "--registrations",
        str(site["root"] / "events.jsonl"),
        "--keys",
        keys,
        "--out",
        str(tmp_path / "out"),
        check=False,
    )
    assert "chmod 600" in one_line_error(proc, "backfill merge") and not os.path.exists(tmp_path / "out" / "base")


def test_bad_arguments_are_one_line_errors(site, tmp_path):
    out = site["out"]
    overwrite = run(
        "merge",
        "--base",
        os.path.join(out, "base"),
        "--vault",
        os.path.join(out, "vault"),
        "--registrations",
        str(site["root"] / "events.jsonl"),
        "--keys",
        site["keys"],
        "--out",
        out,
        check=False,
    )
    assert "would overwrite" in one_line_error(overwrite, "backfill merge") and os.path.isdir(os.path.join(out, "base"))
    missing = run(
        "merge",
        "--base",
        str(site["root"] / "base.csv"),
        "--registrations",
        str(tmp_path / "none.jsonl"),
        "--keys",
        site["keys"],
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert "no such file" in one_line_error(missing, "backfill merge")
    os.makedirs(tmp_path / "not-a-vault")  # beside --out: an --out inside an input is refused before this check
    no_vault = run(
        "merge",
        "--base",
        os.path.join(out, "base"),
        "--vault",
        str(tmp_path / "not-a-vault"),
        "--registrations",
        str(site["root"] / "events.jsonl"),
        "--keys",
        site["keys"],
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert "no vault there" in one_line_error(no_vault, "backfill merge")


def test_retokenize_lists_the_lines_it_cannot_cover(site, tmp_path):
    """A value row (the line's record) dropped from the vault is tampering: the line fails authentication (the
    seal binds its fields)."""
    keys = copy_keys(site, tmp_path)
    vault = str(tmp_path / "vault")
    shutil.copytree(os.path.join(site["out"], "vault"), vault)
    rewrite_values(vault, lambda values: without_row(values, "L07"))
    run("keys", "rotate", "--keys", keys, "--join")
    proc = run(
        "keys",
        "retokenize",
        "--keys",
        keys,
        "--base",
        os.path.join(site["out"], "base"),
        "--vault",
        vault,
        "--out",
        str(tmp_path / "retok"),
        check=False,
    )
    message = one_line_error(proc, "backfill keys")
    assert "1 line(s) could not be re-tokenized" in message and "L07 (VAULT_AUTH_FAILED)" in message
    got = lines(str(tmp_path / "retok"))
    assert got["L07"]["join_key_version"] == "j1" and got["L01"]["join_key_version"] == "j2"
    assert manifest(str(tmp_path / "retok"))["counts"]["failed"] == 1
