"""The reveal audit cannot be bypassed or rewritten (issue 11 item 6).

pipelines/reveal.py writes every attempt, before anything is shown, to the
vault's own chained log (transforms/crypto/audit.py); pipelines/self_inspection.py
verifies the chain. Each test below reproduces an attack that the code before
the chain let through: a log moved to a throwaway file or a device, a record
rewritten, removed, inserted, reordered or cut off the end, an unrecorded
failure, a free-text actor.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import stat

import pyarrow as pa
import pytest

from pipelines import keys as keys_cli
from pipelines import reveal as reveal_cli
from pipelines import self_inspection as si
from pipelines.io.vault_files import write_vault
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from tests.support.vault_rows import replace_row, rewrite_values, value_row
from transforms.crypto.keyset import Keyset
from transforms.crypto.vault import Vault

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
OS_USER = pwd.getpwuid(os.getuid()).pw_name
YEAR = dt.datetime.now(dt.timezone.utc).year
CHAIN_KINDS = {
    "audit_record_edited",
    "audit_record_removed",
    "audit_record_inserted",
    "audit_record_reordered",
    "audit_tail_truncated",
    "audit_chain_unverified",
}


@pytest.fixture
def site(tmp_path):
    """A keyset, a registered vault of three lines (L1 holds the canaries) and a run manifest of this year."""
    keys, vault = tmp_path / "secure" / "keys.json", tmp_path / "out" / "merge" / "vault"
    assert keys_cli.main(["init", "--keys", str(keys)]) == 0
    sealed = Vault(Keyset.load(str(keys))).seal(
        ["L1", "L2", "L3"],
        {
            "name": [CANARY_NAME, "张三", "李四"],
            "doc_number": [CANARY_NUMBER, "110105194912310021", None],
            "address": [CANARY_ADDRESS, None, "上海市浦东新区世纪大道100号"],
        },
        registrations=["E1", None, "E3"],
    )
    write_vault(str(vault), *sealed)
    keys_cli.register_vault(str(keys), str(vault), by="test")
    manifest = {"step": "merge", "run_id": "merge-test", "started": f"{YEAR}-01-02T00:00:00Z", "counts": {}}
    (tmp_path / "out" / "merge" / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return {
        "keys": str(keys),
        "vault": str(vault),
        "log": tmp_path / "out" / "merge" / "audit" / "reveal.jsonl",
        "root": tmp_path / "out",
        "tmp": tmp_path,
    }


def reveal(site, line_id="L1", *extra, purpose="complaint 2026-118"):
    return reveal_cli.main(
        ["--keys", site["keys"], "--vault", site["vault"], "--line-id", line_id, "--purpose", purpose, *extra]
    )


def records(site) -> list[dict]:
    if not site["log"].exists():
        return []
    return [json.loads(line) for line in site["log"].read_text(encoding="utf-8").splitlines()]


def tamper_value(site, line_id: str) -> None:
    """The line's value row (its record: every sealed field) truncated by one byte."""

    def truncate(values: pa.Table) -> pa.Table:
        return replace_row(values, line_id, None, ciphertext=value_row(values, line_id)["ciphertext"][0].as_py()[:-1])

    rewrite_values(site["vault"], truncate)


def assert_clean(*texts: str) -> None:
    for text in texts:
        for canary in CANARIES:
            assert canary not in text


# -- the log cannot be moved, and a failure to write it shows nothing --------------------------------------------


@pytest.mark.parametrize("where", ["throwaway", "device"])
def test_the_audit_log_cannot_be_pointed_elsewhere(site, capsys, where):
    """Before: --audit-log took any path (a throwaway file; /dev/null, whose mode it then changed)."""
    target = str(site["tmp"] / "throwaway.jsonl") if where == "throwaway" else os.devnull
    mode = os.stat(os.devnull).st_mode
    assert reveal(site, "L1", "--audit-log", target) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert "the audit log is" in captured.err and "cannot be moved" in captured.err
    assert not os.path.exists(site["tmp"] / "throwaway.jsonl") and os.stat(os.devnull).st_mode == mode
    assert records(site) == []
    assert reveal(site, "L2", "--audit-log", str(site["log"])) == 0  # naming its own log is fine
    assert capsys.readouterr().out.splitlines() == ["doc_number: 110105194912310021", "name: 张三"]
    assert [r["line_id"] for r in records(site)] == ["L2"]


@pytest.mark.parametrize("swap", ["log_is_a_link_to_a_device", "log_is_a_link_to_a_file", "folder_is_a_link"])
def test_a_log_swapped_for_a_link_is_refused_and_shows_nothing(site, capsys, swap):
    """Before: the log was opened through a symbolic link, and a device's mode was changed to 0600."""
    os.makedirs(site["log"].parent)
    elsewhere = site["tmp"] / "elsewhere"
    elsewhere.mkdir()
    if swap == "log_is_a_link_to_a_device":
        os.symlink(os.devnull, site["log"])
    elif swap == "log_is_a_link_to_a_file":
        (elsewhere / "reveal.jsonl").write_text("", encoding="utf-8")
        os.symlink(elsewhere / "reveal.jsonl", site["log"])
    else:
        os.rmdir(site["log"].parent)
        os.symlink(elsewhere, site["log"].parent)
    mode = os.stat(os.devnull).st_mode
    assert reveal(site, "L1") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "the audit record could not be written" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert os.stat(os.devnull).st_mode == mode
    assert not [n for n in os.listdir(elsewhere) if os.path.getsize(elsewhere / n)]
    assert_clean(captured.err)


def test_a_reveal_whose_record_cannot_be_appended_fails_closed(site, capsys):
    os.makedirs(site["log"])  # a folder where the log must be: nothing can be appended
    assert reveal(site, "L1") == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "nothing was shown" in captured.err
    assert_clean(captured.err)


def test_every_attempt_is_recorded_before_anything_is_shown(site, capsys, monkeypatch):
    from transforms.crypto import audit

    seen = []
    real = audit._append_lines

    def spy(folder, log, data):
        seen.append(capsys.readouterr().out)  # what was printed when the record was written
        real(folder, log, data)

    monkeypatch.setattr(audit, "_append_lines", spy)
    assert reveal(site, "L1") == 0
    assert seen == [""] and CANARY_NAME in capsys.readouterr().out
    assert [r["outcome"] for r in records(site)] == ["revealed"]


def test_failed_attempts_are_recorded_with_their_outcome(site, capsys):
    """Before: a reveal that failed on a truncated vault file wrote no record."""
    assert reveal(site, "L404") == 1
    tamper_value(site, "L3")
    assert reveal(site, "L3") == 1
    keys_file = next((site["tmp"] / "out" / "merge" / "vault" / "keys").iterdir())
    keys_file.write_bytes(keys_file.read_bytes()[:100])  # a truncated vault file
    assert reveal(site, "L1") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cannot be read" in captured.err.splitlines()[-1]
    got = [(r["line_id"], r["outcome"]) for r in records(site)]
    assert got == [("L404", "unknown_line"), ("L3", "failed_authentication"), ("L1", "vault_unreadable")]
    assert_clean(site["log"].read_text(encoding="utf-8"), captured.err)


def test_the_actor_is_the_os_user_and_a_stated_actor_is_recorded_beside_it(site, monkeypatch, capsys):
    """Before: --actor (or $USER) was taken as who acted."""
    monkeypatch.setenv("USER", "mallory")
    monkeypatch.setenv("LOGNAME", "mallory")
    assert reveal(site, "L2", "--actor", "zhang.wei") == 0
    assert reveal(site, "L2") == 0
    first, second = records(site)
    assert (first["actor"], first["uid"], first["stated_actor"]) == (OS_USER, os.getuid(), "zhang.wei")
    assert (second["actor"], second["stated_actor"]) == (OS_USER, None)
    assert [r["seq"] for r in (first, second)] == [1, 2]
    assert stat.S_IMODE(os.stat(site["log"]).st_mode) == 0o600


# -- the self-inspection verifies the chain ------------------------------------------------------------------------


def history(site) -> list[str]:
    """A shred (shred.jsonl), then four reveals (reveal.jsonl; one failed authentication): one chain of five."""
    assert keys_cli.main(["shred", "--keys", site["keys"], "--vault", site["vault"], "--line-id", "L2"]) == 0
    tamper_value(site, "L3")
    for line_id in ("L1", "L404", "L3", "L1"):
        reveal(site, line_id)
    lines = site["log"].read_text(encoding="utf-8").splitlines(keepends=True)
    got = [(json.loads(x)["seq"], json.loads(x)["outcome"]) for x in lines]
    assert got == [(2, "revealed"), (3, "unknown_line"), (4, "failed_authentication"), (5, "revealed")]
    return lines


def inspect(site, tmp, keys=True) -> dict:
    return si.self_inspection([str(site["root"])], YEAR, str(tmp), [site["keys"]] if keys else None)


def chain_findings(report: dict) -> list[str]:
    return sorted(f["kind"] for f in report["findings"] if f["kind"] in CHAIN_KINDS)


def test_an_untouched_chain_has_no_finding(site, tmp_path, capsys):
    history(site)
    report = inspect(site, tmp_path / "si")
    assert chain_findings(report) == []
    assert report["reveals"]["by_outcome"] == {"failed_authentication": 1, "revealed": 2, "unknown_line": 1}
    assert report["shreds"]["lines"] == 1
    [vault_chain] = [
        c for c in report["audit_chains"]["chains"] if c["folder"].endswith(os.path.join("merge", "audit"))
    ]
    assert vault_chain["verified"] == vault_chain["last_seq"] == vault_chain["witness_seq"] == 5
    unverified = inspect(site, tmp_path / "si2", keys=False)  # without the keyset the MACs are not checked
    assert "audit_chain_unverified" in chain_findings(unverified)


def _edit(lines):
    record = json.loads(lines[2])
    assert record["outcome"] == "failed_authentication"
    record["outcome"] = "revealed"  # the MAC stays: it cannot be recomputed without the keyset
    return lines[:2] + [json.dumps(record, ensure_ascii=False) + "\n"] + lines[3:]


def _insert(lines):
    forged = json.loads(lines[1])
    forged.update(line_id="L1", outcome="revealed", purpose="made up")
    return lines[:2] + [json.dumps(forged, ensure_ascii=False) + "\n"] + lines[2:]


TAMPERINGS = {
    "edited": (_edit, "audit_record_edited"),
    "removed": (lambda lines: lines[:1] + lines[2:], "audit_record_removed"),
    "inserted": (_insert, "audit_record_inserted"),
    "reordered": (lambda lines: [lines[0], lines[2], lines[1], lines[3]], "audit_record_reordered"),
    "tail_cut_off": (lambda lines: lines[:-1], "audit_tail_truncated"),
    "tail_torn": (lambda lines: lines[:-1] + [lines[-1][: len(lines[-1]) // 2]], "audit_tail_truncated"),
}


@pytest.mark.parametrize("how", list(TAMPERINGS))
def test_a_tampered_reveal_log_is_a_finding(site, tmp_path, how, capsys):
    """Before: the self-inspection read whatever the log said; a rewritten outcome even hid a failure."""
    lines = history(site)
    tamper, kind = TAMPERINGS[how]
    site["log"].write_text("".join(tamper(lines)), encoding="utf-8")
    report = inspect(site, tmp_path / "si")
    assert set(chain_findings(report)) == {kind}, report["findings"]
    finding = next(f for f in report["findings"] if f["kind"] == kind)
    assert finding["step"] == "audit" and str(site["log"].parent) in finding["detail"]
    html = (tmp_path / "si" / f"self_inspection_{YEAR}.html").read_text(encoding="utf-8")
    saved = json.loads((tmp_path / "si" / f"self_inspection_{YEAR}.json").read_text(encoding="utf-8"))
    assert kind in html and kind in [f["kind"] for f in saved["findings"]]
    assert_clean(html, json.dumps(saved, ensure_ascii=False))


def test_a_record_removed_from_the_shred_log_breaks_the_same_chain(site, tmp_path, capsys):
    history(site)
    shred_log = site["log"].parent / "shred.jsonl"
    assert [json.loads(x)["seq"] for x in shred_log.read_text().splitlines()] == [1]
    shred_log.write_text("", encoding="utf-8")
    assert chain_findings(inspect(site, tmp_path / "si")) == ["audit_record_removed"]


def test_the_keys_log_is_chained_too(site, tmp_path, capsys):
    history(site)
    log = site["tmp"] / "secure" / "audit" / "keys.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    assert [json.loads(x)["event"] for x in lines] == ["keys_init", "keys_shred"]
    log.write_text(lines[1], encoding="utf-8")  # the init record deleted
    report = si.self_inspection(
        [str(site["root"]), str(site["tmp"] / "secure")], YEAR, str(tmp_path / "si"), [site["keys"]]
    )
    assert chain_findings(report) == ["audit_record_removed"]


def test_a_registered_log_outside_the_inspected_folders_is_still_checked(site, tmp_path, capsys):
    """A vault copied elsewhere and revealed there: its log is in the registry, so the inspection finds it."""
    import shutil

    copy = site["tmp"] / "elsewhere" / "vault"
    shutil.copytree(site["vault"], copy)
    assert reveal({**site, "vault": str(copy)}, "L2") == 0
    report = inspect(site, tmp_path / "si")
    assert report["reveals"]["records"] == 1 and chain_findings(report) == []
    shutil.rmtree(site["tmp"] / "elsewhere" / "audit")
    assert chain_findings(inspect(site, tmp_path / "si2")) == ["audit_record_removed"]
