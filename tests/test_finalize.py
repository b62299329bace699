"""The job's last step (pipelines/io/finalize.py): the balance checked and the manifest written by the job.

A pipeline writes a few rows, then Finalize checks counts the pipeline computed from the same rows. The
manifest must appear only after the writes, carry the counts, and an unbalanced run must fail the job
with one line and write no manifest, whatever the launcher does afterwards.
"""

from __future__ import annotations

import glob
import json
import os

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class

from pipelines.common import run_main
from pipelines.io.finalize import Finalize
from pipelines.io.publish import Publication
from transforms.core.metrics import SumCounts

LOCAL = ["--runner", "FnApiRunner"]


def balance(counts: dict) -> tuple[dict, list[str]]:
    """rows in = rows kept + dead letters."""
    block = {**counts, "balanced": counts.get("in", 0) == counts.get("kept", 0) + counts.get("dead", 0)}
    return block, [] if block["balanced"] else [f"{counts.get('in', 0):,} rows in, {counts.get('kept', 0):,} kept"]


def _run(tmp_path, rows: list[int], lose: int | None = None) -> Publication:
    stage = tmp_path / "out.tmp-run1"
    stage.mkdir()
    pub = Publication(str(tmp_path / "out"), str(stage), "demo", "run1", produces=("part", "manifest.json"))
    with BeamTestPipeline(argv=LOCAL) as p:
        numbers = p | beam.Create(rows)
        kept = numbers | "Kept" >> beam.Filter(lambda n: n % 3 != 0 and n != lose)  # `lose` goes missing
        dead = numbers | "Dead" >> beam.Filter(lambda n: n % 3 == 0)  # every third row is a dead letter
        written = kept | beam.Map(str) | beam.io.WriteToText(str(stage / "part"), file_name_suffix=".txt")
        tallies = [
            pcoll | f"Count{name}" >> beam.Map(lambda _, k=name: {k: 1})
            for name, pcoll in (("in", numbers), ("kept", kept), ("dead", dead))
        ]
        counts = tallies | beam.Flatten() | beam.CombineGlobally(SumCounts())
        counts | Finalize(pub, {"step": "demo", "run_id": "run1"}, balance, after=[written])
    return pub


def test_a_balanced_run_writes_its_manifest_after_its_files(tmp_path):
    rows = list(range(1, 101))
    pub = _run(tmp_path, rows)
    manifest = json.loads(open(pub.path("manifest.json")).read())
    kept = sum(1 for n in rows if n % 3 != 0)
    assert manifest["counts"] == {"in": len(rows), "kept": kept, "dead": len(rows) - kept, "balanced": True}
    assert manifest["step"] == "demo" and manifest["finished"] and manifest["timings"]["seconds_total"] >= 0
    parts = glob.glob(pub.path("part*.txt"))
    assert parts and sum(len(open(f).read().split()) for f in parts) == kept
    assert max(os.path.getmtime(f) for f in parts) <= os.path.getmtime(pub.path("manifest.json"))


def test_an_unbalanced_run_fails_the_job_with_one_line_and_no_manifest(tmp_path, capsys):
    rows = list(range(1, 51))
    # the writer's input loses one row: the job's own counts must notice, not the launcher
    lost = [n for n in rows if n % 3 != 0][2]

    def body(argv):
        _run(tmp_path, rows, lose=lost)
        return 0

    assert run_main("backfill demo", body, []) == 1
    err = capsys.readouterr().err.strip().splitlines()
    kept = sum(1 for n in rows if n % 3 != 0)
    assert err == [f"backfill demo: error: {len(rows):,} rows in, {kept - 1:,} kept; nothing was published"]
    assert not os.path.exists(tmp_path / "out.tmp-run1" / "manifest.json")
