"""Retention, incident, compact and the keys' lifecycle under attack, through the real ``backfill`` command (each
case failed before its fix).

(a) A purge with nothing due published OUT/vault without the keyset knowing it: the next shred (another purge, an
    incident, ``keys shred``) took its vault key out of use and that live vault opened nothing. Now registered
    before the run writes, shred or not.
(b) Two purges at once: into the same OUT both ran and the last published a copy of the key table wrapped by the
    version the other's shred retired (a vault that opens nothing, "balanced"); into two OUTs the same. Now a
    second purge into an OUT is refused, and a purge whose copy lost its key to another key change meanwhile is
    refused before it is switched in (the keyset's lock held until OUT/vault is known).
(c) A vault whose values table lost a shard (a partial copy, a deleted file) was read as having no values: the
    purge, the compaction and the merge published a vault without the originals, balanced. Now one line naming
    the missing shard.
(d) Dates beyond the calendar: ``retention --as-of 0001-01-01`` and ``incident --detected-at`` with a zone that
    moves it out of years 1-9999 (or ``--as-of 9999-12-31``) ended in "unexpected ValueError/OverflowError".
(e) ``incident --shred`` killed (SIGKILL) once its shred began: its staged report, the only scope of the lines it
    shredded, was deleted by the next run into the same OUT, which then filed "nothing was shredded". Now kept,
    and the next run into that OUT is refused, naming it.
(f) ``incident --lines`` given a named pipe or ``/dev/zero`` blocked or read for ever; now one line.
(g) ``--out /`` was quoted as ``--out `` (empty) in the refusal of retention, incident, retokenize and compact.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time

import pytest

from tests.support.attacks import AS_OF, BACKFILL, canary_csv, canary_event, no_canary, refused, run

pytestmark = pytest.mark.e2e

IDS = ["L0001", "L0002", "L0003", "L0004"]
TODAY = time.strftime("%Y-%m-%d", time.gmtime())


def write_jsonl(path, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return str(path)


def make_site(root, *merge_flags: str) -> dict:
    """A canary base (L0002 terminated in 2020: due; L0003 in 2026: kept), a keyset of its own and a merge
    registering L0001."""
    keys = str(root / "secure" / "keys.json")
    assert run("keys", "init", "--keys", keys).returncode == 0
    base = canary_csv(root / "base.csv", IDS)
    with open(base, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    header = lines[0].split(",")
    status, ended = header.index("status"), header.index("terminated_on")
    for n, day in ((2, "2020-01-01"), (3, "2026-01-01")):
        cells = lines[n].split(",")
        cells[status], cells[ended] = "TERMINATED", day
        lines[n] = ",".join(cells)
    with open(base, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    events = write_jsonl(root / "events.jsonl", [canary_event()])
    merged = str(root / "merge")
    argv = ["--base", base, "--registrations", events, "--keys", keys, "--out", merged, "--as-of", AS_OF]
    proc = run("merge", *argv, "--progress-seconds", "0", *merge_flags)
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "keys": keys, "base": base, "merged": merged}


def retention(site, out, *extra: str, as_of: str = TODAY) -> list[str]:
    return ["retention", "--keys", site["keys"], "--out", str(out), "--as-of", as_of, "--progress-seconds", "0", *extra]


def opens(site, merged) -> bool:
    """L0001 (registered, never due) reveals from ``merged``."""
    argv = ["--keys", site["keys"], "--merged", str(merged), "--line-id", "L0001", "--purpose", "ticket 7"]
    proc = run("reveal", *argv, "--fields", "doc_type")
    return proc.returncode == 0 and proc.stdout == "doc_type: RESIDENT_ID\n"


# (a) a purge with nothing due ---------------------------------------------------------------------------------


def test_a_purge_with_nothing_due_stays_readable_after_the_next_shred(tmp_path):
    site = make_site(tmp_path)
    quiet = tmp_path / "purge-1900"
    proc = run(*retention(site, quiet, "--merged", site["merged"], as_of="1900-01-01"))
    assert proc.returncode == 0 and "purged 0 line(s)" in proc.stdout, proc.stderr
    proc = run(*retention(site, tmp_path / "purge-today", "--merged", site["merged"]))
    assert proc.returncode == 0 and "purged 1 line(s)" in proc.stdout, proc.stderr
    assert opens(site, quiet)  # its vault was re-wrapped by the shred: the keyset knows it
    proc = run("keys", "shred", "--keys", site["keys"], "--vault", str(quiet / "vault"), "--line-id", "L0004")
    assert proc.returncode == 0, proc.stderr
    assert opens(site, quiet) and opens(site, tmp_path / "purge-today")
    no_canary(str(quiet), str(tmp_path / "purge-today"))


# (b) two purges at once -----------------------------------------------------------------------------------------


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([BACKFILL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_purges_into_one_out_the_second_is_refused(tmp_path):
    site = make_site(tmp_path)
    out = tmp_path / "purge"
    first = start(*retention(site, out, "--merged", site["merged"]))
    time.sleep(0.5)  # the first has made OUT and holds it
    second = run(*retention(site, out, "--merged", site["merged"]))
    assert first.wait(timeout=600) == 0, first.stderr.read()
    refused(second, "backfill retention", 1, "another purge is writing into it")
    assert opens(site, out)
    assert sorted(os.listdir(tmp_path)) == ["base.csv", "events.jsonl", "merge", "purge", "secure"]


def test_two_purges_at_once_never_publish_a_vault_that_opens_nothing(tmp_path):
    site = make_site(tmp_path)
    outs = [tmp_path / "purge-a", tmp_path / "purge-b"]
    procs = [start(*retention(site, out, "--merged", site["merged"])) for out in outs]
    for proc, out in zip(procs, outs):
        proc.wait(timeout=600)
        stderr = proc.stderr.read()
        if proc.returncode == 0:  # published: it opens
            assert opens(site, out), stderr
        else:  # refused, in one line, nothing published, its staged folder kept with the way to complete it
            assert proc.returncode == 1 and "Traceback" not in stderr, stderr
            assert "which another key change" in stderr and "keys restore --key-version" in stderr, stderr
            assert not os.path.exists(out / "vault") and glob.glob(f"{out}.tmp-*")
    assert opens(site, site["merged"])


# (c) a vault table that lost a shard ------------------------------------------------------------------------------


def test_a_vault_missing_a_value_shard_is_refused_not_read_as_empty(tmp_path):
    from tests.support.compact import commit_windows

    site = make_site(tmp_path, "--shuffle-buckets", "4")
    values = sorted(glob.glob(os.path.join(site["merged"], "vault", "values", "*.parquet")))
    assert len(values) == 4
    os.remove(values[2])
    deltas = tmp_path / "stream" / "deltas"
    commit_windows([os.path.join(site["merged"], "base")], [[canary_event(event_id="E9", line_id="L0004")]],
                   str(deltas), site["keys"])  # fmt: skip
    keys, merged, out = site["keys"], site["merged"], str(tmp_path / "out")
    expected = "values table is incomplete (shard 00002 of 00004"
    for prog, argv in [
        ("backfill retention", retention(site, out, "--merged", merged)),
        ("backfill compact", ["compact", "--merged", merged, "--deltas", str(deltas), "--keys", keys, "--out", out]),
        ("backfill keys", ["keys", "retokenize", "--merged", merged, "--keys", keys, "--out", out]),
        ("backfill reveal", ["reveal", "--merged", merged, "--keys", keys, "--line-id", "L0001", "--purpose", "t"]),
    ]:
        refused(run(*argv), prog, 1, expected)
        assert not os.path.exists(out)


# (d) dates beyond the calendar -------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_of", ["0001-01-01", "0003-01-01"])
def test_a_purge_dated_before_the_calendar_is_one_line(tmp_path, as_of):
    site = make_site(tmp_path)
    out = tmp_path / "purge"
    refused(run(*retention(site, out, "--merged", site["merged"], as_of=as_of)), "backfill retention", 1, "too early")
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--detected-at", "0001-01-01T00:00:00+14:00"], "out of the calendar's range"),
        (["--detected-at", "9999-12-31T23:59:59-14:00"], "out of the calendar's range"),
        (["--detected-at", "2026-12-01", "--as-of", "9999-12-31"], None),  # a day after 9999-12-31 is no date
    ],
)
def test_incident_dates_beyond_the_calendar_are_one_line(tmp_path, extra, expected):
    site = make_site(tmp_path)
    out = tmp_path / "incident"
    proc = run("incident", "--key-version", "j1", "--merged", site["merged"], "--out", str(out), *extra)
    if expected:
        refused(proc, "backfill incident", 1, expected)
        assert not out.exists()
    else:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


# (e) an incident killed once its shred began ------------------------------------------------------------------------


def test_an_incident_killed_during_its_shred_keeps_its_scope_and_the_next_run_names_it(tmp_path):
    site = make_site(tmp_path)
    lines = tmp_path / "leaked.txt"
    lines.write_text("L0001\nL0003\nL0004\n", encoding="utf-8")
    out = tmp_path / "incident"
    argv = ["incident", "--lines", str(lines), "--merged", site["merged"], "--out", str(out)]
    argv += ["--keys", site["keys"], "--shred", "--progress-seconds", "0"]
    log = os.path.join(site["merged"], "audit", "shred.jsonl")
    proc = subprocess.Popen(
        [BACKFILL, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while not os.path.exists(log) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)  # its shred is on record: the lines' data keys are going
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (kept,) = glob.glob(f"{out}.tmp-incident-*")
    with open(os.path.join(kept, ".backfill.json"), encoding="utf-8") as handle:
        assert json.load(handle)["state"] == "kept"
    refused(run(*argv), "backfill incident", 1, f"kept {kept}")
    assert os.path.isdir(kept) and not os.path.exists(out / "incident.json")
    argv[argv.index(str(out))] = str(tmp_path / "incident-2")  # a new folder is fine
    assert run(*argv).returncode == 0
    no_canary(kept, str(tmp_path / "incident-2"))


# (f) a line list that is no file of data -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_incident_refuses_a_line_list_that_is_a_pipe_or_a_device(tmp_path, kind):
    site = make_site(tmp_path)
    path = "/dev/zero" if kind == "device" else str(tmp_path / "fifo")
    if kind == "fifo":
        os.mkfifo(path)
    out = tmp_path / "incident"
    proc = run("incident", "--lines", path, "--merged", site["merged"], "--out", str(out))
    refused(proc, "backfill incident", 1, "not a list of line_ids")
    assert not out.exists()


# (g) --out / ----------------------------------------------------------------------------------------------------------


def test_out_root_is_named_in_the_refusal(tmp_path):
    site = make_site(tmp_path)
    keys, merged = site["keys"], site["merged"]
    (tmp_path / "deltas").mkdir()
    for prog, argv in [
        ("backfill retention", retention(site, "/", "--merged", merged)),
        ("backfill incident", ["incident", "--key-version", "j1", "--merged", merged, "--out", "/"]),
        ("backfill keys", ["keys", "retokenize", "--merged", merged, "--keys", keys, "--out", "/"]),
        ("backfill compact", ["compact", "--merged", merged, "--deltas", str(tmp_path / "deltas"), "--keys", keys]),
    ]:
        argv = argv + ["--out", "/"] if prog == "backfill compact" else argv
        refused(run(*argv), prog, 1, "--out / would overwrite")


# (h) a rehearsal on copies ----------------------------------------------------------------------------------


def test_a_rehearsal_with_a_copied_keyset_and_registry_cannot_touch_the_originals_vaults(tmp_path):
    """The keys folder copied with its registry, and a merge folder copied, then ``retention --future-as-of`` with
    the copy: the copied registry names the ORIGINAL's vaults, which its purge re-wrapped under a key the original
    keyset does not have (the production merge then opened nothing, and lines not due were shredded there). Now a
    key change from a copy of the keyset and its registry is refused while the original is there; a copy of the
    keyset file alone, or a keyset moved for good, works."""
    import shutil

    site = make_site(tmp_path)
    copy = tmp_path / "rehearsal"
    shutil.copytree(os.path.dirname(site["keys"]), copy / "secure")
    shutil.copytree(site["merged"], copy / "merge")
    keys = str(copy / "secure" / "keys.json")
    argv = ["retention", "--merged", str(copy / "merge"), "--keys", keys, "--out", str(copy / "purged")]
    argv += ["--as-of", "2040-01-01", "--future-as-of", "--progress-seconds", "0"]
    line = refused(run(*argv), "backfill retention", 1, f"keyset {os.path.realpath(keys)} is a copy of")
    assert "rehearse with a copy of the keyset file alone" in line
    assert opens(site, site["merged"])  # the production merge still opens
    assert not os.path.exists(copy / "purged")
    # the keyset file alone: the rehearsal runs on the copies, the original untouched
    os.remove(copy / "secure" / "keys.registry.json")
    proc = run(*argv)
    assert proc.returncode == 0, proc.stderr
    assert opens(site, site["merged"])
    # moved for good (the original gone): key changes work from the new place
    moved = tmp_path / "moved"
    shutil.move(os.path.dirname(site["keys"]), moved)
    site = {**site, "keys": str(moved / "keys.json")}
    proc = run(*retention(site, tmp_path / "purged-2", "--merged", site["merged"]))
    assert proc.returncode == 0, proc.stderr
    assert opens(site, tmp_path / "purged-2")
