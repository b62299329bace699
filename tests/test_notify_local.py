"""The in-process notify (pipelines/notify_local.py) against the Beam job: the same jobs, history and counts
with one and two worker processes, with and without lines joined (--merged, the history of an earlier wave);
a re-run hands over nothing twice; the launcher never imports Apache Beam; no identity value anywhere."""

from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import field_names
from tests.support.notify import EXAMPLE
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person

pytestmark = pytest.mark.e2e  # every run is the notify command in a fresh interpreter, as a user's would be

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF = {"1": "2026-11-30", "2": "2026-12-15"}
BEAM_JOB = ("--direct_num_workers", "1")  # Beam's local worker option: the Beam job runs
# Runs notify as `backfill notify` does, then says whether Beam was imported.
NOTIFY = (
    "import json, sys\n"
    "from pipelines.notify import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'beam': 'apache_beam' in sys.modules}))\n"
)


def notify(scan: str, out: str, wave: str, *flags: str, tmp=None) -> dict:
    """Plan ``wave`` into ``out``; returns {code, beam} (whether the command imported Apache Beam)."""
    env = {**os.environ, **({"TMPDIR": str(tmp)} if tmp else {})}
    args = ["--scan", scan, "--campaign", EXAMPLE, "--wave", wave, "--out", out, "--as-of", AS_OF[wave], *flags]
    proc = subprocess.run(
        [sys.executable, "-c", NOTIFY, *args], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """Two base files (two splits) with canary identity values, scanned; and a merged base completing some."""
    folder = tmp_path_factory.mktemp("notify_local")
    names = field_names("subscriber_base")
    (folder / "base").mkdir()
    for part in range(2):
        rows = [
            person(
                line_id=f"L{part}{i:03d}",
                msisdn=f"13{part}0013{i:04d}" if i % 17 else "12345",  # a few invalid numbers
                line_type="FIXED" if i % 23 == 0 else "MOBILE",
                region=["110105", "310115", "440305", "510107"][i % 4],
                doc_type="" if i % 3 else "RESIDENT_ID",  # two lines in three need registration
                name=CANARY_NAME,
                doc_number=CANARY_NUMBER,
                address=CANARY_ADDRESS,
            )
            for i in range(300)
        ]
        with open(folder / "base" / f"part-{part}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=names)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in names} for r in rows)
    scan = str(folder / "scan")
    subprocess.run(
        [BACKFILL, "scan", "--base", str(folder / "base"), "--out", scan, "--as-of", AS_OF["1"]],
        check=True,
        capture_output=True,
        timeout=600,
    )
    merged = folder / "merge" / "base"
    merged.mkdir(parents=True)
    ids = [f"L{p}{i:03d}" for p in range(2) for i in range(1, 300, 3)]  # lines that needed registration
    status = ["COMPLETE" if k % 4 else "INVALID" for k in range(len(ids))]
    pq.write_table(pa.table({"line_id": ids, "identity_status": status}), merged / "part-0.parquet")
    return {"scan": scan, "merged": str(folder / "merge"), "completed": status.count("COMPLETE")}


def jobs(out: str) -> dict:
    """channel -> every job record, sorted by job id."""
    found = {}
    for channel in ("sms", "call", "announcement"):
        rows = []
        for path in glob.glob(os.path.join(out, "jobs", channel, "*.avro")):
            with open(path, "rb") as handle:
                rows += list(fastavro.reader(handle))
        found[channel] = sorted(rows, key=lambda r: r["job_id"])
    return found


def history(out: str) -> pa.Table:
    """The history (its run ids apart), sorted by job id and wave."""
    table = pa.concat_tables(pq.read_table(p) for p in glob.glob(os.path.join(out, "history", "jobs", "*.parquet")))
    return table.drop(["run_id"]).sort_by([("job_id", "ascending"), ("wave", "ascending")])


def manifest(out: str) -> dict:
    with open(os.path.join(out, "manifest.json")) as handle:
        return json.load(handle)


def same_outputs(a: str, b: str) -> None:
    assert jobs(a) == jobs(b)
    assert history(a).equals(history(b))
    ma, mb = manifest(a), manifest(b)
    assert ma["counts"] == mb["counts"] and ma["by_day"] == mb["by_day"]
    assert ma["counts"]["balanced"]


def test_in_process_equals_the_beam_job_without_joins(scanned, tmp_path):
    beam_out, one, two = (str(tmp_path / name) for name in ("beam", "one", "two"))
    assert notify(scanned["scan"], beam_out, "1", *BEAM_JOB)["beam"]
    assert not notify(scanned["scan"], one, "1", "--workers", "1")["beam"]
    assert not notify(scanned["scan"], two, "1", "--workers", "2", tmp=tmp_path)["beam"]
    assert manifest(beam_out)["runner"] == "FnApiRunner"
    assert (manifest(one)["runner"], manifest(one)["workers"], manifest(two)["workers"]) == ("in-process", 1, 2)
    same_outputs(beam_out, one)
    same_outputs(beam_out, two)
    counts = manifest(two)["counts"]
    found = jobs(two)
    # 600 lines, those with i % 3 != 0 need registration: 200 of each 300
    assert counts["targeted"] == 400 == len(found["sms"]) + len(found["call"]) + counts["to_announcement"]
    assert len(found["announcement"]) == 4  # one per region
    assert sum(counts["handed_over"].values()) == sum(len(v) for v in found.values()) == history(two).num_rows
    assert not glob.glob(str(tmp_path / "backfill-spill-*"))  # the spill area is removed with the run


def test_in_process_equals_the_beam_job_with_joins_and_history(scanned, tmp_path):
    beam_out, one, two = (str(tmp_path / name) for name in ("beam", "one", "two"))
    merged = ("--merged", scanned["merged"])
    notify(scanned["scan"], beam_out, "1", *merged, *BEAM_JOB)
    notify(scanned["scan"], one, "1", *merged, "--workers", "1")
    notify(scanned["scan"], two, "1", *merged, "--workers", "2")
    same_outputs(beam_out, one)
    same_outputs(beam_out, two)
    assert manifest(two)["counts"]["outcomes"]["registered"] == scanned["completed"]
    for out, flags in ((beam_out, BEAM_JOB), (one, ("--workers", "1")), (two, ("--workers", "2"))):
        notify(scanned["scan"], out, "2", *merged, *flags)  # the history of wave 1 is joined
    same_outputs(beam_out, one)
    same_outputs(beam_out, two)
    waves = {r["wave"] for rows in jobs(two).values() for r in rows}
    assert waves == {1, 2}


def test_a_rerun_hands_over_nothing_twice(scanned, tmp_path):
    out = str(tmp_path / "out")
    notify(scanned["scan"], out, "1", "--workers", "2")
    first = jobs(out)
    rows = history(out).num_rows
    notify(scanned["scan"], out, "1", "--workers", "2")
    again = manifest(out)["counts"]
    assert sum(again["handed_over"].values()) == 0 and again["outcomes"]["already_sent"] > 0
    assert jobs(out) == first and history(out).num_rows == rows


@pytest.mark.parametrize("flags", [BEAM_JOB, ("--dry-run",), ("--spill", "off")])
def test_workers_with_the_beam_job_is_one_line(scanned, tmp_path, flags):
    args = ["--scan", scanned["scan"], "--campaign", EXAMPLE, "--wave", "1", "--out", str(tmp_path / "o")]
    proc = subprocess.run(
        [BACKFILL, "notify", *args, "--workers", "2", *flags], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "--workers sizes notify on this machine" in proc.stderr
    assert not os.path.exists(tmp_path / "o")


def test_no_identity_value_in_any_output_or_spill(scanned, tmp_path):
    out = tmp_path / "out"
    spill = tmp_path / "spill"
    spill.mkdir()
    notify(scanned["scan"], str(out), "1", "--merged", scanned["merged"], "--workers", "2", tmp=spill)
    assert not os.listdir(spill)  # the spill area is removed with the run
    files = [p for p in glob.glob(str(out / "**"), recursive=True) if os.path.isfile(p)]
    assert any(p.endswith(".avro") for p in files) and any(p.endswith(".parquet") for p in files)
    for path in files:
        with open(path, "rb") as handle:
            data = handle.read()
        for canary in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS):
            assert canary.encode() not in data, (canary, path)
