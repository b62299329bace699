"""Dataflow readiness: every pipeline builds a Dataflow job offline, and the job is what we mean.

Each launcher runs with ``--runner DataflowRunner --dry_run=True --no_auth
--sdk_location=container`` and ``gs://`` paths, in a child process under
``unshare -n`` (no network at all) with sockets to anything but loopback
refused. Beam's dry run builds the job (pipeline proto, environment, staged
``--setup_file`` sdist) and submits nothing. The child (this file run as a
script) records the job; the tests read the record:

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

import base64
import bz2
import glob
import json
import os
import re
import runpy
import subprocess
import sys
import tarfile
import zlib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
BUCKET = "gs://demo-bucket"
DATAFLOW = ["--runner", "DataflowRunner", "--dry_run=True", "--no_auth", "--sdk_location=container",
            "--project", "demo-project", "--region", "europe-west1", "--temp_location", f"{BUCKET}/tmp",
            "--setup_file", os.path.join(ROOT, "setup.py")]
CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS = "金丝雀测试甲", "11010519491231002X", "北京市海淀区金丝雀路99号"
PIPELINES = ["scan", "notify", "merge"]


def _offline_prefix() -> list[str]:
    """``unshare -n`` where it works (root, as here and in CI); the socket guard below holds either way."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return ["unshare", "-n"] if ok else []


def dry_run(tmp, module: str, args: list[str], bucket_on_disk: str | None = None) -> dict:
    report = os.path.join(tmp, f"{module}-job.json")
    cmd = [*_offline_prefix(), PY, os.path.abspath(__file__), "--module", f"pipelines.{module}", "--report", report]
    if bucket_on_disk:
        cmd += ["--bucket-on-disk", bucket_on_disk]
    proc = subprocess.run([*cmd, "--", *args, *DATAFLOW], capture_output=True, text=True, timeout=600, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(report, encoding="utf-8") as f:
        job = json.load(f)
    job["stdout"], job["stderr"] = proc.stdout, proc.stderr
    return job


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A keyset, a bucket on disk (base, a day's events with canary identity values, a scan's output)."""
    from pipelines import generate, scan

    tmp = str(tmp_path_factory.mktemp("dataflow"))
    disk = os.path.join(tmp, "buckets")
    bucket = os.path.join(disk, "demo-bucket")
    os.makedirs(os.path.join(bucket, "base"))
    generate.write_base(os.path.join(bucket, "base", "base.parquet"), 300, 11)
    events = os.path.join(bucket, "events", "2026-11-30")
    os.makedirs(events)
    with open(os.path.join(events, "events.jsonl"), "w", encoding="utf-8") as f:
        f.write(json.dumps({"event_id": "E1", "line_id": "L0000000001", "doc_type": "RESIDENT_ID",
                            "doc_number": CANARY_NUMBER, "name": CANARY_NAME, "address": CANARY_ADDRESS,
                            "channel": "STORE", "verified_by": "ID_CARD_READER",
                            "registered_at": "2026-11-30T10:00:00"}, ensure_ascii=False) + "\n")
    scan.run(["--base", os.path.join(bucket, "base"), "--out", os.path.join(bucket, "scan"), "--as-of", "2026-12-01"])
    keys = os.path.join(tmp, "secure", "keys.json")
    subprocess.run([PY, "-m", "pipelines.keys", "init", "--keys", keys], check=True, capture_output=True)
    with open(keys, encoding="utf-8") as f:
        material = [k["material"] for k in json.load(f)["keys"]]
    return {"tmp": tmp, "disk": disk, "keys": keys, "material": material}


def _names(job: dict) -> set[str]:
    return {n.split("/")[-1] for n in job["transforms"]} | set(job["transforms"])


def _assert_clean(job: dict, site: dict) -> None:
    """No identity value, no key material, in the graph or in its pickled payloads."""
    with open(job["graph_text"], "rb") as f:
        graph = f.read()
    for canary in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS):
        assert canary.encode() not in graph, canary
    for key in site["material"]:
        assert key.encode() not in graph and base64.b64decode(key) not in graph
    assert job["payloads_decoded"] > 10 and b"subreg" in graph  # the DoFns were opened (their metrics namespace)


def _assert_staged_project(job: dict) -> None:
    staged = {a["staged_name"]: a for a in job["artifacts"]}
    assert "workflow.tar.gz" in staged, staged  # --setup_file: the sdist the workers install
    assert not any("dataflow_python_sdk" in name for name in staged)  # --sdk_location=container
    members = staged["workflow.tar.gz"]["members"]
    for package in ("pipelines", "transforms", "schemas"):
        assert any(m.endswith(f"/{package}/__init__.py") for m in members), package
    for data in glob.glob(os.path.join(ROOT, "schemas", "*")):
        if data.endswith((".avsc", ".yaml", ".json")):
            assert any(m.endswith("/schemas/" + os.path.basename(data)) for m in members), data


def test_scan_builds_a_dataflow_job_without_reading_the_base(site):
    job = dry_run(site["tmp"], "scan", [
        "--base", f"{BUCKET}/base/", "--out", f"{BUCKET}/scan", "--as-of", "2026-12-01",
        "--estimated-rows", "300000000"])
    assert "dry run on DataflowRunner" in job["stdout"]
    names = _names(job)
    for step in ("ReadBase", "PlanSplits", "ClassifyRegistrationCompleteness", "WriteClassified",
                 "WriteDeadLetters", "WriteSummary", "PlanBase"):
        assert step in names, step
    assert job["options"]["project"] == "demo-project" and job["options"]["region"] == "europe-west1"
    assert job["options"]["sdk_location"] == "container"
    assert job["gcs_client_used"] is False
    _assert_staged_project(job)
    _assert_clean(job, site)


def test_merge_builds_a_dataflow_job_with_no_key_or_identity_in_it(site):
    job = dry_run(site["tmp"], "merge", [
        "--base", f"{BUCKET}/base/base.parquet", "--registrations", f"{BUCKET}/events/2026-11-30/",
        "--keys", site["keys"], "--out", f"{BUCKET}/merge/2026-12-01", "--as-of", "2026-12-01"],
        bucket_on_disk=site["disk"])
    names = _names(job)
    for step in ("ReadBase", "ReadEvents", "MergeCompletedRegistrations", "WriteDeadLetters", "WriteSummary"):
        assert step in names, step
    _assert_staged_project(job)
    _assert_clean(job, site)


def test_notify_builds_a_dataflow_job(site):
    job = dry_run(site["tmp"], "notify", [
        "--classified", f"{BUCKET}/scan", "--campaign", os.path.join(ROOT, "examples", "campaign.yaml"),
        "--wave", "1", "--out", f"{BUCKET}/notify", "--as-of", "2026-12-01"], bucket_on_disk=site["disk"])
    names = _names(job)
    for step in ("ReadClassified", "BuildNotificationJobs", "WriteJobFiles"):
        assert step in names, step
    _assert_staged_project(job)
    _assert_clean(job, site)


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


# ---- the child process: build the job, record it --------------------------------------------------------------


def _guard_sockets() -> None:
    import socket

    def refuse(address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if not (host.startswith("127.") or host in ("::1", "localhost") or isinstance(address, str)):
            raise OSError(f"dry run tried to reach {host}")

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    socket.socket.connect = lambda self, address: (refuse(address), real_connect(self, address))[1]
    socket.socket.connect_ex = lambda self, address: (refuse(address), real_connect_ex(self, address))[1]


_KEEP: list = []


def _bucket_on_disk(root: str) -> None:
    """gs://BUCKET/... -> ROOT/BUCKET/... for this process (Beam's own GCS filesystem stands down)."""
    from apache_beam.io.filesystem import FileMetadata
    from apache_beam.io.gcp import gcsfilesystem
    from apache_beam.io.localfilesystem import LocalFileSystem

    gcsfilesystem.GCSFileSystem.scheme = classmethod(lambda cls: "gs-not-here")

    def local(path):
        return path.replace("gs://", root.rstrip("/") + "/", 1) if path.startswith("gs://") else path

    def remote(path):
        return path.replace(root.rstrip("/") + "/", "gs://", 1) if path.startswith(root) else path

    class _DiskBucket(LocalFileSystem):
        @classmethod
        def scheme(cls):
            return "gs"

        def join(self, basepath, *paths):
            return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

        def split(self, path):
            head, _, tail = path.rstrip("/").rpartition("/")
            return head, tail

        def _list(self, prefix):
            for m in super()._list(local(prefix)):
                yield FileMetadata(remote(m.path), m.size_in_bytes, m.last_updated_in_seconds)

        def metadata(self, path):
            m = super().metadata(local(path))
            return FileMetadata(remote(m.path), m.size_in_bytes, m.last_updated_in_seconds)

    for name in ("mkdirs", "create", "open", "exists", "size", "last_updated", "checksum"):
        def one(self, path, *a, _name=name, **k):
            return getattr(LocalFileSystem, _name)(self, local(path), *a, **k)
        setattr(_DiskBucket, name, one)
    for name in ("copy", "rename"):
        def two(self, sources, destinations, _name=name):
            return getattr(LocalFileSystem, _name)(self, [local(s) for s in sources], [local(d) for d in destinations])
        setattr(_DiskBucket, name, two)
    _DiskBucket.delete = lambda self, paths: LocalFileSystem.delete(self, [local(p) for p in paths])
    _KEEP.append(_DiskBucket)  # Beam finds filesystems through __subclasses__, which holds weak references


def _decoded_payloads(blob: bytes) -> list[bytes]:
    """Beam pickles DoFns as base64(bz2 or zlib(pickle)): open every such run found in the proto."""
    found = []
    for run in re.findall(rb"[A-Za-z0-9+/]{60,}={0,2}", blob):
        try:
            packed = base64.b64decode(run)
        except ValueError:
            continue
        for unpack in (bz2.decompress, zlib.decompress):
            try:
                found.append(unpack(packed))
                break
            except (OSError, ValueError, zlib.error):
                continue
    return found


def _driver(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--module", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--bucket-on-disk")
    args, rest = p.parse_known_args(argv)
    rest = rest[1:] if rest[:1] == ["--"] else rest
    sys.path.insert(0, ROOT)
    _guard_sockets()
    from apache_beam.io.gcp import gcsio
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.dataflow import dataflow_runner

    used = []
    if args.bucket_on_disk:
        _bucket_on_disk(args.bucket_on_disk)
    else:  # the launcher must not need the bucket at all

        def tripwire(self, *a, **k):
            used.append(True)
            raise RuntimeError("the launcher used the GCS client")
        gcsio.GcsIO.__init__ = tripwire
    built = {}

    class _Built(BaseException):  # not an Exception: the launcher's run_main must let it through
        pass

    real_run = dataflow_runner.DataflowRunner.run_pipeline

    def capture(self, pipeline, options, pipeline_proto=None):
        result = real_run(self, pipeline, options, pipeline_proto)
        built["job"] = result.job
        if args.bucket_on_disk:  # merge and notify read their results back after a run: there is none
            raise _Built()
        return result
    dataflow_runner.DataflowRunner.run_pipeline = capture

    sys.argv = [args.module, *rest]
    try:  # as `python -m MODULE`: the launcher is __main__, so Beam pickles its main session as in production
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        if done.code:
            return done.code
    except _Built:
        pass
    job = built["job"]
    proto = job.proto_pipeline
    blob = proto.SerializeToString()
    payloads = _decoded_payloads(blob)
    artifacts = []
    for env in proto.components.environments.values():
        for dep in env.dependencies:
            staged = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dep.role_payload).staged_name
            path = beam_runner_api_pb2.ArtifactFilePayload.FromString(dep.type_payload).path
            members = []
            if staged.endswith(".tar.gz") and os.path.exists(path):
                with tarfile.open(path) as tar:
                    members = tar.getnames()
            elif os.path.exists(path):  # the pickled main session, the submission's package list
                with open(path, "rb") as f:
                    data = f.read()
                payloads += [data, *_decoded_payloads(data)]
            artifacts.append({"staged_name": staged, "path": path, "members": members})
    graph_text = args.report + ".graph"
    with open(graph_text, "wb") as f:
        f.write(b"\n".join([blob, *payloads]))
    report = {
        "transforms": sorted(t.unique_name for t in proto.components.transforms.values()),
        "artifacts": artifacts,
        "options": {k: v for k, v in job.options.get_all_options(drop_default=True).items()
                    if isinstance(v, (str, int, float, bool, type(None)))},
        "job": str(job),
        "graph_text": graph_text,
        "payloads_decoded": len(payloads),
        "gcs_client_used": bool(used),
    }
    with open(args.report, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(_driver(sys.argv[1:]))
