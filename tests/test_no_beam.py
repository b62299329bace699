"""The in-process scan and merge never import Apache Beam (its import alone costs seconds of one core), nor pandas
(pyarrow's probe for it, half a second: pipelines/startup.py), and the Beam job still runs when asked for; local
paths are matched by Beam's own rules without Beam (pipelines/io/paths.py)."""

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
RUN = (
    "import json, sys\n"
    "from pipelines.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'beam': 'apache_beam' in sys.modules, 'pandas': 'pandas' in sys.modules}))\n"
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


def backfill(*args: str) -> dict:
    """A command in a fresh interpreter: its exit code and whether it imported Beam (and pandas)."""
    proc = subprocess.run(
        [sys.executable, "-c", RUN, *args, "--as-of", AS_OF], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["beam"]:  # an in-process run: no pandas either
        assert result.pop("pandas") is False
    else:
        result.pop("pandas")
    return result


def scan(base: str, out: str, *flags: str) -> dict:
    return backfill("scan", "--base", base, "--out", out, *flags)


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


@pytest.fixture(scope="module")
def merges(base, tmp_path_factory):
    """Merges of the base and registration events for a third of its lines: in process with one and two workers,
    a second merge over the first one's output (its vault read back), and the Beam job; each with its result."""
    from bench.events import make_events

    root = tmp_path_factory.mktemp("merges")
    keys, events = str(root / "secure" / "keys.json"), str(root / "events.parquet")
    subprocess.run([sys.executable, "-m", "pipelines.cli", "keys", "init", "--keys", keys], check=True, cwd=ROOT)
    make_events(os.path.join(base, "part-0.parquet"), events, n=1_000, seed=3)
    flags = ["--registrations", events, "--keys", keys]
    found = {"keys": keys}
    for name, extra in (
        ("w1", ["--workers", "1"]),
        ("w2", ["--workers", "2"]),
        ("beam", ["--direct_num_workers", "1"]),
    ):
        out = str(root / name)
        found[name] = (out, backfill("merge", "--base", base, *flags, "--out", out, *extra))
    second = str(root / "second")
    found["second"] = (second, backfill("merge", "--merged", found["w2"][0], *flags, "--out", second))
    return found


def test_the_in_process_merge_never_imports_beam_and_merges_as_the_beam_job(base, merges):
    from tests.support.merge_local import differences, merge_outputs

    keys = merges["keys"]
    beam = merge_outputs(merges["beam"][0], keys)
    assert merges["beam"][1] == {"code": 0, "beam": True}
    for name in ("w1", "w2"):
        out, result = merges[name]
        assert result == {"code": 0, "beam": False}
        with open(os.path.join(out, "manifest.json")) as f:
            manifest = json.load(f)
        assert manifest["runner"] == "in-process" and manifest["workers"] == int(name[1])
        assert differences(merge_outputs(out, keys), beam) == []
    assert beam["counts"]["base"]["rows_in"] == rows_of(base) and beam["counts"]["events"]["applied"] > 0


def test_a_merge_over_a_merged_base_and_its_vault_never_imports_beam(merges):
    from tests.support.merge_local import merge_outputs

    out, result = merges["second"]
    assert result == {"code": 0, "beam": False}
    second, first = merge_outputs(out, merges["keys"]), merge_outputs(merges["w2"][0], merges["keys"])
    assert second["counts"]["vault"]["keys_copied"] == first["vault_keys"].num_rows > 0  # the vault read back
    assert second["base"].num_rows == first["base"].num_rows


def test_pyarrow_does_not_import_pandas_yet_pandas_conversions_still_work():
    code = (
        "import sys, json\n"
        "import pipelines.merge, pipelines.notify, pipelines.report\n"
        "import pyarrow as pa\n"
        "pa.array(['x']); pa.array([1.5, None]); pa.table({'a': [1]})\n"
        "probed = 'pandas' in sys.modules\n"
        "import pandas as pd\n"
        "frame = pa.table({'a': [1, None]}).to_pandas()\n"
        "back = pa.Table.from_pandas(pd.DataFrame({'t': pd.to_datetime(['2026-01-01', None], utc=True)}))\n"
        "print(json.dumps([probed, frame.shape[0], str(back.schema.field('t').type), back.column('t').null_count]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    probed, rows, kind, nulls = json.loads(proc.stdout)
    assert (probed, rows, nulls) == (False, 2, 1) and kind.startswith("timestamp[") and kind.endswith("tz=UTC]")


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
