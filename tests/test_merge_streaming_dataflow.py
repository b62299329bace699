"""`backfill merge --streaming --runner DataflowRunner` builds its streaming job offline, as
tests/test_dataflow_dry_run.py does for the batch pipelines: ReadFromPubSub without id_label (a copy of an event
is judged by its body, never dropped for its event_id attribute), the base as a bounded read in the same job
(planned at launch from its footers, as the batch merge plans it: gs://demo-bucket is a folder on disk here),
the stateful steps, the windows and the writers, and no key, salt or identity value in the graph."""

from __future__ import annotations

import pytest

from tests.support.dataflow import BUCKET, assert_clean, assert_staged_project, dry_run, secrets_found, transform_names

pytestmark = pytest.mark.e2e  # a keyset made by `python -m pipelines.keys`, the job built in a child process

SUBSCRIPTION = "projects/demo-project/subscriptions/registrations"


def _id_attribute_bytes(value: str) -> bytes:
    """How a Pub/Sub read's id attribute is written in the job's proto (field id_attribute of its payload)."""
    from apache_beam.portability.api import beam_runner_api_pb2

    with_id = beam_runner_api_pb2.PubSubReadPayload(subscription=SUBSCRIPTION, id_attribute=value)
    without = beam_runner_api_pb2.PubSubReadPayload(subscription=SUBSCRIPTION)
    return with_id.SerializeToString()[len(without.SerializeToString()) :]


def test_streaming_merge_builds_a_dataflow_streaming_job(site):
    job = dry_run(
        site["tmp"],
        "merge",
        [
            "--streaming",
            "--subscription",
            SUBSCRIPTION,
            "--base",
            f"{BUCKET}/base/base.parquet",
            "--keys",
            site["keys"],
            "--out",
            f"{BUCKET}/stream",
            "--window-seconds",
            "30",
            "--shards",
            "8",
            "--as-of",
            "2026-12-01",
        ],
        bucket_on_disk=site["disk"],
    )
    names = transform_names(job)
    for step in (
        "ReadFromPubSub",
        "ReadBase",  # the base: a bounded read beside the unbounded one
        "MergeStreamWindows",
        "BatchMessages",
        "Intake",
        "Seed",
        "LineContext",  # stateful: a line's context, events waiting for their line
        "Validate",
        "TakeEventIds",  # stateful: who holds an event id
        "ApplyOrSupersede",  # stateful: a line's current registration
        "FixedWindows",
        "GroupByShard",
        "BuildFolders",
        "WriteWindows",
        "WriteBaseDeadLetters",
    ):
        assert step in names, step
    assert not any(n.endswith(("KeyByEventId", "DedupByEventId", "ProcessWindow")) for n in names)
    assert job["options"]["streaming"] is True
    with open(job["graph_text"], "rb") as f:
        graph = f.read()
    assert b"beam:transform:pubsub_read:v1" in graph and SUBSCRIPTION.encode() in graph
    id_attribute = _id_attribute_bytes("event_id")
    assert id_attribute.endswith(b"event_id") and id_attribute not in graph  # no id_label on the read
    assert b"ID Label Attribute" not in graph  # nor in its display data
    assert_staged_project(job)
    assert_clean(job, site)  # no identity value, no key material; the DoFns' payloads were opened
    assert site["keys"].encode() in graph  # the keyset travels by its path, loaded in the workers' setup()
    assert secrets_found(job, [bytes.fromhex(s) for s in job["secrets_drawn"]]) == []
