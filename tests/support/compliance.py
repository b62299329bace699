"""A small merged site for the compliance tests (retention, incident, self-inspection).

Built as a user builds it: `backfill keys init`, then `backfill merge` of a
raw CSV base holding lines terminated around the two-year boundary, a leap
day, a line without terminated_on, one without identity, an organisation with
a handler, and the canary values on a kept line and on a purged one.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq

from schemas import field_names
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, organisation, person

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
MERGE_AS_OF = "2026-11-30"
CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
IDENTITY = ("doc_type", "doc_number", "name", "address", "handler_doc_type", "handler_doc_number", "handler_name")


def base_rows() -> list[dict]:
    def t(line_id, on, **kw):
        return person(line_id=line_id, status="TERMINATED", terminated_on=on, **kw)

    return [
        person(line_id="A01", name=CANARY_NAME, address=CANARY_ADDRESS, doc_number=CANARY_NUMBER, region="110105"),
        person(line_id="A02", region="110105", name=None, address=None),  # registers through the event
        person(line_id="A03", region="310101", doc_number="110101199003070011", name="李四"),
        person(line_id="A04", region="310101", doc_number="110101199003070011", name="李四", status="SUSPENDED"),
        person(line_id="A05", region="440305", doc_type=None, doc_number=None, name=None, address=None),
        t("T1129", "2024-11-29", region="110105"),
        t("T1130", "2024-11-30", region="310101"),
        t("T1201", "2024-12-01", region="440305"),
        t("TLEAP", "2024-02-29", region="440305", name=CANARY_NAME, address=CANARY_ADDRESS),
        t("T0228", "2026-02-28", region="110105"),
        t("T0301", "2026-03-01", region="110105"),
        {**organisation(line_id="TORG", region="440305"), "status": "TERMINATED", "terminated_on": "2010-05-01"},
        t("TNODATE", None, region="310101"),
        t("TNOID", "2015-01-01", region="310101", doc_type=None, doc_number=None, name=None, address=None),
    ]


def event() -> dict:
    return {
        "event_id": "E01",
        "line_id": "A02",
        "doc_type": "身份证",
        "doc_number": "440308199901101512",
        "name": "周七",
        "address": "上海市浦东新区世纪大道100号",
        "channel": "STORE",
        "agent_id": "AG00777",
        "verified_by": "ID_CARD_READER",
        "registered_at": "2026-11-20T10:00:00",
    }


def run(*args, check=True):
    proc = subprocess.run([BACKFILL, *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def build(root) -> dict:
    """keys + merge under ``root``; returns the paths."""
    root = str(root)
    keys = os.path.join(root, "secure", "keys.json")
    run("keys", "init", "--keys", keys)
    names = field_names("subscriber_base")
    with open(os.path.join(root, "base.csv"), "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in base_rows():
            writer.writerow(["" if row.get(n) is None else row[n] for n in names])
    events = os.path.join(root, "events.jsonl")
    with open(events, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(event(), ensure_ascii=False) + "\n")
    out = os.path.join(root, "merge")
    run(
        "merge",
        "--base",
        os.path.join(root, "base.csv"),
        "--registrations",
        events,
        "--keys",
        keys,
        "--out",
        out,
        "--as-of",
        MERGE_AS_OF,
    )
    return {
        "root": root,
        "keys": keys,
        "events": events,
        "merge": out,
        "base": os.path.join(out, "base"),
        "vault": os.path.join(out, "vault"),
    }


def copy_keys(keys: str, where) -> str:
    """A private copy of the keyset (a shred rotates and retires keys: each test shreds its own)."""
    target = os.path.join(str(where), "secure-copy", "keys.json")
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    shutil.copy(keys, target)
    os.chmod(target, 0o600)
    return target


def add_years(day: dt.date, years: int) -> dt.date:
    """The test's own calendar: N years later, 29 Feb -> 28 Feb when that year has none."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def has_identity(row: dict) -> bool:
    return any(row.get(f) not in (None, "") for f in IDENTITY)


def expected_due(as_of: dt.date, years: int = 2) -> set[str]:
    return {
        r["line_id"]
        for r in base_rows()
        if r["status"] == "TERMINATED"
        and r.get("terminated_on")
        and as_of > add_years(dt.date.fromisoformat(r["terminated_on"]), years)
    }


def lines(base_dir: str) -> dict[str, dict]:
    return {r["line_id"]: r for r in pq.read_table(base_dir).to_pylist()}


def files_without_canaries(folder: str, extra: tuple[str, ...] = ()) -> int:
    """Assert no canary in any file under ``folder``; returns the number of files searched."""
    needles = [c.encode("utf-8") for c in (*CANARIES, *extra)]
    searched = 0
    for where, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(where, name), "rb") as handle:
                data = handle.read()
            searched += 1
            assert not any(n in data for n in needles), os.path.join(where, name)
    return searched
