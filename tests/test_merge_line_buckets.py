"""The daily merge reads the previous merge's files cut by line bucket without a shuffle (pipelines/io/line_buckets.py).

The in-process merge marks each file it writes (base part B, vault shard B) as line bucket B of N with its rows;
the next in-process merge over that base and vault, with N buckets again, has bucket B's task read file B of each
table itself. What it writes must be what the same merge writes through the shuffle (``--shuffle-buckets N``);
a mark that does not hold (a re-cut or filtered file, a bucket missing) is not trusted, and a file holding lines
of another bucket than its mark says fails the run in one line, before anything is published.
Run: .venv/bin/python -m pytest -q tests/test_merge_line_buckets.py
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import types

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.io.line_buckets import MARK, file_mark, files_by_bucket, mark
from pipelines.io.planning import Split
from pipelines.io.vault_files import table_files
from pipelines.merge_plan import plan_buckets
from tests.support.merge_local import differences, merge_outputs, write_merge_inputs
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER
from transforms.scan.keyed_hash import bucket_of

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF, NEXT_DAY = "2026-11-30", "2026-12-01"
TABLES = {"base": "base/part-*.parquet", "keys": "vault/keys/*.parquet", "values": "vault/values/*.parquet"}
ALL_DIRECT = ["base", "vault_keys", "vault_values"]


def backfill(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([BACKFILL, *args], capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def manifest(out: str) -> dict:
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


def files(out: str, table: str) -> list[str]:
    return sorted(glob.glob(os.path.join(out, TABLES[table])))


def assert_no_canaries(folder: str) -> None:
    """No planted name, document number or address in any file under ``folder``."""
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        if os.path.isfile(path):
            data = open(path, "rb").read()
            for canary in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS):
                assert canary.encode("utf-8") not in data, path


def first_merges(root, engines: dict[str, tuple[str, ...]]) -> dict:
    """A keyset, the inputs, and the first merge in 3 line buckets by each engine (``{name: its flags}``)."""
    keys = str(root / "secure" / "keys.json")
    backfill("keys", "init", "--keys", keys)
    inputs = write_merge_inputs(str(root), lines=6_000)
    base = [a for p in inputs["base"] for a in ("--base", p)]
    events = [a for p in inputs["events"] for a in ("--registrations", p)]
    firsts = {name: str(root / f"first-{name}") for name in engines}
    for name, engine in engines.items():
        backfill("merge", *base, *events, "--keys", keys, "--out", firsts[name], "--shuffle-buckets", "3",
                 "--as-of", AS_OF, *engine)  # fmt: skip
    return {"root": root, "keys": keys, "firsts": firsts, "events_2": inputs["events_2"]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Inputs, a keyset and the first merge in 3 buckets by two worker processes."""
    found = first_merges(tmp_path_factory.mktemp("line_buckets"), {"local": ("--workers", "2")})
    return {**found, "first": found["firsts"]["local"]}


def next_day(site, merged: str, out: str, *extra: str, check=True) -> subprocess.CompletedProcess:
    events = [a for p in site["events_2"] for a in ("--registrations", p)]
    return backfill("merge", "--merged", merged, *events, "--keys", site["keys"], "--out", out, "--workers", "2",
                    "--as-of", NEXT_DAY, *extra, check=check)  # fmt: skip


@pytest.mark.e2e
def test_every_file_of_a_merge_is_marked_with_its_bucket_and_holds_only_its_lines(site):
    for table in TABLES:
        paths = files(site["first"], table)
        assert len(paths) == 3, table
        for bucket, path in enumerate(paths):
            rows = pq.read_table(path)
            assert pq.read_metadata(path).metadata[MARK] == f"{bucket}/3/{rows.num_rows}".encode()
            assert rows.num_rows > 0 and set(bucket_of(rows.column("line_id"), 3).tolist()) == {bucket}, path
        assert files_by_bucket(paths) == (3, dict(enumerate(paths)))


@pytest.mark.e2e
def test_the_next_merge_reads_them_by_bucket_and_writes_what_the_shuffle_writes(site):
    direct, shuffled = str(site["root"] / "direct"), str(site["root"] / "shuffled")
    next_day(site, site["first"], direct)
    next_day(site, site["first"], shuffled, "--shuffle-buckets", "3")
    assert manifest(direct)["shuffle"] == {"buckets": 3, "spill": True, "read_by_bucket": ALL_DIRECT}
    assert manifest(shuffled)["shuffle"] == {"buckets": 3, "spill": True, "read_by_bucket": []}
    seen = merge_outputs(direct, site["keys"])
    assert differences(seen, merge_outputs(shuffled, site["keys"])) == []
    for a, b in zip(files(direct, "base"), files(shuffled, "base")):  # the same rows in the same order
        assert pq.read_table(a).equals(pq.read_table(b)), a
    vault = seen["counts"]["vault"]
    assert vault["keys_copied"] > 0 and vault["lines_sealed"] > 0 and seen["counts"]["base"]["balanced"]
    # its own files are marked in turn: the day after reads them straight too
    assert [file_mark(p) for p in files(direct, "base")] == [(b, 3) for b in range(3)]
    assert_no_canaries(direct)


@pytest.mark.e2e
def test_a_key_table_rewritten_by_a_rotation_goes_through_the_shuffle(site, tmp_path):
    """``keys rotate --vault`` re-wraps the data keys into a new generation of the key table, not cut by
    line bucket: only the base and the values are read by bucket, and the output is the shuffle's."""
    merged, keys = str(tmp_path / "merged"), str(tmp_path / "secure" / "keys.json")
    shutil.copytree(site["first"], merged)
    shutil.copytree(os.path.dirname(site["keys"]), os.path.dirname(keys))
    backfill("keys", "rotate", "--keys", keys, "--vault", os.path.join(merged, "vault"))
    rotated = table_files(os.path.join(merged, "vault"), "keys")
    assert rotated and all(file_mark(p) is None for p in rotated) and "g000002" in rotated[0]
    site = {**site, "keys": keys}
    direct, shuffled = str(tmp_path / "direct"), str(tmp_path / "shuffled")
    next_day(site, merged, direct)
    next_day(site, merged, shuffled, "--shuffle-buckets", "3")
    assert manifest(direct)["shuffle"]["read_by_bucket"] == ["base", "vault_values"]
    assert differences(merge_outputs(direct, keys), merge_outputs(shuffled, keys)) == []


def _rewrite(path: str, table: pa.Table, bucket: int, n: int) -> None:
    pq.write_table(table.replace_schema_metadata(mark(table.schema, bucket, n, table.num_rows).metadata), path)


@pytest.mark.e2e
def test_a_file_whose_mark_lies_fails_the_run_in_one_line(site, tmp_path):
    """Base parts 0 and 1 swap marks (each still counting its own rows): bucket 0's task finds lines of
    bucket 1, and nothing is published."""
    merged = str(tmp_path / "merged")
    shutil.copytree(site["first"], merged)
    zero, one = files(merged, "base")[:2]
    first, second = pq.read_table(zero), pq.read_table(one)
    _rewrite(zero, first, 1, 3)
    _rewrite(one, second, 0, 3)
    out = str(tmp_path / "out")
    proc = next_day(site, merged, out, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "holds lines of another bucket than its footer says" in last and "--shuffle-buckets" in last, last
    assert not os.path.exists(out)
    # the way out the error names: the same files through the shuffle
    next_day(site, merged, out, "--shuffle-buckets", "3")
    assert manifest(out)["counts"]["base"]["balanced"]


def _marked_files(folder, counts: list[int], n: int, rows_said: list[int] | None = None) -> list[str]:
    paths = []
    for bucket, rows in enumerate(counts):
        table = pa.table({"line_id": [f"L{bucket}-{i}" for i in range(rows)]})
        path = str(folder / f"part-{bucket}.parquet")
        said = rows if rows_said is None else rows_said[bucket]
        pq.write_table(table.cast(mark(table.schema, bucket, n, said)), path)
        paths.append(path)
    return paths


def test_a_mark_is_trusted_only_when_every_bucket_is_there_once_with_its_rows(tmp_path):
    good = _marked_files(tmp_path, [3, 0, 2], 3)
    assert files_by_bucket(good) == (3, dict(enumerate(good)))
    assert files_by_bucket(good[:2]) is None  # a bucket missing
    assert files_by_bucket(good + [good[0]]) is None  # a bucket twice
    (tmp_path / "other").mkdir()
    assert files_by_bucket(_marked_files(tmp_path / "other", [3, 1, 2], 3, rows_said=[3, 2, 2])) is None  # filtered
    (tmp_path / "mixed").mkdir()
    mixed = _marked_files(tmp_path / "mixed", [1, 1], 2)
    assert files_by_bucket([*good, *mixed]) is None  # two different N
    plain = str(tmp_path / "plain.parquet")
    pq.write_table(pa.table({"line_id": ["L"]}), plain)
    assert file_mark(plain) is None and files_by_bucket([plain]) is None
    broken = str(tmp_path / "broken.parquet")
    open(broken, "wb").write(b"PAR1 not a parquet file")
    assert file_mark(broken) is None


def test_the_buckets_follow_the_previous_merges_cut_unless_told_or_too_large(tmp_path):
    paths = _marked_files(tmp_path, [2, 2, 2, 2], 4)
    splits = [Split(p, i, "parquet") for i, p in enumerate(paths)]
    args = types.SimpleNamespace(shuffle_buckets=None)
    n, direct = plan_buckets(args, "merged", splits, {"keys": paths, "values": paths[:3]}, default=1, least=1)
    assert n == 4 and sorted(direct) == ["base", "vault_keys"]  # the values' 3 files: not a cut
    assert [s.source for s in direct["base"][2]] == [splits[2]] and direct["vault_keys"][3][0].source == paths[3]
    assert direct["base"][1][0].bucket == 1 and direct["base"][1][0].n_buckets == 4
    assert plan_buckets(args, "merged", splits, None, default=2, least=5) == (2, {})  # buckets would be too large
    assert plan_buckets(types.SimpleNamespace(shuffle_buckets=4), "merged", splits, None, 2, 1) == (4, {})
    assert plan_buckets(args, "raw", splits, None, default=2, least=1) == (2, {})  # a raw base is never cut
    (tmp_path / "fine").mkdir()
    fine = [Split(p, i, "parquet") for i, p in enumerate(_marked_files(tmp_path / "fine", [1] * 9, 9))]
    assert plan_buckets(args, "merged", fine, None, default=2, least=1) == (2, {})  # buckets far too small
    assert plan_buckets(args, "merged", fine, None, default=3, least=1)[0] == 9


def test_a_bucket_read_fails_without_the_errors_text_unless_it_is_a_one_line_input_error():
    """The merge task reads its bucket inside ``value_free``: Arrow's errors may quote a value (withheld), the
    bucket check's InputError names a file and no value (passed as it is)."""
    from pipelines.io.planning import InputError
    from transforms.merge.value_free import value_free

    with pytest.raises(RuntimeError) as withheld:
        with value_free("ReadBucket", passing=(InputError,)):
            raise pa.ArrowInvalid(f"could not convert {CANARY_NAME!r}")
    assert CANARY_NAME not in str(withheld.value) and "ArrowInvalid" in str(withheld.value)
    with pytest.raises(InputError, match="holds lines of another bucket"):
        with value_free("ReadBucket", passing=(InputError,)):
            raise InputError("base/part-00000-of-00003.parquet: holds lines of another bucket than its footer says")
