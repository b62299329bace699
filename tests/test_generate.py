"""Tests of ``backfill generate`` (dev/generate.py).

The synthetic base must be deterministic per seed, the same whether made at
once or chunk by chunk, round-trip through every output format, and look like
the operator exports of docs/regulation.md: shares as configured, valid numbers
that really validate (recomputed with transforms.scan.checkdigits), dirty
characters, dotted names, raw labels, cross-record cases. No generated value
is printed: assertions report counts and shares only.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from dev import generate_data as data
from dev import generate as gen
from schemas import field_names
from transforms.scan.checkdigits import char_matrix, gb11714, mod11_10, mod11_2, uscc_mod31

ROOT = Path(__file__).resolve().parents[1]
N = 150_000
SEED = 20260101
PROVINCES = {
    "11",
    "12",
    "13",
    "14",
    "15",
    "21",
    "22",
    "23",
    "31",
    "32",
    "33",
    "34",
    "35",
    "36",
    "37",
    "41",
    "42",
    "43",
    "44",
    "45",
    "46",
    "50",
    "51",
    "52",
    "53",
    "54",
    "61",
    "62",
    "63",
    "64",
    "65",
}


@pytest.fixture(scope="module")
def base() -> pa.Table:
    return gen.generate_table(N, SEED)


@pytest.fixture(scope="module")
def truth() -> pa.Table:
    return gen.generate_truth(N, SEED)


@pytest.fixture(scope="module")
def clean(base: pa.Table) -> dict[str, pa.Array]:
    """Every column roughly as the scan normalises it: NFKC, no format characters, trimmed; null -> ''."""
    out = {}
    for name in base.column_names:
        v = pc.utf8_normalize(pc.fill_null(base.column(name).combine_chunks(), ""), "NFKC")
        out[name] = pc.utf8_trim_whitespace(pc.replace_substring_regex(v, r"\p{Cf}", ""))
    out["doc_number"] = pc.utf8_upper(pc.replace_substring(out["doc_number"], " ", ""))
    for name in ("line_type", "subscriber_kind", "status"):
        out[name] = pc.utf8_upper(out[name])
    return out


def np_(mask) -> np.ndarray:
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def matches(values, pattern: str) -> np.ndarray:
    return np_(pc.match_substring_regex(values, pattern))


def col(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def arr(table: pa.Table, name: str) -> np.ndarray:
    return np.array(col(table, name), dtype=object)


# ---- determinism and chunking --------------------------------------------------------------


def test_same_seed_same_table_and_bytes(tmp_path: Path) -> None:
    a = gen.generate_table(20_000, 7)
    assert a.schema == gen.SCHEMA and a.column_names == field_names("subscriber_base")
    exts = ("parquet", "avro", "csv")
    for ext in exts:
        gen.write_base(str(tmp_path / f"one.{ext}"), 5_000, 7)
    gen.block.cache_clear()  # made again, not served from the block cache
    assert a.equals(gen.generate_table(20_000, 7))
    for ext in exts:
        gen.write_base(str(tmp_path / f"two.{ext}"), 5_000, 7)
        assert (tmp_path / f"one.{ext}").read_bytes() == (tmp_path / f"two.{ext}").read_bytes(), ext
    assert not a.slice(0, 1000).equals(gen.generate_table(1_000, 8))
    for ext in exts:
        gen.write_base(str(tmp_path / f"two.{ext}"), 5_000, 9)
        assert (tmp_path / f"one.{ext}").read_bytes() != (tmp_path / f"two.{ext}").read_bytes(), ext


def test_chunks_concatenate_to_the_whole() -> None:
    whole = gen.generate_table(130_000, 3)
    cuts = [0, 1, 49_999, 50_000, 50_001, 87_123, 100_000, 130_000]
    parts = [gen.generate_table(hi - lo, 3, start=lo) for lo, hi in zip(cuts, cuts[1:])]
    assert pa.concat_tables(parts).equals(whole)
    assert gen.generate_table(10, 3, start=120_000).equals(whole.slice(120_000, 10))
    empty = gen.generate_table(0, 3)
    assert empty.num_rows == 0 and empty.schema == gen.SCHEMA
    assert gen.generate_truth(1_000, 3, start=49_500).num_rows == 1_000


@pytest.mark.parametrize(
    "bad",
    [
        dict(lines=-1, seed=1),
        dict(lines=5, seed=-1),
        dict(lines=5, seed=1, start=-3),
        dict(lines=1.5, seed=1),
        dict(lines=5, seed=2**63),
    ],
)
def test_bad_arguments_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        gen.generate_table(**bad)


# ---- formats ------------------------------------------------------------------------------


def read_csv(path: Path, encoding: str) -> pa.Table:
    names = field_names("subscriber_base")
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(encoding=encoding),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )


@pytest.mark.parametrize(
    "name,encoding", [("b.parquet", "utf-8"), ("b.avro", "utf-8"), ("b.csv", "utf-8"), ("b.csv", "gb18030")]
)
def test_formats_round_trip(tmp_path: Path, name: str, encoding: str) -> None:
    path, lines = tmp_path / "sub" / name, 20_000
    assert gen.write_base(str(path), lines, 11, encoding=encoding, chunk_rows=7_000) == lines
    expected = gen.generate_table(lines, 11)
    if name.endswith(".parquet"):
        assert pq.ParquetFile(path).metadata.num_row_groups == 3
        got = pq.read_table(path)
    elif name.endswith(".avro"):
        with path.open("rb") as f:
            reader = fastavro.reader(f)
            assert reader.writer_schema["name"] == "subscriber_backfill.v1.SubscriberLine"
            got = pa.Table.from_pylist(list(reader), schema=gen.SCHEMA)
    else:
        raw = path.read_bytes()
        assert raw.decode(encoding).splitlines()[0] == ",".join(f'"{n}"' for n in field_names("subscriber_base"))
        if encoding == "gb18030":
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
        got = read_csv(path, encoding)
    assert got.schema.names == expected.schema.names
    assert got.cast(gen.SCHEMA).equals(expected)


def test_unknown_extension_and_encoding(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        gen.write_base(str(tmp_path / "b.xlsx"), 10, 1)
    with pytest.raises(ValueError):
        gen.write_base(str(tmp_path / "b.parquet"), 10, 1, encoding="gb18030")
    with pytest.raises(ValueError):
        gen.write_base(str(tmp_path / "b.csv"), 10, 1, encoding="latin-1")
    assert not list(tmp_path.iterdir())


# ---- shares ---------------------------------------------------------------------------------


def test_enum_shares(base: pa.Table, clean: dict) -> None:
    for name, shares in (("subscriber_kind", gen.KINDS), ("line_type", gen.LINE_TYPES), ("status", gen.STATUSES)):
        values = clean[name].to_numpy(zero_copy_only=False)
        for value, expected in shares.items():
            assert abs((values == value).mean() - expected) < 0.01, (name, value)
        dirty = ~np_(pc.equal(base.column(name), clean[name]))
        assert 0.01 < dirty.mean() < 0.05, name
        assert 0 < (~np.isin(values, list(shares))).mean() < 0.0005, name  # PREPAID & co: dead letters


def test_identity_shares(clean: dict, truth: pa.Table) -> None:
    classes = collections.Counter(col(truth, "identity_class"))
    for name, expected in gen.IDENTITY.items():
        assert abs(classes[name] / N - expected) < 0.01, name
    present = np.array(
        [np_(pc.greater(pc.utf8_length(clean[f]), 0)) for f in ("doc_type", "doc_number", "name", "address")]
    )
    assert abs((~present.any(axis=0)).mean() - gen.IDENTITY["MISSING"]) < 0.01
    org = np_(pc.equal(clean["subscriber_kind"], "ORGANIZATION"))
    person = np_(pc.equal(clean["subscriber_kind"], "INDIVIDUAL"))
    some = present.any(axis=0) & ~present.all(axis=0) & person
    assert 0.12 < some.mean() < 0.16  # INCOMPLETE individuals: some of the four fields, not all
    handler = np_(pc.greater(pc.utf8_length(clean["handler_name"]), 0))
    assert handler[org & present.all(axis=0)].mean() > 0.9 and not handler[person].any()


def test_document_shares(clean: dict, truth: pa.Table) -> None:
    kinds = arr(truth, "doc_kind")
    org = np.isin(kinds, list(gen.ORG_DOCS))
    assert abs((kinds[~org] == "RESIDENT_ID").mean() - 0.90) < 0.03
    assert abs((kinds[org] == "USCC").mean() - 0.70) < 0.05
    assert set(kinds) == set(gen.DOCS)
    labels = collections.Counter(clean["doc_type"].to_pylist())
    codes = sum(labels[c] for c in gen.DOCS)
    raw = sum(v for k, v in labels.items() if k and k not in gen.DOCS)
    assert 0.4 < raw / (codes + raw) < 0.6
    for label in (
        "01",
        "身份证",
        "IDCARD",
        "居民身份证(18位)",
        "户口薄",
        "护照",
        "营业执照",
        "组织机构代码证",
        "台胞证",
        "港澳证",
        "身份证15位",
        "驾驶证",
        "学生证",
        "其他",
    ):
        assert labels[label] > 0, label


def test_line_ids_duplicates_and_dates(base: pa.Table, clean: dict) -> None:
    ids = base.column("line_id")
    assert matches(ids, r"^(L\d{10})?$").all()
    empty = np_(pc.equal(ids, "")).sum()
    assert 0 < empty < N * 0.0005
    per_id = (
        base.filter(pc.not_equal(ids, ""))
        .group_by("line_id")
        .aggregate([("line_id", "count"), ("updated_at", "count_distinct")])
    )
    counts = per_id.column("line_id_count").to_numpy()
    assert abs((counts - 1).sum() / N - gen.DUPLICATE_LINE_ID) < 0.001
    assert (per_id.column("updated_at_count_distinct").to_numpy() == counts).all()  # re-exports differ in time
    stamps = base.column("updated_at")
    assert matches(stamps, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\+08:00)?$").all()
    assert abs(matches(stamps, r"\+08:00$").mean() - gen.ZONED_TIMESTAMP) < 0.01
    act, term = base.column("activated_on"), base.column("terminated_on")
    good = matches(act, r"^(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
    assert 0 < (~good).sum() < N * 0.0005  # 2019-13-40 & co: dead letters
    status = clean["status"].to_numpy(zero_copy_only=False)
    live = good & np.isin(status, ["ACTIVE", "SUSPENDED"])
    gone = good & (status == "TERMINATED")
    assert not np_(pc.is_valid(term))[live].any()
    assert np_(pc.greater(term, act))[gone].all()


def test_msisdn_and_region_and_agent(base: pa.Table, clean: dict) -> None:
    msisdn = base.column("msisdn")
    digits = pc.replace_substring_regex(pc.replace_substring_regex(msisdn, r"^(\+|00)86", ""), r"[ \-()]", "")
    types = clean["line_type"].to_numpy(zero_copy_only=False)
    mobile, data_card, fixed = (types == t for t in ("MOBILE", "DATA_CARD", "FIXED"))
    assert matches(digits, r"^(86)?1[3-9]\d{9}$")[mobile].all()
    assert matches(digits, r"^(86)?14[579]\d{8}$|^1\d{12}$")[data_card].all()
    assert matches(digits, r"^1\d{12}$")[data_card].mean() > 0.1  # 13-digit IoT numbers
    assert matches(digits, r"^0(10|2\d)\d{8}$|^0[3-9]\d\d\d{7,8}$|^[1-9]\d{9,10}$")[fixed].all()
    formatted = ~matches(msisdn, r"^1\d{10}$|^1\d{12}$|^0\d{9,11}$")
    assert abs(formatted.mean() - gen.MSISDN_FORMATTED) < 0.015
    for pattern in (r"^\+86", r"^0086", r"^1\d\d \d{4} \d{4}$", r"^1\d\d-\d{4}-\d{4}$", r"^0\d{2,3}-\d{7,8}$"):
        assert matches(msisdn, pattern).any(), pattern
    codes = {r[0] for r in data.REGIONS}
    assert len(codes) >= 150 and {c[:2] for c in codes} == PROVINCES
    assert set(base.column("region").unique().to_pylist()) <= codes
    agents = base.column("agent_id")
    assert abs(np_(pc.is_null(agents)).mean() - gen.NO_AGENT) < 0.01
    assert matches(pc.drop_null(agents), r"^AG\d{5}$").all() and len(agents.unique()) > 250


# ---- valid numbers really validate -----------------------------------------------------------


def test_resident_id_check_characters(base: pa.Table, truth: pa.Table) -> None:
    numbers = base.column("doc_number").combine_chunks()
    matrix, fits = char_matrix(numbers, 18)
    canonical = fits & matches(numbers, r"^\d{17}[\dX]$") & np_(pc.equal(base.column("doc_type"), "RESIDENT_ID"))
    ok = mod11_2(matrix[:, :17]) == matrix[:, 17]
    assert canonical.sum() > N * 0.15
    assert 0.90 < ok[canonical].mean() < 0.995  # the rest carry a planted checksum defect
    complete = arr(truth, "identity_class") == "COMPLETE"
    assert ok[canonical & complete].all()
    body = matrix[canonical & complete].view("S18").ravel().astype(str)
    born = np.array([b[6:14] for b in body])
    assert ((born >= "19350101") & (born <= "20100101")).all()  # ages 16-90 in 2026
    assert set(np.char.ljust(body, 2).astype("U2")) <= PROVINCES


def test_organisation_numbers_validate(base: pa.Table, truth: pa.Table, clean: dict) -> None:
    complete = arr(truth, "identity_class") == "COMPLETE"
    kinds = arr(truth, "doc_kind")
    matrix, fits = char_matrix(clean["doc_number"], 18)
    uscc = complete & fits & (kinds == "USCC")
    assert uscc.sum() > 1000
    assert (uscc_mod31(matrix[uscc, :17]) == matrix[uscc, 17]).all()
    assert (gb11714(matrix[uscc, 8:16]) == matrix[uscc, 16]).all()  # the embedded organisation code
    codes = pc.replace_substring(clean["doc_number"], "-", "").filter(pa.array(complete & (kinds == "ORG_CODE")))
    m9, fits9 = char_matrix(codes, 9)
    assert len(codes) > 100 and fits9.all() and (gb11714(m9[:, :8]) == m9[:, 8]).all()
    legacy = pc.filter(clean["doc_number"], pa.array(complete & (kinds == "BUSINESS_LICENSE")))
    m15, fits15 = char_matrix(legacy, 15)
    assert fits15.sum() > 50 and (mod11_10(m15[fits15, :14]) == m15[fits15, 14]).all()
    handler, hfits = char_matrix(base.column("handler_doc_number").combine_chunks(), 18)
    org = complete & hfits & np.isin(kinds, list(gen.ORG_DOCS))
    assert org.sum() > 1000 and (mod11_2(handler[org, :17]) == handler[org, 17]).all()


def test_planted_defects_are_there(base: pa.Table, truth: pa.Table, clean: dict) -> None:
    assert {d for d in truth.column("defect").unique().to_pylist() if d} == set(gen.INVALID)
    numbers = clean["doc_number"]
    for pattern in (
        r"^\d{15}$",
        r"^8[123]0000\d{11}[\dX]$",
        r"^9\d{17}$",
        r"^\d{6}(19000229|20230229)\d{3}[\dX]$",
        r"^\d\.\d{5}E\+17$",
        r"^PDY\d{5}-?[\dX]$",
    ):
        assert matches(numbers, pattern).any(), pattern
    names = set(clean["name"].unique().to_pylist())
    assert {"未知", "测试", "某某代办", "本人"} <= names
    assert {"哈哈", "不详", "北京"} <= set(clean["address"].unique().to_pylist())
    firms = pc.filter(clean["name"], pa.array(np.isin(arr(truth, "doc_kind"), list(gen.ORG_DOCS))))
    assert not matches(firms, "某某").any()


# ---- realism: dirt, names, cross-record cases ------------------------------------------------


def test_dirty_characters(base: pa.Table, clean: dict) -> None:
    numbers, names, addresses = (base.column(c) for c in ("doc_number", "name", "address"))
    counts = {
        "fullwidth digits": matches(numbers, "[\uff10-\uff19]").sum(),
        "fullwidth X": matches(numbers, "\uff38").sum(),
        "lowercase x": matches(numbers, r"^\d{17}x$").sum(),
        "zero width": sum(matches(c, "[\u200b\ufeff]").sum() for c in (numbers, names)),
        "ideographic space": sum(matches(c, "\u3000").sum() for c in (names, addresses)),
        "edge spaces": sum(matches(c, r"^ +\S|\S +$").sum() for c in (numbers, names, addresses)),
        "double spaces": matches(addresses, r"\S  \S").sum(),
        "grouped number": matches(numbers, r"^\d{6} \d{8} \d{3}[\dXx]$").sum(),
    }
    for what, count in counts.items():
        assert count > 20, what
    for c in ("name", "address"):  # a few per cent of the values that are there, not most
        there = np_(pc.greater(pc.utf8_length(clean[c]), 0))
        assert 0.005 < (~np_(pc.equal(base.column(c), clean[c])))[there].mean() < 0.05, c


def test_minority_foreign_and_organisation_names(base: pa.Table, clean: dict) -> None:
    names = pc.drop_null(base.column("name"))
    dotted = matches(names, r"\p{Han}[\x{00b7}\x{30fb}\x{2022}.]\p{Han}")
    assert 0.01 < dotted.mean() < 0.04
    for dot in ("\u00b7", "\u30fb", "\u2022", "."):
        assert (dotted & matches(names, "\\" + dot if dot == "." else dot)).any(), hex(ord(dot))
    assert matches(names, r"^[A-Z]+ [A-Z]+$").any()
    assert matches(names, "有限公司$").any() and matches(names, "(协会|总会)$").any()
    assert matches(clean["name"], r"^\p{Han}{2,4}$").mean() > 0.7
    addresses = pc.filter(clean["address"], pc.greater(pc.utf8_length(clean["address"]), 0))
    assert (matches(addresses, "^.{6,}$") & matches(addresses, "[省市区县路街号村]")).mean() > 0.97


def test_cross_record_cases(clean: dict, truth: pa.Table) -> None:
    person = np.isin(arr(truth, "doc_kind"), list(gen.PERSON_DOCS))
    person &= np_(pc.greater(pc.utf8_length(clean["doc_number"]), 0))
    table = pa.table(
        {"number": clean["doc_number"], "name": clean["name"], "live": pc.not_equal(clean["status"], "TERMINATED")}
    ).filter(pa.array(person))
    per_doc = table.group_by("number").aggregate([("live", "sum"), ("name", "count_distinct")])
    blocks = N // gen.BLOCK_ROWS
    assert (per_doc.column("live_sum").to_numpy() > 5).sum() >= gen.LINE_LIMIT_GROUPS * blocks
    assert (per_doc.column("name_count_distinct").to_numpy() > 1).sum() >= gen.NAME_CONFLICTS * blocks
    planted = collections.Counter(c for c in col(truth, "cross_record") if c)
    assert planted["DOC_LINE_LIMIT"] >= 6 * gen.LINE_LIMIT_GROUPS * blocks
    assert planted["DOC_NAME_CONFLICT"] >= 2 * gen.NAME_CONFLICTS * blocks


def test_no_chance_sharing_of_citizen_numbers(base: pa.Table, clean: dict, truth: pa.Table) -> None:
    """Outside the planted cases two lines never share a valid citizen number by chance."""
    born, seq = gen.person(SEED, np.arange(2_000_000))
    assert len(np.unique((born - gen.BORN_FROM) * 1000 + seq)) == 2_000_000
    keep = (arr(truth, "identity_class") == "COMPLETE") & (arr(truth, "doc_kind") == "RESIDENT_ID")
    keep &= np.array([c is None for c in col(truth, "cross_record")])
    table = pa.table({"number": clean["doc_number"], "line_id": base.column("line_id")}).filter(pa.array(keep))
    per_number = table.group_by("number").aggregate([("line_id", "count_distinct")])
    assert (per_number.column("line_id_count_distinct").to_numpy() == 1).all()


# ---- command line -----------------------------------------------------------------------------


def test_cli_writes_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "base.parquet"
    assert gen.main(["--lines", "1234", "--seed", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and re.fullmatch(rf"wrote 1,234 lines to {re.escape(str(out))} in [\d.]+ s", printed[0])
    assert pq.read_table(out).equals(gen.generate_table(1234, 5))
    csv = tmp_path / "base.csv"
    assert gen.main(["--lines", "100", "--seed", "5", "--out", str(csv), "--encoding", "gb18030"]) == 0
    assert read_csv(csv, "gb18030").equals(gen.generate_table(100, 5))


@pytest.mark.parametrize(
    "args",
    [
        ["--lines", "-5", "--seed", "1", "--out", "x.parquet"],
        ["--lines", "5", "--seed", "1", "--out", "x.xlsx"],
        ["--lines", "abc", "--seed", "1", "--out", "x.csv"],
        ["--lines", "5", "--seed", "-1", "--out", "x.csv"],
        ["--lines", "5", "--seed", "1", "--out", "x.csv", "--encoding", "latin-1"],
        ["--lines", "5", "--seed", "1", "--out", "x.avro", "--encoding", "gb18030"],
        ["--lines", "5", "--seed", "1"],
        ["--lines", "5", "--seed", "1", "--out", "x.csv", "--bogus"],
    ],
)
def test_cli_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str]) -> None:
    args = [str(tmp_path / a) if a.startswith("x.") else a for a in args]
    assert gen.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("backfill generate: error:") and "Traceback" not in captured.err
    assert not list(tmp_path.iterdir())


def test_cli_unwritable_path_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert gen.main(["--lines", "10", "--seed", "1", "--out", str(blocker / "base.csv")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.e2e
def test_python_dash_m(tmp_path: Path) -> None:
    """The module entry point: ``python -m dev.generate`` with a bad argument exits 2, one line."""
    run = subprocess.run(
        [sys.executable, "-m", "dev.generate", "--lines", "-5", "--seed", "2", "--out", str(tmp_path / "b.csv")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
