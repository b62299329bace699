"""An event id that a line of the previous merged base carries is held by that line (transforms/merge/copies.py).

A day's copy of such an id on any other line is EVENT_ID_CONFLICT, in both engines of the batch merge and
whether the previous base is read by line bucket or through the shuffle; a copy on its own line changes nothing.
(Before, the batch merge held an id only within one run, so yesterday's id re-used on another line today was
applied a second time.)
Run: .venv/bin/python -m pytest -q tests/test_merge_held_ids.py
"""

from __future__ import annotations

import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.merge_local import _event, differences, merge_outputs, write_merge_inputs
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from tests.test_merge_line_buckets import assert_no_canaries, backfill, manifest

AS_OF, NEXT_DAY = "2026-11-30", "2026-12-01"
ENGINES = {  # name -> flags of the day-2 merge
    "in-process, read by bucket": (),
    "in-process, shuffled": ("--shuffle-buckets", "3"),
    "Beam, read by bucket": ("--spill", "off"),
    "Beam, shuffled": ("--spill", "off", "--shuffle-buckets", "3"),
}


def carried(out: str) -> dict[str, str]:
    """line_id -> registration_event_id of a merge's base lines that carry one."""
    base = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(os.path.join(out, "base", "*.parquet")))])
    return {r["line_id"]: r["registration_event_id"] for r in base.to_pylist() if r["registration_event_id"]}


def dead_letters(out: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(out, "dead_letter", "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle]
    return rows


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    root = tmp_path_factory.mktemp("held_ids")
    keys = str(root / "secure" / "keys.json")
    backfill("keys", "init", "--keys", keys)
    inputs = write_merge_inputs(str(root), lines=900)
    base = [a for p in inputs["base"] for a in ("--base", p)]
    events = [a for p in inputs["events"] for a in ("--registrations", p)]
    first = str(root / "day1")
    backfill("merge", *base, *events, "--keys", keys, "--out", first, "--shuffle-buckets", "3", "--as-of", AS_OF)
    held = carried(first)
    free = sorted(
        set(pq.read_table(glob.glob(os.path.join(first, "base", "*.parquet"))[0]).column("line_id").to_pylist())
        - set(held)
    )
    # yesterday's ids today: on their own line (the same body: a duplicate), on other lines (conflicts), one of
    # them with the canary identity; and one new event on a free line (applied)
    taken = sorted((event_id, line) for line, event_id in held.items() if not event_id.startswith("E-"))[:2]
    rows = [
        _event("E-CONF-1", "ZM-CONF-1"),
        _event("E-CONF-1", free[0]),
        _event(taken[0][0], free[1], name=CANARY_NAME, doc_number=CANARY_NUMBER, address=CANARY_ADDRESS),
        _event(taken[1][0], "ZM-NOWHERE"),
        _event("E-NEW", free[2], registered_at="2026-11-29T09:00:00"),
    ]
    today = str(root / "day2.jsonl")
    with open(today, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    outs = {}
    for name, flags in ENGINES.items():
        outs[name] = str(root / f"day2-{len(outs)}")
        backfill("merge", "--merged", first, "--registrations", today, "--keys", keys, "--out", outs[name],
                 "--as-of", NEXT_DAY, *flags)  # fmt: skip
    return {"keys": keys, "first": first, "held": held, "rows": rows, "outs": outs, "free": free}


@pytest.mark.e2e
def test_yesterdays_id_on_another_line_is_a_conflict_and_on_its_own_line_a_duplicate(days):
    assert days["held"]["ZM-CONF-1"] == "E-CONF-1"  # the first merge gave E-CONF-1 to its line
    conflicts = sorted((r["event_id"], r["line_id"]) for r in days["rows"][1:4])
    for name, out in days["outs"].items():
        events = manifest(out)["counts"]["events"]
        assert events["rows_in"] == len(days["rows"]), name
        assert (events["applied"], events["duplicates"]) == (1, 1), name
        assert events["dead_letter_reasons"] == {"EVENT_ID_CONFLICT": 3} and events["balanced"], name
        letters = [r for r in dead_letters(out) if r["reason"] == "EVENT_ID_CONFLICT"]
        assert sorted((r["event_id"], r["line_id"]) for r in letters) == conflicts, name
        assert {r["detail"] for r in letters} == {"a line of the previous merge carries this event_id"}, name
        now = carried(out)
        assert now == {**days["held"], days["free"][2]: "E-NEW"}, name  # nothing else moved
        assert_no_canaries(out)


@pytest.mark.e2e
def test_every_engine_writes_the_same(days):
    outs = list(days["outs"].values())
    first = merge_outputs(outs[0], days["keys"])
    for out in outs[1:]:
        assert differences(first, merge_outputs(out, days["keys"])) == [], out
