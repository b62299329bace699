"""moto's standalone server: a real S3 and AWS KMS API on a loopback port, for the tests (never a mock).

tests/conftest.py registers the fixture for every test module; a test just names it::

    def test_keys_in_a_bucket(moto_server):
        bucket = moto_server.bucket()                 # "s3://b-1a2b3c4d", new per call
        kek = moto_server.kms_key()                   # "aws-kms://arn:aws:kms:us-east-1:123456789012:key/..."
        ...                                           # AWS_ENDPOINT_URL and test credentials are set

``moto_server`` is session-scoped: one server per test process (with pytest-xdist, one per worker), on a
free port, stopped at the end of the session. While it runs, the process environment carries
``AWS_ENDPOINT_URL`` (boto3, Beam's S3 file system and the ``aws-kms://`` key-encryption keys all read it),
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``testing``) and ``AWS_DEFAULT_REGION``; subprocesses
(the ``backfill`` CLI, Beam's worker processes) inherit them. Tests that use it are end-to-end: mark them
``e2e``. Without moto's server the fixture fails (never skips): it is a test dependency in setup.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

__all__ = ["MotoServer", "moto_server", "running_moto", "REGION", "ENVIRONMENT"]

REGION = "us-east-1"
ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
_START_SECONDS = 60


class MotoServer:
    """A running moto server: its endpoint, and helpers that make buckets and KMS keys in it."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def client(self, service: str):
        """A boto3 client of ``service`` (``s3``, ``kms``) on this server."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def bucket(self, name: str | None = None) -> str:
        """Create a bucket (a new name unless given); returns ``s3://NAME``."""
        name = name or f"b-{uuid.uuid4().hex[:12]}"
        self.client("s3").create_bucket(Bucket=name)
        return f"s3://{name}"

    def kms_key(self, description: str = "test key-encryption key") -> str:
        """Create a symmetric KMS key; returns its ``aws-kms://ARN`` key-encryption-key URI."""
        meta = self.client("kms").create_key(Description=description)["KeyMetadata"]
        return "aws-kms://" + meta["Arn"]

    def disable_key(self, kek_uri: str) -> None:
        """Disable a KMS key (by its id: moto's DisableKey does not take the ARN AWS also accepts)."""
        self.client("kms").disable_key(KeyId=kek_uri.rsplit(":key/", 1)[1])

    def get_bytes(self, uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return self.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()

    def put_bytes(self, uri: str, data: bytes) -> None:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        self.client("s3").put_object(Bucket=bucket, Key=key, Body=data)

    def keys_under(self, prefix_uri: str) -> list[str]:
        """Every object under ``s3://BUCKET/PREFIX`` as a URI."""
        bucket, _, prefix = prefix_uri.removeprefix("s3://").partition("/")
        pages = self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [f"s3://{bucket}/{o['Key']}" for page in pages for o in page.get("Contents", [])]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(proc: subprocess.Popen, endpoint: str) -> None:
    deadline = time.monotonic() + _START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto's server exited at start (code {proc.returncode})")
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto's server did not answer on {endpoint} within {_START_SECONDS} s")


@contextlib.contextmanager
def running_moto():
    """Start moto's server on a free loopback port; yields a :class:`MotoServer`; stops it at the end."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **ENVIRONMENT},
    )
    try:
        _wait_until_up(proc, endpoint)
        yield MotoServer(endpoint)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def moto_server():
    """One moto server for the session, with the AWS environment pointing at it; yields a :class:`MotoServer`."""
    with pytest.MonkeyPatch.context() as env:
        try:
            with running_moto() as server:
                for name, value in {**ENVIRONMENT, "AWS_ENDPOINT_URL": server.endpoint}.items():
                    env.setenv(name, value)
                for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KMS"):
                    env.delenv(name, raising=False)
                yield server
        except RuntimeError as exc:
            pytest.fail(str(exc))  # never a skip: moto[server] is a test dependency
