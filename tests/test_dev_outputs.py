"""The developer tools never replace a file unasked and never leave a half-written one (dev/outputs.py)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from dev import generate as gen
from dev import simulate as sim
from dev.outputs import removed_on_failure


def test_generate_refuses_an_existing_file_and_replaces_it_when_asked(tmp_path, capsys):
    base = tmp_path / "base.parquet"
    assert gen.main(["--lines", "300", "--seed", "5", "--out", str(base)]) == 0
    before = base.read_bytes()
    capsys.readouterr()
    assert gen.main(["--lines", "10", "--seed", "5", "--out", str(base)]) == 2  # a typo'd path onto a real base
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists: it is not replaced" in err and "--overwrite" in err
    assert base.read_bytes() == before
    assert gen.main(["--lines", "10", "--seed", "5", "--out", str(base), "--overwrite"]) == 0
    assert pq.read_metadata(base).num_rows == 10


def test_simulate_refuses_an_existing_file_and_a_share_outside_0_1(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text("kept\n", encoding="utf-8")
    for extra, fragment in (
        ([], "exists: it is not replaced"),
        (["--share", "1.5"], "--share 1.5 is not a share between 0 and 1"),
        (["--share", "nan"], "--share nan is not a share between 0 and 1"),
        (["--share", "-0.1"], "--share -0.1 is not a share between 0 and 1"),
    ):
        assert sim.main(["--scan", str(tmp_path), "--out", str(events), *extra]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err and "Traceback" not in err, extra
    assert events.read_text(encoding="utf-8") == "kept\n"


def test_a_file_begun_and_not_finished_is_removed_and_an_older_one_kept(tmp_path):
    begun, older = tmp_path / "begun.jsonl", tmp_path / "older.jsonl"
    with pytest.raises(KeyboardInterrupt), removed_on_failure(str(begun)):
        begun.write_text("half", encoding="utf-8")
        raise KeyboardInterrupt
    assert not begun.exists()
    older.write_text("someone's", encoding="utf-8")
    with pytest.raises(OSError), removed_on_failure(str(older)):
        raise OSError("disk full")
    assert older.read_text(encoding="utf-8") == "someone's"
