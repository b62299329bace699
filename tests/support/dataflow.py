"""Dataflow dry runs of the launchers (tests/test_dataflow_dry_run.py, tests/test_merge_streaming_dataflow.py).

Each launcher runs with ``--runner DataflowRunner --dry_run=True --no_auth
--sdk_location=container`` and ``gs://`` paths, in a child process
(``dataflow_child.py`` beside this file, run as a script) under ``unshare -n``
(no network at all) with sockets to anything but loopback refused. The child
records the job (transforms, staged artifacts, options, the graph with its
decoded pickled payloads) in a JSON report that :func:`dry_run` returns.
Tests that use these run subprocesses: mark them ``e2e``.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import subprocess
import sys

import pytest

from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dataflow_child.py")
BUCKET = "gs://demo-bucket"
KMS_KEY = "projects/demo-project/locations/europe-west1/keyRings/backfill/cryptoKeys/dataflow"
DATAFLOW = [
    "--runner",
    "DataflowRunner",
    "--dry_run=True",
    "--no_auth",
    "--sdk_location=container",
    "--project",
    "demo-project",
    "--region",
    "europe-west1",
    "--dataflow_kms_key",  # CMEK: a Dataflow run with identity data needs it (pipelines/dataflow_options.py)
    KMS_KEY,
    "--temp_location",
    f"{BUCKET}/tmp",
    "--setup_file",
    os.path.join(ROOT, "setup.py"),
]


def offline_prefix() -> list[str]:
    """``unshare -n`` where it works (root, as here and in CI); the child's socket guard holds either way."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return ["unshare", "-n"] if ok else []


def dry_run(tmp, module: str, args: list[str], bucket_on_disk: str | None = None, dataflow=None) -> dict:
    """Build pipelines.MODULE's Dataflow job offline in a child process; returns its record (plus stdout, stderr).
    A MODULE with a dot is a full module name (a test's own pipeline in tests/support). ``dataflow``: the
    Dataflow flags, when not :data:`DATAFLOW`."""
    report = os.path.join(tmp, f"{module}-job.json")
    full = module if "." in module else f"pipelines.{module}"
    cmd = [*offline_prefix(), PY, CHILD, "--module", full, "--report", report]
    if bucket_on_disk:
        cmd += ["--bucket-on-disk", bucket_on_disk]
    flags = DATAFLOW if dataflow is None else dataflow
    proc = subprocess.run([*cmd, "--", *args, *flags], capture_output=True, text=True, timeout=600, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(report, encoding="utf-8") as f:
        job = json.load(f)
    job["stdout"], job["stderr"] = proc.stdout, proc.stderr
    return job


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A keyset, a bucket on disk (base, a day's events with canary identity values, a scan's output)."""
    from dev import generate
    from pipelines import scan

    tmp = str(tmp_path_factory.mktemp("dataflow"))
    disk = os.path.join(tmp, "buckets")
    bucket = os.path.join(disk, "demo-bucket")
    os.makedirs(os.path.join(bucket, "base"))
    generate.write_base(os.path.join(bucket, "base", "base.parquet"), 300, 11)
    events = os.path.join(bucket, "events", "2026-11-30")
    os.makedirs(events)
    with open(os.path.join(events, "events.jsonl"), "w", encoding="utf-8") as f:
        f.write(
            json.dumps(
                {
                    "event_id": "E1",
                    "line_id": "L0000000001",
                    "doc_type": "RESIDENT_ID",
                    "doc_number": CANARY_NUMBER,
                    "name": CANARY_NAME,
                    "address": CANARY_ADDRESS,
                    "channel": "STORE",
                    "verified_by": "ID_CARD_READER",
                    "registered_at": "2026-11-30T10:00:00",
                },
                ensure_ascii=False,
            )
            + "\n"
        )
    scan.run(["--base", os.path.join(bucket, "base"), "--out", os.path.join(bucket, "scan"), "--as-of", "2026-12-01"])
    keys = os.path.join(tmp, "secure", "keys.json")
    subprocess.run([PY, "-m", "pipelines.keys", "init", "--keys", keys], check=True, capture_output=True)
    with open(keys, encoding="utf-8") as f:
        material = [k["material"] for k in json.load(f)["keys"]]
    return {"tmp": tmp, "disk": disk, "keys": keys, "material": material}


def transform_names(job: dict) -> set[str]:
    return {n.split("/")[-1] for n in job["transforms"]} | set(job["transforms"])


def assert_clean(job: dict, site: dict) -> None:
    """No identity value, no key material, in the graph or in its pickled payloads."""
    with open(job["graph_text"], "rb") as f:
        graph = f.read()
    for canary in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS):
        assert canary.encode() not in graph, canary
    for key in site["material"]:
        assert key.encode() not in graph and base64.b64decode(key) not in graph
    assert job["payloads_decoded"] > 10 and b"subreg" in graph  # the DoFns were opened (their metrics namespace)


def secret_forms(secret: bytes) -> list[bytes]:
    """The ways a secret can be written into a job: raw, hex, base64 (standard and URL-safe, padded or not)."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(secret)
        forms += [text, text.rstrip(b"=")]
    return forms


def secrets_found(job: dict, secrets: list[bytes]) -> list[str]:
    """The secrets (shown as their first 4 hex digits) written in the job's graph or its decoded payloads."""
    with open(job["graph_text"], "rb") as f:
        graph = f.read()
    return [s.hex()[:4] for s in secrets if any(form in graph for form in secret_forms(s))]


def assert_staged_project(job: dict) -> None:
    staged = {a["staged_name"]: a for a in job["artifacts"]}
    assert "workflow.tar.gz" in staged, staged  # --setup_file: the sdist the workers install
    assert not any("dataflow_python_sdk" in name for name in staged)  # --sdk_location=container
    members = staged["workflow.tar.gz"]["members"]
    for package in ("pipelines", "transforms", "schemas"):
        assert any(m.endswith(f"/{package}/__init__.py") for m in members), package
    for data in glob.glob(os.path.join(ROOT, "schemas", "*")):
        if data.endswith((".avsc", ".yaml", ".json")):
            assert any(m.endswith("/schemas/" + os.path.basename(data)) for m in members), data
