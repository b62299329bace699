"""`backfill retention` (Art. 11): the two-year boundary, the purge, the shred, idempotency, canaries.

Expected figures come from the test's own calendar (tests/support/compliance.py
``add_years``) over the rows it wrote, not from the code under test.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import retention as retention_cli
from pipelines import reveal as reveal_cli
from schemas import arrow_schema
from tests.support.compliance import (
    CANARIES,
    add_years,
    base_rows,
    build,
    copy_keys,
    expected_due,
    files_without_canaries,
    has_identity,
    lines,
    run,
)
from transforms.crypto.keyset import Keyset
from transforms.compliance.retention import (
    IDENTITY_COLUMNS,
    anniversary,
    blank_identity,
    due_mask,
    last_purged_date,
    move_versions,
    purge_batch,
    purge_bucket,
)
from pipelines.io.vault_files import read_table

ROWS = {r["line_id"]: r for r in base_rows()}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build(tmp_path_factory.mktemp("retention"))


def retention(site, tmp_path, as_of: str, *, base=None, vault=None, keys=None, out="ret", capsys=None):
    keys = keys or copy_keys(site["keys"], tmp_path)
    out = str(tmp_path / out)
    argv = [
        "--base",
        base or site["base"],
        "--vault",
        vault or site["vault"],
        "--keys",
        keys,
        "--out",
        out,
        "--as-of",
        as_of,
        "--future-as-of",  # the boundaries are judged on simulated days, some after today
    ]
    code = retention_cli.main(argv)
    assert code == 0
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        return {"out": out, "keys": keys, "manifest": json.load(handle)}


def expected_purged(as_of: dt.date) -> set[str]:
    return {line for line in expected_due(as_of) if has_identity(ROWS[line])}


def one_line_error(code: int, err: str, prog="backfill retention") -> str:
    lines = err.strip().splitlines()
    assert code != 0 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


# -- the calendar ---------------------------------------------------------------------------------------------


def test_anniversary_matches_the_calendar_for_every_day():
    days = [dt.date(2023, 1, 1) + dt.timedelta(days=i) for i in range(7 * 366)]
    got = anniversary(np.array(days, "datetime64[D]"), 2).astype(dt.date).tolist()
    assert got == [add_years(d, 2) for d in days]
    assert add_years(dt.date(2024, 2, 29), 2) == dt.date(2026, 2, 28) == got[days.index(dt.date(2024, 2, 29))]


def test_the_cut_off_is_the_last_day_whose_period_is_over():
    for i in range(0, 4 * 366):
        as_of = dt.date(2026, 1, 1) + dt.timedelta(days=i)
        cutoff = last_purged_date(as_of, 2)
        assert as_of > add_years(cutoff, 2) and not as_of > add_years(cutoff + dt.timedelta(days=1), 2), as_of
    assert last_purged_date(dt.date(2026, 11, 30), 2) == dt.date(2024, 11, 29)
    assert last_purged_date(dt.date(2026, 3, 1), 2) == dt.date(2024, 2, 29)  # leap day kept through 28 Feb
    assert last_purged_date(dt.date(2026, 2, 28), 2) == dt.date(2024, 2, 27)
    assert last_purged_date(dt.date(2028, 2, 29), 2) == dt.date(2026, 2, 28)


def test_blank_identity_on_a_table():
    schema = arrow_schema("merged_line")
    rows = [
        {
            "line_id": "X1",
            "status": "TERMINATED",
            "terminated_on": dt.date(2020, 1, 1),
            "doc_token": "j1:a",
            "doc_mask": "1****2",
            "doc_type": "RESIDENT_ID",
            "join_key_version": "j1",
            "region": "110105",
        },
        {
            "line_id": "X2",
            "status": "ACTIVE",
            "terminated_on": None,
            "doc_token": "j1:b",
            "doc_type": "USCC",
            "join_key_version": "j1",
            "region": "110105",
        },
        {
            "line_id": "X3",
            "status": "TERMINATED",
            "terminated_on": None,
            "name_token": "j1:c",
            "join_key_version": "j1",
        },
    ]
    table = pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)
    due, terminated, no_date = due_mask(table, dt.date(2024, 1, 1))
    assert (due.to_pylist(), terminated.to_pylist(), no_date.to_pylist()) == (
        [True, False, False],
        [True, False, True],
        [False, False, True],
    )
    out, blanked = blank_identity(table, due, pa.array([None, "v2", "v2"], pa.string()))
    got = out.to_pylist()
    assert all(got[0][c] is None for c in (*IDENTITY_COLUMNS, "join_key_version", "vault_key_version"))
    assert got[0]["region"] == "110105" and got[0]["terminated_on"] == dt.date(2020, 1, 1)
    assert got[1]["doc_token"] == "j1:b" and got[1]["doc_type"] == "USCC" and got[1]["vault_key_version"] == "v2"
    assert got[2]["name_token"] == "j1:c"
    assert blanked["doc_token"] == blanked["doc_mask"] == blanked["doc_type"] == blanked["join_key_version"] == 1
    assert blanked["name_token"] == 0


def test_one_bucket_of_the_join():
    """Due lines meet the vault's key ids and value rows: what is dropped, shredded, purged, and the counts."""
    due = pa.table({"line_id": ["D1", "D2", "D3", "D4"], "with_identity": [True, False, False, False]})
    keys = pa.table({"line_id": ["D2", "K1", "K2"]})
    values = pa.table({"line_id": ["D1", "D1", "D3", "K1", "K2"], "field": ["name", "address", "name", "name", "name"]})
    got = purge_bucket(due, keys, values)
    assert got.values.column("line_id").to_pylist() == ["K1", "K2"]
    assert got.shred.column("line_id").to_pylist() == ["D2"]
    assert sorted(got.purged.column("line_id").to_pylist()) == ["D1", "D2", "D3"]  # D4: nothing left to purge
    assert got.counts == {
        "purge": {"due": 4, "purged": 3, "nothing_to_purge": 1},
        "vault": {"keys_joined": 3, "keys_to_shred": 1, "values_joined": 5, "values_dropped": 3, "values_kept": 2},
    }
    alone = purge_bucket(None, keys, None)  # a bucket without due lines or values
    assert alone.shred.num_rows == alone.purged.num_rows == 0 and alone.counts["vault"]["keys_joined"] == 3


def test_a_base_batch_rewritten_moves_the_versions_of_the_lines_kept():
    schema = arrow_schema("merged_line")
    rows = [
        {"line_id": "X1", "status": "TERMINATED", "terminated_on": dt.date(2020, 1, 1), "doc_token": "j1:a"},
        {"line_id": "X2", "status": "ACTIVE", "doc_token": "j1:b", "vault_key_version": "v1"},
        {"line_id": "X3", "status": "ACTIVE", "vault_key_version": "v0"},
        {"line_id": "X4", "status": "ACTIVE"},
    ]
    rows[0]["vault_key_version"] = "v1"
    table = pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema=schema)
    out, counts = purge_batch(table, dt.date(2024, 1, 1), {"v1": "v2"})
    assert out.column("vault_key_version").to_pylist() == [None, "v2", "v0", None]
    assert out.column("doc_token").to_pylist() == [None, "j1:b", None, None]
    assert counts["rewrite"]["lines_read"] == 4 and counts["rewrite"]["due"] == 1
    assert counts["rewrite"]["blanked"]["doc_token"] == 1
    assert move_versions(pa.array(["v1", None, "v3"]), {}).to_pylist() == ["v1", None, "v3"]


def test_the_versions_the_base_moves_to():
    from pipelines.retention_keep import moved_versions

    keyset = Keyset.generate()
    keyset.rotate_vault()  # v1 enabled, v2 primary
    before = {"vault_versions": ["v1", "v2"]}
    shred = {"new_vault_key_version": "v3"}
    assert moved_versions(keyset, {"v1": 5, "v2": 3}, before, shred) == {"v1": "v3", "v2": "v3"}
    assert moved_versions(keyset, {"v2": 8}, before, None) == {"v1": "v2"}  # completed from a re-wrapped vault
    assert moved_versions(keyset, {"v1": 5, "v2": 3}, before, None) == {}  # two versions, nothing shredded


# -- the command --------------------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(
    "as_of",
    [
        "2026-11-29",
        "2026-11-30",
        "2026-12-01",  # the day before, of, after
        "2026-02-28",
        "2026-03-01",
        "2028-02-29",
    ],
)  # leap days
def test_the_boundary(site, tmp_path, as_of):
    day = dt.date.fromisoformat(as_of)
    got = retention(site, tmp_path, as_of)
    m = got["manifest"]
    assert set(m["purged_line_ids"]) == expected_purged(day)
    assert m["purged_line_ids"] == sorted(m["purged_line_ids"])
    assert m["counts"]["due"] == len(expected_due(day))
    base = lines(os.path.join(got["out"], "base"))
    for line_id, row in base.items():
        blank = all(row[c] is None for c in IDENTITY_COLUMNS)
        assert blank == (line_id in expected_due(day) or not has_identity(ROWS[line_id])), line_id
    assert m["retention"]["purge_terminated_on_or_before"] == last_purged_date(day, 2).isoformat()


@pytest.mark.e2e
def test_boundary_lines_by_name(site, tmp_path):
    """The day before, the day of and the day after the second anniversary of 2024-11-30, and the leap day."""
    runs: dict[str, set] = {}

    def purged(as_of: str) -> set:  # one run per date (a second run into the same OUT is refused)
        if as_of not in runs:
            runs[as_of] = set(retention(site, tmp_path, as_of, out=f"r{as_of}")["manifest"]["purged_line_ids"])
        return runs[as_of]

    assert "T1130" not in purged("2026-11-29") and "T1130" not in purged("2026-11-30")
    assert "T1130" in purged("2026-12-01")
    assert "TLEAP" not in purged("2026-02-28") and "TLEAP" in purged("2026-03-01")
    assert "T0228" in purged("2028-02-29") and "T0301" not in purged("2028-02-29")


@pytest.mark.e2e
def test_purge_blanks_shreds_and_balances(site, tmp_path, capsys):
    as_of = dt.date(2026, 12, 1)
    before_keys = read_table(site["vault"], "keys")
    got = retention(site, tmp_path, as_of.isoformat())
    captured = capsys.readouterr()
    m, out, keys = got["manifest"], got["out"], got["keys"]
    purged = expected_purged(as_of)
    assert purged == {"T1129", "T1130", "TLEAP", "TORG"}
    c = m["counts"]
    assert (c["lines_in"], c["lines_out"], c["balanced"]) == (len(ROWS), len(ROWS), True)
    terminated = [r for r in ROWS.values() if r["status"] == "TERMINATED"]
    assert c["terminated"] == len(terminated)
    assert c["terminated_without_date"] == sum(1 for r in terminated if not r.get("terminated_on")) == 1
    assert c["purged"] == len(purged) and c["nothing_to_purge"] == len(expected_due(as_of) - purged) == 1
    assert c["terminated_within_retention"] == len(terminated) - 1 - len(expected_due(as_of))
    assert c["vault"]["keys_shredded"] == len(purged) and c["vault"]["keys_out"] == before_keys.num_rows - len(purged)
    values_in = read_table(site["vault"], "values")
    dropped = sum(1 for line in values_in.column("line_id").to_pylist() if line in purged)
    assert c["vault"]["values_dropped"] == dropped and c["vault"]["values_out"] == values_in.num_rows - dropped
    assert m["keys"]["vault_before"] == "v1" and m["keys"]["vault_after"] == "v2" and m["keys"]["retired"] == ["v1"]
    assert m["step"] == "retention" and m["as_of"] == "2026-12-01" and m["policy"]["version"]

    before, after = lines(site["base"]), lines(os.path.join(out, "base"))
    assert sorted(after) == sorted(before)
    for line_id in purged:
        assert all(after[line_id][col] is None for col in (*IDENTITY_COLUMNS, "join_key_version", "vault_key_version"))
        keep = {
            k: v
            for k, v in before[line_id].items()
            if k not in (*IDENTITY_COLUMNS, "join_key_version", "vault_key_version")
        }
        assert {k: after[line_id][k] for k in keep} == keep  # the line's facts and its registration stay
    for line_id in set(before) - purged:
        expected = dict(before[line_id], vault_key_version="v2" if before[line_id]["vault_key_version"] else None)
        assert after[line_id] == expected
    assert pq.read_schema(os.path.join(out, "base", os.listdir(os.path.join(out, "base"))[0])).equals(
        arrow_schema("merged_line")
    )

    vault = os.path.join(out, "vault")
    assert not purged & set(read_table(vault, "keys").column("line_id").to_pylist())
    assert not purged & set(read_table(vault, "values").column("line_id").to_pylist())
    assert set(read_table(vault, "keys").column("vault_key_version").to_pylist()) == {"v2"}
    for line_id in sorted(purged):
        assert reveal_cli.main(["--keys", keys, "--vault", vault, "--line-id", line_id, "--purpose", "test"]) == 1
        assert "it is not in the vault" in capsys.readouterr().err
    assert reveal_cli.main(["--keys", keys, "--vault", vault, "--line-id", "A01", "--purpose", "retention test"]) == 0
    assert f"name: {CANARIES[0]}" in capsys.readouterr().out  # a kept line still opens
    assert reveal_cli.main(["--keys", keys, "--vault", site["vault"], "--line-id", "A01", "--purpose", "old"]) == 1
    assert "cannot be unwrapped" in capsys.readouterr().err  # the input vault's key table is dead now

    listed = pq.read_table(os.path.join(out, "purged")).column("line_id").to_pylist()
    assert sorted(listed) == m["purged_line_ids"] == sorted(purged) and m["purged_line_ids_complete"]

    shred_log = os.path.join(out, "audit", "shred.jsonl")
    records = [json.loads(line) for line in open(shred_log, encoding="utf-8")]
    assert sorted(r["line_id"] for r in records) == sorted(purged)
    assert all(r["reason"].startswith("retention (Art. 11)") for r in records)
    os.remove(os.path.join(out, "audit", "reveal.jsonl"))  # holds the purposes above, searched separately
    assert files_without_canaries(out) >= 5
    for text in (captured.out, captured.err):
        assert not any(canary in text for canary in CANARIES)
    assert "balanced" in captured.out and f"purged {len(purged)} line(s)" in captured.out


@pytest.mark.e2e
def test_a_second_run_changes_nothing(site, tmp_path, capsys):
    first = retention(site, tmp_path, "2026-12-01", out="first")
    keyset_bytes = open(first["keys"], "rb").read()
    second = retention(
        site,
        tmp_path,
        "2026-12-01",
        base=os.path.join(first["out"], "base"),
        vault=os.path.join(first["out"], "vault"),
        keys=first["keys"],
        out="second",
    )
    c = second["manifest"]["counts"]
    assert second["manifest"]["purged_line_ids"] == [] and c["purged"] == 0
    assert c["nothing_to_purge"] == c["due"] == len(expected_due(dt.date(2026, 12, 1)))
    assert c["vault"]["keys_shredded"] == 0 and c["vault"]["values_dropped"] == 0
    assert open(first["keys"], "rb").read() == keyset_bytes  # the keyset is not touched
    assert second["manifest"]["keys"]["vault_before"] == second["manifest"]["keys"]["vault_after"] == "v2"
    assert lines(os.path.join(second["out"], "base")) == lines(os.path.join(first["out"], "base"))
    for kind in ("keys", "values"):
        assert read_table(os.path.join(second["out"], "vault"), kind).equals(
            read_table(os.path.join(first["out"], "vault"), kind)
        )
    assert not os.path.exists(os.path.join(second["out"], "audit", "shred.jsonl"))
    # completing an interrupted run: the input base again, --vault OUT/vault (purged in place), nothing to shred
    first_base = lines(os.path.join(first["out"], "base"))
    again = retention(
        site, tmp_path, "2026-12-01", vault=os.path.join(first["out"], "vault"), keys=first["keys"], out="first"
    )
    assert again["manifest"]["outputs"]["in_place"] and again["manifest"]["counts"]["vault"]["keys_shredded"] == 0
    assert open(first["keys"], "rb").read() == keyset_bytes
    assert lines(os.path.join(first["out"], "base")) == first_base


@pytest.mark.e2e
def test_the_output_is_a_base_merge_accepts(site, tmp_path):
    got = retention(site, tmp_path, "2026-12-01")
    out = str(tmp_path / "merge-next")
    event = {
        "event_id": "E02",
        "line_id": "A05",
        "doc_type": "身份证",
        "doc_number": "110101199003070011",
        "name": "李四",
        "address": "上海市浦东新区世纪大道100号",
        "channel": "STORE",
        "agent_id": "AG00001",
        "verified_by": "ID_CARD_READER",
        "registered_at": "2026-12-02T10:00:00",
    }
    events = tmp_path / "day2.jsonl"
    events.write_text(json.dumps(event, ensure_ascii=False) + "\n", encoding="utf-8")
    run(
        "merge",
        "--base",
        os.path.join(got["out"], "base"),
        "--vault",
        os.path.join(got["out"], "vault"),
        "--registrations",
        str(events),
        "--keys",
        got["keys"],
        "--out",
        out,
        "--as-of",
        "2026-12-02",
    )
    merged = lines(os.path.join(out, "base"))
    assert merged["A05"]["identity_status"] == "COMPLETE"
    for line_id in got["manifest"]["purged_line_ids"]:
        assert all(merged[line_id][c] is None for c in IDENTITY_COLUMNS)
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        assert json.load(handle)["inputs"]["base_kind"] == "merged"


@pytest.mark.e2e
def test_bad_inputs_are_one_line(site, tmp_path, capsys):
    keys = copy_keys(site["keys"], tmp_path)
    common = ["--vault", site["vault"], "--keys", keys, "--out", str(tmp_path / "o")]
    raw = os.path.join(site["root"], "base.csv")
    code = retention_cli.main(["--base", raw, *common, "--as-of", "2026-12-01"])
    assert "is not a merged base" in one_line_error(code, capsys.readouterr().err)
    with pytest.raises(SystemExit) as exc:
        retention_cli.main(["--base", site["base"], *common])
    assert exc.value.code == 2 and "--as-of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        retention_cli.main(["--base", site["base"], *common, "--as-of", "2026-13-01"])
    assert "is not a date" in capsys.readouterr().err
    # A day that has not come (a mistyped year) would shred lines whose retention is not over: refused, the
    # keyset untouched, nothing written; --future-as-of is how a rehearsal says it is meant.
    later = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=40)).isoformat()
    with open(keys, "rb") as handle:
        keyset_before = handle.read()
    code = retention_cli.main(["--base", site["base"], *common, "--as-of", later])
    assert f"--as-of {later} is after today" in one_line_error(code, capsys.readouterr().err)
    assert not os.path.exists(tmp_path / "o")
    with open(keys, "rb") as handle:
        assert handle.read() == keyset_before
    code = retention_cli.main(
        [
            "--base",
            site["base"],
            "--vault",
            site["vault"],
            "--keys",
            keys,
            "--out",
            site["merge"],
            "--as-of",
            "2026-12-01",
        ]
    )
    assert "would overwrite the input base" in one_line_error(code, capsys.readouterr().err)
    other = str(tmp_path / "other" / "keys.json")
    run("keys", "init", "--keys", other)
    code = retention_cli.main(
        [
            "--base",
            site["base"],
            "--vault",
            site["vault"],
            "--keys",
            other,
            "--out",
            str(tmp_path / "o2"),
            "--as-of",
            "2026-12-01",
        ]
    )
    assert "was made under keyset" in one_line_error(code, capsys.readouterr().err)
    assert Keyset.load(keys).primary_vault_version == "v1"  # nothing was shredded


@pytest.mark.e2e
def test_repeating_the_same_command_never_replaces_the_live_vault(tmp_path, capfd):
    """After a run, OUT/vault is the only vault that opens (the shred retired the input's key):
    the same command again is refused with the way to complete it, and OUT/vault is untouched."""
    site = build(tmp_path / "site")
    out = str(tmp_path / "out")
    args = [
        "--base",
        site["base"],
        "--vault",
        site["vault"],
        "--keys",
        site["keys"],
        "--out",
        out,
        "--as-of",
        "2026-12-01",
    ]
    assert retention_cli.main(args) == 0
    before = {
        name: open(os.path.join(dirpath, name), "rb").read()
        for dirpath, _, files in os.walk(os.path.join(out, "vault"))
        for name in files
    }
    capfd.readouterr()
    assert retention_cli.main(args) != 0
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "live vault" in err and "--vault" in err, err
    after = {
        name: open(os.path.join(dirpath, name), "rb").read()
        for dirpath, _, files in os.walk(os.path.join(out, "vault"))
        for name in files
    }
    assert after == before
    # a base given inside OUT (a file or glob of OUT/base) is refused before anything changes
    assert (
        retention_cli.main(
            [
                "--base",
                os.path.join(out, "base", "*.parquet"),
                "--vault",
                os.path.join(out, "vault"),
                "--keys",
                site["keys"],
                "--out",
                out,
                "--as-of",
                "2026-12-01",
            ]
        )
        != 0
    )
    assert "would overwrite the input base" in capfd.readouterr().err
