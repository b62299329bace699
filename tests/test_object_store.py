"""The batch loop with everything in an object store and the keyset wrapped by a KMS, on two workers.

moto's standalone server (tests/support/moto_server.py: a real S3 and AWS KMS
API on a loopback port) holds the base, the registrations, the streaming
windows, every output and the wrapped keyset; its KMS holds the key-encryption
key. Each step runs as a user runs it, in a subprocess, with two worker
processes (``--direct_num_workers 2 --direct_running_mode multi_processing``):
the workers read the keyset from its ``s3://`` URI and unwrap it themselves.

Each step's result is compared with the same step run on local files: the
same rows, the same counts; each published output has its manifest and
``_SUCCESS`` and no staged ``OUT.tmp-*`` objects are left behind.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.compact import commit_windows

pytestmark = pytest.mark.e2e  # each step runs in subprocesses against moto's server

PY = sys.executable
AS_OF = "2026-12-01"
TWO_WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
LINES = 3000


def backfill(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, "-m", *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def upload(server, path: str, uri: str) -> str:
    """A local file, or every file under a local folder, put at ``uri``; returns ``uri``."""
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            server.put_bytes(uri, handle.read())
        return uri
    for root, _, names in os.walk(path):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), path)
            upload(server, os.path.join(root, name), f"{uri}/{rel}")
    return uri


def s3_table(server, folder: str) -> pa.Table:
    parts = sorted(u for u in server.keys_under(folder + "/") if u.endswith(".parquet"))
    assert parts, f"no Parquet under {folder}"
    return _canonical(pa.concat_tables([pq.read_table(io.BytesIO(server.get_bytes(u))) for u in parts]))


def local_table(folder: str) -> pa.Table:
    files = sorted(os.path.join(r, n) for r, _, ns in os.walk(folder) for n in ns if n.endswith(".parquet"))
    return _canonical(pa.concat_tables([pq.read_table(f) for f in files]))


def _canonical(t: pa.Table) -> pa.Table:
    return t.sort_by([(n, "ascending") for n in t.column_names if not pa.types.is_nested(t.schema.field(n).type)])


def s3_manifest(server, out: str) -> dict:
    """The published output's manifest; its _SUCCESS names the same run and nothing staged is left."""
    manifest = json.loads(server.get_bytes(f"{out}/manifest.json"))
    assert server.get_bytes(f"{out}/_SUCCESS").decode().strip() == manifest["run_id"]
    parent = out.rsplit("/", 1)[0]
    assert not [u for u in server.keys_under(parent + "/") if ".tmp-" in u], "a staged folder was left"
    return manifest


def local_manifest(out: str) -> dict:
    with open(os.path.join(out, "manifest.json")) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def store(moto_server, tmp_path_factory):
    """A bucket with the base and a keyset wrapped by a KMS key; the same base on local disk."""
    local = tmp_path_factory.mktemp("object-store")
    bucket, kek = moto_server.bucket(), moto_server.kms_key()
    base = str(local / "base.parquet")
    backfill("dev.generate", "--lines", str(LINES), "--seed", "5", "--out", base)
    keys = f"{bucket}/secure/keyset.json"
    backfill("pipelines.keys", "init", "--keys", keys, "--kek", kek)
    return {
        "server": moto_server,
        "bucket": bucket,
        "local": local,
        "keys": keys,
        "base": base,
        "s3_base": upload(moto_server, base, f"{bucket}/base/base.parquet"),
    }


@pytest.fixture(scope="module")
def scanned(store):
    server, bucket, local = store["server"], store["bucket"], store["local"]
    backfill("pipelines.scan", "--base", store["s3_base"], "--out", f"{bucket}/scan", "--as-of", AS_OF, *TWO_WORKERS)
    backfill("pipelines.scan", "--base", store["base"], "--out", str(local / "scan"), "--as-of", AS_OF)
    events = str(local / "events.jsonl")
    backfill("dev.simulate", "--classified", str(local / "scan"), "--out", events, "--share", "0.4", "--as-of", AS_OF)
    return {"events": events, "s3_events": upload(server, events, f"{bucket}/events/2026-11-30/events.jsonl")}


def test_scan_in_a_bucket_on_two_workers(store, scanned):
    server, bucket, local = store["server"], store["bucket"], store["local"]
    manifest = s3_manifest(server, f"{bucket}/scan")
    assert manifest["counts"]["rows_in"] == LINES and manifest["counts"]["balanced"]
    assert manifest["counts"] == local_manifest(str(local / "scan"))["counts"]
    assert s3_table(server, f"{bucket}/scan/classified").equals(local_table(str(local / "scan" / "classified")))


@pytest.fixture(scope="module")
def merged(store, scanned):
    bucket, local = store["bucket"], store["local"]
    common = ["--keys", store["keys"], "--as-of", AS_OF]
    backfill(
        "pipelines.merge",
        *("--base", store["s3_base"], "--registrations", scanned["s3_events"], "--out", f"{bucket}/merge"),
        *common,
        *TWO_WORKERS,
    )
    backfill(
        "pipelines.merge",
        *("--base", store["base"], "--registrations", scanned["events"], "--out", str(local / "merge")),
        *common,
    )
    return {"s3": f"{bucket}/merge", "local": str(local / "merge")}


def test_merge_in_a_bucket_with_a_kms_wrapped_keyset_on_two_workers(store, merged, scanned):
    server = store["server"]
    manifest = s3_manifest(server, merged["s3"])
    counts = manifest["counts"]
    assert counts["base"]["balanced"] and counts["events"]["balanced"]
    assert counts["base"]["rows_in"] == LINES
    with open(scanned["events"]) as handle:
        assert counts["events"]["rows_in"] == sum(1 for _ in handle) and counts["events"]["applied"] > 0
    assert counts == local_manifest(merged["local"])["counts"]
    # tokens are keyed by the one keyset: the merged bases are equal row for row
    assert s3_table(server, f"{merged['s3']}/base").equals(local_table(os.path.join(merged["local"], "base")))
    sealed = s3_table(server, f"{merged['s3']}/vault/values").select(["line_id", "field"])
    assert sealed.equals(local_table(os.path.join(merged["local"], "vault", "values")).select(["line_id", "field"]))


def test_compact_in_a_bucket_on_two_workers(store, scanned):
    server, bucket, local = store["server"], store["bucket"], store["local"]
    with open(scanned["events"]) as handle:
        events = [json.loads(line) for line in handle]
    deltas = str(local / "deltas")
    commit_windows([store["base"]], [events[0::2], events[1::2]], deltas, store["keys"])
    s3_deltas = upload(server, deltas, f"{bucket}/stream/deltas")
    common = ["--keys", store["keys"], "--as-of", AS_OF]
    backfill(
        "pipelines.compact",
        *("--base", store["s3_base"], "--deltas", s3_deltas, "--out", f"{bucket}/compact"),
        *common,
        *TWO_WORKERS,
    )
    backfill("pipelines.compact", "--base", store["base"], "--deltas", deltas, "--out", str(local / "compact"), *common)
    manifest = s3_manifest(server, f"{bucket}/compact")
    assert manifest["counts"] == local_manifest(str(local / "compact"))["counts"]
    assert manifest["counts"]["base"]["rows_in"] == LINES
    assert s3_table(server, f"{bucket}/compact/base").equals(local_table(str(local / "compact" / "base")))


def test_retention_in_a_bucket_on_two_workers(store, merged):
    server, bucket = store["server"], store["bucket"]
    common = ["--keys", store["keys"], "--as-of", "2032-12-01", "--future-as-of"]  # the base's terminated lines are due
    backfill(
        "pipelines.retention",
        *("--base", f"{merged['s3']}/base", "--vault", f"{merged['s3']}/vault", "--out", f"{bucket}/retention"),
        *common,
        *TWO_WORKERS,
    )
    manifest = s3_manifest(server, f"{bucket}/retention")
    counts = manifest["counts"]
    base = s3_table(server, f"{merged['s3']}/base")
    terminated = sum(1 for s in base.column("status").to_pylist() if s == "TERMINATED")
    assert counts["due"] == terminated > 0
    purged = s3_table(server, f"{bucket}/retention/base")
    assert purged.num_rows == base.num_rows == LINES - local_manifest(merged["local"])["counts"]["base"]["dead_letters"]
    due = {
        lid
        for lid, s in zip(base.column("line_id").to_pylist(), base.column("status").to_pylist())
        if s == "TERMINATED"
    }
    kept_values = s3_table(server, f"{bucket}/retention/vault/values")
    assert not due & set(kept_values.column("line_id").to_pylist())  # no value of a purged line is left
    log = manifest["outputs"]["shred_log"]  # the keyset's audit folder of this vault: an object, never a local path
    assert log.startswith(store["keys"].rsplit("/", 1)[0] + "/audit/vaults/"), log
    records = [json.loads(x) for x in server.get_bytes(log).decode("utf-8").splitlines() if x.strip()]
    purged_ids = set(s3_table(server, f"{bucket}/retention/purged").column("line_id").to_pylist())
    assert purged_ids and purged_ids <= due
    assert sorted(r["line_id"] for r in records if r.get("event") == "shred") == sorted(purged_ids)
    assert not os.path.exists("s3:")  # the commands ran in this folder


def test_incident_in_a_bucket_on_two_workers(store, merged):
    server, bucket = store["server"], store["bucket"]
    out = f"{bucket}/incident"
    backfill(
        "pipelines.incident",
        *("--key-version", "j1", "--base", f"{merged['s3']}/base", "--vault", f"{merged['s3']}/vault"),
        *("--out", out, *TWO_WORKERS),
    )
    manifest = s3_manifest(server, out)
    base = s3_table(server, f"{merged['s3']}/base")
    tokenized = sum(1 for v in base.column("join_key_version").to_pylist() if v == "j1")
    assert manifest["counts"]["affected"] == tokenized > 0
    rows = sum(
        server.get_bytes(u).decode("utf-8").count("\n") - 1
        for u in server.keys_under(f"{out}/affected_lines/")
        if u.endswith(".csv")
    )
    assert rows == tokenized


def test_a_scan_run_again_into_its_bucket_output_replaces_it_whole(store, scanned):
    server, bucket = store["server"], store["bucket"]
    out = f"{bucket}/scan"
    before = s3_manifest(server, out)
    files_before = sorted(u for u in server.keys_under(out + "/") if not u.endswith((".json", "_SUCCESS")))
    backfill("pipelines.scan", "--base", store["s3_base"], "--out", out, "--as-of", AS_OF, "--batch-size", "700")
    after = s3_manifest(server, out)
    assert after["run_id"] != before["run_id"] and after["counts"] == before["counts"]
    classified = s3_table(server, f"{out}/classified")
    assert classified.num_rows == before["counts"]["classified"]  # the earlier run's files are gone, not doubled
    assert len(set(classified.column("line_id").to_pylist())) == classified.num_rows
    assert files_before  # the first run's files existed under the same names


def test_a_daily_merge_in_a_bucket_reads_yesterdays_files_by_line_bucket(store, scanned):
    """The in-process merge (two worker processes) into the bucket, then the next day's over its output: the
    previous base and vault are read from the bucket by line bucket (their footers' marks), and the result is
    the same merge's through the shuffle (``--shuffle-buckets``)."""
    server, bucket = store["server"], store["bucket"]
    common = ["--keys", store["keys"], "--registrations", scanned["s3_events"], "--workers", "2"]
    first = f"{bucket}/daily/merge-1"
    backfill("pipelines.merge", "--base", store["s3_base"], "--out", first, "--shuffle-buckets", "3", *common,
             "--as-of", AS_OF)  # fmt: skip
    runs = {}
    for name, extra in (("by_bucket", []), ("shuffled", ["--shuffle-buckets", "3"])):
        runs[name] = f"{bucket}/daily/merge-2-{name}"
        backfill("pipelines.merge", "--merged", first, "--out", runs[name], *common, "--as-of", "2026-12-02", *extra)
    by_bucket, shuffled = (s3_manifest(server, runs[name]) for name in ("by_bucket", "shuffled"))
    assert by_bucket["shuffle"]["read_by_bucket"] == ["base", "vault_keys", "vault_values"]
    assert shuffled["shuffle"]["read_by_bucket"] == [] and by_bucket["counts"] == shuffled["counts"]
    lines = s3_manifest(server, first)["counts"]["base"]["lines_out"]
    assert by_bucket["counts"]["vault"]["keys_copied"] > 0 and by_bucket["counts"]["base"]["rows_in"] == lines
    assert s3_table(server, f"{runs['by_bucket']}/base").equals(s3_table(server, f"{runs['shuffled']}/base"))
    for table in ("keys", "values"):
        got = s3_table(server, f"{runs['by_bucket']}/vault/{table}").select(["line_id"])
        assert got.equals(s3_table(server, f"{runs['shuffled']}/vault/{table}").select(["line_id"]))


def test_a_daily_beam_merge_in_a_bucket_reads_the_beam_jobs_files_by_line_bucket(store, scanned):
    """The Beam job on two workers writes its base and vault into the bucket cut by line bucket (one attempt of
    each bucket moved into place, no attempt left behind); the next day's Beam job reads them by bucket, and
    writes what the same job writes through the shuffle."""
    server, bucket = store["server"], store["bucket"]
    common = ["--keys", store["keys"], "--registrations", scanned["s3_events"], *TWO_WORKERS]
    first = f"{bucket}/daily/beam-1"
    backfill("pipelines.merge", "--base", store["s3_base"], "--out", first, "--shuffle-buckets", "3", *common,
             "--as-of", AS_OF)  # fmt: skip
    assert s3_manifest(server, first)["counts"]["base"]["balanced"]
    assert not [u for u in server.keys_under(first + "/") if "_attempts" in u]
    runs = {}
    for name, extra in (("by_bucket", []), ("shuffled", ["--shuffle-buckets", "3"])):
        runs[name] = f"{bucket}/daily/beam-2-{name}"
        backfill("pipelines.merge", "--merged", first, "--out", runs[name], *common, "--as-of", "2026-12-02", *extra)
    by_bucket, shuffled = (s3_manifest(server, runs[name]) for name in ("by_bucket", "shuffled"))
    assert by_bucket["shuffle"]["read_by_bucket"] == ["base", "vault_keys", "vault_values"]
    assert by_bucket["shuffle"]["buckets"] == 3 and by_bucket["runner"] == "FnApiRunner"
    assert shuffled["shuffle"]["read_by_bucket"] == [] and by_bucket["counts"] == shuffled["counts"]
    assert by_bucket["counts"]["vault"]["keys_copied"] > 0 and by_bucket["counts"]["base"]["balanced"]
    assert s3_table(server, f"{runs['by_bucket']}/base").equals(s3_table(server, f"{runs['shuffled']}/base"))
    for table in ("keys", "values"):
        got = s3_table(server, f"{runs['by_bucket']}/vault/{table}").select(["line_id"])
        assert got.equals(s3_table(server, f"{runs['shuffled']}/vault/{table}").select(["line_id"]))


def test_publishing_by_bucket_in_a_bucket_moves_one_attempt_each_and_never_publishes_the_others(moto_server):
    """In the launcher's process, against the store: ``publish_attempts`` moves each bucket's chosen attempt into
    place (again after a try cut short), and the staged output's switch-in leaves out an attempts' folder that a
    straggling retry wrote after that (its sealed copy of a bucket must not land in OUT)."""
    from apache_beam.io.filesystems import FileSystems

    from pipelines.common import beam_options
    from pipelines.io.bucket_sink import publish_attempts
    from pipelines.io.line_buckets import bucket_paths, file_mark, write_bucket
    from pipelines.io.publish import commit_remote
    from transforms.merge.bucket import MERGED_SCHEMA

    FileSystems.set_options(beam_options([]))  # the store's endpoint, from AWS_ENDPOINT_URL
    bucket = moto_server.bucket()
    stage, out, n = f"{bucket}/.tmp-merge-r1", f"{bucket}/merge", 2
    attempts = [(b, f"{stage}/_attempts/try-{b}") for b in range(n)]
    for b, folder in attempts:
        write_bucket(folder, b, n, MERGED_SCHEMA.empty_table(), None, None)
    first = bucket_paths(attempts[0][1], 0, n)["vault_values"]
    FileSystems.rename([first], [bucket_paths(stage, 0, n)["vault_values"]])  # a try cut short
    assert publish_attempts(attempts, stage, n) == n
    assert [file_mark(bucket_paths(stage, b, n)["vault_keys"]) for b in range(n)] == [(b, n) for b in range(n)]
    assert not [u for u in moto_server.keys_under(stage + "/") if "/_attempts/" in u]
    write_bucket(f"{stage}/_attempts/late", 1, n, MERGED_SCHEMA.empty_table(), None, None)  # a straggler
    with FileSystems.create(f"{stage}/manifest.json") as handle:
        handle.write(b"{}")
    commit_remote(out, stage, "merge", "r1", ["base", "vault", "dead_letter", "manifest.json"])
    published = moto_server.keys_under(out + "/")
    assert f"{out}/base/part-00001-of-00002.parquet" in published and f"{out}/manifest.json" in published
    assert not [u for u in published if "_attempts" in u] and not moto_server.keys_under(stage + "/")
