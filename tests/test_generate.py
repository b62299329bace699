"""Tests of ``backfill generate`` (pipelines/generate.py).

The synthetic base must be deterministic per seed, the same whether made at
once or chunk by chunk, round-trip through every output format, and look like
the operator exports of shared/domain.md: shares as configured, valid numbers
that really validate (recomputed with transforms.checkdigits), dirty
characters, dotted names, raw labels, cross-record cases. No generated value
is printed: assertions report counts and shares only.
"""
from __future__ import annotations

import collections
import io
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pipelines import _generate_data as data
from pipelines import generate as gen
from schemas import field_names
from transforms.checkdigits import char_matrix, gb11714, mod11_2, uscc_mod31

ROOT = Path(__file__).resolve().parents[1]
N = 200_000
SEED = 20260101
PROVINCES = {"11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42",
             "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65"}


@pytest.fixture(scope="module")
def base() -> pa.Table:
    return gen.generate_table(N, SEED)


@pytest.fixture(scope="module")
def truth() -> pa.Table:
    return gen.generate_truth(N, SEED)


def col(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist()


def clean(value: str | None) -> str:
    """Roughly the scan's normalisation: NFKC, no format characters, trimmed."""
    if value is None:
        return ""
    value = unicodedata.normalize("NFKC", value)
    return "".join(ch for ch in value if unicodedata.category(ch) != "Cf").strip()


def share(values, predicate) -> float:
    values = list(values)
    return sum(1 for v in values if predicate(v)) / len(values)


# ---- determinism and chunking --------------------------------------------------------------

def test_same_seed_same_table_and_bytes(tmp_path: Path) -> None:
    a, b = gen.generate_table(60_000, 7), gen.generate_table(60_000, 7)
    assert a.equals(b)
    assert a.schema == gen.SCHEMA and a.column_names == field_names("subscriber_base")
    assert not a.equals(gen.generate_table(60_000, 8))
    for ext in ("parquet", "avro", "csv"):
        one, two = tmp_path / f"one.{ext}", tmp_path / f"two.{ext}"
        gen.write_base(str(one), 30_000, 7)
        gen.write_base(str(two), 30_000, 7)
        assert one.read_bytes() == two.read_bytes(), ext
        gen.write_base(str(two), 30_000, 9)
        assert one.read_bytes() != two.read_bytes(), ext


def test_chunks_concatenate_to_the_whole() -> None:
    whole = gen.generate_table(130_000, 3)
    cuts = [0, 1, 49_999, 50_000, 50_001, 87_123, 100_000, 130_000]
    parts = [gen.generate_table(hi - lo, 3, start=lo) for lo, hi in zip(cuts, cuts[1:])]
    assert pa.concat_tables(parts).equals(whole)
    assert gen.generate_table(10, 3, start=120_000).equals(whole.slice(120_000, 10))
    empty = gen.generate_table(0, 3)
    assert empty.num_rows == 0 and empty.schema == gen.SCHEMA


@pytest.mark.parametrize("bad", [dict(lines=-1, seed=1), dict(lines=5, seed=-1), dict(lines=5, seed=1, start=-3),
                                 dict(lines=1.5, seed=1), dict(lines=5, seed=2 ** 63)])
def test_bad_arguments_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        gen.generate_table(**bad)


# ---- formats ------------------------------------------------------------------------------

def read_csv(path: Path, encoding: str) -> pa.Table:
    names = field_names("subscriber_base")
    return pacsv.read_csv(
        path, read_options=pacsv.ReadOptions(encoding=encoding),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                             strings_can_be_null=True, quoted_strings_can_be_null=False))


@pytest.mark.parametrize("name,encoding", [("b.parquet", "utf-8"), ("b.avro", "utf-8"), ("b.csv", "utf-8"),
                                           ("b.csv", "gb18030")])
def test_formats_round_trip(tmp_path: Path, name: str, encoding: str) -> None:
    path, lines = tmp_path / "sub" / name, 30_000
    assert gen.write_base(str(path), lines, 11, encoding=encoding, chunk_rows=7_000) == lines
    expected = gen.generate_table(lines, 11)
    if name.endswith(".parquet"):
        assert pq.ParquetFile(path).metadata.num_row_groups == 5
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

def test_enum_shares(base: pa.Table) -> None:
    for name, shares in (("subscriber_kind", gen.KINDS), ("line_type", gen.LINE_TYPES), ("status", gen.STATUSES)):
        values = [(v or "").strip().upper() for v in col(base, name)]
        for value, expected in shares.items():
            assert abs(share(values, lambda v: v == value) - expected) < 0.01, (name, value)
        raw = col(base, name)
        dirty = share(raw, lambda v: v is not None and v != v.strip().upper())
        assert 0.01 < dirty < 0.05, name
        unknown = share(values, lambda v: v not in shares)
        assert 0 < unknown < 0.0005, name


def test_identity_shares(base: pa.Table, truth: pa.Table) -> None:
    classes = collections.Counter(col(truth, "identity_class"))
    for name, expected in gen.IDENTITY.items():
        assert abs(classes[name] / N - expected) < 0.01, name
    main = ("doc_type", "doc_number", "name", "address")
    present = np.array([[bool(clean(v)) for v in col(base, f)] for f in main])
    none = ~present.any(axis=0)
    assert abs(none.mean() - gen.IDENTITY["MISSING"]) < 0.01
    kind = np.array(col(base, "subscriber_kind"))
    org = np.char.upper(np.char.strip(kind.astype(str))) == "ORGANIZATION"
    some = present.any(axis=0) & ~present.all(axis=0) & ~org
    assert 0.12 < some.mean() < 0.16  # individuals: INCOMPLETE lines have some fields but not all
    handler = np.array([bool(clean(v)) for v in col(base, "handler_name")])
    assert handler[org & present.all(axis=0)].mean() > 0.9 and not handler[~org].any()


def test_document_shares(base: pa.Table, truth: pa.Table) -> None:
    kinds = np.array(col(truth, "doc_kind"))
    org = np.isin(kinds, list(gen.ORG_DOCS))
    assert abs((kinds[~org] == "RESIDENT_ID").mean() - 0.90) < 0.03
    assert abs((kinds[org] == "USCC").mean() - 0.70) < 0.05
    assert set(kinds) == set(gen.DOCS)
    labels = collections.Counter(clean(v) for v in col(base, "doc_type"))
    codes = sum(labels[c] for c in gen.DOCS)
    raw = sum(v for k, v in labels.items() if k and k not in gen.DOCS)
    assert 0.4 < raw / (codes + raw) < 0.6
    for label in ("01", "身份证", "IDCARD", "居民身份证(18位)", "户口薄", "护照", "营业执照", "组织机构代码证",
                  "台胞证", "港澳证", "身份证15位", "驾驶证", "学生证", "其他"):
        assert labels[label] > 0, label


def test_line_ids_duplicates_and_dates(base: pa.Table) -> None:
    ids = col(base, "line_id")
    assert all(re.fullmatch(r"L\d{10}", i) for i in ids if i)
    assert 0 < ids.count("") < N * 0.0005
    counts = collections.Counter(i for i in ids if i)
    repeated = sum(c - 1 for c in counts.values())
    assert abs(repeated / N - gen.DUPLICATE_LINE_ID) < 0.001
    stamps = collections.defaultdict(set)
    for i, stamp in zip(ids, col(base, "updated_at")):
        stamps[i].add(stamp)
    assert all(len(stamps[i]) == c for i, c in counts.items() if c > 1)  # re-exports differ in updated_at
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\+08:00)?", s) for s in col(base, "updated_at"))
    zoned = share(col(base, "updated_at"), lambda s: s.endswith("+08:00"))
    assert abs(zoned - gen.ZONED_TIMESTAMP) < 0.01
    status = [(s or "").strip().upper() for s in col(base, "status")]
    bad_dates = 0
    for s, act, term in zip(status, col(base, "activated_on"), col(base, "terminated_on")):
        if not re.fullmatch(r"(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])", act):
            bad_dates += 1
            continue
        if s in ("ACTIVE", "SUSPENDED"):
            assert term is None
        elif s == "TERMINATED":
            assert term is not None and term > act
    assert 0 < bad_dates < N * 0.0005


def test_msisdn_and_region_and_agent(base: pa.Table) -> None:
    types = [(t or "").strip().upper() for t in col(base, "line_type")]
    by_type = collections.defaultdict(list)
    for t, m in zip(types, col(base, "msisdn")):
        by_type[t].append(m)
    digits = lambda m: re.sub(r"^(\+|00)86|[ \-()]", "", m)  # noqa: E731
    assert all(re.fullmatch(r"1[3-9]\d{9}", digits(m).removeprefix("86")) for m in by_type["MOBILE"])
    assert all(re.fullmatch(r"14[579]\d{8}|1\d{12}", digits(m).removeprefix("86")) for m in by_type["DATA_CARD"])
    assert share(by_type["DATA_CARD"], lambda m: len(digits(m)) == 13) > 0.1
    fixed = [digits(m) for m in by_type["FIXED"]]
    assert share(fixed, lambda m: re.fullmatch(r"0(10|2\d)\d{8}|0[3-9]\d\d\d{7,8}", m) is not None) > 0.85
    formatted = share(col(base, "msisdn"), lambda m: not m.isdigit())
    assert abs(formatted - gen.MSISDN_FORMATTED) < 0.015
    for mark in ("+86", "0086", " ", "-"):
        assert any(mark in m for m in col(base, "msisdn")), mark
    codes = {r[0] for r in data.REGIONS}
    assert len(codes) >= 150 and {c[:2] for c in codes} == PROVINCES
    assert set(col(base, "region")) <= codes
    agents = col(base, "agent_id")
    assert abs(share(agents, lambda a: a is None) - gen.NO_AGENT) < 0.01
    assert all(re.fullmatch(r"AG\d{5}", a) for a in agents if a) and len(set(agents)) > 250


# ---- valid numbers really validate -----------------------------------------------------------

def test_resident_id_check_characters(base: pa.Table, truth: pa.Table) -> None:
    typed = pc.equal(base.column("doc_type"), "RESIDENT_ID")
    numbers = base.column("doc_number").combine_chunks()
    matrix, fits = char_matrix(numbers, 18)
    canonical = fits & np.array([bool(re.fullmatch(r"\d{17}[\dX]", v or "")) for v in numbers.to_pylist()])
    canonical &= pc.fill_null(typed, False).to_numpy(zero_copy_only=False)
    ok = mod11_2(matrix[:, :17]) == matrix[:, 17]
    assert canonical.sum() > N * 0.15
    assert 0.90 < ok[canonical].mean() < 0.995  # the rest carry a planted DOC_NUMBER_CHECKSUM
    complete = np.array(col(truth, "identity_class")) == "COMPLETE"
    assert ok[canonical & complete].all()
    born = [v[6:14] for v in np.array(numbers.to_pylist(), object)[canonical & complete]]
    assert all("19350101" <= b <= "20100101" for b in born)  # ages 16-90 in 2026
    assert {v[:2] for v in np.array(numbers.to_pylist(), object)[canonical & complete]} <= PROVINCES


def test_organisation_numbers_validate(base: pa.Table, truth: pa.Table) -> None:
    complete = np.array(col(truth, "identity_class")) == "COMPLETE"
    kinds = np.array(col(truth, "doc_kind"))
    numbers = pa.array([clean(v).upper() for v in col(base, "doc_number")])
    matrix, fits = char_matrix(numbers, 18)
    uscc = complete & fits & (kinds == "USCC")
    assert uscc.sum() > 1000
    assert (uscc_mod31(matrix[uscc, :17]) == matrix[uscc, 17]).all()
    assert (gb11714(matrix[uscc, 8:16]) == matrix[uscc, 16]).all()
    codes = np.array([v.replace("-", "") for v in numbers.to_pylist()], object)
    org_code = complete & (kinds == "ORG_CODE")
    m9, fits9 = char_matrix(pa.array(list(codes[org_code])), 9)
    assert fits9.all() and (gb11714(m9[:, :8]) == m9[:, 8]).all()
    handler, hfits = char_matrix(base.column("handler_doc_number").combine_chunks(), 18)
    org = complete & hfits & np.isin(kinds, list(gen.ORG_DOCS))
    assert org.sum() > 1000 and (mod11_2(handler[org, :17]) == handler[org, 17]).all()


def test_planted_defects_are_there(base: pa.Table, truth: pa.Table) -> None:
    defects = collections.Counter(d for d in col(truth, "defect") if d)
    assert set(defects) == set(gen.INVALID)
    numbers = [clean(v).upper().replace(" ", "") for v in col(base, "doc_number")]
    assert any(re.fullmatch(r"\d{15}", v) for v in numbers)  # first generation
    assert any(v[:6] in ("810000", "820000", "830000") for v in numbers)
    assert any(re.fullmatch(r"\d{6}(19000229|20230229)\d{3}[\dX]", v) for v in numbers)
    names = collections.Counter(clean(v) for v in col(base, "name"))
    for junk in ("未知", "测试", "某某代办", "本人"):
        assert names[junk] > 0, "placeholder name missing"
    addresses = collections.Counter(clean(v) for v in col(base, "address"))
    for junk in ("哈哈", "不详", "北京"):
        assert addresses[junk] > 0, "placeholder address missing"
    firms = [n for n, k in zip(col(base, "name"), col(truth, "doc_kind")) if k in gen.ORG_DOCS and n]
    assert not any("某某" in n for n in firms)


# ---- realism: dirt, names, cross-record cases ------------------------------------------------

def test_dirty_characters(base: pa.Table) -> None:
    numbers, names, addresses = col(base, "doc_number"), col(base, "name"), col(base, "address")
    text = [v for v in numbers + names + addresses if v]
    counts = {
        "fullwidth digits": sum(1 for v in numbers if v and re.search("[\uff10-\uff19]", v)),
        "fullwidth X": sum(1 for v in numbers if v and "\uff38" in v),
        "lowercase x": sum(1 for v in numbers if v and re.fullmatch(r"\d{17}x", v)),
        "zero width": sum(1 for v in text if "\u200b" in v or "\ufeff" in v),
        "ideographic space": sum(1 for v in text if "\u3000" in v.strip("\u3000") or v.endswith("\u3000")),
        "edge spaces": sum(1 for v in text if v.strip() and v != v.strip(" ")),
        "double spaces": sum(1 for v in addresses if v and "  " in v.strip()),
    }
    for what, count in counts.items():
        assert count > 20, what
    assert sum(1 for v in text if v != clean(v)) < 0.1 * len(text)


def test_minority_foreign_and_organisation_names(base: pa.Table) -> None:
    names = [v for v in col(base, "name") if v]
    dotted = [v for v in names if re.search(r"\w[\u00b7\u30fb\u2022.]\w", v) and not v.isascii()]
    assert 0.01 < len(dotted) / len(names) < 0.04
    for dot in ("\u00b7", "\u30fb", "\u2022", "."):
        assert any(dot in v for v in dotted), hex(ord(dot))
    assert any(re.fullmatch(r"[A-Z]+ [A-Z]+", v) for v in names)
    assert any(v.endswith("有限公司") for v in names) and any(v.endswith("协会") or v.endswith("总会") for v in names)
    han = [clean(v) for v in names if re.fullmatch(r"[\u4e00-\u9fff]{2,4}", clean(v))]
    assert len(han) > 0.7 * len(names)
    addresses = [clean(v) for v in col(base, "address") if clean(v)]
    assert share(addresses, lambda a: len(a) >= 6 and re.search("[省市区县路街号村]", a) is not None) > 0.97


def test_cross_record_cases(base: pa.Table, truth: pa.Table) -> None:
    status = [(s or "").strip().upper() for s in col(base, "status")]
    kinds = col(truth, "doc_kind")
    lines, names = collections.Counter(), collections.defaultdict(set)
    for number, name, s, k in zip(col(base, "doc_number"), col(base, "name"), status, kinds):
        number = clean(number).upper().replace(" ", "")
        if number and k in gen.PERSON_DOCS:
            names[number].add(clean(name))
            lines[number] += s != "TERMINATED"
    over_limit = [n for n, c in lines.items() if c > 5]
    conflicts = [n for n, s in names.items() if len(s - {""}) > 1]
    blocks = N // gen.BLOCK_ROWS
    assert len(over_limit) >= gen.LINE_LIMIT_GROUPS * blocks
    assert len(conflicts) >= gen.NAME_CONFLICTS * blocks
    planted = collections.Counter(c for c in col(truth, "cross_record") if c)
    assert planted["DOC_LINE_LIMIT"] >= 6 * gen.LINE_LIMIT_GROUPS * blocks
    assert planted["DOC_NAME_CONFLICT"] >= 2 * gen.NAME_CONFLICTS * blocks


# ---- command line -----------------------------------------------------------------------------

def test_cli_writes_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "base.parquet"
    assert gen.main(["--lines", "1234", "--seed", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and re.fullmatch(rf"wrote 1234 lines to {re.escape(str(out))} in [\d.]+ s", printed[0])
    assert pq.read_table(out).equals(gen.generate_table(1234, 5))
    csv = tmp_path / "base.csv"
    assert gen.main(["--lines", "100", "--seed", "5", "--out", str(csv), "--encoding", "gb18030"]) == 0
    assert read_csv(csv, "gb18030").equals(gen.generate_table(100, 5))


@pytest.mark.parametrize("args", [
    ["--lines", "-5", "--seed", "1", "--out", "x.parquet"],
    ["--lines", "5", "--seed", "1", "--out", "x.xlsx"],
    ["--lines", "abc", "--seed", "1", "--out", "x.csv"],
    ["--lines", "5", "--seed", "-1", "--out", "x.csv"],
    ["--lines", "5", "--seed", "1", "--out", "x.csv", "--encoding", "latin-1"],
    ["--lines", "5", "--seed", "1", "--out", "x.avro", "--encoding", "gb18030"],
    ["--lines", "5", "--seed", "1"],
    ["--lines", "5", "--seed", "1", "--out", "x.csv", "--bogus"],
])
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


def test_python_dash_m(tmp_path: Path) -> None:
    out = tmp_path / "b.csv"
    ok = subprocess.run([sys.executable, "-m", "pipelines.generate", "--lines", "50", "--seed", "2", "--out", str(out)],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("wrote 50 lines to ") and out.exists()
    bad = subprocess.run([sys.executable, "-m", "pipelines.generate", "--lines", "-5", "--seed", "2",
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
