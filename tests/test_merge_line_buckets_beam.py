"""The Beam merge writes its base and vault cut by line bucket and reads a previous merge's so, like the in-process
merge (pipelines/io/bucket_sink.py, pipelines/io/line_buckets.py).

The Beam job (here on Beam's local FnApiRunner: ``--direct_num_workers 1``) writes each line bucket's three files
from one attempt of its step, marked in their footers; the next merge, on either engine, reads them by bucket
without a shuffle, and writes what the same merge writes through the shuffle. A file whose mark lies fails the
Beam job in one line too. Run: .venv/bin/python -m pytest -q tests/test_merge_line_buckets_beam.py
"""

from __future__ import annotations

import datetime as dt
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.common import UserError
from pipelines.io.bucket_sink import ATTEMPTS, publish_attempts
from pipelines.io.line_buckets import MARK, bucket_paths, file_mark, write_bucket
from tests.support.merge_local import differences, merge_outputs
from tests.test_merge_line_buckets import (
    ALL_DIRECT,
    assert_no_canaries,
    first_merges,
    NEXT_DAY,
    TABLES,
    _rewrite,
    backfill,
    files,
    manifest,
)
from transforms.merge.bucket import MERGED_SCHEMA
from transforms.scan.keyed_hash import bucket_of

BEAM = ("--direct_num_workers", "1")  # a Beam worker option: the Beam job on the local runner


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Inputs, a keyset, and the first merge in 3 buckets by the Beam job and by two worker processes."""
    return first_merges(tmp_path_factory.mktemp("line_buckets_beam"), {"beam": BEAM, "local": ("--workers", "2")})


def next_day(site, merged: str, out: str, *extra: str, check=True):
    events = [a for p in site["events_2"] for a in ("--registrations", p)]
    return backfill("merge", "--merged", merged, *events, "--keys", site["keys"], "--out", out,
                    "--as-of", NEXT_DAY, *extra, check=check)  # fmt: skip


@pytest.mark.e2e
def test_the_beam_merge_writes_each_bucket_marked_with_only_its_lines(site):
    first = site["firsts"]["beam"]
    for table in TABLES:
        paths = files(first, table)
        assert len(paths) == 3, table
        for bucket, path in enumerate(paths):
            rows = pq.read_table(path)
            assert pq.read_metadata(path).metadata[MARK] == f"{bucket}/3/{rows.num_rows}".encode()
            assert rows.num_rows > 0 and set(bucket_of(rows.column("line_id"), 3).tolist()) == {bucket}, path
    assert sorted(os.listdir(first)) == [
        ".backfill.json",
        "_SUCCESS",
        "base",
        "dead_letter",
        "manifest.json",
        "summary.json",
        "vault",
    ]  # fmt: skip  (no attempts' folder left)
    # the same lines and values as the in-process merge's, bucket by bucket
    assert differences(merge_outputs(first, site["keys"]), merge_outputs(site["firsts"]["local"], site["keys"])) == []
    for a, b in zip(files(first, "base"), files(site["firsts"]["local"], "base")):
        assert sorted(pq.read_table(a).column("line_id").to_pylist()) == sorted(
            pq.read_table(b).column("line_id").to_pylist()
        )


@pytest.mark.e2e
def test_the_next_beam_merge_reads_them_by_bucket_and_writes_what_the_shuffle_writes(site):
    first, root = site["firsts"]["beam"], site["root"]
    runs = {name: str(root / f"day2-{name}") for name in ("direct", "shuffled", "in-process")}
    next_day(site, first, runs["direct"], *BEAM)
    next_day(site, first, runs["shuffled"], *BEAM, "--shuffle-buckets", "3")
    next_day(site, first, runs["in-process"], "--workers", "2")  # the in-process merge reads the Beam job's files
    assert manifest(runs["direct"])["shuffle"] == {"buckets": 3, "spill": True, "read_by_bucket": ALL_DIRECT}
    assert manifest(runs["shuffled"])["shuffle"]["read_by_bucket"] == []
    assert manifest(runs["in-process"])["shuffle"]["read_by_bucket"] == ALL_DIRECT
    seen = merge_outputs(runs["direct"], site["keys"])
    for other in ("shuffled", "in-process"):
        assert differences(seen, merge_outputs(runs[other], site["keys"])) == [], other
    vault = seen["counts"]["vault"]
    assert vault["keys_copied"] > 0 and vault["lines_sealed"] > 0 and seen["counts"]["base"]["balanced"]
    assert [file_mark(p) for p in files(runs["direct"], "values")] == [(b, 3) for b in range(3)]  # and so on
    assert_no_canaries(runs["direct"])


@pytest.mark.e2e
def test_a_file_whose_mark_lies_fails_the_beam_job_in_one_line(site, tmp_path):
    merged = str(tmp_path / "merged")
    shutil.copytree(site["firsts"]["beam"], merged)
    zero, one = files(merged, "base")[:2]
    first, second = pq.read_table(zero), pq.read_table(one)
    _rewrite(zero, first, 1, 3)
    _rewrite(one, second, 0, 3)
    out = str(tmp_path / "out")
    proc = next_day(site, merged, out, *BEAM, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "holds lines of another bucket than its footer says" in last and "--shuffle-buckets" in last, last
    assert not os.path.exists(out)


def _attempt(folder: str, bucket: int, n: int, lines: list[str]) -> str:
    attempt = os.path.join(folder, ATTEMPTS, f"try-{bucket}-{len(lines)}")
    filled = {"reasons": [], "flags": [], "needs_registration": False, "as_of": dt.date(2026, 11, 30)}
    rows = [{**{f.name: "x" for f in MERGED_SCHEMA if not f.nullable}, **filled, "line_id": line} for line in lines]
    base = pa.Table.from_pylist(rows, schema=MERGED_SCHEMA)
    write_bucket(attempt, bucket, n, base, None, None)
    return attempt


def test_one_attempt_of_every_bucket_is_published_and_the_others_removed_even_on_a_second_try(tmp_path):
    stage, n = str(tmp_path / "stage"), 3
    lines = [f"L{i}" for i in range(40)]
    buckets = bucket_of(pa.array(lines), n)
    ids = {b: [line for line, of in zip(lines, buckets) if of == b] for b in range(n)}
    chosen = [(b, _attempt(stage, b, n, ids[b])) for b in range(n)]
    _attempt(stage, 1, n, ids[1][:1])  # an attempt the runner did not hand on (a retried bundle)
    os.makedirs(os.path.join(stage, "base"))
    os.replace(bucket_paths(chosen[0][1], 0, n)["base"], bucket_paths(stage, 0, n)["base"])  # a try cut short
    assert publish_attempts(chosen, stage, n) == n  # ... and the step run again
    assert not os.path.exists(os.path.join(stage, ATTEMPTS))
    for bucket in range(n):
        paths = bucket_paths(stage, bucket, n)
        assert pq.read_table(paths["base"]).column("line_id").to_pylist() == ids[bucket]
        assert file_mark(paths["base"]) == (bucket, n) and file_mark(paths["vault_values"]) == (bucket, n)


@pytest.mark.parametrize("kept", [[0, 1], [0, 1, 1, 2]], ids=["a bucket missing", "a bucket twice"])
def test_publishing_refuses_a_bucket_missing_or_twice_and_moves_nothing(tmp_path, kept):
    stage, n = str(tmp_path / "stage"), 3
    attempts = [(b, _attempt(stage, b, n, [])) for b in kept]
    with pytest.raises(UserError, match="nothing was published"):
        publish_attempts(attempts, stage, n)
    assert not os.path.exists(os.path.join(stage, "base"))


def test_random_columns_are_written_without_dictionary_or_statistics_and_the_others_with(tmp_path):
    """Tokens, nonces and the like: no dictionary and no min/max (a quarter less encoding, the files no larger);
    a list column keeps its dictionary (its values' leaf path, not its name), as the low-cardinality ones do."""
    attempt = _attempt(str(tmp_path), 0, 1, ["L1", "L2", "L3"])
    chunks = pq.ParquetFile(bucket_paths(attempt, 0, 1)["base"]).metadata.row_group(0)
    columns = {chunks.column(i).path_in_schema: chunks.column(i) for i in range(chunks.num_columns)}
    assert "RLE_DICTIONARY" in columns["reasons.list.item"].encodings and columns["reasons.list.item"].is_stats_set
    assert "RLE_DICTIONARY" in columns["line_type"].encodings and columns["line_id"].is_stats_set
    for name in ("doc_token", "name_token", "address_token"):
        assert "RLE_DICTIONARY" not in columns[name].encodings and not columns[name].is_stats_set, name
