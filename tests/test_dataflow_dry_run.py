"""Dataflow readiness: every pipeline builds a Dataflow job offline, and the job is what we mean.

Each launcher runs with ``--runner DataflowRunner --dry_run=True --no_auth
--sdk_location=container`` and ``gs://`` paths, in a child process under
``unshare -n`` (no network at all) with sockets to anything but loopback
refused. Beam's dry run builds the job (pipeline proto, environment, staged
``--setup_file`` sdist) and submits nothing. The child
(tests/support/dataflow_child.py, run as a script) records the job; the tests
read the record:

* the scan plans its base inside the pipeline (``--estimated-rows``), so its
  launcher reads nothing: any use of the GCS client fails the run;
* merge and notify read their inputs at launch (footers, headers, the
  previous history), as a real launcher with access to the bucket does: there
  ``gs://demo-bucket/`` is a folder on disk standing in for the bucket;
* the graph carries no identity value and no key material (the pickled
  payloads are decompressed and searched), and the staged sdist is the
  project with its schemas and policy.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.support.dataflow import BUCKET, ROOT, assert_clean, assert_staged_project, dry_run, transform_names

pytestmark = pytest.mark.e2e  # a keyset made by `python -m pipelines.keys`, each job built in a child process


def test_scan_builds_a_dataflow_job_without_reading_the_base(site):
    job = dry_run(
        site["tmp"],
        "scan",
        [
            "--base",
            f"{BUCKET}/base/",
            "--out",
            f"{BUCKET}/scan",
            "--as-of",
            "2026-12-01",
            "--estimated-rows",
            "300000000",
        ],
    )
    assert "dry run on DataflowRunner" in job["stdout"]
    names = transform_names(job)
    for step in (
        "ReadBase",
        "PlanSplits",
        "ClassifyRegistrationCompleteness",
        "WriteClassified",
        "WriteDeadLetters",
        "WriteSummary",
        "PlanBase",
    ):
        assert step in names, step
    assert job["options"]["project"] == "demo-project" and job["options"]["region"] == "europe-west1"
    assert job["options"]["sdk_location"] == "container"
    assert job["gcs_client_used"] is False
    assert_staged_project(job)
    assert_clean(job, site)


def test_merge_builds_a_dataflow_job_with_no_key_or_identity_in_it(site):
    job = dry_run(
        site["tmp"],
        "merge",
        [
            "--base",
            f"{BUCKET}/base/base.parquet",
            "--registrations",
            f"{BUCKET}/events/2026-11-30/",
            "--keys",
            site["keys"],
            "--out",
            f"{BUCKET}/merge/2026-12-01",
            "--as-of",
            "2026-12-01",
        ],
        bucket_on_disk=site["disk"],
    )
    names = transform_names(job)
    for step in ("ReadBase", "ReadEvents", "MergeCompletedRegistrations", "WriteDeadLetters", "WriteSummary"):
        assert step in names, step
    assert_staged_project(job)
    assert_clean(job, site)


def test_notify_builds_a_dataflow_job(site):
    job = dry_run(
        site["tmp"],
        "notify",
        [
            "--classified",
            f"{BUCKET}/scan",
            "--campaign",
            os.path.join(ROOT, "examples", "campaign.yaml"),
            "--wave",
            "1",
            "--out",
            f"{BUCKET}/notify",
            "--as-of",
            "2026-12-01",
        ],
        bucket_on_disk=site["disk"],
    )
    names = transform_names(job)
    for step in ("ReadClassified", "BuildNotificationJobs", "WriteJobFiles"):
        assert step in names, step
    assert_staged_project(job)
    assert_clean(job, site)


def test_scan_planned_in_the_pipeline_matches_planned_at_launch(site, tmp_path):
    """--estimated-rows changes where the base is planned, not what the scan makes."""
    import pyarrow.parquet as pq

    from pipelines import scan

    base = os.path.join(site["disk"], "demo-bucket", "base")
    late = scan.run(["--base", base, "--out", str(tmp_path / "late"), "--as-of", "2026-12-01", "--estimated-rows", "1"])
    early = json.load(open(os.path.join(site["disk"], "demo-bucket", "scan", "summary.json"), encoding="utf-8"))
    assert {k: v for k, v in late.items() if k != "run_id"} == {k: v for k, v in early.items() if k != "run_id"}

    def rows(folder):
        return sorted(map(str, pq.read_table(folder).to_pylist()))

    assert rows(str(tmp_path / "late" / "classified")) == rows(os.path.join(base, "..", "scan", "classified"))
