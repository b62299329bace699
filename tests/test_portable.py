"""Portability: the batch steps run on Beam's PortableRunner, the API Flink and Spark job servers speak.

Each step runs twice on the same inputs, once on the local FnApiRunner and once
on ``--runner PortableRunner --job_endpoint embed --environment_type LOOPBACK``
(the job service embedded in the launcher, the SDK harness in the same
process: the job goes through the portable job API, artifact staging and the
Fn API as it would to a Flink or Spark job server), and the outputs must be
equal: the same rows in the same tables, the same counts in the manifests.
Vault ciphertexts differ by design (fresh nonces and data keys); their line
ids and fields must not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.compact import commit_windows

pytestmark = pytest.mark.e2e  # each step runs twice in subprocesses

PY = sys.executable
AS_OF = "2026-12-01"
PORTABLE = ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "LOOPBACK"]
RUNNERS = {"local": [], "portable": PORTABLE}


def run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, "-m", *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def table(folder: str, drop: tuple[str, ...] = ()) -> pa.Table:
    """Every Parquet file under ``folder`` as one table, rows in a canonical order."""
    files = sorted(
        os.path.join(root, name) for root, _, names in os.walk(folder) for name in names if name.endswith(".parquet")
    )
    t = pa.concat_tables([pq.read_table(f) for f in files]).drop_columns(list(drop))
    keys = [(name, "ascending") for name in t.column_names if not pa.types.is_nested(t.schema.field(name).type)]
    return t.sort_by(keys)


def manifest(folder: str) -> dict:
    with open(os.path.join(folder, "manifest.json")) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """A generated base, its scan on both runners, registrations for a third of the lines needing one."""
    root = tmp_path_factory.mktemp("portable")
    base = str(root / "base.parquet")
    run("dev.generate", "--lines", "3000", "--seed", "11", "--out", base)
    keys = str(root / "keys" / "keyset.json")
    run("pipelines.keys", "init", "--keys", keys)
    scans = {}
    for name, flags in RUNNERS.items():
        scans[name] = str(root / f"scan-{name}")
        run("pipelines.scan", "--base", base, "--out", scans[name], "--as-of", AS_OF, *flags)
    events = str(root / "events.jsonl")
    run("dev.simulate", "--classified", scans["local"], "--out", events, "--share", "0.33", "--as-of", AS_OF)
    return {"root": root, "base": base, "keys": keys, "scans": scans, "events": events}


def test_the_scan_is_the_same_on_the_portable_runner(campaign):
    local, portable = (campaign["scans"][name] for name in ("local", "portable"))
    assert table(os.path.join(portable, "classified")).equals(table(os.path.join(local, "classified")))
    assert manifest(portable)["counts"] == manifest(local)["counts"]
    assert manifest(portable)["runner"] == "PortableRunner" and manifest(local)["runner"] == "in-process"
    assert manifest(local)["counts"]["rows_in"] == 3000 and manifest(local)["counts"]["balanced"]


def _merge(campaign, out: str, flags: list[str], events: str, *inputs: str, as_of: str = AS_OF) -> str:
    run("pipelines.merge", *inputs, "--registrations", events, "--keys", campaign["keys"], "--out", out,
        "--as-of", as_of, *flags)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def merges(campaign):
    """The first merge of the raw base on each runner, in 3 line buckets."""
    root, base = campaign["root"], ("--base", campaign["base"], "--shuffle-buckets", "3")
    return {
        name: _merge(campaign, str(root / f"merge-{name}"), flags, campaign["events"], *base)
        for name, flags in RUNNERS.items()
    }


def test_the_merge_is_the_same_on_the_portable_runner(campaign, merges):
    local, portable = merges["local"], merges["portable"]
    assert table(os.path.join(portable, "base")).equals(table(os.path.join(local, "base")))
    assert manifest(portable)["counts"] == manifest(local)["counts"]
    applied = manifest(local)["counts"]["events"]["applied"]
    with open(campaign["events"]) as handle:
        assert 0 < applied <= sum(1 for _ in handle)
    sealed = ("line_id", "field")
    values = {name: table(os.path.join(out, "vault", "values")).select(list(sealed)) for name, out in merges.items()}
    assert values["portable"].equals(values["local"]) and values["local"].num_rows > 0


def test_the_next_days_merge_reads_its_files_by_bucket_on_the_portable_runner(campaign, merges):
    """The portable job's merged base and vault are cut by line bucket (one attempt of each bucket published):
    the next day's job reads them without a shuffle, and merges as the in-process merge does."""
    root, later = campaign["root"], "2026-12-02"
    events = str(root / "events-2.jsonl")
    run("dev.simulate", "--scan", campaign["scans"]["local"], "--out", events, "--share", "0.2", "--seed", "5",
        "--as-of", later)  # fmt: skip
    outs = {
        name: _merge(campaign, str(root / f"merge-2-{name}"), flags, events, "--merged", merges[name], as_of=later)
        for name, flags in RUNNERS.items()
    }
    for name in RUNNERS:
        assert manifest(outs[name])["shuffle"] == {
            "buckets": 3,
            "spill": name == "local",
            "read_by_bucket": ["base", "vault_keys", "vault_values"],
        }, name
    local, portable = outs["local"], outs["portable"]
    assert table(os.path.join(portable, "base")).equals(table(os.path.join(local, "base")))
    assert manifest(portable)["counts"] == manifest(local)["counts"]
    assert manifest(local)["counts"]["events"]["applied"] > 0 and manifest(local)["counts"]["vault"]["keys_copied"] > 0
    sealed = ("line_id", "field")
    values = {name: table(os.path.join(out, "vault", "values")).select(list(sealed)) for name, out in outs.items()}
    assert values["portable"].equals(values["local"])


def test_compact_is_the_same_on_the_portable_runner(campaign):
    with open(campaign["events"]) as handle:
        events = [json.loads(line) for line in handle]
    deltas = str(campaign["root"] / "deltas")
    commit_windows([campaign["base"]], [events[0::2], events[1::2]], deltas, campaign["keys"])
    outs = {}
    for name, flags in RUNNERS.items():
        outs[name] = str(campaign["root"] / f"compact-{name}")
        run(
            "pipelines.compact",
            *("--base", campaign["base"], "--deltas", deltas, "--keys", campaign["keys"]),
            *("--out", outs[name], "--as-of", AS_OF, *flags),
        )
    local, portable = outs["local"], outs["portable"]
    assert table(os.path.join(portable, "base")).equals(table(os.path.join(local, "base")))
    assert manifest(portable)["counts"] == manifest(local)["counts"]
    assert manifest(local)["counts"]["base"]["rows_in"] == 3000
