"""Shredding in an old copy must not destroy the live vault (issue 11 item 8).

Before: ``backfill keys shred --vault day1/vault --line-id X`` retired the vault
key version at once, and every line of ``day2/vault`` (wrapped by the same
version) became unreadable. Now the keyset's registry knows every vault a
merge wrote (pipelines/keys.py, transforms/crypto/registry.py): a shred drops
the lines and re-wraps the rest in all of them before the older version is
taken out of use, the version's material is destroyed only after a waiting
period (or at once with ``--now``), and ``--dry-run`` changes nothing.

Each vault's key table is rewritten by a Beam job (issue 12) into a staged generation, published only once
the shred is recorded: a line list reaches the workers as a side input or, when long, is joined by bucket
(both tested); a shred that fails its check or is killed in its jobs leaves every vault as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines import keys as keys_cli
from pipelines import reveal as reveal_cli
from pipelines.io.vault_files import read_table, write_table, write_vault
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from transforms.crypto.keyset import Keyset
from transforms.crypto.vault import Vault

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
LINES = ["L1", "L2", "L3", "L4"]
NAMES = {"L1": CANARY_NAME, "L2": "张三", "L3": "李四", "L4": "王五"}


@pytest.fixture
def site(tmp_path):
    """day1/vault and day2/vault (day 2 re-registered L3), both under vault key v1, both written by merges."""
    keys = str(tmp_path / "secure" / "keys.json")
    assert keys_cli.main(["init", "--keys", keys]) == 0
    vault = Vault(Keyset.load(keys))
    day1_keys, day1_values = vault.seal(
        LINES,
        {
            "name": [NAMES[x] for x in LINES],
            "doc_number": [CANARY_NUMBER, None, None, None],
            "address": [CANARY_ADDRESS] * 4,
        },
        registrations=["E1", None, None, None],
    )
    day1, day2 = str(tmp_path / "day1" / "vault"), str(tmp_path / "day2" / "vault")
    keys_cli.register_vault(keys, day1, by="merge")
    write_vault(day1, day1_keys, day1_values)
    l3_keys, l3_values = vault.seal(["L3"], {"name": ["李四新"]}, day1_keys, registrations=["E3"])
    keys_cli.register_vault(keys, day2, by="merge")
    write_vault(
        day2,
        pa.concat_tables([day1_keys.filter(pc.not_equal(day1_keys["line_id"], "L3")), l3_keys]),
        pa.concat_tables([day1_values.filter(pc.not_equal(day1_values["line_id"], "L3")), l3_values]),
    )
    return {"keys": keys, "day1": day1, "day2": day2, "tmp": tmp_path}


def reveal(site, vault, line_id):
    return reveal_cli.main(["--keys", site["keys"], "--vault", vault, "--line-id", line_id, "--purpose", "check"])


def shred(site, vault, *lines, extra=()):
    argv = ["shred", "--keys", site["keys"], "--vault", vault, "--reason", "retention"]
    for line in lines:
        argv += ["--line-id", line]
    return keys_cli.main([*argv, *extra])


def key_state(site, version: str) -> dict:
    with open(site["keys"], encoding="utf-8") as handle:
        return next(k for k in json.load(handle)["keys"] if k["version"] == version)


def every_file(root) -> dict[str, bytes]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out[path] = handle.read()
    return out


def test_a_shred_in_day1_leaves_every_other_line_of_day2_readable(site, capsys):
    assert shred(site, site["day1"], "L1") == 0
    out = capsys.readouterr().out
    assert "shredded 1 line(s)" in out and "destroyed after" in out
    out = ""
    for vault in (site["day1"], site["day2"]):
        for line in ("L2", "L3", "L4"):
            assert reveal(site, vault, line) == 0, (vault, line)
        assert reveal(site, vault, "L1") == 1  # gone from both
        captured = capsys.readouterr()
        assert "its data key is gone (shredded)" in captured.err
        out += captured.out
    assert "name: 李四新" in out and "name: 李四" in out and CANARY_NAME not in out
    for vault in (site["day1"], site["day2"]):
        assert set(read_table(vault, "keys")["vault_key_version"].to_pylist()) == {"v2"}
    day2_log = os.path.join(os.path.dirname(site["day2"]), "audit", "keys.jsonl")
    with open(day2_log, encoding="utf-8") as handle:
        [record] = [json.loads(line) for line in handle]
    assert record["event"] == "vault_rewrap" and record["lines_dropped"] == ["L1"] and record["rewrapped"] == 3


def test_an_unknown_copy_is_what_stops_opening(site, capsys):
    backup = str(site["tmp"] / "backup" / "vault")
    shutil.copytree(site["day2"], backup)  # made with cp: the keyset does not know it
    assert shred(site, site["day1"], "L1") == 0
    assert reveal(site, backup, "L2") == 1
    err = capsys.readouterr().err
    assert "cannot be unwrapped" in err and "scheduled for destruction" in err


def test_without_now_the_version_is_scheduled_and_destroyed_when_due(site, capsys):
    assert shred(site, site["day1"], "L1") == 0
    v1 = key_state(site, "v1")
    assert v1["state"] == "destroy_scheduled" and v1["material"]  # kept during the wait
    after = dt.datetime.fromisoformat(v1["destroy_after"].replace("Z", "+00:00"))
    assert dt.timedelta(days=29) < after - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(days=30)
    assert keys_cli.main(["destroy-due", "--keys", site["keys"]]) == 0
    assert key_state(site, "v1")["material"]  # not due yet
    _make_due(site, "v1")
    assert keys_cli.main(["destroy-due", "--keys", site["keys"]]) == 0
    assert "destroyed v1" in capsys.readouterr().out
    v1 = key_state(site, "v1")
    assert v1["state"] == "retired" and v1["material"] is None
    for line in ("L2", "L3", "L4"):
        assert reveal(site, site["day2"], line) == 0


def _make_due(site, version):
    """The waiting period over: the date in the keyset moved back (as if 30 days had passed)."""
    with open(site["keys"], encoding="utf-8") as handle:
        doc = json.load(handle)
    for k in doc["keys"]:
        if k["version"] == version:
            k["destroy_after"] = "2000-01-01T00:00:00Z"
    with open(site["keys"], "w", encoding="utf-8") as handle:
        json.dump(doc, handle)


def test_now_destroys_at_once(site, capsys):
    assert shred(site, site["day1"], "L1", extra=["--now"]) == 0
    assert "destroyed v1" in capsys.readouterr().out
    v1 = key_state(site, "v1")
    assert v1["state"] == "retired" and v1["material"] is None
    assert reveal(site, site["day2"], "L4") == 0


def test_a_dry_run_shows_what_would_become_unreadable_and_changes_no_file(site, capsys):
    before = every_file(site["tmp"])
    assert shred(site, site["day1"], "L1", "L2", extra=["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert every_file(site["tmp"]) == before
    assert out.startswith("dry run: nothing was changed")
    for vault in ("day1", "day2"):
        line = next(x for x in out.splitlines() if os.path.join(vault, "vault") in x)
        assert "2 line(s) (L1, L2)" in line and "2 other data key(s) would be re-wrapped" in line
    assert "vault key v1 would be scheduled for destruction" in out
    assert not any(c in out for c in CANARIES)
    assert reveal(site, site["day1"], "L1") == 0  # nothing was shredded


def test_a_known_vault_that_cannot_be_read_stops_the_shred(site, capsys):
    broken = str(site["tmp"] / "day3" / "vault")
    shutil.copytree(site["day2"], broken)
    keys_cli.register_vault(site["keys"], broken, by="merge")
    keys_file = os.path.join(broken, "keys", os.listdir(os.path.join(broken, "keys"))[0])
    with open(keys_file, "r+b") as handle:
        handle.truncate(64)
    before = every_file(site["tmp"] / "secure")
    assert shred(site, site["day1"], "L1") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and broken in err and "nothing was changed" in err
    after = every_file(site["tmp"] / "secure")
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == {
        k: v for k, v in before.items() if not k.endswith(".lock")
    }
    assert reveal(site, site["day2"], "L1") == 0


def test_a_due_version_still_needed_by_a_known_vault_is_not_destroyed(site, capsys):
    late = str(site["tmp"] / "late" / "vault")
    shutil.copytree(site["day1"], late)  # an older copy, not registered at the shred
    assert shred(site, site["day1"], "L1") == 0
    keys_cli.register_vault(site["keys"], late, by="merge")  # and registered afterwards
    _make_due(site, "v1")
    assert keys_cli.main(["destroy-due", "--keys", site["keys"]]) == 1
    err = capsys.readouterr().err
    assert "key v1 is due but vault" in err and late in err
    assert key_state(site, "v1")["state"] == "destroy_scheduled" and key_state(site, "v1")["material"]


def test_an_interrupted_shred_is_completed_by_rotate_retire_old(site, capsys, monkeypatch):
    from pipelines.io import vault_files

    real = vault_files.publish_staged

    def crash_on_day2(folder, kind, staged):  # day 1's key table is in place, day 2's is staged
        if os.path.realpath(folder) == os.path.realpath(site["day2"]):
            raise OSError(5, "simulated crash", folder)
        return real(folder, kind, staged)

    monkeypatch.setattr(vault_files, "publish_staged", crash_on_day2)
    assert shred(site, site["day1"], "L1") == 1
    capsys.readouterr()
    monkeypatch.setattr(vault_files, "publish_staged", real)
    assert reveal(site, site["day2"], "L1") == 0  # day 2 was not written: L1 is still there
    assert (
        keys_cli.main(["rotate", "--keys", site["keys"], "--vault", "--vault-dir", site["day1"], "--retire-old"]) == 0
    )
    assert reveal(site, site["day2"], "L1") == 1  # the registry remembered the data key it dropped
    for line in ("L2", "L3", "L4"):
        assert reveal(site, site["day2"], line) == 0


def test_a_line_registered_again_after_its_shred_is_kept_by_later_re_wraps(site, capsys):
    assert shred(site, site["day2"], "L1") == 0
    keyset = Keyset.load(site["keys"])
    keys = read_table(site["day2"], "keys")
    new_keys, new_values = Vault(keyset).seal(["L1"], {"name": ["新用户"]}, keys, registrations=["E9"])
    values = read_table(site["day2"], "values")
    write_table(
        site["day2"], "values", pa.concat_tables([values.filter(pc.not_equal(values["line_id"], "L1")), new_values])
    )
    write_table(site["day2"], "keys", pa.concat_tables([keys, new_keys]))  # a merge sealed L1 anew: a new data key
    assert (
        keys_cli.main(["rotate", "--keys", site["keys"], "--vault", "--vault-dir", site["day2"], "--retire-old"]) == 0
    )
    assert reveal(site, site["day2"], "L1") == 0 and "name: 新用户" in capsys.readouterr().out


def test_the_shred_log_cannot_be_moved(site, capsys):
    assert shred(site, site["day1"], "L1", extra=["--shred-log", str(site["tmp"] / "elsewhere.jsonl")]) == 1
    assert "cannot be moved" in capsys.readouterr().err
    assert reveal(site, site["day1"], "L1") == 0


# -- the re-wrap as Beam jobs (issue 12) ---------------------------------------------------------------------------


def vault_files_of(site) -> dict[str, bytes]:
    return {k: v for k, v in every_file(site["tmp"]).items() if "/vault/" in k}


def test_a_line_without_a_data_key_changes_nothing(site, capsys):
    """The check runs in the named vault's job, after the keyset got its new version: it is saved back."""
    keyset_before, vaults_before = open(site["keys"], "rb").read(), vault_files_of(site)
    assert shred(site, site["day1"], "L1", "L9") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line L9 has no data key" in err and "nothing was shredded" in err
    assert Keyset.load(site["keys"]).versions("vault") == ["v1"]
    assert open(site["keys"], "rb").read() == keyset_before  # the new version is gone again
    assert vault_files_of(site) == vaults_before  # no staged table left, no table changed
    assert reveal(site, site["day1"], "L1") == 0


@pytest.mark.parametrize("joined", [False, True], ids=["side_input", "joined_by_bucket"])
def test_both_ways_to_meet_the_lines_shred_the_same(site, capsys, monkeypatch, joined):
    """A short list reaches the workers as a side input; a long one (here: any, the limit set to 0) is joined
    with the key table by bucket. Both drop exactly the lines, in every vault, and the earlier shreds' data keys
    on a later re-wrap."""
    from pipelines import shred_job

    if joined:
        monkeypatch.setattr(shred_job, "SIDE_INPUT_LIMIT", 0)
    stale = str(site["tmp"] / "stale" / "vault")
    shutil.copytree(site["day1"], stale)  # a copy made before the shred, registered only after it
    assert shred(site, site["day1"], "L1", "L2") == 0
    assert "shredded 2 line(s)" in capsys.readouterr().out
    for vault in (site["day1"], site["day2"]):
        keys = read_table(vault, "keys")
        assert sorted(keys["line_id"].to_pylist()) == ["L3", "L4"]
        assert set(keys["vault_key_version"].to_pylist()) == {"v2"}
        assert reveal(site, vault, "L4") == 0 and reveal(site, vault, "L2") == 1
    keys_cli.register_vault(site["keys"], stale, by="merge")
    assert sorted(read_table(stale, "keys")["line_id"].to_pylist()) == LINES
    argv = ["rotate", "--keys", site["keys"], "--vault", "--vault-dir", site["day2"], "--retire-old"]
    assert keys_cli.main(argv) == 0
    assert sorted(read_table(stale, "keys")["line_id"].to_pylist()) == ["L3", "L4"]  # dropped by data-key id
    assert reveal(site, site["day2"], "L3") == 0


def test_a_shred_killed_in_its_jobs_leaves_every_vault_readable(site, capsys):
    """SIGKILL while the second vault's job runs: nothing was put in place, the older key still opens every line;
    the next shred removes the staging folder the dead one left and shreds as asked."""
    import glob
    import signal
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "pipelines.keys", "shred", "--keys", site["keys"], "--vault", site["day1"]]
    proc = subprocess.Popen([*argv, "--line-id", "L1"], start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not glob.glob(os.path.join(site["day2"], "keys", "_staged-*")):
        assert proc.poll() is None and time.monotonic() < deadline, "the shred ended before its second job"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert Keyset.load(site["keys"]).versions("vault") == ["v1", "v2"]  # saved before the jobs, v1 still in use
    for vault in (site["day1"], site["day2"]):
        assert set(read_table(vault, "keys")["vault_key_version"].to_pylist()) == {"v1"}
        for line in LINES:
            assert reveal(site, vault, line) == 0, (vault, line)
    assert not os.path.exists(os.path.join(os.path.dirname(site["day1"]), "audit", "shred.jsonl"))  # not recorded
    assert shred(site, site["day1"], "L1") == 0
    assert not glob.glob(os.path.join(site["day2"], "keys", "_staged-*"))
    assert reveal(site, site["day2"], "L1") == 1 and reveal(site, site["day2"], "L2") == 0
