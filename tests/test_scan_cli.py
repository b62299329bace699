"""`backfill scan` as a user runs it: a generated base, formats, workers,
no network, canaries, re-runs, and one-line errors for bad input."""

from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import field_names
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person
from transforms.scan.policy import load_policy

pytestmark = pytest.mark.e2e  # every test runs `backfill scan` or `python -m pipelines.scan` in a subprocess

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF = "2026-11-30"


def run(*args, check=True, prefix=()):
    proc = subprocess.run([*prefix, BACKFILL, *args], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def verdicts(out_dir):
    table = pq.read_table(os.path.join(out_dir, "classified"))
    rows = table.select(["line_id", "identity_status", "reasons", "flags", "needs_registration"]).to_pylist()
    return sorted(
        (r["line_id"], r["identity_status"], tuple(r["reasons"]), tuple(r["flags"]), r["needs_registration"])
        for r in rows
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from dev.generate import write_base

    folder = tmp_path_factory.mktemp("base")
    path = str(folder / "base.parquet")
    write_base(path, 20_000, seed=11)
    return path


@pytest.fixture(scope="module")
def scanned(base, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("scan") / "out")
    proc = run("scan", "--base", base, "--out", out, "--as-of", AS_OF)
    return out, proc


def test_scan_writes_contract_outputs(scanned, base):
    out, proc = scanned
    summary = json.load(open(os.path.join(out, "summary.json")))
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    table = pq.read_table(os.path.join(out, "classified"))
    dead = [json.loads(row) for f in glob.glob(os.path.join(out, "dead_letter", "*.jsonl")) for row in open(f)]
    assert summary["rows_in"] == pq.ParquetFile(base).metadata.num_rows == 20_000
    assert summary["balanced"] and summary["classified"] + summary["dead_letters"] == summary["rows_in"]
    assert table.num_rows == summary["classified"] and len(dead) == summary["dead_letters"]
    assert set(table.column_names) >= {
        "line_id",
        "identity_status",
        "reasons",
        "flags",
        "needs_registration",
        "needs_review",
        "policy_version",
        "as_of",
    }
    assert not {"doc_type", "doc_number", "name", "address"} & set(table.column_names)
    # Every status occurs in a realistic base, counts agree with the table.
    statuses = pa.compute.value_counts(table.column("identity_status")).to_pylist()
    assert {s["values"]: s["counts"] for s in statuses} == {k: v for k, v in summary["identity_status"].items() if v}
    assert set(summary["identity_status"]) == {"COMPLETE", "MISSING", "INCOMPLETE", "INVALID"}
    assert all(d["reason"] and d["source_file"] and d["run_id"] == summary["run_id"] for d in dead)
    assert manifest["counts"]["balanced"] and manifest["policy"]["version"] == load_policy(None).version
    assert manifest["runner"] == "in-process" and manifest["workers"] >= 1  # a local run needs no Beam job
    assert "identity:" in proc.stdout and "balanced" in proc.stdout
    assert len(table.column("line_id").unique()) == table.num_rows


def test_rerun_changes_nothing(scanned, base, tmp_path):
    out, _ = scanned
    again = str(tmp_path / "again")
    run("scan", "--base", base, "--out", again, "--as-of", AS_OF)
    assert verdicts(again) == verdicts(out)
    run("scan", "--base", base, "--out", again, "--as-of", AS_OF)  # into the same folder
    assert verdicts(again) == verdicts(out)
    assert len(glob.glob(os.path.join(again, "classified", "*.parquet"))) == len(
        glob.glob(os.path.join(out, "classified", "*.parquet"))
    )


def test_two_workers_give_the_same_output(scanned, base, tmp_path):
    out, _ = scanned
    two = str(tmp_path / "two")
    run(
        "scan",
        "--base",
        base,
        "--out",
        two,
        "--as-of",
        AS_OF,
        "--direct_num_workers",
        "2",
        "--direct_running_mode",
        "multi_processing",
        "--shuffle-buckets",
        "3",
    )
    assert verdicts(two) == verdicts(out)


def test_scan_with_the_network_cut_off(base, tmp_path):
    out = str(tmp_path / "offline")
    proc = run("scan", "--base", base, "--out", out, "--as-of", AS_OF, prefix=("unshare", "-n"))
    assert "balanced" in proc.stdout


def test_formats_agree(base, tmp_path):
    table = pq.read_table(base).slice(0, 3000)
    paths = {}
    paths["parquet"] = str(tmp_path / "b.parquet")
    pq.write_table(table, paths["parquet"])
    paths["csv"] = str(tmp_path / "b.csv")
    pa.csv.write_csv(table, paths["csv"])
    import fastavro

    from schemas import avro_schema

    paths["avro"] = str(tmp_path / "b.avro")
    with open(paths["avro"], "wb") as f:
        fastavro.writer(
            f,
            fastavro.parse_schema(avro_schema("subscriber_base")),
            [{k: (v if v is not None or k != "line_id" else "") for k, v in r.items()} for r in table.to_pylist()],
        )
    results = {}
    for fmt, path in paths.items():
        out = str(tmp_path / f"out-{fmt}")
        run("scan", "--base", path, "--out", out, "--as-of", AS_OF)
        results[fmt] = verdicts(out)
    assert results["csv"] == results["parquet"] == results["avro"]


def _canary_base(tmp_path, encoding="utf-8"):
    names = field_names("subscriber_base")
    rows = [
        person(line_id="C1", name=CANARY_NAME, doc_number=CANARY_NUMBER, address=CANARY_ADDRESS),
        person(line_id="C2", name=CANARY_NAME, doc_number=CANARY_NUMBER, address=CANARY_ADDRESS, status="BOGUS"),
        person(line_id="C2", name=CANARY_NAME + "乙", doc_number=CANARY_NUMBER, address=CANARY_ADDRESS),
        person(
            line_id="C3",
            name=CANARY_NAME,
            doc_number=CANARY_NUMBER[:-1] + "1",
            address=CANARY_ADDRESS,
            activated_on="2020-02-30",
        ),
        person(line_id="", name=CANARY_NAME, doc_number=CANARY_NUMBER, address=CANARY_ADDRESS),
        person(
            line_id="C1",
            name=CANARY_NAME,
            doc_number=CANARY_NUMBER,
            address=CANARY_ADDRESS,
            updated_at="2001-01-01T00:00:00",
        ),
    ]
    path = tmp_path / "canary.csv"
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
        f.write("C9," + CANARY_NAME + ",too,few,fields\n")
    return str(path)


def test_no_canary_leaves_the_scan(tmp_path):
    path = _canary_base(tmp_path)
    out = str(tmp_path / "out")
    proc = run("scan", "--base", path, "--out", out, "--as-of", AS_OF)
    blobs = [proc.stdout, proc.stderr]
    for root, _, files in os.walk(out):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                blobs.append(f.read().decode("utf-8", "replace"))
    text = "\n".join(blobs)
    for canary in (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS, CANARY_NUMBER.lower()):
        assert canary not in text
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["rows_in"] == 7 and summary["balanced"]
    assert summary["dead_letter_reasons"] == {
        "BAD_DATE": 1,
        "BAD_ENUM": 1,
        "DUPLICATE_LINE_ID": 1,
        "LINE_ID_MISSING": 1,
        "ROW_MALFORMED": 1,
    }


def test_gb18030_needs_the_encoding_flag(tmp_path):
    path = _canary_base(tmp_path, encoding="gb18030")
    proc = run("scan", "--base", path, "--out", str(tmp_path / "o1"), check=False)
    assert proc.returncode != 0 and "--encoding" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = run("scan", "--base", path, "--out", str(tmp_path / "o2"), "--encoding", "gb18030", "--as-of", AS_OF)
    assert "7 rows in" in proc.stdout


@pytest.mark.parametrize(
    "make_args, fragment",
    [
        (lambda t: ["--base", str(t / "nope.parquet")], "nope.parquet"),
        (lambda t: ["--base", _write(t / "empty.csv", "")], "empty.csv"),
        (lambda t: ["--base", _write(t / "cols.csv", "line_id,name\nL1,x\n")], "line_type"),
        (
            lambda t: [
                "--base",
                _write(t / "ok.csv", "line_id,line_type,subscriber_kind,status\n"),
                "--as-of",
                "2026-02-30",
            ],
            "--as-of",
        ),
        (
            lambda t: [
                "--base",
                _write(t / "ok2.csv", "line_id,line_type,subscriber_kind,status\n"),
                "--policy",
                _write(t / "p.yaml", "policy_version: 1\n"),
            ],
            "policy",
        ),
        (lambda t: ["--out", str(t / "x")], "--base"),
    ],
)
def test_bad_input_is_one_line(tmp_path, make_args, fragment):
    args = make_args(tmp_path)
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    proc = run("scan", *args, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0] and "Traceback" not in proc.stderr


def test_header_only_base_is_an_empty_scan(tmp_path):
    path = _write(tmp_path / "h.csv", "line_id,line_type,subscriber_kind,status\n")
    run("scan", "--base", path, "--out", str(tmp_path / "o"), "--as-of", AS_OF)
    summary = json.load(open(tmp_path / "o" / "summary.json"))
    assert summary["rows_in"] == 0 and summary["balanced"]
    assert summary["missing_identity_columns"]


def test_module_entry_point(tmp_path):
    path = _write(
        tmp_path / "m.csv", "line_id,line_type,subscriber_kind,status,extra_col\nL1,MOBILE,INDIVIDUAL,ACTIVE,x\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.scan", "--base", path, "--out", str(tmp_path / "o"), "--as-of", AS_OF],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.load(open(tmp_path / "o" / "summary.json"))
    assert summary["identity_status"]["MISSING"] == 1 and summary["ignored_columns"] == ["extra_col"]


def _write(path, text) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)
