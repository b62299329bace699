"""`backfill report` in process with worker processes (``--workers``): the same outputs whatever their number.

The campaign is made by the real steps (tests/support/report.py: two waves with delivery receipts, two merges,
a report date after the deadline, so the past-deadline list has rows). The report runs with one worker (this
process only), with two forked workers (the merged base, the history and the events gathered by workers, the
buckets' facts made by them), with spilled buckets and with one bucket in memory; every table (Parquet and CSV,
byte for byte), the manifest's figures and the page must be the same. Run:
.venv/bin/python -m pytest tests/test_report_workers.py -q
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipelines import report
from tests.support.report import AFTER_DEADLINE, build_campaign, report_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return build_campaign(str(tmp_path_factory.mktemp("workers")))


def _run(campaign, out: str, *extra: str) -> dict:
    return report.run(report_args(campaign["path"], out, AFTER_DEADLINE, *extra))


def _outputs(out: str) -> dict:
    """Every Parquet table (as a table), every CSV file (its bytes), the page without its run id and clock."""
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "parquet", "*", "*", "*.parquet"))):
        found[os.path.relpath(path, out)] = pq.read_table(path)
    for path in sorted(glob.glob(os.path.join(out, "csv", "*.csv"))):
        with open(path, "rb") as handle:
            found[os.path.relpath(path, out)] = handle.read()
    with open(os.path.join(out, "report.html"), encoding="utf-8") as handle:
        page = handle.read().replace(out, "OUT")
    page = re.sub(r"report-\d{8}T\d{6}Z-[0-9a-f]+", "RUN", page)
    found["report.html"] = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "TIME", page)
    return found


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        if hasattr(value, "equals"):
            assert value.equals(b[name]), name
        else:
            assert value == b[name], name


def _figures(manifest: dict) -> dict:
    return {k: manifest[k] for k in ("counts", "completion", "findings", "shuffle", "runner")}


def test_one_and_two_workers_make_the_same_report(campaign, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    alone = _run(campaign, one, "--shuffle-buckets", "3", "--workers", "1")
    forked = _run(campaign, two, "--shuffle-buckets", "3", "--workers", "2")
    assert alone["workers"] == 1 and forked["workers"] == 2
    assert alone["runner"] == "in-process" and alone["shuffle"] == {"buckets": 3, "spill": True}
    assert forked["counts"]["past_deadline"] > 0 and forked["counts"]["receipts"]["read"] > 0
    assert _figures(alone) == _figures(forked)
    _same(_outputs(one), _outputs(two))
    assert not glob.glob(os.path.join(str(tmp_path), "*", "*.arrow"))  # the spill stays out of OUT


def test_two_workers_over_one_bucket_in_memory_make_the_same_report(campaign, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    alone = _run(campaign, one, "--workers", "1")
    forked = _run(campaign, two, "--workers", "2")
    assert alone["shuffle"]["buckets"] == forked["shuffle"]["buckets"] == 1
    assert alone["workers"] == forked["workers"] == 1  # one bucket in memory: nothing for a worker to share
    assert _figures(alone) == _figures(forked)
    _same(_outputs(one), _outputs(two))


def test_spilled_buckets_on_two_workers_count_as_one_bucket_does(campaign, tmp_path):
    single, spilled = str(tmp_path / "single"), str(tmp_path / "spilled")
    one = _run(campaign, single, "--workers", "1")
    many = _run(campaign, spilled, "--shuffle-buckets", "4", "--workers", "2")
    assert one["completion"] == many["completion"]
    assert one["counts"] == many["counts"]
    a, b = _outputs(single), _outputs(spilled)
    for name in a:  # the past-deadline list is sorted within a bucket: its rows, not their order, must agree
        if "past_deadline" in name and hasattr(a[name], "sort_by"):
            a[name], b[name] = (
                t.sort_by([("region", "ascending"), ("line_id", "ascending")]) for t in (a[name], b[name])
            )
        elif "past_deadline" in name and isinstance(a[name], bytes):
            a[name], b[name] = (sorted(t.splitlines()) for t in (a[name], b[name]))
    _same(a, b)


def _fails(capfd, args, *fragments) -> None:
    assert report.main(args) == 1
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_bad_worker_counts_are_one_line_errors(campaign, tmp_path, capfd):
    path = campaign["path"]
    out = str(tmp_path / "r")
    with pytest.raises(SystemExit) as refused:  # a count below its floor is a usage error, before anything is read
        report.main(report_args(path, out, AFTER_DEADLINE, "--workers", "0"))
    assert refused.value.code == 2 and "argument --workers: must be at least 1" in capfd.readouterr().err
    beam_job = report_args(path, out, AFTER_DEADLINE, "--workers", "2", "--direct_num_workers", "2")
    _fails(capfd, beam_job, "--workers sizes the report on this machine")
    assert not os.path.exists(out)


def test_the_report_in_a_fresh_interpreter_imports_no_beam(campaign, tmp_path):
    out = str(tmp_path / "report")
    code = (
        "import json, sys\n"
        "from pipelines import report\n"
        f"manifest = report.run({report_args(campaign['path'], out, AFTER_DEADLINE)!r})\n"
        "print(json.dumps({'runner': manifest['runner'], 'beam': 'apache_beam' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"runner": "in-process", "beam": False}
    assert os.path.exists(os.path.join(out, "report.html"))


def test_an_unreadable_dead_letter_file_read_by_a_worker_is_a_one_line_error(campaign, tmp_path, capfd):
    path = campaign["path"]
    merged = str(tmp_path / "merge-2")
    shutil.copytree(path("merge-2"), merged)
    broken = sorted(glob.glob(os.path.join(merged, "dead_letter", "*.jsonl")))[0]
    with open(broken, "w", encoding="utf-8") as handle:
        handle.write('{"event_id": "e1", "reason": \n')  # cut short: not JSON
    out = str(tmp_path / "report")
    args = report_args(path, out, AFTER_DEADLINE, "--shuffle-buckets", "3", "--workers", "2")
    args[args.index("--merge") + 1] = merged
    _fails(capfd, args, broken, "cannot read the merge's dead letters")
    assert not os.path.exists(os.path.join(out, "manifest.json"))
