"""`backfill incident` (Art. 13): scope by key version or line list, the report, the shred, canaries.

Expected figures come from the rows the test wrote (tests/support/compliance.py),
not from the code under test.
"""

from __future__ import annotations

import collections
import csv
import json
import os
import shutil

import pytest

from pipelines import incident as incident_cli
from pipelines import reveal as reveal_cli
from tests.support.compliance import CANARIES, base_rows, build, copy_keys, event, files_without_canaries, has_identity
from pipelines.io.vault_files import read_table

ROWS = {r["line_id"]: r for r in base_rows()}
ROWS["A02"] = {
    **ROWS["A02"],
    **{k: v for k, v in event().items() if k in ("doc_type", "doc_number", "name", "address")},
}
WITH_IDENTITY = {line for line, row in ROWS.items() if has_identity(row)}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build(tmp_path_factory.mktemp("incident"))


def incident(site, out, *argv) -> dict:
    assert incident_cli.main(["--base", site["base"], "--out", str(out), *argv]) == 0
    with open(os.path.join(str(out), "incident.json"), encoding="utf-8") as handle:
        return json.load(handle)


def affected_csv(out) -> dict[str, dict]:
    with open(os.path.join(str(out), "affected_lines.csv"), encoding="utf-8") as handle:
        return {row["line_id"]: row for row in csv.DictReader(handle)}


def expected_fields(line_ids) -> dict[str, int]:
    got = collections.Counter()
    for line in line_ids:
        row = ROWS[line]
        got.update(
            name
            for name, present in (
                ("doc", row.get("doc_number")),
                ("name", row.get("name")),
                ("address", row.get("address")),
                ("handler", row.get("handler_doc_number") or row.get("handler_name")),
            )
            if present
        )
    return dict(sorted(got.items()))


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code != 0 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("backfill incident: error: ")
    return lines[0]


@pytest.mark.e2e
def test_a_leaked_join_key_scopes_every_tokenized_line(site, tmp_path, capsys):
    out = tmp_path / "inc"
    r = incident(
        site,
        out,
        "--key-version",
        "j1",
        "--vault",
        site["vault"],
        "--detected-at",
        "2026-11-30T09:15:00+08:00",
        "--description",
        "join key found in a public repository",
        "--as-of",
        "2026-11-30",
    )
    captured = capsys.readouterr()
    assert r["scope"] == {"kind": "key_version", "key_version": "j1", "key_purpose": "join"}
    assert r["detected_at"] == "2026-11-30T01:15:00Z" and r["as_of"] == "2026-11-30"
    assert r["how_many"]["lines"] == len(WITH_IDENTITY) == r["how_many"]["lines_with_identity"]
    documents = {ROWS[line]["doc_number"] for line in WITH_IDENTITY if ROWS[line].get("doc_number")}
    assert r["how_many"]["subscribers_by_document"] == len(documents) == 4
    assert r["by_region"] == dict(sorted(collections.Counter(ROWS[line]["region"] for line in WITH_IDENTITY).items()))
    assert r["what"]["fields"] == expected_fields(WITH_IDENTITY)
    assert r["what"]["join_key_versions"] == {"j1": len(WITH_IDENTITY)}
    assert r["action"]["lines_shredded"] == 0 and r["action"]["lines_not_shreddable"] == 0
    rows = affected_csv(out)
    assert set(rows) == WITH_IDENTITY
    assert rows["TORG"]["fields"] == "doc;name;address;handler" and rows["A01"]["shreddable"] == "true"
    assert rows["A01"]["vault_fields"] == "address;doc_number;doc_type;name"
    html = (out / "incident.html").read_text(encoding="utf-8")
    assert "How many users" in html and f">{len(WITH_IDENTITY)}<" in html and "join key found" in html
    with open(out / "manifest.json", encoding="utf-8") as handle:
        m = json.load(handle)
    assert m["step"] == "incident" and m["counts"]["affected"] == len(WITH_IDENTITY)
    assert m["counts"]["base_lines_read"] == len(ROWS)
    assert files_without_canaries(str(out)) == 6  # csv, json, html, manifest + the marker and _SUCCESS
    assert not any(c in captured.out + captured.err for c in CANARIES)
    assert f"{len(WITH_IDENTITY)} line(s) affected" in captured.out


@pytest.mark.e2e
def test_a_vault_key_version_scope(site, tmp_path):
    keyed = set(read_table(site["vault"], "keys").column("line_id").to_pylist())
    r = incident(site, tmp_path / "v1", "--key-version", "v1", "--vault", site["vault"])
    assert set(affected_csv(tmp_path / "v1")) == keyed and r["what"]["vault_key_versions"] == {"v1": len(keyed)}
    assert r["scope"]["vault_lines_not_in_base"] == 0
    none = incident(site, tmp_path / "v9", "--key-version", "v9")  # no vault given: shreddability not assessed
    assert none["how_many"]["lines"] == 0 and none["by_region"] == {} and affected_csv(tmp_path / "v9") == {}
    assert "not assessed" in none["action"]["summary"]
    assert "no line affected" in (tmp_path / "v9" / "incident.html").read_text(encoding="utf-8")


@pytest.mark.e2e
def test_a_line_list_with_shred(site, tmp_path, capsys):
    keys = copy_keys(site["keys"], tmp_path)
    vault = str(tmp_path / "merge" / "vault")
    shutil.copytree(site["vault"], vault)
    listed = tmp_path / "leak.csv"
    listed.write_text("line_id,note\nA01,x\nT1129,y\nA05,z\nNOPE,w\nA01,again\n", encoding="utf-8")
    out = tmp_path / "inc"
    r = incident(
        site,
        out,
        "--lines",
        str(listed),
        "--vault",
        vault,
        "--shred",
        "--keys",
        keys,
        "--description",
        "export file found on a dealer's laptop",
    )
    capsys.readouterr()
    assert r["scope"] == {"kind": "lines", "file": str(listed), "rows": 5, "distinct": 4, "duplicates": 1}
    assert r["unknown_line_ids"] == {"count": 1}  # counted, never echoed
    assert r["how_many"]["lines"] == 3 and r["how_many"]["lines_with_identity"] == 2  # A05 has none
    assert r["action"]["lines_shredded"] == 2 and r["action"]["lines_not_shreddable"] == 1
    assert r["action"]["new_vault_key_version"] == "v2" and r["action"]["retired_vault_key_versions"] == ["v1"]
    rows = affected_csv(out)
    assert {k: (v["shreddable"], v["shredded"]) for k, v in rows.items()} == {
        "A01": ("true", "true"),
        "T1129": ("true", "true"),
        "A05": ("false", "false"),
    }
    for line in ("A01", "T1129"):
        assert reveal_cli.main(["--keys", keys, "--vault", vault, "--line-id", line, "--purpose", "check"]) == 1
        assert "its data key is gone (shredded)" in capsys.readouterr().err
    assert reveal_cli.main(["--keys", keys, "--vault", vault, "--line-id", "A03", "--purpose", "check"]) == 0
    assert "name: 李四" in capsys.readouterr().out
    shreds = [json.loads(line) for line in open(tmp_path / "merge" / "audit" / "shred.jsonl", encoding="utf-8")]
    assert sorted(s["line_id"] for s in shreds) == ["A01", "T1129"]
    assert all(s["reason"].startswith(f"incident {r['incident_id']} (Art. 13): export file") for s in shreds)
    with open(out / "manifest.json", encoding="utf-8") as handle:
        counts = json.load(handle)["counts"]
    assert counts["balanced"] and counts["given"] == counts["affected"] + counts["unknown"] == 4
    assert files_without_canaries(str(out)) == 6  # csv, json, html, manifest + the marker and _SUCCESS


def test_line_files_in_both_forms(tmp_path):
    plain = tmp_path / "ids.txt"
    plain.write_text("\ufeffA01\n\n  T1129 \nA01\n", encoding="utf-8")
    assert incident_cli.read_line_ids(str(plain)) == (["A01", "T1129"], 3)
    table = tmp_path / "ids.csv"
    table.write_text("msisdn,Line_ID\n138,A01\n139,\n140,T1129\n", encoding="utf-8")
    assert incident_cli.read_line_ids(str(table)) == (["A01", "T1129"], 2)


@pytest.mark.e2e
def test_bad_inputs_are_one_line(site, tmp_path, capsys):
    base = ["--base", site["base"], "--out", str(tmp_path / "o")]
    code = incident_cli.main([*base, "--key-version", "j1", "--shred"])
    assert "--shred needs --keys and --vault" in one_line_error(code, capsys.readouterr().err)
    code = incident_cli.main([*base, "--key-version", "k1"])
    assert "is not a key version" in one_line_error(code, capsys.readouterr().err)
    code = incident_cli.main([*base, "--lines", str(tmp_path / "missing.txt")])
    assert "cannot be read" in one_line_error(code, capsys.readouterr().err)
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    code = incident_cli.main([*base, "--lines", str(tmp_path / "empty.txt")])
    assert "holds no line_id" in one_line_error(code, capsys.readouterr().err)
    (tmp_path / "nocol.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    code = incident_cli.main([*base, "--lines", str(tmp_path / "nocol.csv")])
    assert "without a line_id column" in one_line_error(code, capsys.readouterr().err)
    code = incident_cli.main([*base, "--key-version", "j1", "--detected-at", "last tuesday"])
    assert "is not an ISO date" in one_line_error(code, capsys.readouterr().err)
    code = incident_cli.main(
        ["--base", os.path.join(site["root"], "base.csv"), "--out", str(tmp_path / "o"), "--key-version", "j1"]
    )
    assert "is not a merged base" in one_line_error(code, capsys.readouterr().err)
    with pytest.raises(SystemExit) as exc:
        incident_cli.main([*base, "--key-version", "j1", "--lines", "x.txt"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.e2e
def test_a_leaked_list_is_counted_never_echoed_and_a_filed_report_is_never_overwritten(site, tmp_path, capsys):
    known = sorted(ROWS)[0]
    listing = tmp_path / "leak.txt"
    # a leaked export pasted as it came: a real line_id, and rows that are identity values, not line_ids
    listing.write_text(f"{known}\n{CANARIES[1]} {CANARIES[0]}\n{CANARIES[2]}\n", encoding="utf-8")
    out = tmp_path / "inc"
    report = incident(site, out, "--lines", str(listing))
    assert report["unknown_line_ids"] == {"count": 2}
    for canary in CANARIES:
        for name in os.listdir(out):
            with open(out / name, "rb") as handle:
                assert canary.encode("utf-8") not in handle.read(), (name, canary)
    before = (out / "incident.json").read_bytes()
    capsys.readouterr()
    code = incident_cli.main(["--base", site["base"], "--out", str(out), "--lines", str(listing)])
    assert "already holds an incident report" in one_line_error(code, capsys.readouterr().err)
    assert (out / "incident.json").read_bytes() == before
