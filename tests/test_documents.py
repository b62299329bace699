"""Tests of transforms.scan.documents.check_document_numbers: the worked examples and the rules.

The check characters are computed by small scalar reference
implementations written straight from the formulas of docs/regulation.md
(2.1, 2.4, 2.5, 2.6), independently of transforms.scan.checkdigits
(tests/support/doc_numbers.py). The worked examples of docs/regulation.md and the
boundary cases are asserted one by one here; tests/test_documents_arrays.py
compares the scalar reference of the whole policy (tests/support/doc_reference.py)
with the vectorised result on random numbers and checks the array contract;
tests/test_code_tables.py tests each code-table rule on its own.
"""

from __future__ import annotations

import datetime

import pytest

from tests.support.doc_reference import (
    BIRTH,
    CHECKSUM,
    FIRST_GEN,
    FORMAT,
    MISMATCH,
    REGION,
    RULES,
    one,
    reasons_of,
)
from tests.support.doc_numbers import citizen, ref_gb11714, ref_mod11_10, ref_mod11_2, ref_uscc
from transforms.scan.documents import DocumentRules


def test_references_reproduce_the_worked_examples():
    assert ref_mod11_2("11010519491231002") == "X"
    assert (
        sum(int(c) * w for c, w in zip("11010519491231002", [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]))
        == 167
    )
    assert ref_mod11_2("61010419620927690") == "8"  # 2.1 upgrade of 610104620927690
    assert ref_uscc("91110000600037341") == "L"
    assert ref_gb11714("60003734") == "1" and ref_gb11714("MA1BUFLT") == "4"
    assert ref_gb11714("10000018") == "X" and ref_gb11714("10000004") == "0"
    assert ref_mod11_10("11010801234567") == "0"


# ---- docs/regulation.md worked examples --------------------------------------------------------------


def test_citizen_examples_of_domain_2_1():
    v7 = [citizen("110101", "19900101", f"{s:03d}") for s in range(1, 40)]
    assert {x[-1] for x in v7} == set("0123456789X")
    assert "110101199001010090" in v7 and "11010119900101004X" in v7
    valid = [
        "11010519491231002X",
        "360426199101010071",
        "440308199901101512",
        "610122198310134420",
        "110101200002290018",
        "11010519491231002x".upper(),
        *v7,
    ]
    assert reasons_of("citizen_id", valid) == [set()] * len(valid)
    assert reasons_of(
        "citizen_id",
        [
            "110105194912310021",
            "15000019970319128X",
            "110101190002290011",
            "110101202302290019",
            "110101199013010012",
            "11010119900100001X",
            "110101203101010011",
            "110101187001010017",
            "000000199001010018",
            "990000199001010017",
            "111111111111111111",
            "111111111111111110",
        ],
    ) == [
        {CHECKSUM},
        {CHECKSUM},
        {BIRTH},
        {BIRTH},
        {BIRTH},
        {BIRTH},
        {BIRTH},
        {BIRTH},
        {REGION},
        {REGION},
        {CHECKSUM, BIRTH},
        {BIRTH},
    ]
    assert one("citizen_id", "11010519491231002x") == {FORMAT}  # not normalised


def test_residence_permits_of_domain_2_2_and_the_mismatch_both_ways():
    permits = [
        "810000199408230021",
        "830000199201300022",
        "820000200002290021",
        "810000199001010019",
        "830000197506150038",
    ]
    assert reasons_of("hmt_residence_permit", permits) == [set()] * 5
    assert reasons_of("citizen_id", permits) == [{REGION, MISMATCH}] * 5
    assert one("hmt_residence_permit", "11010519491231002X") == {MISMATCH}
    assert one("hmt_residence_permit", "911840198001010013") == {MISMATCH}
    assert one("hmt_residence_permit", "110105194912310021") == {MISMATCH, CHECKSUM}
    for other_prefix in ("810100199408230021", "700000199408230021", "000000199001010018"):
        assert one("hmt_residence_permit", citizen(other_prefix[:6], "19940823")) == {FORMAT}
    assert one("hmt_residence_permit", citizen("810000", "19000229")) == {BIRTH}
    assert one("hmt_residence_permit", "81000019940823002") == {FORMAT}


def test_foreign_permanent_resident_ids_of_domain_2_3():
    assert one("foreign_permanent_resident_id", "911840198001010013") == set()
    assert one("citizen_id", "911840198001010013") == {REGION, MISMATCH}
    assert one("foreign_permanent_resident_id", "911840198001010014") == {CHECKSUM}
    assert one("foreign_permanent_resident_id", citizen("911840", "20250101")) == {BIRTH}
    assert one("foreign_permanent_resident_id", "11010519491231002X") == {MISMATCH}
    assert one("foreign_permanent_resident_id", "810000199408230021") == {MISMATCH}
    assert one("foreign_permanent_resident_id", citizen("011840", "19800101")) == {FORMAT}
    # Older card: its 7-3-1 check digit is not enforced, the YYMMDD birth date is.
    assert one("foreign_permanent_resident_id", "USA110080010111") == set()
    assert one("foreign_permanent_resident_id", "USA110080010112") == set()
    assert one("foreign_permanent_resident_id", "USA110080023011") == {BIRTH}
    assert one("foreign_permanent_resident_id", "USA110080130011") == {BIRTH}
    for bad in ("US1110080010111", "USA11008001011", "USA1100800101111", "110105491231002"):
        assert one("foreign_permanent_resident_id", bad) == {FORMAT}


def test_uscc_examples_of_domain_2_4():
    valid = [
        "91110000600037341L",
        "91230184MA1BUFLT44",
        "92371000MA3MXH0E3W",
        "91110108772551611J",
        "911101085923662400",
        "51110000500000015U",
        "91110106100000032Y",
        "9131000010000018XY",
        "Y1330100MA2AB0018U",
        "91230184ma1buflt44".upper(),
    ]
    assert reasons_of("uscc", valid) == [set()] * len(valid)
    assert reasons_of(
        "uscc",
        [
            "91110000600037341M",
            "91110000600O37341L",
            "91110000600037341",
            "91110000600037341L0",
            "91230184ma1buflt44",
            "91110000600037342P",
            "110108012345670",
        ],
    ) == [{CHECKSUM}, {FORMAT}, {FORMAT}, {FORMAT}, {FORMAT}, {CHECKSUM}, {FORMAT}]
    # I6 passes mod-31: only the embedded organisation code fails.
    assert ref_uscc("91110000600037342") == "P" and ref_gb11714("60003734") != "2"


def test_org_codes_of_domain_2_5():
    valid = ["600037341", "772551611", "MA1BUFLT4", "10000018X", "100000040"]
    assert reasons_of("org_code", valid) == [set()] * 5
    assert reasons_of("org_code", ["600037342", "60003734X", "6000373A1"]) == [{CHECKSUM}] * 3
    pdy = "PDY00001" + ref_gb11714("PDY00001")
    assert (
        reasons_of("org_code", [pdy, "60003734A", "60003734", "6000373410", "ma1buflt4", "60003734-1"])
        == [{FORMAT}] * 6
    )


def test_business_licence_both_branches_domain_2_4_and_2_6():
    assert reasons_of(
        "business_license",
        [
            "110108012345670",
            "110108012345671",
            "91110000600037341L",
            "91110000600037342P",
            "91110000600O37341L",
            "1101080123456701",
            "11010801234567A",
            "11010801234567",
        ],
    ) == [set(), {CHECKSUM}, set(), {CHECKSUM}, {FORMAT}, {FORMAT}, {FORMAT}, {FORMAT}]


def test_travel_permits_and_passports_of_domain_2_7():
    assert reasons_of(
        "hk_macao_permit",
        [
            "H12345678",
            "M1234567801",
            "H1234567",
            "H123456789",
            "C12345678",
            "H12345678(1)",
            "12345678",
        ],
    ) == [set(), set(), {FORMAT}, {FORMAT}, {FORMAT}, {FORMAT}, {FORMAT}]
    assert reasons_of(
        "taiwan_permit",
        [
            "12345678",
            "0561682001(D)",
            "0561682001",
            "0561682001(DD)",
            "123456789",
            "0561682001D",
        ],
    ) == [set(), set(), set(), {FORMAT}, {FORMAT}, {FORMAT}]
    assert reasons_of(
        "passport",
        [
            "E1234",
            "E1234567890123456",
            "E123",
            "E12345678901234567",
            "E1234567_",
            "e12345678",
            "Ｅ12345678",
        ],
    ) == [set(), set(), {FORMAT}, {FORMAT}, {FORMAT}, {FORMAT}, {FORMAT}]


def test_military_and_police_free_text_of_domain_2_7():
    assert (
        reasons_of(
            "free_text",
            [
                "南字第12345678号",
                "ABAB",
                "南字第" * 10 + "号号",
                "南字1",
                "南字第" * 11,
                "ABC",
                "0000",
                "XXXX",
                "1111111",
                "哈哈哈哈",
                "字" * 32,
                "NULL",
                "UNKNOWN",
                "123456",
                "12345678",
                "N/A",
            ],
        )
        == [set()] * 3 + [{FORMAT}] * 13
    )
    # Placeholders are compared after the caller's normalisation (upper case).
    assert one("free_text", "BLANK", number_placeholders=("blank",)) == {FORMAT}


def test_uscc_or_alnum_is_a_uscc_or_six_to_32_letters_and_digits():
    assert reasons_of(
        "uscc_or_alnum",
        [
            "91110000600037341L",
            "ABC123",
            "A" + "1" * 31,
            "ABC12",
            "A" * 33,
            "事业单位123456",
            "ABC-123",
        ],
    ) == [set(), set(), set(), {FORMAT}, {FORMAT}, {FORMAT}, {FORMAT}]
    # Literal reading of docs/policy.md: an 18-character USCC with a wrong check
    # character is still "letters and digits", so it passes.
    assert one("uscc_or_alnum", "91110000600037341M") == set()


# ---- birth dates, first generation, rules --------------------------------------------------


def test_leap_years_future_dates_and_the_age_limit():
    assert reasons_of(
        "citizen_id",
        [
            citizen("110101", "19000229"),
            citizen("110101", "20000229"),
            citizen("110101", "20040229"),
            citizen("110101", "20230229"),
            citizen("110101", "19990431"),
            citizen("110101", "19991231"),
        ],
    ) == [{BIRTH}, set(), set(), {BIRTH}, {BIRTH}, set()]
    as_of = datetime.date(2024, 6, 30)
    dates = ["20240630", "20240701", "18740630", "18740629"]
    assert reasons_of("citizen_id", [citizen("110101", d) for d in dates], as_of) == [set(), {BIRTH}, set(), {BIRTH}]
    assert reasons_of("foreign_permanent_resident_id", [citizen("911840", d) for d in dates], as_of) == [
        set(),
        {BIRTH},
        set(),
        {BIRTH},
    ]
    young = DocumentRules(max_age_years=100)
    assert reasons_of("citizen_id", [citizen("110101", "19240630"), citizen("110101", "19240629")], as_of, young) == [
        set(),
        {BIRTH},
    ]
    # The old permanent-resident card: 00-02-29 is real only as 2000-02-29.
    old = "USA1100" + "000229" + "11"
    assert one("foreign_permanent_resident_id", old, datetime.date(2024, 1, 1)) == set()
    assert one("foreign_permanent_resident_id", old, datetime.date(1999, 12, 31)) == {BIRTH}
    assert (
        one("foreign_permanent_resident_id", "USA1100991231" + "11", datetime.date(2024, 1, 1)) == set()
    )  # 1999-12-31


def test_first_generation_is_void_from_2013_01_01():
    x = "610104620927690"
    assert one("citizen_id", x, datetime.date(2012, 12, 31)) == set()
    assert one("citizen_id", x, datetime.date(2013, 1, 1)) == {FIRST_GEN}
    assert (
        one("citizen_id", x, datetime.date(2013, 1, 1), first_generation_void_since=datetime.date(2014, 1, 1)) == set()
    )
    assert one("citizen_id", "110101000229001", datetime.date(2012, 1, 1)) == {BIRTH}  # 1900
    assert one("citizen_id", "990101620927690", datetime.date(2024, 1, 1)) == {FIRST_GEN, REGION}
    assert one("citizen_id", "61010462092769X") == {FORMAT}
    assert one("citizen_id", "1101016209276") == {FORMAT}


def test_custom_rules_are_used():
    x = citizen("710000", "19900101")  # Taiwan's GB/T 2260 code, not in the default list
    assert one("citizen_id", x) == {REGION}
    assert one("citizen_id", x, province_codes=RULES.province_codes | {"71"}) == set()
    assert one("hmt_residence_permit", x, hmt_prefixes=("710000",)) == set()
    assert one("org_code", "600037341", org_code_reserved_prefixes=("6000",)) == {FORMAT}
    assert one("passport", "E1234", passport_min=6) == {FORMAT}
    assert one("free_text", "ABC", free_text_min=3) == set()
    assert one("uscc_or_alnum", "ABC12", alnum_min=5) == set()
    with pytest.raises(ValueError):
        one("citizen_id", x, province_codes=frozenset({"1"}))
