"""The incident's Beam pass (transforms/compliance/incident_scope.py) on a TestPipeline.

Affected lines and summed counts are checked with assert_that against the scope worked out row by row from
the generated rows (tests/support/incident.py), for each kind of scope, with and without the vault, in
batches smaller than the inputs and over several buckets, the shuffle spilled or not.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to

from pipelines.incident_scope import summarise
from pipelines.io.vault_files import read_table
from tests.support.compliance import run
from tests.support.dataflow import BUCKET, assert_clean, assert_staged_project, dry_run, transform_names
from tests.support.incident import (
    KEYSET,
    affected_csv,
    base_batches,
    base_rows,
    build_generated,
    expected,
    key_batches,
    key_rows,
)
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from transforms.compliance.incident import Scope
from transforms.compliance.incident_scope import ScopeIncident
from transforms.core.metrics import SumCounts
from transforms.core.shuffle import spill_area

LOCAL = ["--runner", "FnApiRunner"]
BASE = base_rows(400, seed=5)
KEYS = key_rows(BASE, seed=6)


def _rows(table: pa.Table) -> list[tuple]:
    return [tuple(row.values()) for row in table.to_pylist()]


def scope_run(scope: Scope, *, keys=None, listed=None, batch=37, buckets=5, spill=False, keyset_id=KEYSET):
    """Run ScopeIncident over BASE (and ``keys``, ``listed``) and assert its lines and counts."""
    lines, counts = expected(BASE, keys, key_version=scope.key_version, listed=listed)
    assert lines, "a scope that selects nothing proves little"
    with spill_area("incident-test") if spill else contextlib.nullcontext() as spill_dir:
        with BeamTestPipeline(argv=LOCAL) as p:
            inputs = {"base": p | "Base" >> beam.Create(base_batches(BASE, batch)).with_output_types(pa.Table)}
            if keys is not None:
                inputs["vault_keys"] = p | "Keys" >> beam.Create(key_batches(keys, batch)).with_output_types(pa.Table)
            if listed is not None:
                parts = [
                    pa.table({"line_id": pa.array(listed[i : i + batch], pa.string())})
                    for i in range(0, len(listed), batch)
                ]
                inputs["listed"] = p | "Listed" >> beam.Create(parts).with_output_types(pa.Table)
            out = inputs | ScopeIncident(scope, buckets, spill_dir, keyset_id)
            assert_that(out.affected | "Rows" >> beam.FlatMap(_rows), equal_to(lines), label="CheckLines")
            summed = out.tallies | "Sum" >> beam.CombineGlobally(SumCounts())
            assert_that(summed, equal_to([counts]), label="CheckCounts")


def test_a_join_key_version_without_the_vault_is_a_per_row_filter():
    scope_run(Scope("j2"), buckets=1)


@pytest.mark.parametrize("spill", [False, True])
def test_a_join_key_version_with_the_vault(spill):
    scope_run(Scope("j1", vault=True), keys=KEYS, spill=spill)


def test_a_vault_key_version_takes_the_lines_the_vault_wraps_with_it():
    # v3 is only ever in the vault's key table: every line comes from the join, none from the base's column
    scope_run(Scope("v3", vault=True), keys=KEYS)
    scope_run(Scope("v1", vault=True), keys=KEYS, buckets=3, spill=True)
    scope_run(Scope("v1"), buckets=2)  # without the vault: the base's column only


def test_a_line_list_larger_than_a_batch_is_joined_by_bucket():
    rng = random.Random(9)
    ids = [r["line_id"] for r in BASE]
    listed = rng.sample(ids, 250) + [f"NOPE{i}" for i in range(40)]
    listed += rng.sample(listed, 60)  # repeats, counted once
    rng.shuffle(listed)
    assert len(listed) > 8 * 37
    scope_run(Scope(None, vault=True), keys=KEYS, listed=listed, buckets=7, spill=True)
    scope_run(Scope(None), listed=listed, buckets=4)


def _keyset_findings(counts: dict) -> tuple[dict, list[str]]:
    return counts["vault"]["foreign_keysets"], [p for p in summarise(counts)[1] if "keyset" in p]


def test_vault_rows_of_another_keyset_are_counted_and_fail_the_balance():
    foreign = [{**k, "keyset_id": "ks_someoneelse"} if i % 50 == 0 else k for i, k in enumerate(KEYS)]
    n_foreign = sum(1 for k in foreign if k["keyset_id"] != KEYSET)
    with BeamTestPipeline(argv=LOCAL) as p:
        inputs = {
            "base": p | "Base" >> beam.Create(base_batches(BASE, 100)).with_output_types(pa.Table),
            "vault_keys": p | "Keys" >> beam.Create(key_batches(foreign, 100)).with_output_types(pa.Table),
        }
        out = inputs | ScopeIncident(Scope("j1", vault=True), 3, None, KEYSET)
        found = out.tallies | "Sum" >> beam.CombineGlobally(SumCounts()) | "Findings" >> beam.Map(_keyset_findings)
        problem = "the vault's key table was made under keyset ks_someoneelse, not under the keyset given with --keys"
        assert_that(found, equal_to([({"ks_someoneelse": n_foreign}, [problem])]), label="CheckFindings")


# -- the command on a merged base of generated lines: a long list, one worker and two ------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return build_generated(tmp_path_factory.mktemp("incident-generated"), 3000, seed=13)


def _same_report(a: dict, b: dict) -> None:
    for key in ("scope", "what", "how_many", "by_region", "unknown_line_ids", "action"):
        assert a[key] == b[key], key


@pytest.mark.e2e
def test_a_long_line_list_on_one_worker_and_on_two(generated, tmp_path):
    base = pq.read_table(generated["base"], columns=["line_id", "region"]).to_pylist()
    keys = read_table(generated["vault"], "keys")
    wrapped = dict(zip(keys.column("line_id").to_pylist(), keys.column("vault_key_version").to_pylist()))
    rng = random.Random(3)
    listed = rng.sample([r["line_id"] for r in base], 1200) + [f"Z{i:04d}" for i in range(150)]
    listed += rng.sample(listed, 100)  # repeats
    rng.shuffle(listed)
    listing = tmp_path / "leak.csv"
    listing.write_text("line_id,note\n" + "".join(f"{line},n{i}\n" for i, line in enumerate(listed)), encoding="utf-8")
    argv = ["incident", "--lines", str(listing), "--base", generated["base"], "--vault", generated["vault"]]
    argv += ["--batch-size", "256", "--shuffle-buckets", "5", "--as-of", "2026-12-01"]
    one, two = tmp_path / "one", tmp_path / "two"
    run(*argv, "--out", str(one))
    run(*argv, "--out", str(two), "--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
    rows = affected_csv(one)
    assert rows == affected_csv(two)
    affected = set(listed) & {r["line_id"] for r in base}
    assert set(rows) == affected and len(affected) == 1200
    assert {k: (v["shreddable"], v["vault_key_version"]) for k, v in rows.items()} == {
        k: ("true", wrapped[k]) if k in wrapped else ("false", "") for k in affected
    }
    reports = [json.loads((out / "incident.json").read_text(encoding="utf-8")) for out in (one, two)]
    _same_report(*reports)
    region = {r["line_id"]: r["region"] or "(none)" for r in base}
    assert reports[0]["by_region"] == dict(sorted(collections.Counter(region[k] for k in affected).items()))
    assert reports[0]["unknown_line_ids"] == {"count": 150}
    assert {k: reports[0]["scope"][k] for k in ("rows", "distinct", "duplicates")} == {
        "rows": 1450,
        "distinct": 1350,
        "duplicates": 100,
    }
    manifest = json.loads((two / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["base_lines_read"] == len(base) and manifest["counts"]["balanced"]
    assert manifest["shuffle"] == {"buckets": 5, "spill": True}


# -- the job as Dataflow would run it: built offline, nothing of the list or the keys in it ------------------------


@pytest.mark.e2e
def test_the_incident_builds_a_dataflow_job_with_no_listed_value_or_key_in_it(site):
    bucket = os.path.join(site["disk"], "demo-bucket")
    base = os.path.join(bucket, "base", "base.parquet")
    events = os.path.join(bucket, "events", "2026-11-30")
    run("merge", "--base", base, "--registrations", events, "--keys", site["keys"], "--out", f"{bucket}/merge")
    with open(os.path.join(bucket, "leak.txt"), "w", encoding="utf-8") as handle:  # a leak pasted as it came
        handle.write(f"L0000000001\n{CANARY_NAME} {CANARY_NUMBER}\n{CANARY_ADDRESS}\n")
    argv = ["--lines", f"{BUCKET}/leak.txt", "--base", f"{BUCKET}/merge/base", "--vault", f"{BUCKET}/merge/vault"]
    argv += ["--keys", site["keys"], "--shred", "--out", f"{BUCKET}/incident", "--as-of", "2026-12-01"]
    job = dry_run(site["tmp"], "incident", argv, bucket_on_disk=site["disk"])
    names = transform_names(job)
    for step in ("ReadMergedBase", "ReadLineIds", "ReadVaultKeys", "ScopeIncident", "WriteAffectedLines", "Finalize"):
        assert step in names, step
    assert {"JoinByLine", "ShuffleByDocument"} <= names  # the bucketed shuffles, not side inputs
    assert_staged_project(job)
    assert_clean(job, site)
    assert not os.path.exists(os.path.join(bucket, "incident"))  # built, never run: nothing published
