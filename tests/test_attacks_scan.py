"""The scan's inputs under attack, through the real ``backfill scan``: each case lost rows silently, or quoted what
it should not, before its fix. Every run is checked for the canary values in stdout, stderr and every output file
(raw bytes, and Parquet decoded), and for rows in = classified + dead letters, counted from the files.

(a) A CSV with old Mac line breaks (a lone CR, "CSV (Macintosh)" of a spreadsheet) was read as one header row:
    0 rows in, exit 0, every line of the base missing. Its rows are read now, whole or cut in byte ranges.
(b) An unbalanced quote joined every line after it into one row: a file of 6 data lines gave "2 rows in", one
    ROW_MALFORMED, and the lines it swallowed were gone uncounted. Now each swallowed line is a dead letter too.
(c) A folder's subfolders were passed over without a word: a Hive-style ``region=11/`` partition, a Spark
    ``base.csv/`` folder of parts or a linked folder beside the top-level files, and their rows were missing.
    Now refused, nothing written; hidden and marker folders (``_temporary``, ``.x``) and a link loop stay fine.
    A subfolder that cannot be listed (chmod 000) was passed over as empty: refused too.
(d) ``--encoding`` quoted whatever it was given (a cell pasted by mistake) in its error.
(e) A semicolon- or tab-separated export was refused as "no header row (the file seems to start with data)".
(f) A base whose identity columns sit under other headers (姓名, 证件号码, 地址) classified every line as lacking
    them with no word on stderr beyond "ignoring column 11, column 12, column 13".
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.support.attacks import AS_OF, BACKFILL, CANARIES, CONTRACT, canary_rows
from tests.support.attacks import refused as refused_by
from tests.support.rows import CANARY_NAME, CANARY_NUMBER, person

pytestmark = pytest.mark.e2e


def scan(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    argv = [BACKFILL, "scan", *args, "--as-of", AS_OF, "--progress-seconds", "0"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not any(c in proc.stdout + proc.stderr for c in CANARIES), proc.stderr
    return proc


def refused(proc: subprocess.CompletedProcess, *expected: str) -> str:
    return refused_by(proc, "backfill scan", 1, *expected)


def csv_text(rows: list[dict], columns=CONTRACT, newline: str = "\n") -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(columns)
    writer.writerows([[r.get(c) or "" for c in columns] for r in rows])
    return buf.getvalue()


def accounted(out) -> int:
    """Rows out of a scan, counted from its files (classified + dead letters), checked against its manifest, with
    no canary in any file it wrote."""
    for path in [p for p in out.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        assert not any(c.encode("utf-8") in data for c in CANARIES), path
        if path.suffix == ".parquet":
            text = json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False, default=str)
            assert not any(c in text for c in CANARIES), path
    classified = pq.read_table(out / "classified").num_rows
    dead = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in (out / "dead_letter").glob("*.jsonl"))
    counts = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["counts"]
    assert (counts["rows_in"], counts["classified"], counts["dead_letters"]) == (classified + dead, classified, dead)
    assert counts["balanced"]
    return classified + dead


# (a) old Mac line breaks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n"], ids=["cr", "crlf", "lf"])
def test_every_row_of_a_csv_is_read_whatever_its_line_breaks(tmp_path, newline):
    rows = canary_rows([f"L{i:04d}" for i in range(1, 8)])
    base = tmp_path / "base.csv"
    base.write_bytes(csv_text(rows, newline=newline).encode("utf-8"))
    out = tmp_path / "scan"
    proc = scan("--base", str(base), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert accounted(out) == len(rows)
    assert sorted(pq.read_table(out / "classified", columns=["line_id"]).column(0).to_pylist()) == [
        r["line_id"] for r in rows
    ]


def test_a_csv_with_lone_cr_line_breaks_cut_in_byte_ranges_reads_every_row_once(tmp_path):
    from dev.generate import generate_table
    from pipelines.io.ranges import split_large_files
    from tests.support.split_reads import planned, read

    table = generate_table(2_000, 3)
    path = tmp_path / "base.csv"
    pacsv.write_csv(table, path)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    whole = planned(str(path))
    rows, bad = read([whole])
    assert rows.num_rows == table.num_rows and not bad
    for size in (whole.size // 7, whole.size // 3):
        splits = split_large_files([whole], "utf-8", lambda fn, calls: [fn(*a) for a in calls], size)
        assert len(splits) > 1
        cut_rows, cut_bad = read(splits)
        assert cut_rows.equals(rows) and cut_bad == bad


# (b) an unbalanced quote -------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", [[], ["--workers", "1"], ["--direct_num_workers", "1"]], ids=["pool", "one", "beam"])
def test_the_lines_an_unbalanced_quote_swallows_are_dead_letters_not_lost(tmp_path, engine):
    rows = canary_rows([f"L{i:04d}" for i in range(1, 7)])
    lines = csv_text(rows).splitlines(keepends=True)
    lines[2] = lines[2].replace(CANARY_NAME, '"' + CANARY_NAME)  # data row 2 opens a quote that never closes
    base = tmp_path / "base.csv"
    base.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "scan"
    proc = scan("--base", str(base), "--out", str(out), *engine)
    assert proc.returncode == 0, proc.stderr
    assert accounted(out) == len(rows)  # every data line: row 1 classified, row 2 and the 4 lines after it dead
    letters = [json.loads(x) for p in (out / "dead_letter").glob("*.jsonl") for x in p.read_text().splitlines()]
    swallowed = len(lines) - 3  # the lines after data row 2
    assert sorted((d["reason"], d["source_row"], d["detail"]) for d in letters) == sorted(
        [
            (
                "ROW_MALFORMED",
                2,
                f"expected 17 fields, found 12: a quote in it is not closed and runs over {swallowed} line break(s)",
            )
        ]
        + [("ROW_MALFORMED", 2, "a line read into data row 2 by a quote not closed in it")] * swallowed
    )


def test_a_row_of_the_wrong_field_count_on_one_line_stays_one_dead_letter(tmp_path):
    rows = canary_rows([f"L{i:04d}" for i in range(1, 6)])
    rows.insert(1, person(line_id="L0009", address="北京市\n朝阳区"))  # a quoted value over two lines: a good row
    records = [csv_text([r]).split("\n", 1)[1] for r in rows]  # each row's record, after the header
    records[3] = records[3].rstrip("\n") + f",{CANARY_NUMBER}\n"  # data row 4: one cell too many
    base = tmp_path / "base.csv"
    base.write_text(csv_text([]) + "".join(records), encoding="utf-8")
    out = tmp_path / "scan"
    proc = scan("--base", str(base), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert accounted(out) == len(rows)
    letters = [json.loads(x) for p in (out / "dead_letter").glob("*.jsonl") for x in p.read_text().splitlines()]
    assert [(d["reason"], d["source_row"]) for d in letters] == [("ROW_MALFORMED", 4)]


# (c) subfolders -------------------------------------------------------------------------------------------


def _folder_with(tmp_path, nested: str, link: bool = False):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "part-0.csv").write_text(csv_text(canary_rows(["L0001", "L0002"])), encoding="utf-8")
    target = (tmp_path / "elsewhere" if link else folder) / nested
    target.parent.mkdir(parents=True)
    target.write_text(csv_text(canary_rows(["L0003"])), encoding="utf-8")
    if link:
        os.symlink(tmp_path / "elsewhere" / nested.split("/")[0], folder / "linked")
    return folder


@pytest.mark.parametrize(
    "nested, shown",
    [
        ("region=11/part-1.csv", "region=11/part-1.csv"),  # a Hive-style partition
        ("base.csv/part-00000.csv", "base.csv/part-00000.csv"),  # Spark writes a folder named as the file
        ("day/2026-11-30/part-1.csv", "day/2026-11-30/part-1.csv"),
        ("more/part-1.csv.gz", "more/part-1.csv.gz"),
    ],
)
def test_files_in_subfolders_are_refused_not_left_out(tmp_path, nested, shown):
    folder = _folder_with(tmp_path, nested)
    out = tmp_path / "scan"
    refused(scan("--base", str(folder), "--out", str(out)), str(folder), "1 file(s) in its subfolders", shown)
    assert not out.exists()


def test_a_linked_subfolder_is_refused_too_and_a_link_loop_is_not_a_subfolder(tmp_path):
    folder = _folder_with(tmp_path, "extra/part-1.csv", link=True)
    out = tmp_path / "scan"
    refused(scan("--base", str(folder), "--out", str(out)), "linked/part-1.csv")
    os.remove(folder / "linked")
    os.symlink(folder, folder / "self")  # a loop back to the folder: its files are the folder's own
    proc = scan("--base", str(folder), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert accounted(out) == 2


def test_hidden_and_marker_subfolders_and_other_files_in_subfolders_are_passed_over(tmp_path):
    folder = _folder_with(tmp_path, "_temporary/0/part-1.csv")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "old.csv").write_text("x\n", encoding="utf-8")
    (folder / "logs").mkdir()
    (folder / "logs" / "export.log").write_text("done\n", encoding="utf-8")
    out = tmp_path / "scan"
    proc = scan("--base", str(folder), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert accounted(out) == 2
    # each subfolder given with --base is read, beside the folder
    proc = scan("--base", str(folder), "--base", str(folder / "_temporary" / "0"), "--out", str(tmp_path / "both"))
    assert proc.returncode == 0, proc.stderr
    assert accounted(tmp_path / "both") == 3


def test_one_file_under_two_names_is_refused_not_read_twice(tmp_path):
    # read twice, every row of it was its own duplicate (DUPLICATE_LINE_ID dead letters): balanced, and wrong
    folder = _folder_with(tmp_path, "_temporary/0/part-1.csv")
    os.symlink(folder / "part-0.csv", folder / "again.csv")
    out = tmp_path / "scan"
    refused(scan("--base", str(folder), "--out", str(out)), "are the same file", "give it once")
    os.remove(folder / "again.csv")
    os.link(folder / "part-0.csv", tmp_path / "hard.csv")  # a second name without a link to follow
    refused(scan("--base", str(folder), "--base", str(tmp_path / "hard.csv"), "--out", str(out)), "same file")
    assert not out.exists()
    proc = scan("--base", str(folder), "--base", str(folder / "part-0.csv"), "--out", str(out))  # one name, twice
    assert proc.returncode == 0, proc.stderr
    assert accounted(out) == 2


def test_a_link_to_a_missing_file_is_refused_and_an_editor_lock_passed_over(tmp_path):
    folder = _folder_with(tmp_path, "_temporary/0/part-1.csv")
    os.symlink(tmp_path / "gone" / "part-9.csv", folder / "part-9.csv")  # the export's file was moved away
    out = tmp_path / "scan"
    refused(scan("--base", str(folder), "--out", str(out)), "part-9.csv is a link to a file that does not exist")
    os.remove(folder / "part-9.csv")
    os.symlink("root@host.1234", folder / ".#part-0.csv")  # an editor's lock: a hidden link to nothing
    proc = scan("--base", str(folder), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert accounted(out) == 2


# (d), (e) messages -----------------------------------------------------------------------------------------


def test_an_encoding_that_is_no_codec_name_is_not_quoted(tmp_path):
    base = tmp_path / "base.csv"
    base.write_text(csv_text(canary_rows(["L0001"])), encoding="utf-8")
    out = tmp_path / "scan"
    refused(scan("--base", str(base), "--out", str(out), "--encoding", CANARY_NAME), "unsupported --encoding")
    refused(scan("--base", str(base), "--out", str(out), "--encoding", "latin-1"), "--encoding 'latin-1'")
    assert not out.exists()


@pytest.mark.parametrize("sep, shown", [(";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")])
def test_an_export_separated_by_other_than_commas_is_named_as_such(tmp_path, sep, shown):
    text = csv_text(canary_rows(["L0001", "L0002"])).replace(",", sep)
    base = tmp_path / "base.csv"
    base.write_text(text, encoding="utf-8")
    out = tmp_path / "scan"
    refused(scan("--base", str(base), "--out", str(out)), f"separated by {shown}, not commas")
    assert not out.exists()


# (f) identity under other headers ------------------------------------------------------------------------


def test_identity_columns_under_other_headers_are_named_on_stderr(tmp_path):
    # headers that are no name of these columns (schemas/column_aliases.yaml): a contact person and address
    renamed = {"doc_number": "备用号码", "name": "联系人", "address": "联系地址"}
    rows = canary_rows(["L0001", "L0002", "L0003"])
    text = csv_text(rows)
    header, body = text.split("\n", 1)
    base = tmp_path / "base.csv"
    base.write_text(",".join(renamed.get(c, c) for c in CONTRACT) + "\n" + body, encoding="utf-8")
    out = tmp_path / "scan"
    proc = scan("--base", str(base), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "scan: doc_number, name, address: no such column in (a file of) the base" in proc.stderr
    assert "备用号码" not in proc.stderr and "联系人" not in proc.stderr
    assert accounted(out) == len(rows)
    # a base with every identity column says nothing of the kind
    base.write_text(text, encoding="utf-8")
    proc = scan("--base", str(base), "--out", str(tmp_path / "plain"))
    assert proc.returncode == 0 and "no such column" not in proc.stderr, proc.stderr


def test_a_subfolder_that_cannot_be_listed_is_refused_not_passed_over(tmp_path, monkeypatch):
    # chmod 000 on a subfolder (as root, simulated): the walk passed over it silently, and what it held with it
    from pipelines.io.planning import InputError, plan_splits

    folder = _folder_with(tmp_path, "locked/part-1.csv")
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", _refusing(real_scandir, str(folder / "locked")))
    with pytest.raises(InputError) as err:
        plan_splits([str(folder)])
    assert str(err.value) == f"{folder}: 1 of its subfolders cannot be listed (such as locked); nothing was read"
    monkeypatch.setattr(os, "scandir", _refusing(real_scandir, str(folder)))
    with pytest.raises(InputError) as err:
        plan_splits([str(folder)])
    assert str(err.value) == f"{folder}: cannot be listed (PermissionError); nothing was read"


def _refusing(real_scandir, refused_path: str):
    def scandir(path="."):
        if os.fspath(path) == refused_path:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    return scandir


# (k) numbers a spreadsheet or a dataframe wrote -------------------------------------------------------------


def test_numbers_written_as_floats_are_read_as_the_numbers_they_are(tmp_path):
    """A pandas export writes an integer column with a null as doubles (Parquet) or ``13800138000.0`` (CSV): the
    classified lines carry ``13800138000`` and region ``110101`` (they carried ``1.3800138e+10`` or the 12 digits
    ``138001380000``, a stranger's number); a number in scientific notation has lost digits and is none."""
    rows = [person(line_id=f"F{i}", msisdn=f"1380013800{i}", region="110101") for i in range(4)]
    table = pa.Table.from_pylist(rows)
    floats = {"msisdn": [13800138000.0, 13800138001.0, None, 13800138003.0], "region": [110101.0] * 4}
    for name, values in floats.items():
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    folder = tmp_path / "base"
    folder.mkdir()
    pq.write_table(table, folder / "part-0.parquet")
    spread = [
        person(line_id="S0", msisdn="13900139000.0", region="110101.0"),
        person(line_id="S1", msisdn="1.44012E+12"),
    ]
    (folder / "part-1.csv").write_text(csv_text(spread), encoding="utf-8")
    out = tmp_path / "out"
    assert scan("--base", str(folder), "--out", str(out)).returncode == 0
    got = {r["line_id"]: (r["msisdn"], r["region"]) for r in pq.read_table(out / "classified").to_pylist()}
    assert got == {
        "F0": ("13800138000", "110101"),
        "F1": ("13800138001", "110101"),
        "F2": (None, "110101"),
        "F3": ("13800138003", "110101"),
        "S0": ("13900139000", "110101"),
        "S1": (None, "110105"),
    }
    assert accounted(out) == 6


def test_document_numbers_marked_as_text_for_a_spreadsheet_are_checked_as_the_number(tmp_path):
    """``'110101...`` and ``="110101..."`` (an export's way to keep a spreadsheet from rounding 18 digits) were
    DOC_NUMBER_FORMAT: every such line was asked to register again."""
    body = "11010519491231002"
    number = body + "10X98765432"[sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(body)) % 11]
    rows = [person(line_id=f"X{i}", msisdn=f"1370000000{i}", doc_number=n) for i, n in enumerate(
        [number, "'" + number, f'="{number}"'])]  # fmt: skip
    path = tmp_path / "base.csv"
    path.write_text(csv_text(rows), encoding="utf-8")
    out = tmp_path / "out"
    assert scan("--base", str(path), "--out", str(out)).returncode == 0
    got = {r["line_id"]: (r["identity_status"], r["reasons"]) for r in pq.read_table(out / "classified").to_pylist()}
    assert got == {f"X{i}": ("COMPLETE", []) for i in range(3)}
    assert accounted(out) == 3


# (l) an operator export's own column names ------------------------------------------------------------------


CHINESE = {  # schemas/column_aliases.yaml: one of each column's names
    "line_id": "用户编号", "msisdn": "服务号码", "line_type": "号码类型", "subscriber_kind": "客户类型",
    "status": "用户状态", "activated_on": "入网时间", "terminated_on": "拆机时间", "region": "地区编码",
    "agent_id": "渠道编码", "doc_type": "证件类型", "doc_number": "证件号码", "name": "客户名称",
    "address": "证件地址", "handler_doc_type": "经办人证件类型", "handler_doc_number": "经办人证件号码",
    "handler_name": "经办人姓名", "updated_at": "更新时间",
}  # fmt: skip


def test_a_base_under_its_exports_chinese_column_names_reads_as_under_the_contracts(tmp_path):
    """An operator export names its columns 服务号码, 证件号码, 客户名称...: those columns were left out (every line
    then needed registration, a warning on stderr); they are the contract's columns, with the same outputs."""
    from tests.support.rows import organisation

    rows = [person(line_id="P1", msisdn="13700000001"), organisation(line_id="O1", msisdn="13700000002")]
    rows += [person(line_id="P2", msisdn="13700000003", doc_number="")]
    english, chinese = tmp_path / "en.csv", tmp_path / "zh.parquet"
    english.write_text(csv_text(rows), encoding="utf-8")
    table = pacsv.read_csv(
        english, convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(CONTRACT, pa.string()))
    )
    pq.write_table(table.rename_columns([CHINESE[c] for c in table.column_names]), chinese)
    outs = {}
    for name, path in (("en", english), ("zh", chinese)):
        outs[name] = tmp_path / f"out-{name}"
        proc = scan("--base", str(path), "--out", str(outs[name]))
        assert proc.returncode == 0 and "no such column" not in proc.stderr, proc.stderr
    en, zh = (pq.read_table(outs[k] / "classified").drop_columns(["as_of"]).sort_by("line_id") for k in ("en", "zh"))
    assert zh.equals(en) and en.num_rows == 3
    needs = {r["line_id"]: r["needs_registration"] for r in zh.to_pylist()}
    assert needs == {"O1": False, "P1": False, "P2": True}  # the document number was read where there is one


def test_a_column_under_two_of_its_names_is_refused(tmp_path):
    row = person(line_id="P1", msisdn="13700000001")
    columns = list(CONTRACT) + ["手机号码"]
    path = tmp_path / "two.csv"
    path.write_text(csv_text([{**row, "手机号码": row["msisdn"]}], columns=columns), encoding="utf-8")
    line = refused(scan("--base", str(path), "--out", str(tmp_path / "out")), "duplicate column msisdn")
    assert f"columns {CONTRACT.index('msisdn') + 1} and {len(columns)}" in line


def test_the_alias_table_names_only_contract_columns_and_registration_files_take_it_too():
    from transforms.core.column_names import aliases
    from pipelines.io.planning import map_columns
    from transforms.core.rows import BASE, EVENTS

    for contract in (BASE, EVENTS):
        table = aliases(contract)
        assert table and set(table.values()) <= set(contract.columns), contract.name
        assert not set(table) & set(contract.columns), contract.name  # an alias is never another column's name
    names = [
        "登记流水号",
        "用户编号",
        "证件类型",
        "证件号码",
        "姓名",
        "证件地址",
        "登记渠道",
        "受理工号",
        "核验方式",
        "登记时间",
    ]
    mapping, ignored, _ = map_columns("events.csv", [" " + n for n in names] + ["备注"], EVENTS)
    assert mapping == dict(zip(["event_id", "line_id", "doc_type", "doc_number", "name", "address", "channel",
                                "agent_id", "verified_by", "registered_at"], [" " + n for n in names]))  # fmt: skip
    assert ignored == [f"column {len(names) + 1}"]  # a column outside the contract is named by position
