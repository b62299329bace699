"""The in-process scan never imports Apache Beam (its import alone costs seconds of one core), and the Beam job
still runs when asked for; local paths are matched by Beam's own rules without Beam (pipelines/io/paths.py)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.e2e  # each scan runs in a fresh interpreter (`python -c`), as a user's command would

AS_OF = "2026-11-30"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs the scan as `backfill scan` does, then reports whether Beam was imported and what the summary said.
SCAN = (
    "import json, sys\n"
    "from pipelines.scan import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'beam': 'apache_beam' in sys.modules}))\n"
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from dev.generate import write_base

    folder = tmp_path_factory.mktemp("base")
    whole = str(folder / "whole.parquet")
    write_base(whole, 6_000, seed=5)
    table = pq.read_table(whole)
    os.remove(whole)
    for i in range(2):  # two files: two splits, so two workers both get one
        pq.write_table(table.slice(i * 3_000, 3_000), str(folder / f"part-{i}.parquet"))
    return str(folder)


def rows_of(base: str) -> int:
    return sum(pq.read_metadata(os.path.join(base, name)).num_rows for name in os.listdir(base))


def scan(base: str, out: str, *flags: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", SCAN, "--base", base, "--out", out, "--as-of", AS_OF, *flags],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def outputs(out: str, rows_in: int) -> list[tuple]:
    """The scan's outputs checked against the base's row count; its verdicts, sorted."""
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    classified = pq.read_table(os.path.join(out, "classified"))
    dead = [line for path in glob.glob(os.path.join(out, "dead_letter", "*.jsonl")) for line in open(path)]
    counts = manifest["counts"]
    assert counts["balanced"] and summary["balanced"]
    assert counts["rows_in"] == summary["rows_in"] == rows_in
    assert counts["classified"] == summary["classified"] == classified.num_rows
    assert counts["dead_letters"] == summary["dead_letters"] == len(dead) > 0
    assert classified.num_rows + len(dead) == rows_in
    table = classified.select(["line_id", "identity_status", "reasons", "flags", "needs_registration"])
    return sorted(
        (r["line_id"], r["identity_status"], tuple(r["reasons"]), tuple(r["flags"])) for r in table.to_pylist()
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_in_process_scan_never_imports_beam(base, tmp_path, workers):
    out = str(tmp_path / "scan")
    result = scan(base, out, "--workers", workers)
    assert result == {"code": 0, "beam": False}
    outputs(out, rows_of(base))
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["runner"] == "in-process" and manifest["workers"] == int(workers)


def test_beam_worker_options_still_run_the_beam_job_with_the_same_verdicts(base, tmp_path):
    rows_in = rows_of(base)
    beam_out, local_out = str(tmp_path / "beam"), str(tmp_path / "local")
    assert scan(base, beam_out, "--direct_num_workers", "1") == {"code": 0, "beam": True}
    assert scan(base, local_out, "--workers", "2") == {"code": 0, "beam": False}
    with open(os.path.join(beam_out, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["runner"] == "FnApiRunner" and "workers" not in manifest
    assert outputs(beam_out, rows_in) == outputs(local_out, rows_in)


def test_local_paths_are_matched_by_beams_rules_without_beam(tmp_path):
    from apache_beam.io.filesystems import FileSystems

    from pipelines.io.paths import match_path

    names = ["a.csv", "b.csv", "ab.parquet", "[x].csv", "sub/c.csv", "sub/deep/d.avro", "sub/e.txt", "a?b.csv"]
    for name in names:
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * len(name))
    os.symlink(tmp_path / "gone", tmp_path / "broken.csv")
    root = str(tmp_path)
    patterns = [
        "a.csv", "missing.csv", "sub", "sub/", "*", "*.csv", "a*", "?.csv", "a?b.csv", "[ab].csv", "[!a].csv",
        "[x].csv", "[", "sub/*", "sub/**", "**.csv", "*/*.csv", "**/*.avro", "sub/*/d.avro", "*.parquet", "a[",
    ]  # fmt: skip
    for pattern in patterns:
        full = os.path.join(root, pattern)
        expected = sorted((m.path, m.size_in_bytes) for m in FileSystems.match([full])[0].metadata_list)
        assert sorted(match_path(full)) == expected, pattern
    assert any(match_path(os.path.join(root, "**.csv")))  # the comparison compared something
