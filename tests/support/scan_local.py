"""Bases for tests/test_scan_local.py (the in-process scan, pipelines/scan_local.py).

    mixed = write_mixed_base(folder, lines=12_000, seed=5)   # several files, planted cross-record cases
    found = outputs(out)                                       # what a scan published, comparable across runs
    paths = write_canary_base(folder, lines=200_000, files=4)  # canary identity on many lines

The mixed base is a generated base (``dev.generate``) cut into three Parquet
files of small row groups, plus a CSV file, with planted rows: duplicate
line_ids whose latest ``updated_at`` wins (ties and nulls included, copies in
different files and rows), one document under two names, one document on
more lines than the policy allows, one that is on the limit only if a
duplicate were counted, and malformed rows. What the scan must make of the
planted rows is computed here from the planted rows themselves with plain
loops (the rules of docs/policy.md), never with the code under test.
"""

from __future__ import annotations

import collections
import csv
import glob
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dev.generate import generate_table, generate_truth
from schemas import field_names
from tests.support.doc_numbers import citizen
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person

PREFIX = "ZL-"  # every planted line_id starts so (the generator's start with "L")
FILES = ("base-0.parquet", "base-1.parquet", "base-2.parquet", "base-3.csv")
ROW_GROUP = 1_000


def _doc(seq: int) -> str:
    return citizen("110105", "19800101", f"{seq:03d}")


def _row(line_id, msisdn, doc, updated_at="2024-01-01T00:00:00", **fields) -> dict:
    return person(line_id=line_id, msisdn=f"139{msisdn:08d}", doc_number=doc, updated_at=updated_at, **fields)


def planted() -> list[tuple[int, dict, str | None]]:
    """(file index, row, the dead-letter reason its own defect gives or None) of every planted row."""
    z, n = PREFIX, [0]

    def row(line_id, doc, **fields):
        n[0] += 1
        return _row(z + line_id, n[0], doc, **fields)

    rows = [
        (1, row("NEWER", _doc(1), updated_at="2024-01-01T00:00:00"), None),
        (0, row("NEWER", _doc(1), updated_at="2025-06-01T00:00:00"), None),
        (2, row("NEWER", _doc(1), updated_at="2030-01-01T00:00:00", status="BOGUS"), "BAD_ENUM"),
        (0, row("TIE-FILES", _doc(2), updated_at="2024-05-05T05:05:05"), None),
        (2, row("TIE-FILES", _doc(2), updated_at="2024-05-05T05:05:05"), None),
        (1, row("TIE-ROWS", _doc(3), updated_at="2024-05-05T05:05:05"), None),
        (1, row("TIE-ROWS", _doc(3), updated_at="2024-05-05T05:05:05"), None),
        (2, row("NULL", _doc(4), updated_at=None), None),
        (0, row("NULL", _doc(4), updated_at="2023-01-01T00:00:00"), None),
        (0, row("NULLS", _doc(5), updated_at=None), None),
        (3, row("NULLS", _doc(5), updated_at=None), None),
        (0, row("NAME-1", _doc(6), name="赵六"), None),
        (2, row("NAME-2", _doc(6), name="钱七"), None),
        *[(i % 4, row(f"LIMIT-{i}", _doc(7), name="孙八"), None) for i in range(1, 7)],
        *[(i % 4, row(f"FIVE-{i}", _doc(8), name="周九"), None) for i in range(1, 6)],
        (3, row("FIVE-1", _doc(8), name="周九", updated_at="2020-01-01T00:00:00"), None),
        (1, row("ENUM", _doc(9), line_type="PIGEON"), "BAD_ENUM"),
        (2, row("DATE", _doc(10), activated_on="2020-02-30"), "BAD_DATE"),
        (0, row("", _doc(11)), "LINE_ID_MISSING"),
    ]
    rows[-1][1]["line_id"] = ""
    return rows


def _oracle(placed: list[tuple[str, int, dict, str | None]], limit: int) -> dict:
    """What the scan must make of the planted rows: ``placed`` = (file, row number, row, own reason)."""
    reasons = collections.Counter(reason for *_, reason in placed if reason)
    copies = collections.defaultdict(list)
    for file, number, row, reason in placed:
        if reason is None:  # a dead letter of its own takes no part in the choice of the latest copy
            copies[row["line_id"]].append(((row["updated_at"] or "", file, number), row))
    winners, losers = {}, set()
    for line_id, found in copies.items():
        found.sort(key=lambda c: c[0])  # "" (no updated_at) is older than any time; then file, then row
        winners[line_id] = found[-1][1]
        losers.update((line_id, key[1], key[2]) for key, _ in found[:-1])
    reasons["DUPLICATE_LINE_ID"] += len(losers)
    by_doc = collections.defaultdict(list)
    for row in winners.values():
        by_doc[row["doc_number"]].append(row)
    flags = {}
    for rows in by_doc.values():
        found = ["DOC_NAME_CONFLICT"] if len({r["name"] for r in rows}) > 1 else []
        found += ["DOC_LINE_LIMIT"] if len(rows) > limit else []  # every planted line is an active person
        flags.update({r["line_id"]: sorted(found) for r in rows})
    return {
        "reasons": reasons,
        "losers": losers,
        "msisdn": {k: r["msisdn"] for k, r in winners.items()},
        "flags": flags,
    }


def write_mixed_base(folder: str, lines: int, seed: int, limit: int) -> dict:
    """The mixed base (module docstring) and what the scan must give: rows in, dead letters by reason, and for
    the planted lines the kept copy's msisdn, the flags and the (line_id, file, row) of every dropped copy."""
    names = field_names("subscriber_base")
    generated = generate_table(lines, seed)
    rows, placed = planted(), []
    cuts = [0, lines // 3, 2 * lines // 3, lines]
    for index, name in enumerate(FILES):
        mine = [(r, reason) for i, r, reason in rows if i == index]
        part = generated.slice(cuts[index], cuts[index + 1] - cuts[index]) if index < 3 else None
        first = 1 + (part.num_rows if part is not None else 0)
        placed += [(name, first + k, r, reason) for k, (r, reason) in enumerate(mine)]
        path = os.path.join(folder, name)
        if part is not None:
            extra = pa.table({n: pa.array([r.get(n) for r, _ in mine], pa.string()) for n in names})
            pq.write_table(pa.concat_tables([part, extra.select(part.column_names)]), path, row_group_size=ROW_GROUP)
            continue
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=names)
            writer.writeheader()
            writer.writerows([{n: r.get(n) for n in names} for r, _ in mine])
            handle.write(f"{PREFIX}SHORT,too,few,fields\n")  # ROW_MALFORMED
    expected = _oracle(placed, limit)
    reasons = expected["reasons"] + _generated_reasons(generated, generate_truth(lines, seed))
    reasons["ROW_MALFORMED"] += 1
    return {
        "paths": [os.path.join(folder, name) for name in FILES],
        "rows_in": lines + len(rows) + 1,
        "dead_letter_reasons": dict(reasons),
        **{k: v for k, v in expected.items() if k != "reasons"},
    }


def _generated_reasons(table: pa.Table, truth: pa.Table) -> collections.Counter:
    """The generated rows' dead letters: the truth's defects of a row; DUPLICATE_LINE_ID counted from the rows
    (the truth marks the older copy of a re-export whose later copy may lie past the rows asked for)."""
    defects = truth.column("dead_letter").to_pylist()
    reasons = collections.Counter(d for d in defects if d not in (None, "DUPLICATE_LINE_ID"))
    valid = collections.Counter(
        line for line, d in zip(table.column("line_id").to_pylist(), defects) if d in (None, "DUPLICATE_LINE_ID")
    )
    reasons["DUPLICATE_LINE_ID"] = sum(n - 1 for n in valid.values())
    return reasons


def write_canary_base(folder: str, lines: int, files: int, seed: int = 3) -> list[str]:
    """A generated base cut into ``files`` Parquet files, every third line carrying the canary name, document
    number and address; a few canary lines are dead letters too (bad enum, duplicate)."""
    table = generate_table(lines, seed)
    mask = pa.array(np.arange(lines) % 3 == 0)
    for column, value in (("name", CANARY_NAME), ("doc_number", CANARY_NUMBER), ("address", CANARY_ADDRESS)):
        table = table.set_column(
            table.schema.get_field_index(column), column, pc.if_else(mask, value, table.column(column))
        )
    names = field_names("subscriber_base")
    bad = [
        person(line_id="CANARY-ENUM", status="BOGUS", name=CANARY_NAME, doc_number=CANARY_NUMBER),
        person(line_id="CANARY-DUP", name=CANARY_NAME, address=CANARY_ADDRESS, updated_at="2020-01-01T00:00:00"),
        person(line_id="CANARY-DUP", name=CANARY_NAME, address=CANARY_ADDRESS),
    ]
    extra = pa.table({n: pa.array([r.get(n) for r in bad], pa.string()) for n in names}).select(table.column_names)
    table = pa.concat_tables([table, extra])
    paths, step = [], -(-table.num_rows // files)
    for index in range(files):
        paths.append(os.path.join(folder, f"canary-{index}.parquet"))
        pq.write_table(table.slice(index * step, step), paths[-1], row_group_size=10_000)
    return paths


def outputs(out: str) -> dict:
    """Everything a scan published: the classified table by line_id, the dead letters as records (minus their
    run and time), summary.json (minus its run), the manifest and the part files of classified/."""
    dead = []
    for path in sorted(glob.glob(os.path.join(out, "dead_letter", "*"))):
        with open(path, encoding="utf-8") as handle:
            dead += [json.loads(line) for line in handle if line.strip()]
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    return {
        "table": pq.read_table(os.path.join(out, "classified")).sort_by("line_id"),
        "dead": sorted(
            json.dumps({k: v for k, v in d.items() if k not in ("run_id", "time")}, sort_keys=True) for d in dead
        ),
        "dead_records": dead,
        "summary": {k: v for k, v in summary.items() if k != "run_id"},
        "manifest": manifest,
        "parts": sorted(os.listdir(os.path.join(out, "classified"))),
    }
