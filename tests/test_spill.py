"""No plaintext spill, not even after a crash (transforms/core/shuffle.py).

The batch merge spills every base row and event of a bucket to local files. Those files are sealed under a
per-run key that only the run's processes hold, and a run removes the spill folders of dead runs. The merge
is killed with SIGKILL at random points while it spills, every file under its private TMPDIR is searched for
the canary values, and the next run must remove what the dead ones left. Run:
.venv/bin/python -m pytest tests/test_spill.py -q
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that

from schemas import field_names
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, RUNNER, person
from transforms.core import shuffle

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
CANARIES = [c.encode("utf-8") for c in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)]


def files_with_canaries(root: str) -> list[str]:
    """Every file under ``root`` whose raw bytes hold a canary value."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                data = handle.read()
            if any(c in data for c in CANARIES):
                found.append(os.path.relpath(path, root))
    return found


def spill_files(root: str) -> list[str]:
    """Every file under the runs' private TMPDIR but the spill folders' lock files."""
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if n != ".lock"]


# -- the spill format ---------------------------------------------------------------------------------------------


def test_spilled_batches_are_sealed_and_grouped_back(tmp_path, monkeypatch):
    """A spill file holds no value in the clear; the shuffle still groups every row by bucket."""
    monkeypatch.setenv(shuffle.SPILL_KEY_ENV, "")  # none: the transform draws one (restored after the test)
    spill = str(tmp_path / "spill")
    rows = {"name": [CANARY_NAME, "张三", CANARY_ADDRESS, "李四"], "doc": [CANARY_NUMBER, "x", "y", "z"]}
    table = shuffle.with_bucket(pa.table(rows), pa.array(["a", "b", "c", "d"]), 3)

    def check(grouped):
        names = sorted(n for _, tables in grouped for n in tables["t"].column("name").to_pylist())
        assert names == sorted(rows["name"])

    with BeamTestPipeline(runner=RUNNER) as p:
        out = {"t": p | beam.Create([table])} | shuffle.ArrowGroupByBucket(spill_dir=spill, label="G")
        assert_that(out, check)
    assert [n for _, _, names in os.walk(spill) for n in names] and files_with_canaries(spill) == []


def test_a_spill_part_opens_only_where_it_was_written_and_under_its_runs_key(tmp_path, monkeypatch):
    from transforms.crypto.envelope import EnvelopeError

    monkeypatch.setenv(shuffle.SPILL_KEY_ENV, "")
    shuffle.ensure_spill_key()
    fn = shuffle._SpillFn("t", str(tmp_path))
    table = shuffle.with_bucket(pa.table({"name": [CANARY_NAME, "张三"]}), pa.array(["a", "b"]), 2)
    refs = [ref for _, ref in fn.process(table)]
    assert len(refs) == 2
    _, path, index, offset, length = refs[0]
    assert shuffle.read_part(path, index, offset, length).num_rows == 1
    with pytest.raises(EnvelopeError):  # another part's place
        shuffle.read_part(path, index + 1, offset, length)
    monkeypatch.setenv(shuffle.SPILL_KEY_ENV, "")
    shuffle.ensure_spill_key()  # another run's key
    with pytest.raises(EnvelopeError):
        shuffle.read_part(path, index, offset, length)


def test_dead_runs_spill_folders_are_removed_never_a_live_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    # a pipeline run earlier in this process may have left its key: spill_area restores what it found
    monkeypatch.delenv(shuffle.SPILL_KEY_ENV, raising=False)
    dead = tmp_path / f"{shuffle.SPILL_PREFIX}merge-dead"
    (dead / "x").mkdir(parents=True)
    (dead / ".lock").write_text("123\n")  # nobody holds its lock
    young = tmp_path / f"{shuffle.SPILL_PREFIX}merge-starting"
    young.mkdir()  # no lock yet: a run between mkdtemp and its lock
    old = tmp_path / f"{shuffle.SPILL_PREFIX}merge-old"
    old.mkdir()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    other = tmp_path / "backfill-something-else"
    other.mkdir()
    live = subprocess.Popen(  # another process holds its spill area
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from transforms.core.shuffle import spill_area\n"
            "with spill_area('scan') as folder:\n"
            "    print(folder, flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        live_folder = live.stdout.readline().strip()
        with shuffle.spill_area("merge") as mine:
            assert os.path.isdir(mine) and os.environ.get(shuffle.SPILL_KEY_ENV)
            assert oct(os.stat(mine).st_mode & 0o777) == "0o700"
            assert shuffle.remove_dead_spills(str(tmp_path)) == []  # nothing more is dead; mine is live
        assert not os.path.exists(mine) and shuffle.SPILL_KEY_ENV not in os.environ
        assert not dead.exists() and not old.exists() and young.exists() and other.exists()
        assert os.path.isdir(live_folder)
    finally:
        live.kill()
        live.wait()
        live.stdout.close()


# -- the merge, killed --------------------------------------------------------------------------------------------


def write_base(path: str, lines: int) -> None:
    """A raw base whose every line carries the canary name, document number and address."""
    names = field_names("subscriber_base")
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for i in range(lines):
            row = person(line_id=f"L{i:07d}", msisdn=f"138{i:08d}", name=CANARY_NAME, address=CANARY_ADDRESS)
            row["doc_number"] = CANARY_NUMBER
            writer.writerow(["" if row.get(n) is None else row[n] for n in names])


def write_events(path: str, lines: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(0, lines, 7):
            event = {
                "event_id": f"E{i:07d}",
                "line_id": f"L{i:07d}",
                "doc_type": "身份证",
                "doc_number": CANARY_NUMBER,
                "name": CANARY_NAME,
                "address": CANARY_ADDRESS,
                "channel": "AGENT",
                "agent_id": "AG00777",
                "verified_by": "ID_CARD_READER",
                "registered_at": "2026-11-20T10:00:00",
            }
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")


@pytest.mark.e2e
def test_a_merge_killed_while_it_spills_leaves_no_plaintext_and_the_next_run_cleans_up(tmp_path):
    from pipelines.keys import init_keyset

    lines = 40_000
    tmpdir = tmp_path / "tmp"  # the runs' private TMPDIR: the spills go there
    tmpdir.mkdir()
    keys = str(tmp_path / "secure" / "keys.json")
    os.makedirs(os.path.dirname(keys), mode=0o700)
    init_keyset(keys)
    base, events = str(tmp_path / "base.csv"), str(tmp_path / "events.jsonl")
    write_base(base, lines)
    write_events(events, lines)
    out = str(tmp_path / "out" / "merge")
    argv = [BACKFILL, "merge", "--base", base, "--registrations", events, "--keys", keys, "--out", out]
    argv += ["--as-of", "2026-11-30", "--shuffle-buckets", "8", "--batch-size", "2000"]
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    rng = random.Random()
    left = []  # spill files found after each kill
    for attempt in range(8):
        # The Beam job (its shuffle's spill, long enough to be killed in); the in-process merge, done in a blink
        # here, is killed while it spills in tests/test_merge_local.py.
        beam = ["--direct_num_workers", "1"]
        before = set(spill_files(str(tmpdir)))  # the killed runs' files, until this run clears them at its start
        proc = subprocess.Popen([*argv, *beam], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline and not set(spill_files(str(tmpdir))) - before:
            time.sleep(0.01)
        assert proc.poll() is None, (
            f"attempt {attempt}: the merge ended before it spilled: {proc.stderr.read()[-2000:]}"
        )
        # somewhere while it spills, groups or writes; a kill that found nothing spilled (between two spills,
        # or after the run's end) is tried again sooner
        time.sleep(rng.uniform(0, 2.0 / (1 + sum(n == 0 for n in left))))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        left.append(len(set(spill_files(str(tmpdir))) - before))
        assert files_with_canaries(str(tmpdir)) == []  # raw bytes: nothing in the clear in any file
        assert files_with_canaries(str(tmp_path / "out")) == []  # nor in the staged output the kill left
        if sum(n > 0 for n in left) == 3:
            break
    assert sum(n > 0 for n in left) == 3, f"three kills should have left spill files to check: {left}"
    # A following run removes the dead runs' spill folders (and its own at the end), and the dead staging. It
    # runs two worker processes: a batch spilled by one is read back by the other (one key for the run).
    parallel = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    proc = subprocess.run([*argv, *parallel], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(balanced)" in proc.stdout
    # nothing left in TMPDIR but the empty folders Beam's Pipeline makes (beam-pipeline-temp*; a killed run
    # leaves its own, with no file in it)
    assert spill_files(str(tmpdir)) == [] and not [n for n in os.listdir(tmpdir) if not n.startswith("beam-")]
    assert sorted(os.listdir(tmp_path / "out")) == ["merge"]  # no staged folder either
