"""`backfill retention` as Beam jobs (issue 12): a run killed mid-pipeline leaves the previous output and the
live vault as they were and readable; two worker processes give the output one gives.

The kill is real: the purge runs as a subprocess (its own process group) and
gets SIGKILL the moment a file of the chosen job appears (the first job's
staged files, the shred's staging folder in the live vault, the last job's
base files): no handler, no clean-up runs.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import retention as retention_cli
from pipelines.io.vault_files import read_table
from tests.support.compliance import BACKFILL, CANARIES, build, copy_keys, lines, run
from transforms.compliance.retention import IDENTITY_COLUMNS

FIRST, SECOND = "2026-11-29", "2026-12-01"  # the second purges T1129, T1130 and TLEAP more


def purge_args(site, keys: str, out: str, as_of: str, vault: str | None = None) -> list[str]:
    return ["--base", site["base"], "--vault", vault or site["vault"], "--keys", keys, "--out", out, "--as-of", as_of]


def files_of(folder: str) -> dict[str, bytes]:
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder)] = open(path, "rb").read()
    return found


def previous_output(out: str) -> dict[str, bytes]:
    """What a run must never change before it is switched in: the base, the manifest, the purged list."""
    kept = {"manifest.json": open(os.path.join(out, "manifest.json"), "rb").read()}
    for name in ("base", "purged"):
        kept.update({f"{name}/{k}": v for k, v in files_of(os.path.join(out, name)).items()})
    return kept


def reveal(keys: str, vault: str, line_id: str) -> subprocess.CompletedProcess:
    argv = [BACKFILL, "reveal", "--keys", keys, "--vault", vault, "--line-id", line_id, "--purpose", "kill test"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


TRIGGERS = {
    "purge": lambda out: glob.glob(f"{out}.tmp-*/_purge/*") + glob.glob(f"{out}.tmp-*/vault/values/*"),
    "shred": lambda out: glob.glob(f"{out}/vault/keys/_staged-*"),
    "rewrite": lambda out: glob.glob(f"{out}.tmp-*/base/*"),
}


def kill_when(argv: list[str], trigger, timeout: float = 600) -> None:
    """Start the purge and SIGKILL its process group as soon as ``trigger()`` finds a file."""
    proc = subprocess.Popen(
        [BACKFILL, "retention", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    try:
        while not trigger():
            assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before the point to kill it"
            assert time.monotonic() < deadline, "the point to kill the run never came"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.e2e
@pytest.mark.parametrize("point", sorted(TRIGGERS))
def test_a_run_killed_mid_pipeline_leaves_the_previous_output_and_the_live_vault(tmp_path, point):
    site = build(tmp_path / "site")
    out = str(tmp_path / "out")
    run("retention", *purge_args(site, site["keys"], out, FIRST))
    live = os.path.join(out, "vault")
    before = previous_output(out)
    keys_before = read_table(live, "keys").column("line_id").to_pylist()
    kill_when(purge_args(site, site["keys"], out, SECOND, vault=live), lambda: TRIGGERS[point](out))

    assert previous_output(out) == before  # base, manifest and purged list: the previous run's
    opened = reveal(site["keys"], live, "A01")
    assert opened.returncode == 0 and f"name: {CANARIES[0]}" in opened.stdout, opened.stderr
    assert set(read_table(live, "keys").column("line_id").to_pylist()) <= set(keys_before)
    if point == "purge":  # nothing was shredded: the live vault is exactly as it was
        assert sorted(read_table(live, "keys").column("line_id").to_pylist()) == sorted(keys_before)

    states = {
        path: json.load(open(os.path.join(path, ".backfill.json")))["state"] for path in glob.glob(f"{out}.tmp-*")
    }
    kept = [path for path, state in states.items() if state == "kept"]
    assert len(states) == 1 and len(kept) == (0 if point == "purge" else 1), states  # kept once the shred began
    if kept:  # the next purge with another vault is refused, naming the kept one
        refused = run("retention", *purge_args(site, site["keys"], out, SECOND, vault=live), check=False)
        assert refused.returncode == 1 and f"--vault {os.path.join(kept[0], 'vault')}" in refused.stderr
    vault = os.path.join(kept[0], "vault") if kept else live
    run("retention", *purge_args(site, site["keys"], out, SECOND, vault=vault))  # completes the purge
    assert glob.glob(f"{out}.tmp-*") == kept  # a dead run's staging is gone; the kept one is the user's to delete
    manifest = json.load(open(os.path.join(out, "manifest.json"), encoding="utf-8"))
    assert manifest["counts"]["balanced"] and manifest["as_of"] == SECOND
    purged = lines(os.path.join(out, "base"))
    for line_id in ("T1129", "T1130", "TLEAP", "TORG"):
        assert all(purged[line_id][c] is None for c in IDENTITY_COLUMNS), line_id
    assert reveal(site["keys"], live, "A01").returncode == 0
    assert reveal(site["keys"], live, "T1129").returncode == 1
    assert not glob.glob(f"{live}/keys/_staged-*")  # the killed shred's staging folder went with the next change


def sorted_table(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.take(pa.compute.sort_indices(table, [(k, "ascending") for k in keys]))


@pytest.mark.e2e
def test_two_worker_processes_give_what_one_gives(tmp_path):
    site = build(tmp_path / "site")
    outs = {}
    for name, extra in (
        ("one", []),
        ("two", ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing", "--shuffle-buckets", "3"]),
    ):
        keys = copy_keys(site["keys"], tmp_path / name)
        out = str(tmp_path / name / "out")
        assert retention_cli.main([*purge_args(site, keys, out, SECOND), *extra]) == 0
        outs[name] = out
    one, two = (json.load(open(os.path.join(outs[n], "manifest.json"))) for n in ("one", "two"))
    assert one["counts"] == two["counts"] and one["purged_line_ids"] == two["purged_line_ids"]
    assert one["keys"]["vault_after"] == two["keys"]["vault_after"] == "v2"
    assert lines(os.path.join(outs["one"], "base")) == lines(os.path.join(outs["two"], "base"))
    for kind, order in (("values", ["line_id", "field"]), ("keys", ["line_id"])):
        a, b = (sorted_table(read_table(os.path.join(outs[n], "vault"), kind), order) for n in ("one", "two"))
        if kind == "keys":  # wrapped anew under v2 by each run: fresh nonces
            a, b = (t.drop_columns(["wrapped_dek", "wrapped_at"]) for t in (a, b))
        assert a.equals(b), kind
    purged = [sorted(pq.read_table(os.path.join(outs[n], "purged")).column("line_id").to_pylist()) for n in outs]
    assert purged[0] == purged[1] == one["purged_line_ids"]
