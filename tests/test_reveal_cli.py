"""Tests of ``backfill reveal`` (pipelines/reveal.py) and the vault side of ``backfill keys``."""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys

import pytest

from pipelines import cli
from pipelines import keys as keys_cli
from pipelines import reveal as reveal_cli
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from tests.support.vault_rows import replace_row, value_row
from transforms.crypto.keyset import Keyset
from transforms.crypto.vault import UnknownLine, Vault
from pipelines.io.vault_files import read_table, write_table, write_vault

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OS_USER = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def site(tmp_path):
    """A keyset and a vault of three lines; L1 holds the canaries."""
    keys, vault = tmp_path / "secure" / "keys.json", tmp_path / "merge" / "vault"
    assert keys_cli.main(["init", "--keys", str(keys)]) == 0
    sealed = Vault(Keyset.load(str(keys))).seal(
        ["L1", "L2", "L3"],
        {
            "name": [CANARY_NAME, "张三", "李四"],
            "doc_number": [CANARY_NUMBER, "110105194912310021", None],
            "address": [CANARY_ADDRESS, None, "上海市浦东新区世纪大道100号"],
        },
    )
    write_vault(str(vault), *sealed)
    keys_cli.register_vault(str(keys), str(vault), by="test")  # as a merge does before it writes its vault
    return {
        "keys": str(keys),
        "vault": str(vault),
        "audit": tmp_path / "merge" / "audit" / "reveal.jsonl",
        "tmp": tmp_path,
    }


def reveal(site, line_id="L1", purpose="complaint 2026-118: verify the holder", *extra):
    argv = ["--keys", site["keys"], "--vault", site["vault"], "--line-id", line_id, *extra]
    if purpose is not None:
        argv += ["--purpose", purpose]
    return reveal_cli.main(argv)


def audit_records(site) -> list[dict]:
    if not site["audit"].exists():
        return []
    return [json.loads(line) for line in site["audit"].read_text(encoding="utf-8").splitlines()]


def assert_clean(*texts: str) -> None:
    for text in texts:
        for canary in CANARIES:
            assert canary not in text


def test_reveal_prints_values_and_appends_an_audit_record(site, capsys):
    assert reveal(site, "L1", "complaint 2026-118: verify the holder", "--actor", "zhang.wei") == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"doc_number: {CANARY_NUMBER}", f"name: {CANARY_NAME}", f"address: {CANARY_ADDRESS}"]
    [record] = audit_records(site)
    assert record["event"] == "reveal" and record["outcome"] == "revealed"
    assert record["line_id"] == "L1" and record["fields"] == ["doc_number", "name", "address"]
    assert record["purpose"] == "complaint 2026-118: verify the holder"
    assert record["actor"] == OS_USER and record["uid"] == os.getuid() and record["stated_actor"] == "zhang.wei"
    assert record["vault_dir"] == os.path.realpath(site["vault"]) and record["seq"] == 1 and len(record["mac"]) == 64
    assert record["keyset_id"] == Keyset.load(site["keys"]).keyset_id and record["vault_key_version"] == "v1"
    assert record["at"].endswith("Z")
    assert_clean(site["audit"].read_text(encoding="utf-8"))
    assert stat.S_IMODE(os.stat(site["audit"]).st_mode) == 0o600
    assert reveal(site, "L2", "second look", "--fields", "name,address") == 0
    assert capsys.readouterr().out.splitlines() == ["name: 张三"]
    records = audit_records(site)
    assert len(records) == 2
    assert records[1]["fields"] == ["name"] and records[1]["requested_fields"] == ["name", "address"]


def test_the_console_script_dispatches_reveal(site, capsys):
    argv = ["reveal", "--keys", site["keys"], "--vault", site["vault"], "--line-id", "L2", "--purpose", "check"]
    assert cli.main(argv) == 0
    assert "name: 张三" in capsys.readouterr().out


@pytest.mark.parametrize("purpose", [None, "", "   ", "\t\u3000"])
def test_reveal_without_a_purpose_refuses(site, capsys, purpose):
    assert reveal(site, "L1", purpose) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().startswith("backfill reveal: error: a purpose is required")
    assert len(captured.err.strip().splitlines()) == 1
    assert audit_records(site) == []


def test_unknown_line_is_one_line_and_recorded(site, capsys):
    assert reveal(site, "L404") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip() == (
        "backfill reveal: error: line L404 cannot be revealed: it is not in the vault"
    )
    assert [r["outcome"] for r in audit_records(site)] == ["unknown_line"]


def test_tampered_vault_fails_authentication_without_values(site, capsys):
    values = read_table(site["vault"], "values")
    record = value_row(values, "L1")  # L1's record: every field of the line in one ciphertext
    write_table(
        site["vault"], "values", replace_row(values, "L1", None, ciphertext=record["ciphertext"][0].as_py()[:-1])
    )
    assert reveal(site, "L1") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        "backfill reveal: error: vault record of line L1 failed authentication (tampered, truncated or moved)"
    )
    assert [r["outcome"] for r in audit_records(site)] == ["failed_authentication"]
    assert reveal(site, "L1", "only the number", "--fields", "doc_number") == 1  # no field of the record opens
    captured = capsys.readouterr()
    assert captured.out == "" and "vault record of line L1 failed authentication" in captured.err
    assert_clean(captured.err, site["audit"].read_text(encoding="utf-8"))
    assert reveal(site, "L2") == 0  # the other lines still open
    assert capsys.readouterr().out.splitlines() == ["doc_number: 110105194912310021", "name: 张三"]
    assert [r["outcome"] for r in audit_records(site)] == ["failed_authentication"] * 2 + ["revealed"]


def test_loose_keyset_is_refused_by_reveal(site, capsys):
    os.chmod(site["keys"], 0o644)
    assert reveal(site) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.strip().endswith(f"run: chmod 600 {site['keys']}")


def test_vault_rotation_rewraps_keys_and_leaves_values(site, capsys):
    values_dir = os.path.join(site["vault"], "values")
    before = {n: open(os.path.join(values_dir, n), "rb").read() for n in os.listdir(values_dir)}
    assert keys_cli.main(["rotate", "--keys", site["keys"], "--vault", "--vault-dir", site["vault"]]) == 0
    assert "re-wrapped 3 data keys" in capsys.readouterr().out
    assert {n: open(os.path.join(values_dir, n), "rb").read() for n in os.listdir(values_dir)} == before
    assert set(read_table(site["vault"], "keys")["vault_key_version"].to_pylist()) == {"v2"}
    assert keys_cli.main(["rotate", "--keys", site["keys"], "--join"]) == 0
    for line in ("L1", "L2", "L3"):
        assert reveal(site, line) == 0
    out = capsys.readouterr().out
    assert f"name: {CANARY_NAME}" in out and "name: 李四" in out
    assert audit_records(site)[-1]["vault_key_version"] == "v2"


def test_shred_cannot_be_undone_with_an_older_copy_of_the_vault(site, capsys):
    older = site["tmp"] / "backup" / "vault"
    shutil.copytree(site["vault"], older)  # an older copy: its keys AND its values
    argv = ["shred", "--keys", site["keys"], "--vault", site["vault"], "--line-id", "L1", "--reason", "retention"]
    assert keys_cli.main(argv) == 0
    assert "shredded 1 line(s)" in capsys.readouterr().out
    assert reveal(site, "L1") == 1
    assert "its data key is gone (shredded)" in capsys.readouterr().err
    site_old = {**site, "vault": str(older)}
    assert reveal(site_old, "L1") == 1  # the old key table's wrapping key is out of use (destroyed later)
    err = capsys.readouterr().err
    assert "cannot be unwrapped" in err and "scheduled for destruction" in err
    old_values = read_table(str(older), "values")
    current_keys = read_table(site["vault"], "keys")
    with pytest.raises(UnknownLine, match="shredded"):
        Vault(Keyset.load(site["keys"])).open(current_keys, old_values, "L1")
    assert reveal(site, "L2") == 0 and reveal(site, "L3") == 0  # the others still open
    assert "name: 张三" in capsys.readouterr().out
    shred_log = site["tmp"] / "merge" / "audit" / "shred.jsonl"
    [record] = [json.loads(line) for line in shred_log.read_text().splitlines()]
    assert record["line_id"] == "L1" and record["reason"] == "retention" and record["actor"] == OS_USER
    assert record["retired_vault_key_versions"] == ["v1"] and record["new_vault_key_version"] == "v2"
    assert_clean(shred_log.read_text(encoding="utf-8"))


def test_shred_of_an_unknown_line_changes_nothing(site, capsys):
    before = open(site["keys"], "rb").read()
    assert keys_cli.main(["shred", "--keys", site["keys"], "--vault", site["vault"], "--line-id", "L404"]) == 1
    assert "line L404 has no data key" in capsys.readouterr().err
    assert open(site["keys"], "rb").read() == before
    assert reveal(site, "L1") == 0


def test_a_failed_rotation_changes_nothing(site, tmp_path, capsys):
    foreign = tmp_path / "foreign" / "vault"
    write_vault(str(foreign), *Vault(Keyset.generate()).seal(["X1"], {"name": ["赵六"]}))
    before = open(site["keys"], "rb").read()
    assert keys_cli.main(["rotate", "--keys", site["keys"], "--vault", "--vault-dir", str(foreign)]) == 1
    assert "belongs to keyset" in capsys.readouterr().err
    assert keys_cli.main(["rotate", "--keys", site["keys"], "--vault", "--vault-dir", str(tmp_path / "none")]) == 1
    assert "no vault at" in capsys.readouterr().err
    assert open(site["keys"], "rb").read() == before


def test_retokenize_needs_a_merged_base(site, capsys):
    with pytest.raises(SystemExit):  # --base and --vault (or --merged) are required (tests/test_merge_cli.py runs it)
        keys_cli.main(["retokenize", "--keys", site["keys"], "--out", str(site["tmp"] / "retok")])
    assert "one of the arguments --base --merged is required" in capsys.readouterr().err
    raw = site["tmp"] / "raw.csv"
    raw.write_text("line_id,line_type,subscriber_kind,status\nL1,MOBILE,INDIVIDUAL,ACTIVE\n", encoding="utf-8")
    assert (
        keys_cli.main(
            [
                "retokenize",
                "--keys",
                site["keys"],
                "--base",
                str(raw),
                "--vault",
                site["vault"],
                "--out",
                str(site["tmp"] / "retok"),
            ]
        )
        == 1
    )
    assert "is not a merged base" in capsys.readouterr().err


def test_no_canary_in_logs_or_errors(site, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    reveal(site, "L1")
    reveal(site, "L404")
    reveal(site, "L1", "")
    keys_cli.main(["rotate", "--keys", site["keys"], "--vault", "--vault-dir", site["vault"]])
    keys_cli.main(["shred", "--keys", site["keys"], "--vault", site["vault"], "--line-id", "L2"])
    captured = capsys.readouterr()
    assert CANARY_NAME in captured.out  # the one place a value may appear: what reveal prints
    assert_clean(captured.err, caplog.text)
    for folder, _, files in os.walk(site["tmp"]):
        for name in files:
            if name.endswith((".jsonl", ".json")):
                assert_clean(open(os.path.join(folder, name), encoding="utf-8").read())


@pytest.mark.e2e
def test_output_is_utf8_whatever_the_locale(site):
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C", "LANG": "C"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.reveal",
            "--keys",
            site["keys"],
            "--vault",
            site["vault"],
            "--line-id",
            "L1",
            "--purpose",
            "locale check",
            "--fields",
            "name",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    assert done.stdout.decode("utf-8").strip() == f"name: {CANARY_NAME}"
    os.chmod(site["keys"], 0o640)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.keys", "show", "--keys", site["keys"]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode().strip().splitlines() == [
        f"backfill keys: error: keyset {site['keys']} is accessible by group or others (mode 0640); "
        f"run: chmod 600 {site['keys']}"
    ]
