"""Tests of the keyset (transforms/crypto/keyset.py) and ``backfill keys`` (pipelines/keys.py)."""

from __future__ import annotations

import base64
import copy
import json
import os
import pickle
import stat

import pytest

from pipelines import keys as keys_cli
from transforms.crypto.keyset import Keyset, KeysetError
from transforms.crypto.keyset_sealed import forget_all
from transforms.crypto.tokenize import Tokenizer


def raw_material(path) -> list[bytes]:
    """The key bytes in a keyset file (what must never be shown)."""
    with open(path, encoding="utf-8") as handle:
        doc = json.load(handle)
    return [base64.b64decode(k["material"]) for k in doc["keys"] if k["material"]]


def secret_forms(path) -> list[str]:
    """Every printable form of the key bytes: base64, base64url, hex."""
    forms = []
    for raw in raw_material(path):
        forms += [base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(), raw.hex(), raw.hex().upper()]
        forms += [f[:16] for f in forms[-4:]]  # a fragment is a leak too
    return forms


def assert_no_secret(text: str, path) -> None:
    for form in secret_forms(path):
        assert form not in text


@pytest.fixture
def keyfile(tmp_path):
    path = tmp_path / "keys" / "keys.json"
    assert keys_cli.main(["init", "--keys", str(path)]) == 0
    return path


def test_init_creates_a_0600_keyset_with_j1_v1_and_a1(keyfile, capsys):
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    keyset = Keyset.load(str(keyfile))
    assert (keyset.primary_join_version, keyset.primary_vault_version) == ("j1", "v1")
    assert keyset.keyset_id.startswith("ks_")
    assert [(k.purpose, k.version, k.state) for k in keyset.info()] == [
        ("join", "j1", "primary"),
        ("vault", "v1", "primary"),
        ("audit", "a1", "primary"),
    ]
    assert all(len(raw) == 32 for raw in raw_material(keyfile))
    assert len(set(raw_material(keyfile))) == 3
    assert not [n for n in os.listdir(keyfile.parent) if n.startswith(".keyset-")]  # no temporary left behind
    assert_no_secret(capsys.readouterr().out, keyfile)


def test_init_refuses_to_overwrite_unless_forced(keyfile, capsys):
    before = raw_material(keyfile)
    assert keys_cli.main(["init", "--keys", str(keyfile)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert raw_material(keyfile) == before
    assert keys_cli.main(["init", "--keys", str(keyfile), "--force"]) == 0
    assert set(raw_material(keyfile)).isdisjoint(before)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_loose_permissions_are_refused_in_one_line(keyfile, capsys, mode):
    os.chmod(keyfile, mode)
    with pytest.raises(KeysetError, match="chmod 600"):
        Keyset.load(str(keyfile))
    assert keys_cli.main(["show", "--keys", str(keyfile)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (
        f"backfill keys: error: keyset {keyfile} is accessible by group or others "
        f"(mode {mode:04o}); run: chmod 600 {keyfile}"
    )
    assert "Traceback" not in captured.err


def test_missing_and_malformed_keysets_are_one_line_errors(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert keys_cli.main(["show", "--keys", str(missing)]) == 1
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "subscriber-backfill/keyset/1", "keyset_id": "ks_x", "keys": [{"purpose": "join"}]}')
    os.chmod(bad, 0o600)
    assert keys_cli.main(["show", "--keys", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "malformed key entry" in err and len(err.strip().splitlines()) == 1
    bad.write_text("{not json")
    with pytest.raises(KeysetError, match="not valid JSON"):
        Keyset.load(str(bad))


def test_keyset_refuses_pickling_copying_and_direct_construction(keyfile):
    keyset = Keyset.load(str(keyfile))
    with pytest.raises(TypeError, match="DoFn.setup"):
        pickle.dumps(keyset)
    with pytest.raises(TypeError):
        copy.deepcopy(keyset)
    with pytest.raises(TypeError):
        Keyset()
    from apache_beam.internal import pickler  # what Beam uses to ship a DoFn

    with pytest.raises(Exception):
        pickler.dumps({"keyset": keyset})
    with pytest.raises(TypeError):
        pickle.dumps(Tokenizer(keyset))


def test_repr_and_info_hold_no_secret(keyfile):
    keyset = Keyset.load(str(keyfile))
    text = " ".join([repr(keyset), str(keyset), repr(keyset.info()), repr(Tokenizer(keyset))])
    assert keyset.keyset_id in text
    assert_no_secret(text, keyfile)


def test_show_prints_versions_and_states_never_secrets(keyfile, capsys):
    assert keys_cli.main(["rotate", "--keys", str(keyfile), "--join"]) == 0
    assert keys_cli.main(["rotate", "--keys", str(keyfile), "--vault"]) == 0
    capsys.readouterr()
    assert keys_cli.main(["show", "--keys", str(keyfile)]) == 0
    out = capsys.readouterr().out
    expected = (
        ["join", "j1", "enabled"],
        ["vault", "v1", "enabled"],
        ["join", "j2", "primary"],
        ["vault", "v2", "primary"],
    )
    for row in expected:
        assert any(line.split()[:3] == row for line in out.splitlines())
    assert_no_secret(out, keyfile)
    assert keys_cli.main(["show", "--keys", str(keyfile), "--json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert [k["version"] for k in shown["keys"]] == ["j1", "v1", "a1", "j2", "v2"]
    assert all("material" not in k for k in shown["keys"])
    assert_no_secret(out, keyfile)
    assert len(raw_material(keyfile)) == 5


def test_rotate_join_keeps_old_tokens_reproducible(keyfile, capsys):
    before = Tokenizer(Keyset.load(str(keyfile))).tokens("doc_number", ["11010519491231002X"])[0].as_py()
    assert keys_cli.main(["rotate", "--keys", str(keyfile), "--join"]) == 0
    assert "retokenize" in capsys.readouterr().out
    keyset = Keyset.load(str(keyfile))
    assert keyset.primary_join_version == "j2"
    assert keyset.versions("join") == ["j1", "j2"]
    tokenizer = Tokenizer(keyset)
    assert tokenizer.tokens_with_version("doc_number", ["11010519491231002X"], "j1")[0].as_py() == before
    assert tokenizer.tokens("doc_number", ["11010519491231002X"])[0].as_py().startswith("j2:")


def test_rotate_flags_are_checked(keyfile, capsys):
    for argv in (["rotate", "--keys", str(keyfile)], ["rotate", "--keys", str(keyfile), "--join", "--vault"]):
        with pytest.raises(SystemExit) as exited:  # argparse: one line, exit 2
            keys_cli.main(argv)
        assert exited.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert keys_cli.main(["rotate", "--keys", str(keyfile), "--vault", "--retire-old"]) == 1
    assert "--retire-old needs --vault DIR" in capsys.readouterr().err
    assert Keyset.load(str(keyfile)).primary_vault_version == "v1"


def test_retire_destroys_material_and_refuses_the_primary(keyfile):
    keyset = Keyset.load(str(keyfile))
    with pytest.raises(KeysetError, match="primary"):
        keyset.retire("v1")
    keyset.rotate_vault()
    keyset.retire("v1")
    keyset.save(str(keyfile))
    doc = json.loads(keyfile.read_text())
    v1 = next(k for k in doc["keys"] if k["version"] == "v1")
    assert v1["state"] == "retired" and v1["material"] is None and v1["retired_at"]
    reloaded = Keyset.load(str(keyfile))
    with pytest.raises(KeysetError, match="retired"):
        reloaded.vault_kek("v1")
    with pytest.raises(KeysetError, match="not in keyset"):
        reloaded.vault_kek("v9")
    with pytest.raises(KeysetError, match="not a vault key"):
        reloaded.vault_kek("j1")


def test_save_is_atomic_and_0600_even_with_a_loose_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "k.json"
        Keyset.generate().save(str(path))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        Keyset.generate().save(str(path))
        assert sorted(os.listdir(tmp_path)) == ["k.json"]
    finally:
        os.umask(old)


def test_audit_log_of_key_changes_holds_no_secret(keyfile):
    keys_cli.main(["rotate", "--keys", str(keyfile), "--join"])
    log = keyfile.parent / "audit" / "keys.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["event"] for r in records] == ["keys_init", "keys_rotate_join"]
    assert [r["seq"] for r in records] == [1, 2] and all(len(r["mac"]) == 64 for r in records)
    assert records[1]["new_version"] == "j2" and records[1]["keyset_id"] == Keyset.load(str(keyfile)).keyset_id
    assert_no_secret(log.read_text(), keyfile)
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600


def _forms(raws) -> list[str]:
    forms = []
    for raw in raws:
        forms += [base64.b64encode(raw).decode(), raw.hex()]
        forms += [f[:16] for f in forms[-2:]]
    return forms


def test_a_keyset_wrapped_by_a_local_kek_names_it_and_needs_only_its_path(tmp_path, capsys):
    keys, kek_file = tmp_path / "keys" / "keys.json", tmp_path / "kek" / "kek.b64"
    assert keys_cli.main(["init", "--keys", str(keys), "--kek", f"local-kek://{kek_file}"]) == 0
    assert stat.S_IMODE(os.stat(kek_file).st_mode) == 0o600 and stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    assert len(base64.b64decode(kek_file.read_text().strip())) == 32
    outer = json.loads(keys.read_text())
    assert outer["format"] == "subscriber-backfill/wrapped-keyset/1" and outer["kek"] == f"local-kek://{kek_file}"
    assert set(outer) == {"format", "keyset_id", "kek", "wrapped_dek", "nonce", "sealed"}  # not even versions
    keyset = Keyset.load(str(keys))
    token = Tokenizer(keyset).token("name", "金丝雀测试甲")
    material = list(keyset._Keyset__material.values())  # what must never be readable in the file
    assert len(material) == 3 and not any(f in keys.read_text() for f in _forms(material))
    assert keys_cli.main(["rotate", "--keys", str(keys), "--join"]) == 0  # only --keys: the keyset names its KEK
    again = Keyset.load(str(keys))
    assert again.primary_join_version == "j2" and again.kms_key_uri == f"local-kek://{kek_file}"
    assert Tokenizer(again).tokens_with_version("name", ["金丝雀测试甲"], "j1")[0].as_py() == token
    assert json.loads(keys.read_text())["wrapped_dek"] != outer["wrapped_dek"]  # a fresh data key per save
    out = capsys.readouterr().out
    assert "wrapped by local-kek://" in out and not any(f in out for f in _forms(material))


def test_a_wrapped_keyset_refuses_another_kek_an_edit_and_a_loose_kek_file(tmp_path, capsys):
    keys, kek_a, kek_b = tmp_path / "keys.json", tmp_path / "a.b64", tmp_path / "b.b64"
    assert keys_cli.main(["init", "--keys", str(keys), "--kek", f"local-kek://{kek_a}"]) == 0
    assert keys_cli.main(["init", "--keys", str(tmp_path / "other.json"), "--kek", f"local-kek://{kek_b}"]) == 0
    capsys.readouterr()
    before = keys.read_bytes()
    assert keys_cli.main(["rotate", "--keys", str(keys), "--join", "--kek", f"local-kek://{kek_b}"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"backfill keys: error: keyset {keys} is wrapped by local-kek://{kek_a}, not by local-kek://{kek_b}; nothing was done"
    )
    assert keys.read_bytes() == before
    outer = json.loads(before)
    keys.write_text(json.dumps({**outer, "kek": f"local-kek://{kek_b}"}))  # names another KEK
    with pytest.raises(KeysetError, match="does not open this keyset"):
        Keyset.load(str(keys))
    sealed = bytearray(base64.b64decode(outer["sealed"]))
    sealed[0] ^= 1
    keys.write_text(json.dumps({**outer, "sealed": base64.b64encode(bytes(sealed)).decode()}))
    with pytest.raises(KeysetError, match="failed authentication"):
        Keyset.load(str(keys))
    keys.write_bytes(before)
    os.chmod(kek_a, 0o644)
    forget_all()  # as a new process: this one opened these very bytes before, and kept them
    assert keys_cli.main(["show", "--keys", str(keys)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "key-encryption key" in err[0] and "chmod 600" in err[0]


def test_keys_wrap_wraps_a_keyset_in_clear_in_place_keeping_its_keys(keyfile, tmp_path, capsys):
    token = Tokenizer(Keyset.load(str(keyfile))).token("doc_number", "11010519491231002X")
    before = keyfile.read_bytes()
    wrap = ["wrap", "--keys", str(keyfile), "--kek", f"local-kek://{tmp_path / 'kek.b64'}"]
    # a local KEK file that does not exist is a typo unless --new-kek says it is meant: nothing changes
    assert keys_cli.main(wrap) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such key-encryption key file" in err[0] and "--new-kek" in err[0]
    assert keyfile.read_bytes() == before and not (tmp_path / "kek.b64").exists()
    assert keys_cli.main([*wrap, "--new-kek"]) == 0
    said = capsys.readouterr()
    assert "wrapped by local-kek://" in said.out and "created a new key-encryption key at" in said.err
    assert oct((tmp_path / "kek.b64").stat().st_mode & 0o777) == "0o600"
    assert json.loads(keyfile.read_text())["format"] == "subscriber-backfill/wrapped-keyset/1"
    assert Tokenizer(Keyset.load(str(keyfile))).token("doc_number", "11010519491231002X") == token
    records = [json.loads(x) for x in (keyfile.parent / "audit" / "keys.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "keys_wrap" and records[-1]["previous_kek"] is None


def test_a_keyset_outside_a_local_file_must_be_wrapped(tmp_path, capsys):
    assert keys_cli.main(["init", "--keys", "s3://bucket/keys.json"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be wrapped" in err[0] and "--kek" in err[0]
    with pytest.raises(KeysetError, match="must be wrapped"):
        Keyset.generate().save("gs://bucket/keys.json")
    assert keys_cli.main(["init", "--keys", str(tmp_path / "k.json"), "--kek", "vault://x"]) == 1
    assert "gcp-kms://" in capsys.readouterr().err and not os.path.exists(tmp_path / "k.json")


def test_a_version_scheduled_for_destruction_opens_nothing_until_restored(keyfile):
    import datetime as dt

    keyset = Keyset.load(str(keyfile))
    keyset.rotate_vault()
    after = keyset.schedule_destruction("v1", now=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))
    assert after == "2026-12-31T00:00:00Z" and keyset.scheduled() == {"v1": after}
    assert keyset.versions("vault") == ["v2"]
    with pytest.raises(KeysetError, match="scheduled for destruction after 2026-12-31"):
        keyset.vault_kek("v1")
    keyset.save(str(keyfile))
    assert len(raw_material(keyfile)) == 4  # the material is kept during the wait
    keyset = Keyset.load(str(keyfile))
    assert keyset.due(dt.datetime(2026, 12, 30, tzinfo=dt.timezone.utc)) == []
    keyset.restore("v1")
    assert keyset.versions("vault") == ["v1", "v2"] and keyset.vault_kek("v1")
    keyset.schedule_destruction("v1", now=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))
    assert keyset.due(dt.datetime(2026, 12, 31, tzinfo=dt.timezone.utc)) == ["v1"]
    keyset.retire("v1")
    keyset.save(str(keyfile))
    assert len(raw_material(keyfile)) == 3
    with pytest.raises(KeysetError, match="retired"):
        Keyset.load(str(keyfile)).vault_kek("v1")
    with pytest.raises(KeysetError, match="not scheduled"):
        keyset.restore("v1")


def test_the_audit_key_is_never_retired_or_shown(keyfile):
    keyset = Keyset.load(str(keyfile))
    with pytest.raises(KeysetError, match="primary"):
        keyset.retire("a1")
    mac = keyset.audit_mac(b"chain")
    mac.update(b"x")
    assert len(mac.finalize()) == 32
    text = " ".join([repr(keyset), repr(keyset.info())])
    assert_no_secret(text, keyfile)


def test_a_keyset_made_before_the_audit_key_gets_one_on_its_first_change(keyfile, capsys):
    doc = json.loads(keyfile.read_text())
    doc["keys"] = [k for k in doc["keys"] if k["purpose"] != "audit"]
    keyfile.write_text(json.dumps(doc))
    os.remove(keyfile.parent / "keys.registry.json")  # its MAC was under the removed key
    os.remove(keyfile.parent / "audit" / "keys.jsonl")
    keyset = Keyset.load(str(keyfile))
    assert not keyset.has_audit_key and keyset.primary_vault_version == "v1"
    assert keys_cli.main(["rotate", "--keys", str(keyfile), "--join"]) == 0
    assert Keyset.load(str(keyfile)).has_audit_key
    assert_no_secret(capsys.readouterr().out, keyfile)
