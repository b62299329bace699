"""`backfill merge --streaming` builds a Dataflow streaming job offline, as tests/test_dataflow_dry_run.py does
for the batch pipelines: ReadFromPubSub with id_label, the shared window core, no key or identity in the graph,
and a launcher that reads nothing (the base is read in the DoFn's setup on the workers, Beam issue 21103)."""

from __future__ import annotations

import base64
import bz2
import re
import zlib

import pytest

from tests.support.dataflow import BUCKET, assert_staged_project, dry_run, transform_names
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER

pytestmark = pytest.mark.e2e  # a keyset made by `python -m pipelines.keys`, the job built in a child process


def _payloads(blob: bytes) -> list[bytes]:
    """Beam's pickled DoFns (base64 of bz2 or zlib) in the proto: a run that a neighbouring field's bytes
    extend is tried from each of its first four characters, and bytes after the compressed stream are ignored."""
    found = []
    for run in re.findall(rb"[A-Za-z0-9+/]{60,}={0,2}", blob):
        for start in range(4):  # the field's length byte may itself look like base64
            packed = run[start:]
            try:
                packed = base64.b64decode(packed[: len(packed) - len(packed) % 4])
            except ValueError:
                continue
            for make in (bz2.BZ2Decompressor, zlib.decompressobj):
                try:
                    found.append(make().decompress(packed))
                    break
                except (OSError, ValueError, zlib.error, EOFError):
                    continue
            else:
                continue
            break
    return found


def test_streaming_merge_builds_a_dataflow_streaming_job(site):
    job = dry_run(
        site["tmp"],
        "merge",
        [
            "--streaming",
            "--subscription",
            "projects/demo-project/subscriptions/registrations",
            "--base",
            f"{BUCKET}/base/base.parquet",
            "--keys",
            site["keys"],
            "--out",
            f"{BUCKET}/stream",
            "--window-seconds",
            "30",
            "--as-of",
            "2026-12-01",
        ],
    )
    names = transform_names(job)
    for step in (
        "ReadFromPubSub",
        "MergeStreamWindows",
        "KeyByEventId",
        "DedupByEventId",
        "Window",
        "BatchPerWindow",
        "ProcessWindow",
        "WriteWindows",
    ):
        assert step in names, step
    assert job["options"]["streaming"] is True
    assert job["gcs_client_used"] is False  # the launcher reads nothing: the base is read on the workers
    with open(job["graph_text"], "rb") as f:
        graph = f.read()
    assert b"event_id" in graph and b"projects/demo-project/subscriptions/registrations" in graph
    assert not any("ReadBase" in n or "ReadMergedBase" in n for n in names)  # no bounded read in the job
    assert_staged_project(job)
    payloads = _payloads(graph)
    text = b"\n".join([graph, *payloads])
    assert site["keys"].encode() in text and b"subreg" in text  # the window DoFn was opened: keys by path only
    for canary in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS):
        assert canary.encode() not in text, canary
    for key in site["material"]:
        assert key.encode() not in text and base64.b64decode(key) not in text
