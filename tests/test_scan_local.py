"""The in-process scan (pipelines/scan_local.py, pipelines/scan_tasks.py): the Beam job's outputs from worker
processes without Beam, nothing in the clear in its spill even when killed, one-line errors, its flags.

The bases are made in tests/support/scan_local.py, with what the scan must make of their planted rows
computed there by plain loops. Run: .venv/bin/python -m pytest -q tests/test_scan_local.py
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dev.generate import generate_table
from pipelines import scan as scan_cli
from tests.support.spill_watch import copy_grown
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from tests.support.scan_local import PREFIX, outputs, write_canary_base, write_mixed_base
from transforms.core.shuffle import SPILL_PREFIX
from transforms.scan.policy import load_policy

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF = "2026-11-30"
CANARIES = [c.encode("utf-8") for c in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS, CANARY_NUMBER.lower())]
MARKER = ".backfill.json"  # the marker publishing writes into an OUT it creates (pipelines/io/publish.py)


def scan(*args, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [BACKFILL, "scan", *args, "--as-of", AS_OF], capture_output=True, text=True, timeout=900, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def bases(paths: list[str]) -> list[str]:
    return [arg for path in paths for arg in ("--base", path)]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("mixed"))
    return write_mixed_base(folder, lines=12_000, seed=5, limit=load_policy().doc_line_limit)


@pytest.fixture(scope="module")
def scans(mixed, tmp_path_factory):
    """The mixed base scanned in process with two workers and with one, and by the Beam job."""
    root = tmp_path_factory.mktemp("scans")
    runs = {"w2": ["--workers", "2"], "w1": ["--workers", "1"], "beam": ["--direct_num_workers", "1"]}
    found = {}
    for name, extra in runs.items():
        out = str(root / name)
        scan(*bases(mixed["paths"]), "--out", out, "--shuffle-buckets", "3", *extra)
        found[name] = {**outputs(out), "out": out}
    return found


@pytest.mark.e2e
def test_in_process_scans_make_the_beam_jobs_outputs(scans, mixed):
    beam = scans["beam"]
    assert beam["manifest"]["runner"] == "FnApiRunner" and "workers" not in beam["manifest"]
    assert beam["summary"]["rows_in"] == mixed["rows_in"] and beam["table"].num_rows > 0
    for name, workers in (("w2", 2), ("w1", 1)):
        run = scans[name]
        assert run["table"].equals(beam["table"]), name
        assert run["dead"] == beam["dead"], name
        assert run["summary"] == beam["summary"], name
        assert run["manifest"]["counts"] == beam["manifest"]["counts"], name
        assert run["manifest"]["runner"] == "in-process" and run["manifest"]["workers"] == workers
        assert run["manifest"]["shuffle"] == beam["manifest"]["shuffle"] == {"buckets": 3, "spill": True}
        # one Parquet file per split, each holding its split's rows: four splits were read and written
        splits = len(mixed["paths"])
        assert run["parts"] == [f"part-{i:05d}-of-{splits:05d}.parquet" for i in range(splits)]
        sizes = [pq.read_metadata(os.path.join(run["out"], "classified", p)).num_rows for p in run["parts"]]
        assert all(sizes) and sum(sizes) == run["table"].num_rows


@pytest.mark.e2e
def test_the_planted_lines_come_out_as_planted(scans, mixed):
    run = scans["w2"]
    summary = run["summary"]
    assert summary["rows_in"] == mixed["rows_in"] and summary["balanced"]
    assert summary["dead_letter_reasons"] == mixed["dead_letter_reasons"]
    assert summary["classified"] == mixed["rows_in"] - sum(mixed["dead_letter_reasons"].values())
    table = run["table"]
    planted = table.filter(pc.starts_with(table.column("line_id"), PREFIX)).to_pylist()
    assert {r["line_id"]: r["msisdn"] for r in planted} == mixed["msisdn"]
    assert {r["line_id"]: sorted(r["flags"]) for r in planted} == mixed["flags"]
    dropped = {
        (d["line_id"], os.path.basename(d["source_file"]), d["source_row"])
        for d in run["dead_records"]
        if d["reason"] == "DUPLICATE_LINE_ID" and d["line_id"].startswith(PREFIX)
    }
    assert dropped == mixed["losers"]
    assert len(table.column("line_id").unique()) == table.num_rows


@pytest.mark.e2e
def test_a_rerun_into_the_same_out_changes_nothing(scans, mixed):
    before = scans["w2"]
    scan(*bases(mixed["paths"]), "--out", before["out"], "--shuffle-buckets", "3", "--workers", "2")
    after = outputs(before["out"])
    assert after["table"].equals(before["table"]) and after["parts"] == before["parts"]
    assert after["dead"] == before["dead"] and after["summary"] == before["summary"]
    assert after["manifest"]["counts"] == before["manifest"]["counts"]
    assert after["manifest"]["run_id"] != before["manifest"]["run_id"]


# -- the spill: sealed, even when the scan is killed ----------------------------------------------------------------


def _spill_folders(tmpdir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(tmpdir, f"{SPILL_PREFIX}scan-*")))


def _watch(proc, tmpdir: str, aside: str, enough) -> set[str]:
    """While ``proc`` runs and until ``enough(kinds)``, copy every spill file aside as it grows; returns the
    kinds of spill file seen (rows, keys, drops, docs, flags)."""
    os.makedirs(aside, exist_ok=True)
    sizes: dict[str, int] = {}
    while proc.poll() is None and not enough(_kinds(sizes)):
        copy_grown(_spill_folders(tmpdir), aside, sizes, lambda folder, name, _: f"{os.path.basename(folder)}-{name}")
        time.sleep(0.002)
    return _kinds(sizes)


def _kinds(paths) -> set[str]:
    return {os.path.basename(p).split("-", 1)[0] for p in paths}


def _start(argv: list[str], env: dict, log: str) -> subprocess.Popen:
    with open(log, "ab") as handle:  # its own session: the scan and its worker processes are killed together
        return subprocess.Popen(argv, env=env, stdout=handle, stderr=handle, start_new_session=True)


def _kill(proc: subprocess.Popen, launcher_only: bool = False) -> None:
    """SIGKILL the scan and its workers, or (``launcher_only``) the launcher alone: its workers must die with
    it (a worker left waiting for tasks would hold memory and the spill folder's lock forever)."""
    if launcher_only:
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline:  # the workers are gone too (their lock on the spill folder with them)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("worker processes outlived the killed scan")


def _contains(root: str, needles: list[bytes]) -> list[str]:
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                data = handle.read()
            found += [os.path.join(folder, name)] if any(n in data for n in needles) else []
    return found


@pytest.mark.e2e
def test_spill_holds_no_plaintext_and_a_killed_scan_publishes_nothing(tmp_path):
    tmpdir, aside, parent = str(tmp_path / "tmp"), str(tmp_path / "aside"), tmp_path / "out"
    os.makedirs(tmpdir)
    out, log = str(parent / "scan"), str(tmp_path / "scan.log")
    paths = write_canary_base(str(tmp_path), lines=200_000, files=4)
    argv = [BACKFILL, "scan", *bases(paths), "--out", out, "--as-of", AS_OF, "--workers", "2", "--batch-size", "5000"]
    env = {**os.environ, "TMPDIR": tmpdir}
    # 1. killed once its first pass has spilled rows: nothing is published (OUT holds at most its marker)
    proc = _start(argv, env, log)
    _watch(proc, tmpdir, os.path.join(aside, "1"), lambda kinds: "rows" in kinds)
    assert proc.poll() is None, "the scan ended before it spilled"
    dead = _spill_folders(tmpdir)
    _kill(proc)
    assert dead and not set(os.listdir(out) if os.path.exists(out) else ()) - {MARKER}
    # 2. the next scan removes the dead run's spill folder and staging, then its own spill
    proc = _start(argv, env, log)
    kinds = _watch(proc, tmpdir, os.path.join(aside, "2"), lambda kinds: False)
    assert proc.wait() == 0, open(log, encoding="utf-8", errors="replace").read()[-2000:]
    assert {"rows", "keys"} <= kinds and not any(os.path.exists(d) for d in dead)
    assert _spill_folders(tmpdir) == [] and os.listdir(parent) == ["scan"]
    previous = outputs(out)
    assert previous["summary"]["rows_in"] == 200_003 and previous["manifest"]["workers"] == 2
    # 3. killed in a later pass (the buckets'): the previous output stays as it was
    proc = _start(argv, env, log)
    _watch(proc, tmpdir, os.path.join(aside, "3"), lambda kinds: kinds & {"drops", "docs", "flags"})
    assert proc.poll() is None, "the scan ended before its bucket passes"
    _kill(proc, launcher_only=True)
    now = outputs(out)
    assert now["table"].equals(previous["table"]) and now["manifest"] == previous["manifest"]
    # nothing in the clear: no canary, not even a line_id, in any spill file copied while the runs ran
    copies = [p for _, _, names in os.walk(aside) for p in names]
    assert len(copies) >= 3
    assert _contains(aside, CANARIES + [b"L000000", b"CANARY-"]) == []
    assert _contains(str(parent), CANARIES) == []
    with open(log, "rb") as handle:
        assert not any(c in handle.read() for c in CANARIES)


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
def test_a_file_the_reader_refuses_is_one_line_and_publishes_nothing(tmp_path):
    good, bad = str(tmp_path / "a-good.parquet"), str(tmp_path / "b-bad.parquet")
    pq.write_table(generate_table(2_000, 8), good)
    _corrupt_parquet(bad)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    out = tmp_path / "out" / "scan"
    proc = scan(
        *bases([good, bad]), "--out", str(out), "--workers", "2", env={**os.environ, "TMPDIR": str(tmpdir)}, check=False
    )
    assert proc.returncode == 1, proc.stderr
    # one line of error, the last; before it only the run's own log lines (its plan, its progress)
    *logged, last = proc.stderr.strip().splitlines()
    assert last.startswith("backfill scan: error: ") and "b-bad.parquet: cannot read" in last, proc.stderr
    assert "Traceback" not in proc.stderr and all(line.startswith("scan scan-") for line in logged), proc.stderr
    assert not out.exists() and os.listdir(tmp_path / "out") == []  # no OUT, no staged folder
    assert _spill_folders(str(tmpdir)) == []


@pytest.mark.parametrize(
    "extra",
    [
        ["--workers", "0"],  # below its floor: a usage error, exit 2 (the others: exit 1)
        ["--workers", "-1"],
        ["--workers", "2", "--direct_num_workers", "2"],
        ["--workers", "2", "--direct_running_mode", "multi_processing"],
        ["--workers", "2", "--spill", "off"],
        ["--workers", "2", "--estimated-rows", "100"],
    ],
)
def test_workers_flag_conflicts_are_one_line(tmp_path, capsys, extra):
    base = tmp_path / "b.csv"
    base.write_text("line_id,line_type,subscriber_kind,status\nL1,MOBILE,INDIVIDUAL,ACTIVE\n", encoding="utf-8")
    out = tmp_path / "out"
    try:
        code = scan_cli.main(["--base", str(base), "--out", str(out), "--as-of", AS_OF, *extra])
    except SystemExit as exc:
        code = exc.code
    assert code == (2 if extra[1] in ("0", "-1") else 1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("backfill scan: error:") and "--workers" in lines[0]
    assert not out.exists()


@pytest.mark.e2e
@pytest.mark.parametrize("more_files", [False, True])
def test_by_default_one_worker_per_cpu_capped_by_the_splits(tmp_path, more_files):
    cpus = len(os.sched_getaffinity(0))
    files = cpus + 1 if more_files else 1
    paths = []
    for index in range(files):
        paths.append(str(tmp_path / f"base-{index}.parquet"))
        pq.write_table(generate_table(300, 20 + index), paths[-1])
    out = str(tmp_path / "out")
    proc = scan(*bases(paths), "--out", out)
    manifest = outputs(out)["manifest"]
    assert manifest["runner"] == "in-process" and manifest["workers"] == min(cpus, files), manifest
    assert manifest["counts"]["rows_in"] == 300 * files and "balanced" in proc.stdout
