"""`backfill incident` (Art. 13): scope by key version or line list, the report, the shred, canaries.

Expected figures come from the rows the test wrote (tests/support/compliance.py),
not from the code under test.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import shutil

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to, is_empty

from pipelines import incident as incident_cli
from pipelines import reveal as reveal_cli
from tests.support.compliance import (
    CANARIES,
    base_rows,
    build,
    copy_keys,
    event,
    files_without_canaries,
    has_identity,
    run,
)
from pipelines.io.line_lists import ReadLineIds, inspect_line_list
from pipelines.io.vault_files import read_table
from transforms.crypto.keyset import Keyset
from tests.support.incident import affected_csv, affected_files

ROWS = {r["line_id"]: r for r in base_rows()}
ROWS["A02"] = {
    **ROWS["A02"],
    **{k: v for k, v in event().items() if k in ("doc_type", "doc_number", "name", "address")},
}
LOCAL = ["--runner", "FnApiRunner"]
WITH_IDENTITY = {line for line, row in ROWS.items() if has_identity(row)}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return build(tmp_path_factory.mktemp("incident"))


def incident(site, out, *argv) -> dict:
    assert incident_cli.main(["--base", site["base"], "--out", str(out), *argv]) == 0
    with open(os.path.join(str(out), "incident.json"), encoding="utf-8") as handle:
        return json.load(handle)


def output_files(out) -> int:
    """incident.json, incident.html, manifest.json, the marker, _SUCCESS and the affected-lines files."""
    return 5 + len(affected_files(out))


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
    assert files_without_canaries(str(out)) == output_files(out)
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
    assert files_without_canaries(str(out)) == output_files(out)


def check_listed(path, ids: list[str], counts: dict, batch_rows: int = 65_536) -> None:
    """ReadLineIds gives these ids (any order, repeats kept), in batches of at most ``batch_rows``, and counts."""
    listing = inspect_line_list(str(path))
    with BeamTestPipeline(argv=LOCAL) as p:
        listed = p | ReadLineIds(listing, batch_rows)
        got = listed.ids | "Ids" >> beam.FlatMap(lambda t: t.column("line_id").to_pylist())
        assert_that(got, equal_to(ids), label="CheckIds")
        oversized = listed.ids | "Oversized" >> beam.Filter(lambda t: t.num_rows > batch_rows)
        assert_that(oversized, is_empty(), label="CheckBatches")
        assert_that(listed.counts, equal_to([counts]), label="CheckCounts")


def test_line_files_in_both_forms(tmp_path):
    plain = tmp_path / "ids.txt"
    plain.write_text("\ufeffA01\n\n  T1129 \nA01\n", encoding="utf-8")
    assert inspect_line_list(str(plain)).column is None
    check_listed(plain, ["A01", "A01", "T1129"], {"listed": {"rows": 3, "unreadable": 0}})
    table = tmp_path / "ids.csv"
    table.write_text('msisdn,Line_ID\n138,A01\n139,\n140,T1129\n141,"x,y"\n1,2,3\n', encoding="utf-8")
    assert inspect_line_list(str(table)).column == "Line_ID"
    # the row of three cells is counted as unreadable, never shown
    check_listed(table, ["A01", "T1129", "x,y"], {"listed": {"rows": 3, "unreadable": 1}})
    many = tmp_path / "many.txt"
    ids = [f"L{i:05d}" for i in range(1000)]
    many.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    check_listed(many, ids, {"listed": {"rows": 1000, "unreadable": 0}}, batch_rows=64)


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
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)  # after now, the time zones' day of room too
    code = incident_cli.main([*base, "--key-version", "j1", "--detected-at", later.isoformat(timespec="seconds")])
    assert "is in the future" in one_line_error(code, capsys.readouterr().err)
    code = incident_cli.main([*base, "--key-version", "j1", "--as-of", "2026-11-30", "--detected-at", "2026-12-02"])
    assert "after the report's --as-of 2026-11-30" in one_line_error(code, capsys.readouterr().err)
    never = f"v{len(Keyset.load(site['keys']).info()) + 1}"  # more versions than the keyset ever held
    code = incident_cli.main([*base, "--key-version", never, "--keys", site["keys"]])
    assert f"--key-version {never} is not a version of the keyset" in one_line_error(code, capsys.readouterr().err)
    code = incident_cli.main(["--base", site["base"], "--out", str(tmp_path / "unheld"), "--key-version", never])
    assert code == 0 and f"warning: no line of the base is under {never}" in capsys.readouterr().err
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
    assert files_without_canaries(str(out)) == output_files(out)
    before = (out / "incident.json").read_bytes()
    capsys.readouterr()
    code = incident_cli.main(["--base", site["base"], "--out", str(out), "--lines", str(listing)])
    assert "already holds an incident report" in one_line_error(code, capsys.readouterr().err)
    assert (out / "incident.json").read_bytes() == before


@pytest.mark.e2e
def test_what_only_the_job_can_see_fails_it_in_one_line(site, tmp_path, capsys):
    out = tmp_path / "o"
    other = str(tmp_path / "other" / "keys.json")
    run("keys", "init", "--keys", other)
    code = incident_cli.main(
        ["--base", site["base"], "--out", str(out), "--key-version", "j1", "--vault", site["vault"], "--keys", other]
    )
    line = one_line_error(code, capsys.readouterr().err)
    assert "the vault's key table was made under keyset ks_" in line and line.endswith("nothing was published")
    assert not os.path.exists(out)
    blank = tmp_path / "blank.txt"  # more blank lines than the launcher reads before the run
    blank.write_bytes(b"\n" * (3 << 20))
    code = incident_cli.main(["--base", site["base"], "--out", str(out), "--lines", str(blank)])
    line = one_line_error(code, capsys.readouterr().err)
    assert line.endswith("the --lines file holds no line_id; nothing was published")
    assert not os.path.exists(out)


@pytest.mark.e2e
def test_an_object_store_output_with_and_without_a_shred(site, tmp_path, moto_server, capsys):
    keys = copy_keys(site["keys"], tmp_path)
    shutil.copytree(site["merge"], tmp_path / "merge")
    vault, bucket = str(tmp_path / "merge" / "vault"), moto_server.bucket()
    listed = tmp_path / "leak.txt"
    listed.write_text("A01\nT1129\nA05\n", encoding="utf-8")
    base = ["--base", str(tmp_path / "merge" / "base"), "--vault", vault]
    argv = [*base, "--lines", str(listed), "--shred", "--keys", keys, "--out", f"{bucket}/shred"]
    assert incident_cli.main(argv) == 0
    assert incident_cli.main([*base, "--key-version", "j1", "--out", f"{bucket}/scope"]) == 0
    capsys.readouterr()
    names = {"_SUCCESS", ".backfill.json", "incident.json", "incident.html", "manifest.json"}
    for out in ("shred", "scope"):  # published whole: no staged copy, no shred id files left
        got = {u.removeprefix(f"{bucket}/{out}/") for u in moto_server.keys_under(f"{bucket}/{out}")}
        assert got == names | {"affected_lines/affected_lines-00000-of-00001.csv"}, got
        for uri in moto_server.keys_under(f"{bucket}/{out}"):
            assert not any(c.encode("utf-8") in moto_server.get_bytes(uri) for c in CANARIES), uri
    report = json.loads(moto_server.get_bytes(f"{bucket}/shred/incident.json"))
    assert report["action"]["lines_shredded"] == 2 and report["action"]["new_vault_key_version"] == "v2"
    shreds = [json.loads(line) for line in open(tmp_path / "merge" / "audit" / "shred.jsonl", encoding="utf-8")]
    assert sorted(s["line_id"] for s in shreds) == ["A01", "T1129"]
    scope = json.loads(moto_server.get_bytes(f"{bucket}/scope/manifest.json"))
    assert scope["counts"]["affected"] == len(WITH_IDENTITY) and scope["counts"]["balanced"]
