"""Self-inspection (Art. 15): a year's manifests and audit logs, gathered from real runs.

The site runs scan, notify, merge, reveal, retention and incident for real;
the expected figures come from what the test did (rows it wrote, reveals it
made), not from the code under test.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil

import pytest

from pipelines import incident as incident_cli
from pipelines import retention as retention_cli
from pipelines import reveal as reveal_cli
from pipelines import self_inspection as si
from pipelines.common import UserError
from schemas import field_names
from tests.support.compliance import CANARIES, base_rows, build, expected_due, files_without_canaries, has_identity, run
from tests.support.rows import person
from transforms.scan.policy import load_policy

pytestmark = pytest.mark.e2e  # the site is built with the backfill CLI in subprocesses (keys, merge, scan, notify)

CAMPAIGN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "campaign.yaml")
REVEALS = [
    ("A01", "complaint 2026-118"),
    ("A03", "complaint 2026-118"),
    ("A01", "police request 7"),
    ("NOPE", "typo check"),
]  # the last one fails: unknown line
RETENTION_AS_OF = dt.date(2026, 12, 1)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = build(tmp_path_factory.mktemp("inspection"))
    root = s["root"]
    scan_base = os.path.join(root, "scan_base.csv")  # the base plus a bad status and a repeated line
    names = field_names("subscriber_base")
    with open(scan_base, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in [
            *base_rows(),
            person(line_id="BAD", status="SOMETIMES"),
            person(line_id="A03", updated_at="2020-01-01T00:00:00"),
        ]:
            writer.writerow(["" if row.get(n) is None else row[n] for n in names])
    run("scan", "--base", scan_base, "--out", os.path.join(root, "scan"), "--as-of", "2026-11-30")
    run(
        "notify",
        "--classified",
        os.path.join(root, "scan"),
        "--campaign",
        CAMPAIGN,
        "--wave",
        "1",
        "--out",
        os.path.join(root, "notify"),
        "--as-of",
        "2026-12-01",
    )
    for line_id, purpose in REVEALS:
        reveal_cli.main(["--keys", s["keys"], "--vault", s["vault"], "--line-id", line_id, "--purpose", purpose])
    assert (
        retention_cli.main(
            [
                "--base",
                s["base"],
                "--vault",
                s["vault"],
                "--keys",
                s["keys"],
                "--out",
                os.path.join(root, "retention"),
                "--as-of",
                RETENTION_AS_OF.isoformat(),
            ]
        )
        == 0
    )
    live = os.path.join(root, "retention", "vault")
    assert (
        incident_cli.main(
            [
                "--base",
                os.path.join(root, "retention", "base"),
                "--vault",
                live,
                "--key-version",
                "j1",
                "--out",
                os.path.join(root, "incident"),
                "--detected-at",
                "2026-11-30T08:00:00Z",
            ]
        )
        == 0
    )
    with open(os.path.join(root, "scan", "manifest.json"), encoding="utf-8") as handle:
        scan = json.load(handle)
    # a failed run kept for the inspection, a run of another year, and a copy of the merge folder
    for folder, changes in (
        ("failed-scan", {"run_id": "scan-failed-1", "counts": {**scan["counts"], "balanced": False}}),
        ("last-year", {"run_id": "scan-2025", "started": "2025-06-01T00:00:00Z"}),
    ):
        os.makedirs(os.path.join(root, "old", folder))
        with open(os.path.join(root, "old", folder, "manifest.json"), "w", encoding="utf-8") as handle:
            json.dump({**scan, **changes}, handle)
    shutil.copytree(os.path.join(root, "merge"), os.path.join(root, "old", "merge-copy"))
    s["year"] = int(scan["started"][:4])
    s["inspection"] = si.self_inspection([root], s["year"], os.path.join(root, "inspection"), [s["keys"]])
    return s


def test_runs_rows_and_dead_letters(site):
    r = site["inspection"]
    n = len(base_rows())
    steps = r["runs_by_step"]
    assert {k: v["runs"] for k, v in steps.items()} == {
        "scan": 2,
        "merge": 1,
        "notify": 1,
        "retention": 1,
        "incident": 1,
    }
    assert steps["scan"]["rows_in"] == 2 * (n + 2) and steps["scan"]["rows_out"] == 2 * n  # the failed copy too
    assert (steps["merge"]["rows_in"], steps["merge"]["rows_out"]) == (n + 1, n)  # base rows + 1 event; lines
    assert (steps["retention"]["rows_in"], steps["retention"]["rows_out"]) == (n, n)
    assert r["dead_letters_by_step"] == {"scan": {"BAD_ENUM": 2, "DUPLICATE_LINE_ID": 2}}
    assert steps["scan"]["dead_letters"] == 4
    assert list(r["policy_versions"]) == [load_policy(None).version]  # the default policy of every run
    assert r["key_versions"] == {"join": ["j1"], "vault": ["v1", "v2"]}
    assert r["manifests"]["runs_in_year"] == 6 and all(x["started"][:4] == str(site["year"]) for x in r["runs"])


def test_reveals_shreds_purges_incidents_and_findings(site):
    r = site["inspection"]
    assert r["reveals"]["records"] == len(REVEALS)  # the copied merge folder's log counts once
    assert r["reveals"]["by_purpose"] == {"complaint 2026-118": 2, "police request 7": 1, "typo check": 1}
    assert r["reveals"]["by_outcome"] == {"revealed": 3, "unknown_line": 1}
    rows = {row["line_id"]: row for row in base_rows()}
    purged = {line for line in expected_due(RETENTION_AS_OF) if has_identity(rows[line])}
    assert r["retention"]["runs"] == 1 and r["retention"]["lines_purged"] == len(purged) == 4
    assert r["retention"]["purges"][0]["terminated_without_date"] == 1
    assert r["shreds"]["lines"] == len(purged)
    assert list(r["shreds"]["by_reason"].values()) == [len(purged)]
    # the purge's shred re-wrapped the merge's vault too (the keyset knows it): one record in its chain
    assert r["key_events"]["by_event"] == {"keys_init": 1, "keys_shred": 1, "vault_rewrap": 1}
    [incident] = r["incidents"]
    tokenized = sum(1 for row in rows.values() if has_identity(row)) - len(purged)  # purged lines have no token
    assert incident["affected"] == tokenized and incident["detected_at"] == "2026-11-30T08:00:00Z"
    kinds = sorted(f["kind"] for f in r["findings"])
    assert kinds == ["failed_reveals", "incident", "unbalanced_run"]
    [unbalanced] = [f for f in r["findings"] if f["kind"] == "unbalanced_run"]
    assert unbalanced["run_id"] == "scan-failed-1"


def test_documents_are_written_without_identity(site):
    out = os.path.join(site["root"], "inspection")
    assert sorted(os.listdir(out)) == [f"self_inspection_{site['year']}.html", f"self_inspection_{site['year']}.json"]
    html = open(os.path.join(out, f"self_inspection_{site['year']}.html"), encoding="utf-8").read()
    assert "scan-failed-1" in html and "police request 7" in html and "unbalanced_run" in html
    assert "Audit chains" in html
    assert files_without_canaries(out) == 2
    with open(os.path.join(out, f"self_inspection_{site['year']}.json"), encoding="utf-8") as handle:
        assert json.load(handle)["year"] == site["year"]


def test_the_year_selects_runs(site, tmp_path):
    other = si.self_inspection([site["root"]], 2025, str(tmp_path / "y2025"), [site["keys"]])
    assert {k: v["runs"] for k, v in other["runs_by_step"].items()} == {"scan": 1}
    assert other["reveals"]["records"] == 0
    with pytest.raises(UserError, match="no run manifest from 1999"):
        si.self_inspection([site["root"]], 1999, str(tmp_path / "y1999"))
    assert not os.path.exists(tmp_path / "y1999")


def test_the_command_line(site, tmp_path, capsys):
    out = str(tmp_path / "cli")
    argv = ["--year", str(site["year"]), "--manifests", site["root"], "--out", out]
    assert si.main([*argv, "--keys", site["keys"]]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"self-inspection {site['year']}: 6 run(s)") and "3 finding(s)" in captured.out
    assert si.main(argv) == 0  # without the keyset the chains cannot be verified: that is a finding
    assert "4 finding(s)" in capsys.readouterr().out
    assert not any(c in captured.out + captured.err for c in CANARIES)
    assert si.main(["--year", "1999", "--manifests", site["root"], "--out", out]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("backfill self-inspection: error: no run manifest from 1999") and len(err.splitlines()) == 1
    assert si.main(["--year", "2026", "--manifests", str(tmp_path / "nowhere"), "--out", out]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_every_audit_chain_verifies(site):
    """The merge's, the purge's and the keyset's logs, and the copy of the merge folder: whole chains."""
    chains = site["inspection"]["audit_chains"]
    assert chains["keysets"] == [keyset_id_of(site)]
    folders = {os.path.relpath(c["folder"], site["root"]): c for c in chains["chains"]}
    assert set(folders) == {"merge/audit", "old/merge-copy/audit", "retention/audit", "secure/audit"}
    for name, chain in folders.items():
        assert chain["findings"] == 0 and chain["verified"] == chain["last_seq"] > 0, name
    assert folders["merge/audit"]["witness_seq"] == folders["merge/audit"]["last_seq"]
    assert folders["old/merge-copy/audit"]["witness_seq"] is None  # a copy: no witness, its chain still verifies


def keyset_id_of(site) -> str:
    from transforms.crypto.keyset import Keyset

    return Keyset.load(site["keys"]).keyset_id
