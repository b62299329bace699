"""The code tables behind the check digits (docs/policy.md "Code tables", docs/regulation.md §2.8).

Every number is built here from its parts with check characters computed from the formulas
(tests/support/doc_numbers.py), so each verdict below can only come from the table rule under test: each
USCC authority and category pair (a review flag), the province-level and national-level divisions of a USCC and of a
15-digit licence, both permanent-resident forms, the labels of documents that are not accepted, and the
review flags (GB/T 2260 division of a resident ID, GB 32100 pair of a USCC, the script of a name on a mainland
document).
"""

from __future__ import annotations

import csv
import io
from importlib import resources

import pyarrow as pa
import pytest
import yaml

import schemas
from tests.support.doc_numbers import (
    CITIZEN_PROVINCES,
    NATIONAL,
    PROVINCE_LEVEL,
    USCC_CATEGORIES,
    USCC_SET,
    citizen,
    countries,
    fprid_2017,
    fprid_2023,
    gbt2260_codes,
    licence,
    uscc,
)
from tests.support.rows import AS_OF, organisation, person
from tests.support.scan import classify
from transforms.scan.divisions import region_names
from transforms.scan.documents import check_document_numbers
from transforms.scan.policy import PolicyError, load_policy

CODE, REVIEW, PAIR_REVIEW = "DOC_NUMBER_CODE", "DOC_NUMBER_DIVISION_REVIEW", "DOC_NUMBER_CODE_REVIEW"
ALPHA3, NUMERIC = countries()
DIVISIONS = gbt2260_codes()


def verdicts(check: str, numbers: list[str], policy=None) -> list[set[str]]:
    rules = (policy or load_policy()).document_rules()
    out = check_document_numbers(pa.array([check] * len(numbers)), pa.array(numbers), AS_OF, rules)
    return [{code for code, hits in out.items() if hits[i]} for i in range(len(numbers))]


def test_every_authority_and_category_pair_of_gb_32100():
    """All 31 x 31 first characters: a pair outside GB 32100's table (B, L, 8 with 8, ...) is the review flag
    DOC_NUMBER_CODE_REVIEW (validator projects disagree on the table, docs/regulation.md §2.4), never a failure."""
    pairs = [(a, c) for a in USCC_SET for c in USCC_SET]
    numbers = [uscc(a, c, "110105") for a, c in pairs]
    want = [set() if c in USCC_CATEGORIES.get(a, "") else {PAIR_REVIEW} for a, c in pairs]
    assert verdicts("uscc", numbers) == want
    assert verdicts("business_license", numbers) == want
    assert verdicts("org_code", numbers) == want  # an organisation code line may carry a USCC
    assert sum(not w for w in want) == sum(len(c) for c in USCC_CATEGORIES.values())
    assert (
        {PAIR_REVIEW}
        == verdicts("uscc", [uscc("B", "1", "110105")])[0]
        == verdicts("uscc", [uscc("8", "8", "110105")])[0]
    )


def test_registering_divisions_of_a_uscc_and_a_licence():
    """Positions 3-8 of a USCC and the first six digits of a licence: a province-level code, or 100000."""
    prefixes = [f"{p:02d}" for p in range(100)]
    divisions = [p + "0106" for p in prefixes] + [NATIONAL, "1A0105", "11010A"]
    want = [set() if d[:2] in PROVINCE_LEVEL else {CODE} for d in divisions[:100]] + [set(), {CODE}, {CODE}]
    assert verdicts("uscc", [uscc("9", "1", d) for d in divisions]) == want
    legacy = [licence(d) for d in divisions[:101]]  # a licence is digits only
    assert verdicts("business_license", legacy) == want[:101]
    assert (
        {CODE}
        == verdicts("business_license", [licence("190101")])[0]
        == verdicts("uscc", [uscc("9", "1", "880106")])[0]
    )
    # A code failure is reported beside a wrong check character, never instead of it.
    bad_check = uscc("B", "1", "880106")[:-1] + next(c for c in USCC_SET if c != uscc("B", "1", "880106")[-1])
    assert verdicts("uscc", [bad_check]) == [{CODE, "DOC_NUMBER_CHECKSUM", PAIR_REVIEW}]


def test_permanent_resident_id_2017_form_nationality_is_iso_3166_alpha3():
    """Every three-letter combination: valid exactly when pycountry knows it (current or withdrawn)."""
    letters = [
        a + b + c for a in map(chr, range(65, 91)) for b in map(chr, range(65, 91)) for c in map(chr, range(65, 91))
    ]
    got = verdicts("foreign_permanent_resident_id", [fprid_2017(x) for x in letters])
    assert got == [set() if x in ALPHA3 else {CODE} for x in letters]
    assert "KAA" not in ALPHA3 and "USA" in ALPHA3 and "ANT" in ALPHA3  # ANT: withdrawn, cards keep it


def test_permanent_resident_id_2023_form_province_and_numeric_nationality():
    nationalities = [f"{n:03d}" for n in range(1000)]
    got = verdicts("foreign_permanent_resident_id", [fprid_2023("11", n) for n in nationalities])
    assert got == [set() if n in NUMERIC else {CODE} for n in nationalities]
    prefixes = [f"{p:02d}" for p in range(100)]
    got = verdicts("foreign_permanent_resident_id", [fprid_2023(p, "840") for p in prefixes])
    assert got == [set() if p in PROVINCE_LEVEL else {CODE} for p in prefixes]
    assert verdicts("foreign_permanent_resident_id", [fprid_2023("99", "840"), fprid_2023("11", "999")]) == [{CODE}] * 2


def test_division_review_flags_resident_ids_outside_gbt2260_only():
    """A resident ID under a province code whose division is not a GB/T 2260 code: a review flag, never INVALID."""
    unknown = [
        next(p + f"{k:04d}" for k in range(10_000) if p + f"{k:04d}" not in DIVISIONS) for p in CITIZEN_PROVINCES
    ]
    supplement = resources.files(schemas).joinpath("gbt2260_supplement.csv").read_text("utf-8")
    historical = [
        row["code"] for row in csv.DictReader(io.StringIO(supplement)) if row["code"][:2] in CITIZEN_PROVINCES
    ]
    known = sorted(c for c in DIVISIONS if c[:2] in CITIZEN_PROVINCES)[::200] + historical[::20]
    got = verdicts("citizen_id", [citizen(d, "19800101") for d in unknown + known])
    assert got == [{REVIEW}] * len(unknown) + [set()] * len(known)
    first_generation = [d + "800101" + "001" for d in unknown[:3]]
    assert verdicts("citizen_id", first_generation) == [{REVIEW, "DOC_NUMBER_FIRST_GENERATION"}] * 3
    # Other documents and a bad province are not reviewed (the province check says it all).
    assert verdicts("citizen_id", [citizen("990000", "19800101")]) == [{"DOC_NUMBER_REGION"}]
    assert verdicts("foreign_permanent_resident_id", [fprid_2023("11", "840")]) == [set()]
    rows, _ = classify([person(doc_number=citizen(unknown[0], "19800101"))], load_policy())
    assert (rows["L1"]["identity_status"], rows["L1"]["flags"], rows["L1"]["needs_review"]) == (
        "COMPLETE",
        [REVIEW],
        True,
    )


def _not_accepted_labels() -> list[str]:
    raw = yaml.safe_load(resources.files(schemas).joinpath("decree25_policy.yaml").read_text("utf-8"))
    refused = [code for code, doc in raw["documents"].items() if doc.get("accepted", True) is False]
    return refused + [label for code in refused for label in raw["labels"].get(code, [])]


def test_labels_of_documents_not_accepted():
    labels = _not_accepted_labels()
    assert {"香港居民身份证", "澳门居民身份证", "台湾身份证", "驾驶证", "学生证"} <= set(labels)
    # The bare 香港身份证 and 澳门身份证 are review labels of the HK/Macao permit (docs/policy.md "Document labels").
    assert not {"香港身份证", "澳门身份证"} & set(labels)
    hk_card = "A" + "123456" + "7"  # a Hong Kong identity card number is no travel permit number
    rows, _ = classify(
        [person(line_id=f"L{i}", doc_type=label, doc_number=hk_card) for i, label in enumerate(labels)], load_policy()
    )
    assert {r["reasons"] == ["DOC_TYPE_NOT_ACCEPTED"] for r in rows.values()} == {True}


@pytest.mark.parametrize("name", ["ZHANG San", "张 三", "张三A", "Müller", "张三2"])
def test_name_charset_review_on_mainland_documents(name):
    policy = load_policy()
    mainland = ["RESIDENT_ID", "TEMP_RESIDENT_ID", "HOUSEHOLD_REGISTER", "MILITARY_ID", "ARMED_POLICE_ID"]
    foreign = {"FOREIGN_PASSPORT": "E12345678", "FOREIGN_PERMANENT_RESIDENT_ID": fprid_2023("11", "840")}
    rows = [
        person(
            line_id=f"M{i}",
            doc_type=doc,
            doc_number=citizen("110105", "19800101") if i < 3 else "南字第12345号",
            name=name,
        )
        for i, doc in enumerate(mainland)
    ]
    rows += [person(line_id=doc, doc_type=doc, doc_number=number, name=name) for doc, number in foreign.items()]
    rows += [
        person(line_id="HAN", name="阿卜杜拉·买买提"),
        person(line_id="JUNK", name="TEST"),
        organisation(line_id="ORG", name=name + "有限公司"),
    ]
    got, _ = classify(rows, policy)
    for i in range(len(mainland)):
        assert "NAME_CHARSET_REVIEW" in got[f"M{i}"]["flags"], mainland[i]
    for line in [*foreign, "HAN", "JUNK", "ORG"]:
        assert "NAME_CHARSET_REVIEW" not in got[line]["flags"], line
    assert got["JUNK"]["reasons"] == ["NAME_PLACEHOLDER"]


def _operator_policy(tmp_path, mutate) -> str:
    data = yaml.safe_load(resources.files(schemas).joinpath("decree25_policy.yaml").read_text("utf-8"))
    mutate(data)
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return str(path)


def test_an_operator_extends_every_table_without_code(tmp_path):
    unknown = next(f"11{k:04d}" for k in range(10_000) if f"11{k:04d}" not in DIVISIONS)
    (tmp_path / "local.csv").write_text(f"code,name\n{unknown},某新区\n", encoding="utf-8")

    def extend(d):
        tables = d["code_tables"]
        tables["uscc_authorities"]["categories"]["B"] = "1"
        tables["province_level_codes"]["codes"].append("88")
        tables["countries"]["extra_alpha3"] = ["KAA"]
        tables["countries"]["extra_numeric"] = ["999"]
        tables["divisions"]["files"].append("local.csv")  # read beside the operator's policy file

    policy = load_policy(_operator_policy(tmp_path, extend))
    numbers = {
        "uscc": [uscc("B", "1", "880106")],
        "foreign_permanent_resident_id": [fprid_2017("KAA"), fprid_2023("11", "999")],
    }
    for check, values in numbers.items():
        assert verdicts(check, values) == [{CODE, PAIR_REVIEW} if check == "uscc" else {CODE}] * len(values)
        assert verdicts(check, values, policy) == [set()] * len(values)
    assert verdicts("citizen_id", [citizen(unknown, "19800101")], policy) == [set()]
    assert region_names(pa.array([unknown]), policy.code_tables.divisions).to_pylist() == ["北京市某新区"]
    assert policy.code_tables.digest != load_policy().code_tables.digest


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d["code_tables"]["divisions"]["files"].append("absent.csv"), "code_tables.divisions.files"),
        (lambda d: d["code_tables"]["uscc_authorities"]["categories"].update(I="1"), "code_tables.uscc_authorities"),
        (lambda d: d["code_tables"]["countries"].update(extra_alpha3=["us"]), "code_tables.countries"),
        (lambda d: d["documents"]["HK_IDENTITY_CARD"].update(accepted=True), "documents.HK_IDENTITY_CARD"),
        (lambda d: d["names"]["han_only_documents"].append("HK_IDENTITY_CARD"), "names.han_only_documents"),
    ],
)
def test_bad_tables_are_one_line_errors(tmp_path, mutate, fragment):
    with pytest.raises(PolicyError) as err:
        load_policy(_operator_policy(tmp_path, mutate))
    assert "\n" not in str(err.value) and fragment in str(err.value)


def test_a_bad_division_file_names_its_row(tmp_path):
    (tmp_path / "bad.csv").write_text("code,name\n110105,朝阳区\n11010,短\n", encoding="utf-8")
    path = _operator_policy(tmp_path, lambda d: d["code_tables"]["divisions"]["files"].append("bad.csv"))
    with pytest.raises(PolicyError, match="bad.csv: row 3 is not a six-digit code"):
        load_policy(path)


def test_a_policy_without_code_tables_gets_the_default_ones(tmp_path):
    policy = load_policy(_operator_policy(tmp_path, lambda d: d.pop("code_tables")))
    assert policy.code_tables == load_policy().code_tables


def test_the_supplement_holds_only_codes_python_stdnum_lacks():
    from stdnum import numdb

    packaged = {low + c for _, low, _, _, kids in numdb.get("cn/loc").prefixes for _, c, _, _, _ in kids}
    text = resources.files(schemas).joinpath("gbt2260_supplement.csv").read_text("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and not {r["code"] for r in rows} & packaged
    assert all(r["code"][:2] in PROVINCE_LEVEL and r["name"] and r["first_listed"] <= r["last_listed"] for r in rows)
    assert len(load_policy().code_tables.divisions.splitlines()) == len(packaged | {r["code"] for r in rows})


def test_region_names_come_from_the_table():
    text = load_policy().code_tables.divisions
    short = dict(line.split("\t") for line in text.splitlines())
    codes = ["110105", "440308", "222401", "110000", None, "999999"]
    want = [
        short["110000"] + short["110105"],
        short["440000"] + short["440300"] + short["440308"],
        short["220000"] + short["222400"] + short["222401"],
        short["110000"],
        None,
        None,
    ]
    assert region_names(pa.array(codes), text).to_pylist() == want
    assert want[0] == "北京市朝阳区"
