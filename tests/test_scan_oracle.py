"""Differential test of the scan: the vectorised classifier against the naive one.

``transforms.scan.classify.classify_batch`` (Arrow, numpy, RE2) and
``bench.naive.classify_row`` (one dict, plain Python, written from docs/policy.md)
must give every row the same identity_status and the same reasons, in the
same order, or the same dead-letter reason. Cross-record flags need the
whole base; the last test compares them through both pipelines end to end.

    .venv/bin/python -m pytest -q tests/test_scan_oracle.py

A failure names row numbers and reason codes only, never a row's values.
"""

from __future__ import annotations

import collections
import glob
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.naive import classify_row, is_dead_letter
from dev.generate import generate_table
from tests.support.scan_cases import EDGE_CASES
from tests.support.rows import AS_OF, CTX, SALT, raw_table
from transforms.core.reasons import FLAGS
from transforms.scan.classify import FLAG_BIT, classify_batch

LINES = 30_000


def _with_source(table: pa.Table) -> pa.Table:
    n = table.num_rows
    return table.append_column("_src_file", pa.array(["base.parquet"] * n, pa.string())).append_column(
        "_src_row", pa.array(range(1, n + 1), pa.int64())
    )


def _vectorised(raw: pa.Table, policy) -> dict[int, tuple]:
    """source row -> (identity_status, reasons, region, the row's own flags) or ("DEAD", (reason,))."""
    result = classify_batch(raw, policy, AS_OF, CTX, SALT)
    table = result.classified
    flags = [tuple(f for f in FLAGS if bits & FLAG_BIT[f]) for bits in table.column("_flag_bits").to_pylist()]
    verdicts = {
        row: (status, tuple(reasons), region, row_flags)
        for row, status, reasons, region, row_flags in zip(
            table.column("_src_row").to_pylist(),
            table.column("identity_status").to_pylist(),
            table.column("reasons").to_pylist(),
            table.column("region").to_pylist(),
            flags,
        )
    }
    dead = result.dead_letter
    for row, reason in zip(dead.column("source_row").to_pylist(), dead.column("reason").to_pylist()):
        verdicts[row] = ("DEAD", (reason,))
    return verdicts


def _naive(raw: pa.Table, policy) -> dict[int, tuple]:
    verdicts = {}
    for row in raw.to_pylist():
        out = classify_row(row, policy, AS_OF)
        verdicts[row["_src_row"]] = (
            ("DEAD", (out["reason"],))
            if is_dead_letter(out)
            else (out["identity_status"], tuple(out["reasons"]), out["region"], tuple(out["flags"]))
        )
    return verdicts


def _disagreements(raw: pa.Table, policy) -> str:
    """'' when both sides agree on every row; else a value-free account of the kinds of disagreement."""
    vec, naive = _vectorised(raw, policy), _naive(raw, policy)
    assert len(vec) == len(naive) == raw.num_rows
    kinds: collections.Counter = collections.Counter()
    example = {}
    for row in sorted(naive):
        if vec[row] != naive[row]:
            key = (vec[row], naive[row])
            kinds[key] += 1
            example.setdefault(key, row)
    lines = [
        f"{count} row(s), e.g. row {example[key]}: vectorised {key[0]} vs naive {key[1]}"
        for key, count in kinds.most_common(20)
    ]
    return "\n".join(lines)


@pytest.mark.parametrize("seed", [3, 2026])
def test_generated_lines_agree(policy, seed):
    raw = _with_source(generate_table(LINES, seed))
    assert not (problems := _disagreements(raw, policy)), problems


# Dirt of operator exports (docs/regulation.md §5, 6): format characters, full-width and
# ideographic forms, look-alike dots, separators, Unicode digits, case.
_DIRT = [
    "\u200b",
    "\ufeff",
    "\u00ad",
    "\u3000",
    "\u00a0",
    "\u2028",
    "\t",
    "\n",
    " ",
    "  ",
    "１",
    "Ｘ",
    "ｘ",
    "-",
    "\u2010",
    "\u2212",
    "－",
    ".",
    "．",
    "·",
    "・",
    "･",
    "•",
    "\u0387",
    "(",
    "（",
    "）",
    "\u0663",
    "ß",
    "ﬁ",
    "Ⅻ",
    "①",
    "0",
    "9",
    "X",
    "x",
    "I",
    "O",
    "A",
    "张",
    "路",
    "号",
    "本人",
]
_DATES = [
    "2020-02-29",
    "2019-02-29",
    "2020-1-5",
    "2020/01/05",
    "20200105",
    "2020.01.05 12:00",
    "2020-01-05T25:00",
    "2020-01-05T10:00:61",
    "2020-01-05T23:59:59.123456789+08:00",
    "2020-01-05Z",
    "２０２０-01-05",
    "1900-02-29",
    "0001-01-01",
    "2020-13-01",
    " 2020-01-05 ",
    "2020-01-05 -1400",
]
_FIELDS = [
    "doc_number",
    "doc_number",
    "doc_number",
    "name",
    "name",
    "address",
    "doc_type",
    "handler_doc_type",
    "handler_doc_number",
    "handler_name",
    "activated_on",
    "terminated_on",
    "updated_at",
    "line_type",
    "subscriber_kind",
    "status",
    "line_id",
    "region",
    "region",
]


def _fuzz(rows: list[dict], policy, seed: int) -> list[dict]:
    """Up to three mutations per row: dirt, cuts, placeholders, labels, other rows' values."""
    rnd = random.Random(seed)
    labels = (
        sorted(policy.label_lookup) + sorted(policy.review_labels) + [" idcard ", "ｐａｓｓｐｏｒｔ", "身分证", "OTHER"]
    )
    junk = (
        list(policy.names["placeholders"])
        + list(policy.addresses["placeholders"])
        + list(policy.document_numbers.get("placeholders", []))
    )
    donors = {f: [r[f] for r in rows if r[f]] for f in ("doc_number", "handler_doc_number", "name", "address")}

    def mutate(value: str | None) -> str | None:
        value = value or ""
        op, at = rnd.randrange(8), rnd.randrange(len(value) + 1)
        if op == 0:
            return value[:at] + value[at + 1 :]
        if op == 1:
            return value[:at] + rnd.choice(_DIRT) + value[at:]
        if op == 2:
            return value[:at] + rnd.choice(_DIRT) + value[at + 1 :]
        if op == 3:
            return value[:at]
        if op == 4:
            return rnd.choice([value.lower(), value.upper(), value + value[-1:]])
        if op == 5:
            return rnd.choice(junk)
        if op == 6:
            return rnd.choice(_DIRT) + value + rnd.choice(_DIRT)
        return None

    out = []
    for row in rows:
        row = dict(row)
        for _ in range(rnd.randrange(4)):
            field = rnd.choice(_FIELDS)
            if field.endswith("doc_type") and rnd.random() < 0.6:
                row[field] = rnd.choice(labels)
            elif field in ("activated_on", "terminated_on", "updated_at") and rnd.random() < 0.7:
                row[field] = rnd.choice(_DATES)
            elif field in donors and rnd.random() < 0.25:  # another row's value: kind and type mismatches
                pool = donors["handler_doc_number" if field == "doc_number" and rnd.random() < 0.3 else field]
                row[field] = rnd.choice(pool)
                if field == "name" and rnd.random() < 0.5:
                    row[field] += rnd.choice(["·", ".", "..", "•", "-"]) + rnd.choice(pool)
            else:
                row[field] = mutate(row[field])
        out.append(row)
    return out


def test_fuzzed_lines_agree(policy):
    table = generate_table(20_000, 11)
    rows = _fuzz(table.to_pylist(), policy, seed=11)
    raw = _with_source(pa.Table.from_pylist(rows, schema=table.schema))
    assert not (problems := _disagreements(raw, policy)), problems


def test_edge_cases_agree_with_design(policy):
    rows = [
        dict(row, line_id=row["line_id"] if name == "no line_id" else f"L{i}")
        for i, (name, (row, _, _)) in enumerate(EDGE_CASES.items())
    ]
    raw = raw_table(rows)
    vec, naive = _vectorised(raw, policy), _naive(raw, policy)
    wrong = []
    for i, (name, (_, status, reasons)) in enumerate(EDGE_CASES.items(), start=1):
        if vec[i][:2] != (status, reasons) or naive[i][:2] != (status, reasons) or vec[i] != naive[i]:
            wrong.append(f"{name}: expected {(status, reasons)}, vectorised {vec[i]}, naive {naive[i]}")
    assert not wrong, "\n".join(wrong)
    at = {name: i for i, name in enumerate(EDGE_CASES, start=1)}
    assert vec[at["2.8 division review"]][3] == ("DOC_NUMBER_DIVISION_REVIEW",)
    assert vec[at["5 Latin name on a resident ID"]][3] == ("NAME_CHARSET_REVIEW",)
    assert vec[at["5 Latin name on a passport"]][3] == ()
    for name in ("2.8 USCC authority B", "2.8 USCC trade union 8 + 8", "2.8 USCC pair and province 88"):
        assert vec[at[name]][3] == ("DOC_NUMBER_CODE_REVIEW",), name
    for name in ("1.3 review label", "1.3 mislabelled HK card", "1.3 mislabelled Macao card", "1.3 police card"):
        assert vec[at[name]][3] == ("DOC_TYPE_LABEL_REVIEW",), name
    for name in ("2.8 HK identity card", "2.5 org code as USCC", "5 traditional address"):
        assert vec[at[name]][3] == (), name


def _with_cross_record_cases(table: pa.Table) -> pa.Table:
    """Plant one document on 7 active person lines and one under two names (value-free test data)."""
    rows = table.to_pylist()
    people = [
        r
        for r in rows
        if r["doc_number"]
        and r["name"]
        and r["subscriber_kind"] == "INDIVIDUAL"
        and r["status"] == "ACTIVE"
        and r["line_id"]
    ]
    extra = [dict(people[0], line_id=f"{people[0]['line_id']}-X{i}") for i in range(7)]
    other_name = next(r["name"] for r in people[2:] if r["name"] != people[1]["name"])
    extra.append(dict(people[1], line_id=f"{people[1]['line_id']}-Y", name=other_name))
    return pa.Table.from_pylist(rows + extra, schema=table.schema)


def test_naive_pipeline_matches_scan(tmp_path, policy):
    """Both pipelines end to end on one file: every column, flags included, and the dead letters."""
    from bench.naive import run_naive
    from pipelines.scan import run as run_scan

    base = str(tmp_path / "base.parquet")
    pq.write_table(_with_cross_record_cases(generate_table(6_000, 5)), base)
    run_scan(["--base", base, "--out", str(tmp_path / "scan"), "--as-of", AS_OF.isoformat()])
    run_naive(base, str(tmp_path / "naive"), as_of=AS_OF)

    scan = pq.ParquetDataset(str(tmp_path / "scan" / "classified")).read()
    naive = pq.ParquetDataset(str(tmp_path / "naive" / "classified")).read()
    assert scan.num_rows == naive.num_rows
    by_id = {row["line_id"]: row for row in naive.to_pylist()}
    differing = collections.Counter(
        column
        for row in scan.to_pylist()
        for column, value in row.items()
        if by_id.get(row["line_id"], {}).get(column) != value
    )
    assert not differing, f"columns that differ (count of lines): {dict(differing)}"
    flags = collections.Counter(f for row in scan.to_pylist() for f in row["flags"])
    assert flags["DOC_LINE_LIMIT"] >= 6 and flags["DOC_NAME_CONFLICT"] >= 2, dict(flags)

    scan_dead = collections.Counter(
        json.loads(line)["reason"]
        for path in glob.glob(str(tmp_path / "scan" / "dead_letter" / "*"))
        for line in open(path, encoding="utf-8")
    )
    naive_dead = collections.Counter(
        pq.ParquetDataset(str(tmp_path / "naive" / "dead_letter")).read().column("reason").to_pylist()
    )
    assert scan_dead == naive_dead
