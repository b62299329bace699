"""No secret in the job graph: the Dataflow job of every Beam step, built offline and dumped, holds no salt and no key.

A staged Dataflow job (its pipeline proto, the pickled DoFns, the pickled main
session) can be read by whoever reads the staging bucket. Each step's job is
built by its launcher in a child process (``tests/support/dataflow_child.py``:
DataflowRunner, ``--dry_run=True``, no network) that records every secret of 16
bytes or more the launcher drew from ``secrets``; the test then searches the
dump, decompressed payloads included, for those secrets and for the keyset's
key material, raw, hex or base64. A control pipeline that pickles a salt and a
key (``tests/support/leaky_job.py``) shows the search finds them.

The salts themselves: the scan's run salt is drawn inside the job
(``DrawRunSalt``, a side input of every classifier, so all workers agree); the
merge's and the streaming merge's are drawn per worker in ``setup()`` because
their hashes never leave the worker (proved below: the merge gives the same
output under any salt).

Adding a step that has become a Beam pipeline is one line in STEPS.
"""

from __future__ import annotations

import base64
import os
import subprocess

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from tests.support.dataflow import BUCKET, PY, ROOT, dry_run, secrets_found, transform_names
from tests.support.merge import CTX as MERGE_CTX, event, events_table
from tests.support.rows import AS_OF, CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, CTX, RUNNER, SALT, person, raw_table

# One line per Beam step: its launcher and arguments ({b}: the bucket; {keys}, {campaign}), and whether the launcher
# reads its inputs at launch (then gs://demo-bucket is a folder on disk; else the launcher may not touch the bucket).
STEPS = {
    "scan": ("scan --base {b}/base/ --out {b}/scan-g --estimated-rows 9000", False),
    "merge": ("merge --base {b}/base/ --registrations {b}/events/2026-11-30/ --keys {keys} --out {b}/merge-g", True),
    "notify": ("notify --classified {b}/scan --campaign {campaign} --wave 1 --out {b}/notify-g", True),
    "retokenize": ("keys retokenize --keys {keys} --base {b}/merged/base --vault {b}/merged/vault --out {b}/r", True),
}


@pytest.fixture(scope="module")
def merged(site):
    """The site's bucket with a merge's output (base and vault) for the re-tokenization to read."""
    bucket = os.path.join(site["disk"], "demo-bucket")
    args = ["--base", os.path.join(bucket, "base", "base.parquet"), "--keys", site["keys"], "--as-of", "2026-12-01"]
    args += ["--registrations", os.path.join(bucket, "events", "2026-11-30"), "--out", os.path.join(bucket, "merged")]
    subprocess.run([PY, "-m", "pipelines.merge", *args], check=True, capture_output=True, cwd=ROOT, timeout=600)
    return site


def _key_material(site) -> list[bytes]:
    return [base64.b64decode(m) for m in site["material"]]


@pytest.mark.e2e  # each job is built by its launcher in a child process
@pytest.mark.parametrize("step", sorted(STEPS))
def test_the_job_graph_holds_no_salt_and_no_key(step, merged):
    site = merged
    command, on_disk = STEPS[step]
    campaign = os.path.join(ROOT, "examples", "campaign.yaml")
    module, *argv = command.format(b=BUCKET, keys=site["keys"], campaign=campaign).split()
    job = dry_run(site["tmp"], module, argv, bucket_on_disk=site["disk"] if on_disk else None)
    drawn = [bytes.fromhex(h) for h in job["secrets_drawn"]]
    assert secrets_found(job, drawn + _key_material(site)) == []
    assert job["payloads_decoded"] > 10  # the pickled DoFns were opened and searched too
    with open(job["graph_text"], "rb") as f:
        graph = f.read()
    assert not [c for c in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS) if c.encode() in graph]
    if step == "scan":  # its salt exists: drawn in the job, not by the launcher
        assert {"DrawRunSalt", "RunSalt"} <= transform_names(job)
        assert not drawn


@pytest.mark.e2e
def test_the_search_finds_a_salt_and_a_key_pickled_into_a_job(site):
    """The control: a pipeline that pickles what the launcher drew is caught."""
    job = dry_run(site["tmp"], "tests.support.leaky_job", [])
    drawn = [bytes.fromhex(h) for h in job["secrets_drawn"]]
    assert len(drawn) == 2
    assert secrets_found(job, drawn) == [d.hex()[:4] for d in drawn]
    assert secrets_found(job, _key_material(site)) == []  # and it names nothing that is not there


def _shared_documents(limit: int) -> list[pa.Table]:
    """Batches of two lines sharing documents across batches: one number over the line limit, one number under
    two names, one number under one name within the limit."""
    rows = [person(line_id=f"A{i:03d}", doc_number="11010519491231002X") for i in range(limit + 2)]
    rows += [person(line_id=f"B{i:03d}", doc_number="110105194912310021", name=n) for i, n in enumerate("李王")]
    rows += [person(line_id=f"C{i:03d}", doc_number="440308199901101512", name="赵六") for i in range(limit)]
    return [raw_table(rows[i : i + 2], f"part-{i}.csv") for i in range(0, len(rows), 2)]


def _verdicts(tables) -> list[tuple]:
    return sorted((r["line_id"], tuple(r["flags"]), r["identity_status"]) for t in tables for r in t.to_pylist())


def test_the_salt_drawn_in_the_job_is_the_same_for_every_batch(policy):
    """Cross-record findings need equal hashes across batches (and so across workers): with the salt drawn in
    the job they are those of a fixed salt, line for line, and the expected ones."""
    from transforms.scan.composite import ClassifyRegistrationCompleteness

    limit = policy.doc_line_limit
    expected = {f"A{i:03d}": ("DOC_LINE_LIMIT",) for i in range(limit + 2)}
    expected |= {f"B{i:03d}": ("DOC_NAME_CONFLICT",) for i in range(2)} | {f"C{i:03d}": () for i in range(limit)}

    def check(pairs):
        (runs,) = pairs
        by_salt = dict(runs[1])
        assert by_salt["drawn"] == by_salt["fixed"]
        assert {line: flags for line, flags, _ in by_salt["drawn"]} == expected

    with BeamTestPipeline(runner=RUNNER) as p:
        batches = p | beam.Create(_shared_documents(limit))
        runs = []
        for name, salt in (("fixed", SALT), ("drawn", None)):
            out = batches | f"Scan_{name}" >> ClassifyRegistrationCompleteness(policy, AS_OF, CTX, salt, n_buckets=4)
            runs.append(
                out.classified
                | f"All_{name}" >> beam.combiners.ToList()
                | f"Verdicts_{name}" >> beam.Map(lambda t, n=name: (0, (n, _verdicts(t))))
            )
        joined = runs | beam.Flatten() | beam.GroupByKey()
        assert_that(joined, check)


def test_the_merge_gives_the_same_output_under_any_salt(policy):
    """The merge's classify hashes (its salt is drawn per worker in setup()) are never compared: two salts, the
    same merged lines, dead letters and counts."""
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.tokenize import Tokenizer
    from transforms.crypto.vault import Vault
    from transforms.merge.bucket import merge_bucket
    from transforms.merge.events import check_events, prepare_events

    keyset = Keyset.generate()
    base = raw_table(_base_rows())
    events, _ = prepare_events(events_table([event(line_id="A001"), event(event_id="E2", line_id="NOPE")]), MERGE_CTX)
    events, _ = check_events(events, MERGE_CTX)  # two ids, one copy each
    results = [
        merge_bucket(
            base,
            "raw",
            events,
            None,
            None,
            tokenizer=Tokenizer(keyset),
            vault=Vault(keyset),
            policy=policy,
            as_of=AS_OF,
            ctx=MERGE_CTX,
            salt=salt,
        )
        for salt in (SALT, "f" * 32)
    ]
    one, two = results
    assert one.base.num_rows == len(_base_rows()) - 1  # a duplicate line_id is a dead letter
    assert one.base.equals(two.base) and one.dead_letter.equals(two.dead_letter) and one.counts == two.counts
    assert one.vault_values.num_rows == two.vault_values.num_rows > 0  # sealed anew (fresh nonces), as many


def _base_rows() -> list[dict]:
    rows = [person(line_id=f"A{i:03d}", doc_number="11010519491231002X") for i in range(7)]
    rows += [person(line_id="B001", name="李四"), person(line_id="B001", name="王五", updated_at="2025-01-01")]
    return rows
