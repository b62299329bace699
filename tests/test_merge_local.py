"""The in-process merge (pipelines/merge_local.py, pipelines/merge_tasks.py): the Beam job's outputs from worker
processes without a Beam job, nothing in the clear in its spill, one-line errors, its flags.

The inputs are made in tests/support/merge_local.py (a generated base with canaries and bad rows, generated events
with faults and repeats, planted event-id conflicts); both engines' outputs are compared there (merged rows, the
vault as decrypted values, dead letters, summary, counts). Run: .venv/bin/python -m pytest -q tests/test_merge_local.py
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from dev.generate import generate_table
from pipelines import keys as keys_cli, merge as merge_cli
from tests.support.spill_watch import copy_grown
from tests.support.merge_local import differences, merge_outputs, write_merge_inputs
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from transforms.core.shuffle import SPILL_PREFIX

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF = "2026-11-30"
CANARIES = [c.encode("utf-8") for c in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)]
ENGINES = {"w2": ["--workers", "2"], "w1": ["--workers", "1"], "beam": ["--direct_num_workers", "1"]}


def merge(*args, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [BACKFILL, "merge", *args, "--as-of", AS_OF], capture_output=True, text=True, timeout=900, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def flags(name: str, paths: list[str]) -> list[str]:
    return [arg for path in paths for arg in (name, path)]


def manifest(out: str) -> dict:
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge_local")
    keys = str(root / "secure" / "keys.json")
    subprocess.run([BACKFILL, "keys", "init", "--keys", keys], check=True, capture_output=True)
    return {"root": root, "keys": keys, **write_merge_inputs(str(root), lines=6_000)}


@pytest.fixture(scope="module")
def firsts(site):
    """The first merge by each engine, 3 buckets."""
    found = {}
    for name, extra in ENGINES.items():
        out = str(site["root"] / f"first-{name}")
        base, events = flags("--base", site["base"]), flags("--registrations", site["events"])
        merge(*base, *events, "--keys", site["keys"], "--out", out, "--shuffle-buckets", "3", *extra)
        found[name] = out
    return found


def _same_as_beam(runs: dict, keys: str) -> dict:
    beam = merge_outputs(runs["beam"], keys)
    for name in ("w2", "w1"):
        assert differences(merge_outputs(runs[name], keys), beam) == [], name
        m = manifest(runs[name])
        assert m["runner"] == "in-process" and m["workers"] == int(name[1]), m
        assert m["shuffle"] == {"buckets": 3, "spill": True, "read_by_bucket": []}
    assert manifest(runs["beam"])["runner"] == "FnApiRunner" and "workers" not in manifest(runs["beam"])
    return beam


@pytest.mark.e2e
def test_in_process_merges_make_the_beam_jobs_outputs(site, firsts):
    beam = _same_as_beam(firsts, site["keys"])
    base, events = beam["counts"]["base"], beam["counts"]["events"]
    assert base["balanced"] and events["balanced"] and base["dead_letters"] > 0
    assert events["duplicates"] > 0 and events["dead_letter_reasons"]["EVENT_ID_CONFLICT"] == 1
    assert events["dead_letter_reasons"]["ROW_MALFORMED"] == 1 and events["dead_letter_reasons"]["UNKNOWN_LINE"] > 0
    rows = {r["line_id"]: r for r in beam["base"].to_pylist()}
    assert rows["ZM-CONF-1"]["registration_event_id"] == "E-CONF-1"  # the first valid copy holds the id
    assert rows["ZM-CONF-2"]["registration_event_id"] == "E-CONF-2"  # the invalid copy before it took nothing
    names = {(r["line_id"], r["field"]): r["value"] for r in beam["vault_values"].to_pylist()}
    assert names[("ZM-CONF-1", "name")] == "王小明" and names[("ZM-CONF-2", "name")] == "李小红"
    assert names[("ZM-CANARY", "name")] == CANARY_NAME
    parts = sorted(os.listdir(os.path.join(firsts["w2"], "vault", "keys")))
    assert parts == [f"keys-g000001-{b:05d}-of-00003.parquet" for b in range(3)]


@pytest.mark.e2e
def test_a_second_merge_over_the_first_ones_output(site, firsts):
    runs = {}
    for name, extra in ENGINES.items():
        if name == "w1":
            continue
        out = str(site["root"] / f"second-{name}")
        events = flags("--registrations", site["events_2"])
        merge("--merged", firsts["w2"], *events, "--keys", site["keys"], "--out", out, "--shuffle-buckets", "3", *extra)
        runs[name] = out
    runs["w1"] = runs["w2"]
    beam = _check_second(runs, site["keys"])
    first = merge_outputs(firsts["beam"], site["keys"])
    assert beam["base"].num_rows == first["base"].num_rows and beam["counts"]["vault"]["keys_copied"] > 0


def _check_second(runs: dict, keys: str) -> dict:
    beam = merge_outputs(runs["beam"], keys)
    assert differences(merge_outputs(runs["w2"], keys), beam) == []
    assert manifest(runs["w2"])["inputs"]["base_kind"] == "merged" and manifest(runs["w2"])["workers"] == 2
    events = beam["counts"]["events"]
    assert events["balanced"] and events["duplicates"] >= 2 and events["applied"] > 0  # E-CONF-1's copies: carried
    return beam


# -- the spill: sealed; no canary anywhere but in the vault's ciphertext ---------------------------------------------


def _spill_folders(tmpdir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(tmpdir, f"{SPILL_PREFIX}merge-*")))


def _watch(proc, tmpdir: str, aside: str, enough=lambda copies: False) -> int:
    """While ``proc`` runs and until ``enough(copies)``, copy every file of its spill folders aside as it grows;
    returns the copies made."""
    os.makedirs(aside, exist_ok=True)
    sizes: dict[str, int] = {}
    while proc.poll() is None and not enough(len(sizes)):
        copy_grown(_spill_folders(tmpdir), aside, sizes, lambda folder, name, copies: f"{copies}-{name}")
        time.sleep(0.002)
    return len(sizes)


def _contains(root: str, needles: list[bytes]) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                data = handle.read()
            found += [os.path.join(folder, name)] if any(n in data for n in needles) else []
    return found


def _workers_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue
        found += [int(entry)] if entry.isdigit() and int(fields[1]) == pid and fields[0] != "Z" else []
    return found


def _killed_run(argv: list[str], env: dict, tmpdir: str, aside: str, log) -> None:
    """A run killed (its launcher alone, SIGKILL) once it has spilled: its workers die with it, nothing is
    published, its spill folder stays behind for the next run to remove."""
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
    _watch(proc, tmpdir, aside, lambda copies: copies >= 2)
    assert proc.poll() is None, "the merge ended before it spilled"
    workers = _workers_of(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while [w for w in workers if os.path.exists(f"/proc/{w}")] and time.time() < deadline:
        time.sleep(0.05)
    assert len(workers) == 2 and not [w for w in workers if os.path.exists(f"/proc/{w}")]


@pytest.mark.e2e
def test_spill_and_outputs_hold_no_plaintext(site, tmp_path):
    tmpdir, aside, out = str(tmp_path / "tmp"), str(tmp_path / "aside"), str(tmp_path / "out" / "merge")
    os.makedirs(tmpdir)
    argv = [BACKFILL, "merge", *flags("--base", site["base"]), *flags("--registrations", site["events"])]
    argv += ["--keys", site["keys"], "--out", out, "--as-of", AS_OF, "--workers", "2", "--batch-size", "500"]
    env = {**os.environ, "TMPDIR": tmpdir}
    with open(tmp_path / "merge.log", "wb") as log:
        _killed_run(argv, env, tmpdir, os.path.join(aside, "killed"), log)
        dead = _spill_folders(tmpdir)
        assert dead and not os.path.exists(os.path.join(out, "manifest.json"))
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        copies = _watch(proc, tmpdir, aside)
    assert proc.wait() == 0, (tmp_path / "merge.log").read_text(errors="replace")[-2000:]
    assert not any(os.path.exists(d) for d in dead) and os.listdir(tmp_path / "out") == ["merge"]
    kinds = {name.split("-", 2)[1] for name in os.listdir(aside) if name != "killed"}
    assert copies >= 5 and {"base", "events", "firsts", "contested", "verdicts"} & kinds, kinds
    assert _contains(aside, CANARIES + [b"L000000", b"ZM-CONF"]) == []  # not even a line_id in the clear
    assert manifest(out)["counts"]["vault"]["values_sealed"] > 0
    assert _contains(out, CANARIES) == [] and _contains(str(tmp_path / "merge.log"), CANARIES) == []
    assert _spill_folders(tmpdir) == []  # removed at the end


# -- bad input, flags ---------------------------------------------------------------------------------------------


def _corrupt_parquet(path: str) -> None:
    """A Parquet file whose footer reads (the planner accepts it) and whose third row group does not."""
    pq.write_table(generate_table(3_000, 9), path, row_group_size=1_000, compression="none")
    column = pq.read_metadata(path).row_group(2).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    with open(path, "r+b") as handle:
        handle.seek(start)
        handle.write(b"\xff" * 64)


@pytest.mark.e2e
def test_a_file_the_reader_refuses_is_one_line_and_publishes_nothing(site, tmp_path):
    bad = str(tmp_path / "b-bad.parquet")
    _corrupt_parquet(bad)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out" / "merge"
    proc = merge(
        *flags("--base", [site["base"][0], bad]),
        *flags("--registrations", site["events"]),
        "--keys",
        site["keys"],
        "--out",
        str(out),
        "--workers",
        "2",
        env={**os.environ, "TMPDIR": str(tmpdir)},
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    *logged, last = proc.stderr.strip().splitlines()
    assert last.startswith("backfill merge: error: ") and "b-bad.parquet: cannot read" in last, proc.stderr
    assert "Traceback" not in proc.stderr and all(line.startswith("merge merge-") for line in logged), proc.stderr
    assert not out.exists() and os.listdir(tmp_path / "out") == []  # no OUT, no staged folder
    assert glob.glob(os.path.join(tmpdir, f"{SPILL_PREFIX}merge-*")) == []


@pytest.mark.parametrize(
    "extra",
    [
        ["--workers", "0"],  # below its floor: a usage error, exit 2 (the others: exit 1)
        ["--workers", "-1"],
        ["--workers", "2", "--direct_num_workers", "2"],
        ["--workers", "2", "--direct_running_mode", "multi_processing"],
        ["--workers", "2", "--spill", "off"],
    ],
)
def test_workers_flag_conflicts_are_one_line(tmp_path, capsys, extra):
    keys = str(tmp_path / "secure" / "keys.json")
    assert keys_cli.main(["init", "--keys", keys]) == 0
    capsys.readouterr()
    base, events = tmp_path / "b.csv", tmp_path / "e.jsonl"
    base.write_text("line_id,line_type,subscriber_kind,status\nL1,MOBILE,INDIVIDUAL,ACTIVE\n", encoding="utf-8")
    events.write_text('{"event_id": "E1", "line_id": "L1"}\n', encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--base", str(base), "--registrations", str(events), "--keys", keys, "--out", str(out), "--as-of", AS_OF]
    try:
        code = merge_cli.main(argv + extra)
    except SystemExit as exc:
        code = exc.code
    assert code == (2 if extra[1] in ("0", "-1") else 1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("backfill merge: error:") and "--workers" in lines[0]
    assert not out.exists()


def test_the_read_pass_starts_with_the_event_splits(tmp_path):
    """An event split costs more than a base split of as many rows: it is handed out first, so it never runs
    alone at the end of the read pass while the other workers wait."""
    import types

    from pipelines.io.events import plan_event_splits
    from pipelines.io.planning import plan_splits
    from pipelines.merge_local import _sources
    from pipelines.task_pool import TaskPool

    paths = write_merge_inputs(str(tmp_path), lines=300)
    base = tmp_path / "grouped.parquet"
    pq.write_table(generate_table(3_000, seed=3), base, row_group_size=1_000)
    base_splits = plan_splits([str(base)], rows_per_split=1_000)[0]
    events = plan_event_splits(paths["events"])[0]
    assert len(base_splits) == 3 and events
    job = types.SimpleNamespace(
        args=types.SimpleNamespace(encoding="utf-8"),
        base_splits=base_splits,
        event_splits=events,
        vault=None,
        direct={},
        kind="raw",
    )
    with TaskPool(1, lambda: None) as pool:
        sources = _sources(pool, job)
    assert [kind for kind, _, _ in sources] == ["events"] * len(events) + ["base"] * 3
    assert [i for kind, i, _ in sources if kind == "base"] == [0, 1, 2]  # each kind keeps its own order
    job.direct = {"base": {0: []}}  # a base cut by line bucket is read by the bucket's task, not in this pass
    with TaskPool(1, lambda: None) as pool:
        assert [kind for kind, _, _ in _sources(pool, job)] == ["events"] * len(events)
    job.kind = "merged"  # a merged base's splits are also read for the event ids their lines carry (two columns)
    with TaskPool(1, lambda: None) as pool:
        assert [kind for kind, _, _ in _sources(pool, job)] == ["events"] * len(events) + ["held"] * 3
