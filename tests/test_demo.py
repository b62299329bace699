"""`backfill demo` end to end on a small base: every step runs, the completion rate and the report's
path are printed, the numbers agree with the report's manifest. Run:
.venv/bin/python -m pytest tests/test_demo.py -q
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e  # the backfill CLI in a subprocess

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")


def test_demo_runs_the_whole_loop_and_prints_the_completion_rate_and_the_report(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [BACKFILL, "demo", "--lines", "3000", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    rate = re.search(r"^completion: ([\d,]+) of ([\d,]+) lines .* COMPLETE \(([\d.]+)%\)$", proc.stdout, re.M)
    page = re.search(r"^report: (.+report\.html)$", proc.stdout, re.M)
    assert rate and page, proc.stdout[-2000:]
    assert os.path.isfile(page.group(1)) and page.group(1) == str(out / "report" / "report.html")
    with open(out / "report" / "manifest.json", encoding="utf-8") as handle:
        figures = json.load(handle)["completion"]
    complete, needed = (int(rate.group(i).replace(",", "")) for i in (1, 2))
    assert (complete, needed) == (figures["complete"], figures["needed"]) and 0 < complete < needed
    steps = re.findall(r"^== \d+\. ([\w -]+?)[:,]", proc.stdout, re.M)
    for step in (
        "scan",
        "notify wave 1",
        "merge",
        "notify wave 2",
        "report",
        "streaming merge",
        "retention",
        "incident",
        "self-inspection",
    ):
        assert step in steps, (step, steps)
    assert "skipped" not in proc.stdout  # the emulator is on this machine: the live step really ran
    live = re.search(r"messages ([\d,]+) in -> ([\d,]+) applied .* \(balanced\)", proc.stdout)
    assert live and int(live.group(2).replace(",", "")) > 0, proc.stdout[-3000:]
    assert (out / "compact" / "manifest.json").exists() and any((out / "stream" / "deltas").iterdir())
    # the self-inspection verified every audit chain with the demo's keyset: no audit finding
    inspection = json.loads(next((out / "inspection").glob("self_inspection_*.json")).read_text(encoding="utf-8"))
    audit = [f["kind"] for f in inspection["findings"] if f["kind"].startswith("audit_")]
    assert not audit and inspection["audit_chains"]["chains"], audit
