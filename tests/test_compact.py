"""`backfill compact` as a Beam pipeline (issue 12): the streaming merge's committed windows folded into a new base.

* CompactDeltas on the local runner (TestPipeline + assert_that): latest registration per line over the base
  and the windows, across buckets;
* the command over a generated raw base and three windows (several buckets, the spill on): equal, every base
  column, to the batch merge of the same events and to the single-process fold it replaces; vaults open to
  the same values; counts balance; a re-run changes nothing;
* a merged base with its vault: equal to the daily batch merge of the same events;
* dead letters counted, no identity value outside the vault;
* windows sealed under another keyset: a one-line error, nothing written;
* a run SIGKILLed mid-pipeline leaves the previous output byte for byte, readable, and the next run works.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that

from tests.support.compact import (
    PY,
    ROOT,
    assert_same_base,
    assert_same_identities,
    batch_merge,
    commit_windows,
    compact,
    compact_command,
    dead_letters,
    fold_in_one_process,
    keys_file,
    read_manifest,
    snapshot,
    sorted_base,
    write_csv_base,
)
from tests.support.rows import AS_OF, CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, RUNNER, person, raw_table
from tests.support.stream import CTX, base_rows, event, message, window
from transforms.merge.stream import LineIndex, SeenKeys
from transforms.scan.policy import load_policy

CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """A generated raw base of 3,000 lines, 2,400 events dealt to three committed windows, and their keyset."""
    from bench.bench_merge import make_events
    from dev.generate import write_base

    root = str(tmp_path_factory.mktemp("compact"))
    base = os.path.join(root, "base.parquet")
    write_base(base, 3000, 5)
    path = os.path.join(root, "events.parquet")
    make_events(base, path, n=2400, seed=3)
    events = pq.read_table(path).to_pylist()
    keys = keys_file(root)
    deltas = os.path.join(root, "stream", "deltas")
    commit_windows([base], [events[i::3] for i in range(3)], deltas, keys)
    return {"root": root, "base": base, "events": events, "keys": keys, "deltas": deltas}


def test_compact_deltas_on_the_local_runner(tmp_path):
    """The transform itself: per line the latest registration over the base and two windows, in any bucket."""
    import pyarrow as pa

    from transforms.crypto.keyset import Keyset
    from transforms.merge.compact import WINDOW, CompactDeltas

    keyset, policy = Keyset.generate(), load_policy(None)
    keys_path = str(tmp_path / "keys.json")
    keyset.save(keys_path)
    index, _ = LineIndex.from_raw(raw_table(base_rows()), policy, AS_OF, CTX, "0" * 32)
    seen = SeenKeys()
    w1 = window(
        [message(event("E1", "L1", "2026-11-30T10:00:00")), message(event("E2", "L2", "2026-11-30T10:00:00"))],
        index,
        seen,
        keyset,
        policy,
    )
    seen.add(w1.new_keys)
    w2 = window([message(event("E3", "L1", "2026-11-30T11:00:00", name="王五"))], index, seen, keyset, policy)

    def tagged(table, i):
        return table.append_column(WINDOW, pa.array([i] * table.num_rows, pa.int64()))

    def check(counts_and_lines):
        [(counts, lines)] = counts_and_lines
        assert lines == {"L1": "E3", "L2": "E2", "L3": None, "LT": None}
        assert counts["base"]["rows_in"] == len(base_rows()) and counts["base"]["rows_out"] == 4
        assert counts["deltas"] == {"delta_rows": 3, "lines_registered": 2, "superseded_or_unknown": 1}

    with BeamTestPipeline(runner=RUNNER) as p:
        inputs = {"base": p | "Base" >> beam.Create([raw_table(base_rows())])}
        for tag, attr in (("delta", "delta"), ("delta_keys", "vault_keys"), ("delta_values", "vault_values")):
            tables = [tagged(getattr(w, attr), i) for i, w in enumerate((w1, w2))]
            inputs[tag] = p | f"Create{tag}" >> beam.Create(tables)
        out = inputs | CompactDeltas(policy, AS_OF, CTX, keys_path, n_buckets=4)
        lines = (
            out.base
            | beam.FlatMap(lambda t: t.select(["line_id", "registration_event_id"]).to_pylist())
            | beam.combiners.ToList()
            | beam.Map(lambda rows: {r["line_id"]: r["registration_event_id"] for r in rows})
        )
        both = out.counts | beam.Map(lambda c, lines: (c, lines), beam.pvalue.AsSingleton(lines))
        assert_that(both, check)


@pytest.mark.e2e  # backfill compact (and merge) in subprocesses
def test_compact_equals_the_batch_merge_and_the_single_process_fold(stream, tmp_path):
    out = str(tmp_path / "compact")
    manifest = compact([stream["base"]], stream["deltas"], stream["keys"], out, "--shuffle-buckets", "3")
    batch = str(tmp_path / "batch")
    merged = batch_merge([stream["base"]], stream["events"], stream["keys"], batch)
    assert_same_base(batch, out)
    oracle, oracle_keys, oracle_values = fold_in_one_process([stream["base"]], stream["deltas"], stream["keys"])
    assert_same_base(oracle, out)
    base = sorted_base(out)
    registered = [r for r, e in zip(base["line_id"].to_pylist(), base["registration_event_id"].to_pylist()) if e]
    sample = registered[:40] + base["line_id"].to_pylist()[::150]
    assert assert_same_identities(stream["keys"], os.path.join(out, "vault"), os.path.join(batch, "vault"), sample) > 40
    assert assert_same_identities(stream["keys"], os.path.join(out, "vault"), (oracle_keys, oracle_values), sample)
    counts = manifest["counts"]
    assert counts["base"]["rows_in"] == 3000 and counts["base"]["balanced"]
    assert counts["base"]["lines_out"] == base.num_rows == merged["counts"]["base"]["lines_out"]
    assert counts["deltas"]["windows"] == 3 and counts["deltas"]["balanced"]
    assert counts["deltas"]["lines_registered"] == len(registered)
    delta_rows = sum(
        pq.read_metadata(p).num_rows for p in glob.glob(os.path.join(stream["deltas"], "w-*", "delta.parquet"))
    )
    assert counts["deltas"]["delta_rows"] == delta_rows
    assert counts["vault"]["keys"] == pq.read_table(os.path.join(out, "vault", "keys")).num_rows
    assert manifest["shuffle"] == {"buckets": 3, "spill": True, "read_by_bucket": []}
    assert manifest["runner"] == "FnApiRunner"
    before = sorted_base(out)
    again = compact([stream["base"]], stream["deltas"], stream["keys"], out, "--shuffle-buckets", "5", "--spill", "off")
    assert sorted_base(out).equals(before) and again["counts"]["base"] == counts["base"]  # a re-run changes nothing


@pytest.mark.e2e  # backfill compact (and merge) in subprocesses
def test_a_merged_base_compacts_to_the_daily_merge(stream, tmp_path):
    """Day 1 merged in batch; day 2 streamed over its base, then compacted == day 2 merged in batch."""
    day1, day2 = stream["events"][:800], stream["events"][800:1600]
    first = str(tmp_path / "day1")
    batch_merge([stream["base"]], day1, stream["keys"], first)
    merged_base, vault = os.path.join(first, "base"), os.path.join(first, "vault")
    deltas = str(tmp_path / "stream" / "deltas")
    commit_windows([merged_base], [day2[:400], day2[400:]], deltas, stream["keys"])
    out = str(tmp_path / "compact")
    manifest = compact([merged_base], deltas, stream["keys"], out, "--vault", vault, "--shuffle-buckets", "2")
    daily = str(tmp_path / "day2")
    batch_merge([merged_base], day2, stream["keys"], daily, "--vault", vault)
    assert_same_base(daily, out)
    ids = sorted_base(out)["line_id"].to_pylist()[::60]
    assert assert_same_identities(stream["keys"], os.path.join(out, "vault"), os.path.join(daily, "vault"), ids)
    assert manifest["inputs"]["base_kind"] == "merged" and manifest["counts"]["base"]["balanced"]


@pytest.mark.e2e  # backfill compact (and merge) in subprocesses
def test_compact_reads_a_merged_base_by_line_bucket_and_writes_its_own_cut_so(stream, tmp_path):
    """Day 1's merge wrote its base and vault cut in 3 line buckets: compact reads them by bucket (no shuffle of
    the base or the vault) and compacts as through the shuffle; its own files are cut and marked in turn, so the
    next day's merge over them reads them by bucket too."""
    day1, day2 = stream["events"][:800], stream["events"][800:1600]
    first = str(tmp_path / "day1")
    batch_merge([stream["base"]], day1, stream["keys"], first, "--shuffle-buckets", "3")
    merged_base, vault = os.path.join(first, "base"), os.path.join(first, "vault")
    deltas = str(tmp_path / "stream" / "deltas")
    commit_windows([merged_base], [day2[:400], day2[400:]], deltas, stream["keys"])
    outs = {name: str(tmp_path / f"compact-{name}") for name in ("by_bucket", "shuffled")}
    by_bucket = compact([merged_base], deltas, stream["keys"], outs["by_bucket"], "--vault", vault)
    shuffled = compact(
        [merged_base], deltas, stream["keys"], outs["shuffled"], "--vault", vault, "--shuffle-buckets", "3"
    )
    assert by_bucket["shuffle"]["read_by_bucket"] == ["base", "vault_keys", "vault_values"]
    assert by_bucket["shuffle"]["buckets"] == 3 and shuffled["shuffle"]["read_by_bucket"] == []
    assert by_bucket["counts"] == shuffled["counts"] and by_bucket["counts"]["deltas"]["lines_registered"] > 0
    assert_same_base(outs["shuffled"], outs["by_bucket"])
    ids = sorted_base(outs["by_bucket"])["line_id"].to_pylist()[::60]
    vaults = [os.path.join(outs[name], "vault") for name in ("by_bucket", "shuffled")]
    assert assert_same_identities(stream["keys"], *vaults, ids)
    daily = str(tmp_path / "day3")
    later = batch_merge([os.path.join(outs["by_bucket"], "base")], stream["events"][1600:], stream["keys"], daily,
                        "--vault", vaults[0])  # fmt: skip
    assert later["shuffle"]["read_by_bucket"] == ["base", "vault_keys", "vault_values"]
    assert later["counts"]["base"]["balanced"] and later["counts"]["vault"]["keys_copied"] > 0


@pytest.mark.e2e  # backfill compact (and merge) in subprocesses
def test_dead_letters_are_counted_and_no_identity_leaves_the_vault(tmp_path):
    root = str(tmp_path)
    keys = keys_file(root)
    base = os.path.join(root, "base.csv")
    rows = [person(line_id=f"L{i}", name="") for i in range(1, 6)]
    rows += [person(line_id="L9", name=CANARY_NAME, address=CANARY_ADDRESS, doc_number=CANARY_NUMBER)]
    rows += [person(line_id="L1", name="", updated_at="2023-01-01T00:00:00")]  # an older copy: DUPLICATE_LINE_ID
    rows += [person(line_id="LX", name="北" * 1_000_000)]  # over the field size limit: ROW_MALFORMED
    write_csv_base(base, rows)
    deltas = os.path.join(root, "stream", "deltas")
    canary = dict(name=CANARY_NAME, doc_number=CANARY_NUMBER, address=CANARY_ADDRESS)
    commit_windows(
        [base],
        [
            [event("E1", "L1", "2026-11-30T10:00:00", **canary), event("E2", "L2", "2026-11-30T10:00:00")],
            [event("E3", "L2", "2026-11-30T09:00:00"), event("E4", "L3", "2026-11-30T12:00:00", **canary)],
        ],
        deltas,
        keys,
    )
    out = os.path.join(root, "compact")
    proc = subprocess.run(
        [PY, "-m", "pipelines.compact", *compact_command([base], deltas, keys, out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = read_manifest(out)["counts"]
    assert counts["base"]["rows_in"] == len(rows) and counts["base"]["balanced"]
    assert counts["base"]["dead_letter_reasons"] == {"DUPLICATE_LINE_ID": 1, "ROW_MALFORMED": 1}
    assert counts["base"]["lines_out"] == len(rows) - 2 == pq.read_table(os.path.join(out, "base")).num_rows
    deltas_counts = [
        counts["deltas"][k] for k in ("windows", "delta_rows", "lines_registered", "superseded_or_unknown")
    ]
    assert deltas_counts == [2, 3, 3, 0] and counts["deltas"]["balanced"]
    assert sorted(d["reason"] for d in dead_letters(out)) == ["DUPLICATE_LINE_ID", "ROW_MALFORMED"]
    lines = {r["line_id"]: r["registration_event_id"] for r in pq.read_table(os.path.join(out, "base")).to_pylist()}
    assert (lines["L1"], lines["L2"], lines["L3"], lines["L9"]) == ("E1", "E2", "E4", None)
    for folder in ("base", "dead_letter"):
        for path in glob.glob(os.path.join(out, folder, "**"), recursive=True):
            if os.path.isfile(path):
                blob = open(path, "rb").read()
                assert not any(c.encode() in blob for c in CANARIES), path
    text = open(os.path.join(out, "manifest.json"), encoding="utf-8").read() + proc.stdout + proc.stderr
    assert not any(c in text for c in CANARIES)
    from pipelines.io.vault_files import read_vault
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.vault import Vault

    vault = Vault(Keyset.load(keys))
    for line in ("L1", "L3", "L9"):
        opened = vault.open(*read_vault(os.path.join(out, "vault"), [line]), line)
        assert (opened["name"], opened["doc_number"], opened["address"]) == (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)


def test_windows_of_another_keyset_are_a_one_line_error(stream, tmp_path, capsys):
    from pipelines import compact as command

    other = keys_file(str(tmp_path))
    out = str(tmp_path / "compact")
    code = command.main(compact_command([stream["base"]], stream["deltas"], other, out))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("backfill compact: error: --deltas ") and "made under keyset" in last, err
    assert not os.path.exists(out) and not glob.glob(out + ".tmp-*")


def _wait(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.e2e  # backfill compact (and merge) in subprocesses
def test_a_run_killed_mid_pipeline_leaves_the_previous_output_intact(tmp_path):
    from bench.bench_merge import make_events
    from dev.generate import write_base
    from pipelines.io.vault_files import read_vault
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.vault import Vault

    root = str(tmp_path)
    base, events_path = os.path.join(root, "base.parquet"), os.path.join(root, "events.parquet")
    write_base(base, 12_000, 11)
    make_events(base, events_path, n=1000, seed=5)
    events = pq.read_table(events_path).to_pylist()
    keys = keys_file(root)
    deltas = os.path.join(root, "stream", "deltas")
    commit_windows([base], [events[:500], events[500:]], deltas, keys)
    out = os.path.join(root, "compact")
    argv = compact_command([base], deltas, keys, out, "--shuffle-buckets", "4", "--batch-size", "1000")
    compact([base], deltas, keys, out, "--shuffle-buckets", "4")
    before = snapshot(out)
    spill_root = os.path.join(root, "tmp")
    os.makedirs(spill_root)
    env = {**os.environ, "TMPDIR": spill_root}
    proc = subprocess.Popen(
        [PY, "-m", "pipelines.compact", *argv],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # mid-pipeline: the staged folder exists and the shuffle has spilled some of the base, nothing is written yet
        _wait(
            lambda: glob.glob(os.path.join(spill_root, "backfill-spill-compact-*", "*", "*", "*.spill")),
            300,
            "a spill file",
        )
        staged = glob.glob(out + ".tmp-*")
        assert staged and not os.path.exists(os.path.join(staged[0], "manifest.json"))
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(out) == before  # byte for byte
    table = pq.read_table(os.path.join(out, "base"))
    registered = [
        r["line_id"]
        for r in table.select(["line_id", "registration_event_id"]).to_pylist()
        if r["registration_event_id"]
    ]
    vault = Vault(Keyset.load(keys))
    assert vault.open(*read_vault(os.path.join(out, "vault"), registered[:1]), registered[0])
    assert read_manifest(out)["counts"]["base"]["rows_in"] == 12_000
    compact([base], deltas, keys, out, "--shuffle-buckets", "4")  # the next run removes the dead one's staging
    assert not glob.glob(out + ".tmp-*")
    assert sorted_base(out).equals(sorted_base(table))


@pytest.mark.e2e  # the job is built by the launcher in a child process
def test_the_dataflow_job_builds_offline_and_holds_no_key(site):
    """The compaction's Dataflow job (dry run, no network): the whole pipeline, with no key, salt or identity in
    its graph or its pickled payloads (workers load the keyset from --keys themselves)."""
    import base64

    from tests.support.dataflow import BUCKET, assert_clean, dry_run, secrets_found, transform_names

    bucket = os.path.join(site["disk"], "demo-bucket")
    canary = dict(name=CANARY_NAME, doc_number=CANARY_NUMBER, address=CANARY_ADDRESS)
    registration = event("E1", "L0000000001", "2026-11-30T10:00:00", **canary)
    commit_windows(
        [os.path.join(bucket, "base", "base.parquet")],
        [[registration]],
        os.path.join(bucket, "stream", "deltas"),
        site["keys"],
    )
    argv = ["--base", f"{BUCKET}/base/base.parquet", "--deltas", f"{BUCKET}/stream", "--keys", site["keys"]]
    job = dry_run(
        site["tmp"],
        "compact",
        [*argv, "--out", f"{BUCKET}/compact-g", "--as-of", AS_OF.isoformat()],
        bucket_on_disk=site["disk"],
    )
    drawn = [bytes.fromhex(h) for h in job["secrets_drawn"]]
    assert secrets_found(job, drawn + [base64.b64decode(m) for m in site["material"]]) == []
    assert_clean(job, site)
    assert {"ReadBase", "ReadWindows", "CompactDeltas", "JoinByLine", "FoldBucket", "Finalize"} <= transform_names(job)
