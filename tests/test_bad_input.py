"""Bad input is one line on stderr, exit 1: never a value of the file, never a traceback (issue 11, item 11).

(a) A CSV without a header row is named as such; no message quotes a cell of it.
(b) Failures inside a pipeline (a corrupt Parquet page or Avro block, ``--out`` on a file, a tampered or
    retired vault data key) print one line: Beam's own logged tracebacks stay off stderr without --debug.
(c) A list or struct column is not identity text: the file is refused, naming it and the column.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.common import _beam_wrapped, _Quiet
from pipelines.io.base_files import read_split
from pipelines.io.events import plan_event_splits
from pipelines.io.planning import InputError, Split, plan_splits
from schemas import avro_schema, field_names
from tests.support.merge import event as canary_registration
from tests.support.rows import CANARY_ADDRESS, CANARY_NAME, CANARY_NUMBER, person
from transforms.core.rows import parse_json_lines

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF = "2026-11-30"
CONTRACT = field_names("subscriber_base")
CANARIES = (CANARY_NAME, CANARY_NUMBER, CANARY_ADDRESS)
# The launchers' own progress line ("scan scan-20261130T000000Z-1a2b3c4d: 1 file(s), ...") is the only other
# line stderr may hold; it is logged before the pipeline starts, so before any failure inside it.
PROGRESS = re.compile(r"^(scan|merge) (scan|merge)-\d{8}T\d{6}Z-[0-9a-f]{8}: ")


def no_canary(text: str) -> None:
    assert not any(c in text for c in CANARIES), f"identity value leaked: {text}"


def canary_rows(n: int = 3) -> list[dict]:
    return [
        person(
            line_id=f"L{i:04d}",
            name=CANARY_NAME,
            doc_number=CANARY_NUMBER,
            address=CANARY_ADDRESS,
            handler_doc_number=CANARY_NUMBER,
        )
        for i in range(1, n + 1)
    ]


def csv_text(rows: list[dict], header: list[str] | None, extra: tuple[str, ...] = ()) -> str:
    """CSV of contract rows (``header`` None: no header row); ``extra`` values end every data row."""
    lines = [",".join(header)] if header else []
    lines += [",".join([*(r.get(c) or "" for c in CONTRACT), *extra]) for r in rows]
    return "\n".join(lines) + "\n"


def write(path, text: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return str(path)


def refused(paths, *expected, plan=plan_splits) -> str:
    with pytest.raises(InputError) as info:
        plan(paths if isinstance(paths, list) else [paths])
    message = str(info.value)
    assert "\n" not in message, message
    no_canary(message)
    for part in expected:
        assert part in message, message
    return message


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([BACKFILL, *args], capture_output=True, text=True, timeout=600)


def one_line_error(proc: subprocess.CompletedProcess, prog: str, *expected) -> str:
    """Exit 1; no traceback and no canary anywhere; exactly one line on stderr besides the progress line."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    no_canary(proc.stdout + proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
    assert "[while running" not in lines[0], lines[0]  # Beam's step note is not the user's business
    for part in expected:
        assert part in lines[0], lines[0]
    return lines[0]


# (a) no value of the file in a message -------------------------------------------------------------


def test_a_headerless_csv_is_named_as_such_without_quoting_a_cell(tmp_path):
    # Its first row holds the same document number twice (doc_number and handler_doc_number): the old
    # reader took the row for a header and refused "duplicate column '11010519491231002X'".
    path = write(tmp_path / "base.csv", csv_text(canary_rows(), header=None))
    refused(path, "no header row", "17 cells", "line_id, line_type, subscriber_kind, status")


def test_a_headerless_parquet_is_refused_without_its_column_names(tmp_path):
    # A header-less CSV converted by a tool that took its first row for the names: the names are values.
    row = canary_rows(1)[0]
    names = [row.get(c) or f"c{i}" for i, c in enumerate(CONTRACT)]
    table = pa.table({f"{n}{i}" if names.count(n) > 1 else n: pa.array(["x"]) for i, n in enumerate(names)})
    pq.write_table(table, tmp_path / "base.parquet")
    refused(str(tmp_path / "base.parquet"), "none of its 17 columns", "required: line_id")


def test_columns_beyond_the_contract_are_named_by_position_unless_plainly_names(tmp_path):
    rows = canary_rows()
    twice = CONTRACT + [CANARY_NAME, CANARY_NAME]  # a repeated cell outside the contract may be a value
    refused(write(tmp_path / "dup.csv", csv_text(rows, twice, ("a", "b"))), "columns 18 and 19 have the same name")
    again = CONTRACT + ["Line_ID"]
    refused(write(tmp_path / "d2.csv", csv_text(rows, again, ("x",))), "duplicate column line_id (columns 1 and 18)")
    header = CONTRACT + ["remark", "13800138000", CANARY_ADDRESS]
    _, info = plan_splits([write(tmp_path / "extra.csv", csv_text(rows, header, ("1", "2", "3")))])
    assert info.ignored_columns == ["column 19", "column 20", "remark"]


# (c) a list or a struct is not identity text ------------------------------------------------------


def typed_table(name_type: str) -> pa.Table:
    rows = canary_rows(2)
    columns = {c: pa.array([r.get(c) for r in rows], pa.string()) for c in CONTRACT if c not in ("name", "address")}
    if name_type == "list":
        columns["name"] = pa.array([[r["name"]] for r in rows], pa.list_(pa.string()))
    else:
        columns["name"] = pa.array([r["name"] for r in rows], pa.string())
    columns["address"] = pa.array([{"city": r["address"]} for r in rows])  # a struct
    return pa.table(columns)


def typed_avro(path, name_type: str) -> str:
    fields = [{"name": c, "type": ["null", "string"]} for c in CONTRACT if c not in ("name", "address")]
    name = {"type": "array", "items": "string"} if name_type == "list" else "string"
    fields += [
        {"name": "name", "type": ["null", name]},
        {
            "name": "address",
            "type": {"type": "record", "name": "Address", "fields": [{"name": "city", "type": "string"}]},
        },
    ]
    records = []
    for r in canary_rows(2):
        rec = {c: r.get(c) for c in CONTRACT if c not in ("name", "address")}
        rec["name"] = [r["name"]] if name_type == "list" else r["name"]
        rec["address"] = {"city": r["address"]}
        records.append(rec)
    schema = {"type": "record", "name": "Base", "fields": fields}
    with open(path, "wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(schema), records)
    return str(path)


def typed_file(tmp_path, fmt: str, name_type: str) -> str:
    if fmt == "parquet":
        pq.write_table(typed_table(name_type), tmp_path / f"base-{name_type}.parquet")
        return str(tmp_path / f"base-{name_type}.parquet")
    return typed_avro(tmp_path / f"base-{name_type}.avro", name_type)


@pytest.mark.parametrize("fmt", ["parquet", "avro"])
def test_list_name_and_struct_address_are_refused_naming_file_and_column(tmp_path, fmt):
    # The old reader sealed them as their Python text, "['金丝雀测试甲']" and "{'city': ...}".
    listed = typed_file(tmp_path, fmt, "list")
    assert refused(listed, "column name holds lists", "not text").startswith(listed + ": ")
    structured = typed_file(tmp_path, fmt, "text")
    refused(structured, "column address holds structs")
    # A split planned elsewhere (PlanInPipeline on a worker) is refused when it is read, too.
    for path, column in ((listed, "name"), (structured, "address")):
        with pytest.raises(InputError, match=f"column {column} holds") as info:
            list(read_split(Split(path, 0, fmt)))
        no_canary(str(info.value))


def test_avro_union_with_an_array_branch_is_refused(tmp_path):
    fields = [{"name": c, "type": ["null", "string"]} for c in CONTRACT if c != "name"]
    fields.append({"name": "name", "type": ["null", "string", {"type": "array", "items": "string"}]})
    records = [
        {**{c: r.get(c) for c in CONTRACT}, "name": [r["name"]] if i else r["name"]}
        for i, r in enumerate(canary_rows(2))
    ]
    with open(tmp_path / "u.avro", "wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema({"type": "record", "name": "B", "fields": fields}), records)
    refused(str(tmp_path / "u.avro"), "column name holds lists")


def test_typed_plain_columns_stay_accepted(tmp_path):
    table = pa.table({c: pa.array(["1"], pa.string()) for c in ("line_id", "line_type", "subscriber_kind", "status")})
    table = table.append_column("msisdn", pa.array([13800138000], pa.int64()))
    table = table.append_column("name", pa.array([b"abc"], pa.binary())).append_column(
        "region", pa.DictionaryArray.from_arrays(pa.array([0]), pa.array(["110105"]))
    )
    pq.write_table(table, tmp_path / "ok.parquet")
    splits, _ = plan_splits([str(tmp_path / "ok.parquet")])
    ((raw, bad),) = list(read_split(splits[0]))
    assert bad == [] and raw.select(["msisdn", "name", "region"]).to_pylist() == [
        {"msisdn": "13800138000", "name": "abc", "region": "110105"}
    ]


def test_registration_events_with_a_list_name_are_refused_and_json_objects_stay_dead_letters(tmp_path):
    names = field_names("registration_event")
    columns = {n: pa.array(["x"], pa.string()) for n in names if n != "name"}
    columns["name"] = pa.array([[CANARY_NAME]], pa.list_(pa.string()))
    pq.write_table(pa.table(columns), tmp_path / "ev.parquet")
    refused(str(tmp_path / "ev.parquet"), "column name holds lists", plan=plan_event_splits)
    line = json.dumps({"event_id": "E1", "line_id": "L1", "name": [CANARY_NAME]}, ensure_ascii=False).encode()
    raw, bad = parse_json_lines([(1, line)], "ev.jsonl", 4096)
    assert raw.num_rows == 0 and [(b.field, b.detail) for b in bad] == [("name", "field name is a JSON list, not text")]


# (b) no traceback without --debug: the logging filter and Beam's wrapped messages --------------------


def test_beam_logged_tracebacks_are_dropped_unless_debug():
    quiet = _Quiet()
    try:
        raise ValueError(CANARY_NAME)
    except ValueError:
        record = logging.LogRecord(
            "apache_beam.runners.common", logging.ERROR, __file__, 1, CANARY_NAME, (), sys.exc_info()
        )
    ours = logging.LogRecord("backfill.scan", logging.INFO, __file__, 1, "scan run: 1 file(s)", (), None)
    warning = logging.LogRecord("apache_beam.io", logging.WARNING, __file__, 1, "a warning", (), None)
    assert not quiet.filter(record) and quiet.filter(ours) and quiet.filter(warning)
    quiet.debug = True
    assert quiet.filter(record)


def test_beam_wrapped_messages_lose_the_step_note():
    text = "Traceback ...\npipelines.io.planning.InputError: f.parquet: cannot read (OSError) [while running 'Read']\n"
    assert _beam_wrapped(RuntimeError(text)) == "f.parquet: cannot read (OSError)"
    os_text = "OSError: [Errno 20] Not a directory: '/out/classified' [while running 'Write']"
    assert _beam_wrapped(RuntimeError(os_text)).startswith("/out/classified: Not a directory")


# through the real command ---------------------------------------------------------------------------


def corrupt_parquet(tmp_path) -> str:
    """A Parquet file whose footer reads but whose name column's data page header is garbage."""
    rows = canary_rows(3000)
    pq.write_table(
        pa.table({c: pa.array([r.get(c) for r in rows], pa.string()) for c in CONTRACT}), tmp_path / "b.parquet"
    )
    meta = pq.ParquetFile(tmp_path / "b.parquet").metadata
    offset = meta.row_group(0).column(CONTRACT.index("name")).data_page_offset
    data = bytearray((tmp_path / "b.parquet").read_bytes())
    data[offset : offset + 24] = b"\xff" * 24
    (tmp_path / "corrupt.parquet").write_bytes(bytes(data))
    return str(tmp_path / "corrupt.parquet")


def corrupt_avro(tmp_path) -> str:
    """A deflate Avro file whose data block is damaged in the middle (its header and schema read)."""
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(avro_schema("subscriber_base")), canary_rows(3000), codec="deflate")
    data = bytearray(buffer.getvalue())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    (tmp_path / "corrupt.avro").write_bytes(bytes(data))
    return str(tmp_path / "corrupt.avro")


def out_is_a_file(tmp_path) -> tuple[str, str]:
    path = write(tmp_path / "base.csv", csv_text(canary_rows(), CONTRACT))
    return path, write(tmp_path / "not-a-folder", "a file\n")


@pytest.mark.e2e
@pytest.mark.parametrize(
    "case, expected",
    [
        ("headerless", ("no header row",)),
        ("list_name", ("column name holds lists",)),
        ("corrupt_parquet", ("corrupt.parquet: cannot read",)),
        ("corrupt_avro", ("corrupt.avro: corrupt Avro data",)),
        ("out_is_a_file", ("not-a-folder",)),
    ],
)
def test_scan_failures_are_one_line_without_traceback(tmp_path, case, expected):
    out = str(tmp_path / "out")
    if case == "headerless":
        base = write(tmp_path / "base.csv", csv_text(canary_rows(), header=None))
    elif case == "list_name":
        base = typed_file(tmp_path, "parquet", "list")
    elif case == "corrupt_parquet":
        base = corrupt_parquet(tmp_path)
    elif case == "corrupt_avro":
        base = corrupt_avro(tmp_path)
    else:
        base, out = out_is_a_file(tmp_path)
    one_line_error(run("scan", "--base", base, "--out", out, "--as-of", AS_OF), "backfill scan", *expected)


@pytest.mark.e2e
def test_debug_shows_the_traceback(tmp_path):
    proc = run("scan", "--base", corrupt_parquet(tmp_path), "--out", str(tmp_path / "out"), "--as-of", AS_OF, "--debug")
    assert proc.returncode == 1 and "Traceback" in proc.stderr


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """A keyset and a first merge (a base with canary identities, one registration): its base and vault."""
    root = tmp_path_factory.mktemp("vault")
    keys = str(root / "secure" / "keys.json")
    assert run("keys", "init", "--keys", keys).returncode == 0
    base = write(root / "base.csv", csv_text(canary_rows(), CONTRACT))
    event = canary_registration(line_id="L0002", channel="AGENT", verified_by="ID_CARD_READER", agent_id=None)
    write(root / "ev1.jsonl", json.dumps(event, ensure_ascii=False) + "\n")
    write(root / "ev2.jsonl", json.dumps({**event, "event_id": "E2", "line_id": "L0001"}, ensure_ascii=False) + "\n")
    proc = run(
        "merge",
        "--base",
        base,
        "--registrations",
        str(root / "ev1.jsonl"),
        "--keys",
        keys,
        "--out",
        str(root / "m1"),
        "--as-of",
        AS_OF,
    )
    assert proc.returncode == 0, proc.stderr
    return root, keys


def merge_again(root, keys: str, vault: str, out: str) -> subprocess.CompletedProcess:
    return run(
        "merge",
        "--base",
        str(root / "m1" / "base"),
        "--vault",
        vault,
        "--registrations",
        str(root / "ev2.jsonl"),
        "--keys",
        keys,
        "--out",
        out,
        "--as-of",
        "2026-12-01",
    )


@pytest.mark.e2e
def test_a_tampered_vault_data_key_is_one_line(merged, tmp_path):
    root, keys = merged
    vault = str(tmp_path / "vault")
    shutil.copytree(root / "m1" / "vault", vault)
    folder = os.path.join(vault, "keys")
    (name,) = os.listdir(folder)
    table = pq.read_table(os.path.join(folder, name))
    rows = table.to_pylist()
    for row in rows:
        row["wrapped_dek"] = bytes([row["wrapped_dek"][0] ^ 1]) + row["wrapped_dek"][1:]
    pq.write_table(pa.Table.from_pylist(rows, table.schema), os.path.join(folder, name))
    proc = merge_again(root, keys, vault, str(tmp_path / "out"))
    one_line_error(proc, "backfill merge", "failed authentication")


@pytest.mark.e2e
def test_a_merge_on_a_vault_whose_key_was_retired_is_one_line(merged, tmp_path):
    root, keys = merged
    secure = tmp_path / "secure"
    shutil.copytree(os.path.dirname(keys), secure)
    os.remove(
        secure / "keys.registry.json"
    )  # it names the fixture's vaults, which a rotation from a copy would re-wrap
    keys2 = str(secure / "keys.json")
    old = str(tmp_path / "old-vault")  # a copy taken before the rotation: its data keys stay wrapped by v1
    shutil.copytree(root / "m1" / "vault", old)
    rotated = str(tmp_path / "rotated")
    shutil.copytree(root / "m1" / "vault", rotated)
    proc = run("keys", "rotate", "--keys", keys2, "--vault", "--vault-dir", rotated, "--retire-old")
    assert proc.returncode == 0, proc.stderr
    proc = merge_again(root, keys2, old, str(tmp_path / "out"))
    one_line_error(proc, "backfill merge", "cannot be unwrapped", "key v1")
