"""Keysets at a URI, wrapped by a KMS: ``backfill keys`` and a merge against moto's standalone server (a real
S3 and AWS KMS API on a loopback port, tests/support/moto_server.py). Cloud KMS: tests/test_kek_cloud_kms.py.

moto's KMS does not refuse a disabled key on Decrypt (AWS answers DisabledException): the refusal is shown
where moto gives it (DescribeKey's state before a keyset is written, a Decrypt under another key).
"""

from __future__ import annotations

import base64
import bz2
import contextlib
import csv
import json
import os
import re
import zlib
import subprocess
import sys

import pytest

from pipelines import keys as keys_cli
from schemas import field_names
from tests.support.rows import CANARY_NAME, CANARY_NUMBER, person
from transforms.crypto import keyset_store
from transforms.crypto.kek import AwsKmsKek
from transforms.crypto.keyset import Keyset, KeysetError
from transforms.crypto.keyset_sealed import forget_all

pytestmark = pytest.mark.e2e  # moto's server; a merge with worker processes

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("backfill keys: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def material(keyset: Keyset) -> list[bytes]:
    return list(keyset._Keyset__material.values())  # the bytes that must never be readable


def forms(raws: list[bytes]) -> list[bytes]:
    out = []
    for raw in raws:
        out += [raw, base64.b64encode(raw), raw.hex().encode(), base64.b64encode(raw)[:16]]
    return out


def unpacked(blob: bytes) -> bytes:
    """A serialized pipeline with every base64 run in it decoded (and decompressed where it is bz2 or zlib):
    Beam ships a DoFn as base64 of its compressed pickle."""
    parts = [blob]
    for run in re.findall(rb"[A-Za-z0-9+/]{40,}={0,2}", blob):
        for start in range(4):  # a length byte before the payload may look like base64 too
            try:
                raw = base64.b64decode(run[start:] + b"=" * (-len(run[start:]) % 4))
            except ValueError:
                continue
            parts.append(raw)
            with contextlib.suppress(zlib.error):
                parts.append(zlib.decompress(raw))
            with contextlib.suppress(OSError, ValueError):
                parts.append(bz2.decompress(raw))
    return b"\0".join(parts)


@pytest.fixture
def site(moto_server, capsys):
    """A keyset in a fresh bucket, wrapped by a fresh KMS key."""
    bucket, kek = moto_server.bucket(), moto_server.kms_key()
    keys = f"{bucket}/secure/keys.json"
    assert keys_cli.main(["init", "--keys", keys, "--kek", kek]) == 0
    assert f"at {keys} (wrapped by {kek})" in capsys.readouterr().out
    return {"bucket": bucket, "kek": kek, "keys": keys}


def test_init_rotate_and_show_a_keyset_in_a_bucket_wrapped_by_kms(site, moto_server, capsys):
    keys = site["keys"]
    stored = moto_server.keys_under(site["bucket"])
    prefix = site["bucket"] + "/secure/"
    assert sorted(stored) == [prefix + "audit/keys.jsonl", prefix + "keys.json", prefix + "keys.registry.json"]
    outer = json.loads(moto_server.get_bytes(keys))
    assert outer["format"] == "subscriber-backfill/wrapped-keyset/1" and outer["kek"] == site["kek"]
    assert keys_cli.main(["rotate", "--keys", keys, "--join"]) == 0  # only --keys: the keyset names its KEK
    capsys.readouterr()
    assert keys_cli.main(["show", "--keys", keys, "--json", "--kek", site["kek"]]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kms_key_uri"] == site["kek"]
    assert [(k["version"], k["state"]) for k in shown["keys"]] == [
        ("j1", "enabled"),
        ("v1", "primary"),
        ("a1", "primary"),
        ("j2", "primary"),
    ]
    keyset = Keyset.load(keys)
    every_object = b"".join(moto_server.get_bytes(u) for u in moto_server.keys_under(site["bucket"]))
    assert not [f for f in forms(material(keyset)) if f in every_object]
    log = [json.loads(x) for x in moto_server.get_bytes(prefix + "audit/keys.jsonl").splitlines()]
    assert [r["event"] for r in log] == ["keys_init", "keys_rotate_join"] and [r["seq"] for r in log] == [1, 2]
    assert not moto_server.keys_under(keys + ".lock")  # the lock object is gone after each command


def test_loading_costs_one_kms_call_per_process_and_keyset_version(site, moto_server):
    class Counting:
        """The real boto3 client of moto's KMS, counting the calls made through it."""

        def __init__(self, client):
            self.client, self.calls = client, []

        def __getattr__(self, name):
            def call(*args, **kwargs):
                self.calls.append(name)
                return getattr(self.client, name)(*args, **kwargs)

            return call

    client = Counting(moto_server.client("kms"))
    kek = AwsKmsKek(site["kek"], client=client)
    forget_all()  # as a fresh worker process
    first = Keyset.load(site["keys"], kek=kek)
    for _ in range(5):  # five DoFns' setup() in the same process
        Keyset.load(site["keys"], kek=kek)
    assert client.calls == ["decrypt"]
    first.rotate_vault()
    first.save(site["keys"])  # new bytes: opened again, once
    Keyset.load(site["keys"], kek=kek)
    Keyset.load(site["keys"], kek=kek)
    assert client.calls == ["decrypt", "describe_key", "encrypt", "decrypt"]  # the save: the key's state, a wrap


def test_a_disabled_kms_key_is_refused_in_one_line_and_nothing_is_written(site, moto_server, capsys):
    other = moto_server.kms_key()
    moto_server.disable_key(other)
    bucket = moto_server.bucket()
    assert keys_cli.main(["init", "--keys", f"{bucket}/keys.json", "--kek", other]) == 1
    line = one_line(capsys)
    assert "key state Disabled" in line and other in line
    assert moto_server.keys_under(bucket) == []
    before = moto_server.get_bytes(site["keys"])
    moto_server.disable_key(site["kek"])
    assert keys_cli.main(["rotate", "--keys", site["keys"], "--join"]) == 1
    assert "key state Disabled" in one_line(capsys)
    assert moto_server.get_bytes(site["keys"]) == before  # nothing was written
    assert not moto_server.keys_under(site["keys"] + ".lock")


def test_a_keyset_wrapped_by_another_kek_is_refused_in_one_line(site, moto_server, capsys):
    other = moto_server.kms_key()
    assert keys_cli.main(["show", "--keys", site["keys"], "--kek", other]) == 1
    assert one_line(capsys) == (
        f"backfill keys: error: keyset {site['keys']} is wrapped by {site['kek']}, not by {other}; nothing was done"
    )
    outer = json.loads(moto_server.get_bytes(site["keys"]))
    moto_server.put_bytes(site["keys"], json.dumps({**outer, "kek": other}).encode())  # names another key
    forget_all()
    assert keys_cli.main(["show", "--keys", site["keys"]]) == 1
    line = one_line(capsys)
    assert f"the KMS could not decrypt with key-encryption key {other}" in line
    assert outer["wrapped_dek"] not in line


def test_unreadable_keyset_uris_are_one_line_errors(moto_server, capsys):
    bucket = moto_server.bucket()
    cases = {
        f"{bucket}/nothing-here.json": "not found",
        "s3://no-such-bucket-7a1c/keys.json": "NoSuchBucket",
    }
    for uri, why in cases.items():
        assert keys_cli.main(["show", "--keys", uri]) == 1
        line = one_line(capsys)
        assert uri in line and why in line
    moto_server.put_bytes(f"{bucket}/clear.json", b'{"format": "subscriber-backfill/keyset/1"}')
    with pytest.raises(KeysetError, match="not wrapped by a key-encryption key"):
        Keyset.load(f"{bucket}/clear.json")


def test_no_credentials_and_an_unreachable_kms_are_one_line_errors(site, monkeypatch, capsys):
    forget_all()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")  # nothing listens there
    assert keys_cli.main(["show", "--keys", site["keys"]]) == 1
    assert "the KMS cannot be reached" in one_line(capsys)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert keys_cli.main(["show", "--keys", site["keys"]]) == 1
    line = one_line(capsys)
    assert "no credentials" in line and site["keys"] in line


def test_a_held_lock_object_stops_a_change_in_one_line(site, moto_server, monkeypatch, capsys):
    monkeypatch.setattr(keyset_store, "LOCK_WAIT", 1.0)
    lock = site["keys"] + ".lock"
    holder = {"host": "airflow-7", "pid": 4242, "at": "2026-12-01T08:00:00Z", "token": "x"}
    moto_server.put_bytes(lock, json.dumps(holder).encode())
    before = moto_server.get_bytes(site["keys"])
    assert keys_cli.main(["rotate", "--keys", site["keys"], "--join"]) == 1
    line = one_line(capsys)
    assert "locked by airflow-7 (pid 4242) since 2026-12-01T08:00:00Z" in line and f"delete {lock}" in line
    assert moto_server.get_bytes(site["keys"]) == before and moto_server.get_bytes(lock) == json.dumps(holder).encode()
    moto_server.client("s3").delete_object(Bucket=lock[5:].split("/")[0], Key=lock[5:].split("/", 1)[1])
    assert keys_cli.main(["rotate", "--keys", site["keys"], "--join"]) == 0


def test_launchers_hand_the_s3_endpoint_of_their_environment_to_the_workers(moto_server):
    from apache_beam.options.pipeline_options import S3Options

    from pipelines.common import beam_options

    assert beam_options([]).view_as(S3Options).s3_endpoint_url == moto_server.endpoint
    given = beam_options(["--s3_endpoint_url=http://127.0.0.1:9"]).view_as(S3Options)
    assert given.s3_endpoint_url == "http://127.0.0.1:9"  # a flag given wins


# -- a merge whose workers unwrap the keyset ------------------------------------------------------------------
def _write_inputs(root) -> tuple[str, str, int, list[str]]:
    """A raw base of 60 lines (every fourth without a name) and a registration for each of those."""
    rows = [person(line_id=f"L{i:03d}", name=None if i % 4 == 0 else "张三") for i in range(60)]
    rows[1] = person(line_id="L001", name=CANARY_NAME, doc_number=CANARY_NUMBER)
    base, events = os.path.join(root, "base.csv"), os.path.join(root, "events.jsonl")
    names = field_names("subscriber_base")
    with open(base, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows([["" if r.get(n) is None else r[n] for n in names] for r in rows])
    registered = [r["line_id"] for r in rows if r["name"] is None]
    with open(events, "w", encoding="utf-8") as handle:
        for i, line_id in enumerate(registered):
            event = {
                "event_id": f"E{i:03d}",
                "line_id": line_id,
                "doc_type": "身份证",
                "doc_number": CANARY_NUMBER,
                "name": CANARY_NAME,
                "address": "北京市海淀区金丝雀路99号",
                "channel": "STORE",
                "agent_id": "AG00777",
                "verified_by": "ID_CARD_READER",
                "registered_at": "2026-11-20T10:00:00",
            }
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")
    return base, events, len(rows), registered


def test_a_merge_with_the_keyset_in_a_bucket_unwraps_it_in_worker_processes(site, tmp_path):
    from pipelines.io.vault_files import read_vault
    from transforms.crypto.vault import Vault

    base, events, n_lines, registered = _write_inputs(str(tmp_path))
    out = str(tmp_path / "out")
    argv = [BACKFILL, "merge", "--base", base, "--registrations", events, "--keys", site["keys"], "--out", out]
    argv += ["--as-of", "2026-11-30", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)  # inherits moto's AWS environment
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    keyset = Keyset.load(site["keys"])
    assert manifest["keys"]["keyset_id"] == keyset.keyset_id
    assert manifest["counts"]["base"]["lines_out"] == n_lines
    keys_table, values = read_vault(os.path.join(out, "vault"))
    opened = Vault(keyset).open_many(keys_table, values).to_pylist()  # sealed by the workers' keyset
    names = {r["line_id"]: r["value"] for r in opened if r["field"] == "name"}
    assert len(names) == n_lines and set(keys_table.column("line_id").to_pylist()) == set(names)
    assert {k for k, v in names.items() if v == CANARY_NAME} == set(registered) | {"L001"}
    registry = json.loads(keyset_store.read_bytes(site["keys"].replace("keys.json", "keys.registry.json"), "registry"))
    assert os.path.realpath(os.path.join(out, "vault")) in registry["vaults"]
    secrets_ = forms(material(keyset))
    for folder, _, files in os.walk(out):
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:
                data = handle.read()
            assert CANARY_NAME.encode() not in data or "vault" in folder
            assert not [f for f in secrets_ if f in data]
    assert not [f for f in secrets_ if f.decode("latin-1") in proc.stdout + proc.stderr]


def test_the_merge_graph_holds_no_key_material(site, tmp_path):
    import apache_beam as beam

    from pipelines.merge import _prepare, build_pipeline
    from transforms.core.deadletter import DeadLetterContext

    base, events, _, _ = _write_inputs(str(tmp_path))
    job = _prepare(["--base", base, "--registrations", events, "--keys", site["keys"], "--out", str(tmp_path / "o")])
    p = beam.Pipeline(options=job.options)
    build_pipeline(
        p,
        base_splits=job.base_splits,
        kind=job.kind,
        event_splits=job.event_splits,
        vault=job.vault,
        policy=job.policy,
        as_of=job.as_of,
        ctx=DeadLetterContext("merge", job.run_id, job.started),
        keys_path=site["keys"],
        n_buckets=job.n_buckets,
        spill_dir=None,
        encoding="utf-8",
        batch_size=1000,
    )
    graph = unpacked(p.to_runner_api().SerializeToString())  # the job, every DoFn as Beam pickles it
    secret = material(job.keyset)
    assert site["keys"].encode() in graph  # the DoFns carry the keyset's URI ...
    assert not [f for f in forms(secret) if f in graph]  # ... and nothing of its material
    control = beam.Pipeline(options=job.options)  # the search finds material a DoFn would carry
    _ = control | beam.Create([0]) | beam.Map(lambda x, k=secret[0]: x)
    assert secret[0] in unpacked(control.to_runner_api().SerializeToString())
