"""The child process of a Dataflow dry run (tests/support/dataflow.py runs this file as a script).

It builds the job of one launcher (``python -m pipelines.X`` as ``__main__``)
on the DataflowRunner with ``--dry_run=True``, offline, and records it:
transforms, staged artifacts, options, the pipeline proto with every pickled
payload decoded, whether the launcher used the GCS client, and every secret of
16 bytes or more the launcher process drew from ``secrets`` (salts, keys), so a
test can look for them in the graph.
"""

from __future__ import annotations

import base64
import bz2
import json
import os
import re
import runpy
import sys
import tarfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
_DRAWN: list[str] = []


def _record_secrets() -> None:
    """Every ``secrets.token_bytes`` (and so ``token_hex``, ``token_urlsafe``) of 16 bytes or more, as hex."""
    import secrets

    real = secrets.token_bytes

    def token_bytes(nbytes=None):
        value = real(nbytes)
        if len(value) >= 16:
            _DRAWN.append(value.hex())
        return value

    secrets.token_bytes = token_bytes


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


def _environment(job) -> dict:
    """The job's environment (service account, KMS key, worker pool: network, IPs, images) as Dataflow's
    job request would carry it; a dry run returns before Beam makes it, so it is made here, from the job."""
    from apache_beam.runners.dataflow.internal import apiclient

    built = apiclient.Environment([], job.options, apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION, "", job.proto_pipeline)
    return type(built.proto).to_dict(built.proto, use_integers_for_enums=False)


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
    _record_secrets()
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
        "options": {
            k: v
            for k, v in job.options.get_all_options(drop_default=True).items()
            if isinstance(v, (str, int, float, bool, type(None)))
        },
        "job": str(job),
        "graph_text": graph_text,
        "payloads_decoded": len(payloads),
        "gcs_client_used": bool(used),
        "secrets_drawn": list(_DRAWN),
        "environment": _environment(job),
    }
    with open(args.report, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
    return 0


if __name__ == "__main__":
    # Run as a script, its folder leads sys.path: a module of tests/support must not shadow the standard library.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
    sys.exit(_driver(sys.argv[1:]))
