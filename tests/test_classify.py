"""The classifier on single batches: statuses, every reason code, normalisation traps."""

from __future__ import annotations

import datetime as dt
import unicodedata

import pytest

from tests.support.doc_numbers import fprid_2017, fprid_2023, licence, uscc
from tests.support.rows import AS_OF, CTX, SALT, organisation, person, raw_table
from tests.support.scan import classify
from transforms.scan.checkdigits import mod11_2_char, uscc_char
from transforms.core.reasons import LINE_REASONS
from transforms.scan.classify import classify_batch, finalize


def one(policy, **fields):
    rows, dead = classify([person(**fields)], policy)
    assert not dead, dead
    return rows["L1"]


def citizen(prefix: str, birth: str, seq: str = "123") -> str:
    body = prefix + birth + seq
    return body + mod11_2_char(body)


def test_complete_person_has_no_reasons(policy):
    row = one(policy)
    assert row["identity_status"] == "COMPLETE"
    assert row["reasons"] == [] and row["flags"] == []
    assert row["needs_registration"] is False and row["needs_review"] is False
    assert row["policy_version"] == policy.version and row["as_of"] == AS_OF


def test_classified_line_carries_no_identity_values(policy):
    row = one(policy, name="金丝雀测试甲", address="北京市海淀区金丝雀路99号")
    text = repr(row)
    for value in ("金丝雀测试甲", "11010519491231002X", "金丝雀路", "RESIDENT_ID"):
        assert value not in text


def test_missing_when_no_identity_field(policy):
    row = one(policy, doc_type="", doc_number=" ", name="\u3000", address=None)
    assert row["identity_status"] == "MISSING"
    assert row["reasons"] == ["DOC_TYPE_MISSING", "DOC_NUMBER_MISSING", "NAME_MISSING", "ADDRESS_MISSING"]
    assert row["needs_registration"] is True


def test_incomplete_wins_over_invalid(policy):
    # Absent address and an invalid checksum: absence wins, both listed.
    bad = "110105194912310021"
    row = one(policy, address="", doc_number=bad)
    assert row["identity_status"] == "INCOMPLETE"
    assert row["reasons"] == ["ADDRESS_MISSING", "DOC_NUMBER_CHECKSUM"]


def test_invalid_when_all_present_and_a_check_fails(policy):
    row = one(policy, name="未知")
    assert row["identity_status"] == "INVALID"
    assert row["reasons"] == ["NAME_PLACEHOLDER"]


def test_terminated_lines_never_need_registration(policy):
    row = one(policy, status="terminated", terminated_on="2024-01-01", name="")
    assert row["identity_status"] == "INCOMPLETE"
    assert row["needs_registration"] is False


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"doc_type": "驾驶证"}, "DOC_TYPE_NOT_ACCEPTED"),
        ({"doc_type": "其他"}, "DOC_TYPE_NOT_ACCEPTED"),
        ({"doc_type": "香港居民身份证", "doc_number": "A1234567"}, "DOC_TYPE_NOT_ACCEPTED"),
        ({"doc_type": "香港身份证", "doc_number": "A1234567"}, "DOC_NUMBER_FORMAT"),  # read as the HK/Macao permit
        ({"doc_type": "FOREIGN_PERMANENT_RESIDENT_ID", "doc_number": fprid_2017("KAA")}, "DOC_NUMBER_CODE"),
        ({"doc_type": "FOREIGN_PERMANENT_RESIDENT_ID", "doc_number": fprid_2023("99", "840")}, "DOC_NUMBER_CODE"),
        ({"doc_type": "星际通行证"}, "DOC_TYPE_UNKNOWN"),
        ({"doc_type": "营业执照", "doc_number": "91110000600037341L"}, "DOC_TYPE_NOT_ALLOWED_FOR_KIND"),
        ({"doc_number": "1101051949123100"}, "DOC_NUMBER_FORMAT"),
        ({"doc_number": "110105194912310021"}, "DOC_NUMBER_CHECKSUM"),
        ({"doc_number": citizen("110101", "19000229")}, "DOC_NUMBER_BIRTH_DATE"),
        ({"doc_number": citizen("110101", "20310101")}, "DOC_NUMBER_BIRTH_DATE"),
        ({"doc_number": citizen("990000", "19900101")}, "DOC_NUMBER_REGION"),
        ({"doc_number": "610104620927690"}, "DOC_NUMBER_FIRST_GENERATION"),
        ({"doc_number": citizen("810000", "19940823")}, "DOC_TYPE_MISMATCH"),
        ({"name": "某某代办"}, "NAME_PLACEHOLDER"),
        ({"name": "张三本人"}, "NAME_PLACEHOLDER"),
        ({"name": "NULL"}, "NAME_PLACEHOLDER"),
        ({"name": "张"}, "NAME_TOO_SHORT"),
        ({"name": "张3"}, "NAME_FORMAT"),
        ({"name": "·阿卜杜"}, "NAME_FORMAT"),
        ({"name": "阿卜杜··买买提"}, "NAME_FORMAT"),
        ({"name": "阿" * 51}, "NAME_FORMAT"),
        ({"address": "哈哈"}, "ADDRESS_PLACEHOLDER"),
        ({"address": "北京市"}, "ADDRESS_TOO_SHORT"),
        ({"address": "一个很好的地方啊"}, "ADDRESS_NOT_SPECIFIC"),
        ({"address": "Flat A Mongkok"}, "ADDRESS_NOT_SPECIFIC"),
    ],
)
def test_each_person_reason(policy, fields, reason):
    row = one(policy, **fields)
    assert reason in row["reasons"], row["reasons"]
    assert row["identity_status"] == "INVALID"


def test_region_and_mismatch_together(policy):
    # A new permanent-resident number (9 + province 11) filed as a resident ID.
    number = citizen("911840", "19800101", "001")
    row = one(policy, doc_number=number)
    assert row["reasons"] == ["DOC_NUMBER_REGION", "DOC_TYPE_MISMATCH"]


def test_placeholder_is_exclusive(policy):
    row = one(policy, name="无", address="无")
    assert row["reasons"] == ["NAME_PLACEHOLDER", "ADDRESS_PLACEHOLDER"]


def test_latin_address_rules(policy):
    assert one(policy, address="Flat 12A, 88 Nathan Road")["identity_status"] == "COMPLETE"
    assert "ADDRESS_NOT_SPECIFIC" in one(policy, address="Nathan Road Kowloon")["reasons"]


@pytest.mark.parametrize(
    "label, code_ok",
    [
        ("01", True),
        ("身份证", True),
        ("IDCARD", True),
        ("idcard", True),
        ("户口薄", True),
        ("居民身份证(18位)", True),
        ("居民身份证（18位）", True),
        (" 0-本地身份证 ", True),
    ],
)
def test_label_aliases(policy, label, code_ok):
    assert one(policy, doc_type=label)["identity_status"] == "COMPLETE"


@pytest.mark.parametrize("label", ["照会", "外交使馆照会", "EMBASSY_NOTE", "  外交使馆照会 "])
def test_an_embassy_note_is_an_other_valid_document_of_art_7(policy, label):
    """Art. 7 (5): other valid identity documents under law and state rules; operator exports file an embassy's
    note there. Accepted for a person, its number checked as free text; not an organisation's document."""
    row = one(policy, doc_type=label, doc_number="外照字2016第123号")
    assert (row["identity_status"], row["reasons"], row["flags"]) == ("COMPLETE", [], [])
    assert one(policy, doc_type=label, doc_number="无")["reasons"] == ["DOC_NUMBER_FORMAT"]
    org = organisation(doc_type=label, doc_number="外照字2016第123号")
    assert "DOC_TYPE_NOT_ALLOWED_FOR_KIND" in classify([org], policy)[0][org["line_id"]]["reasons"]


def test_ambiguous_label_is_checked_and_flagged_for_review(policy):
    row = one(policy, doc_type="回乡证", doc_number="H12345678")
    assert row["identity_status"] == "COMPLETE"
    assert row["flags"] == ["DOC_TYPE_LABEL_REVIEW"] and row["needs_review"] is True


@pytest.mark.parametrize(
    "number",
    [
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width digits and X
        "11010519491231002x",  # lowercase x
        "1101\u200b0519491231\ufeff002X",  # zero-width space, BOM
        " 110105 1949 1231 002X ",  # spaces
        "110105-19491231-002X",  # hyphens
        "110105\u300019491231002X",  # ideographic space
    ],
)
def test_number_normalisation_traps(policy, number):
    assert one(policy, doc_number=number)["identity_status"] == "COMPLETE"


@pytest.mark.parametrize(
    "name",
    [
        "阿卜杜拉・买买提",
        "阿卜杜拉•买买提",
        "阿卜杜拉.买买提",
        "阿卜杜拉．买买提",
        "阿卜杜拉\u0387买买提",
        "阿卜杜拉･买买提",
    ],
)
def test_middle_dot_lookalikes_fold(policy, name):
    assert one(policy, name=name)["identity_status"] == "COMPLETE"


def test_white_space_alone_is_absent(policy):
    row = one(policy, name=" \t\u3000\u200b ")
    assert row["reasons"] == ["NAME_MISSING"]


def test_enums_match_ignoring_case_and_space_and_aliases(policy):
    rows, dead = classify(
        [
            person(line_id="A", line_type=" mobile ", subscriber_kind="individual", status="Active"),
            person(line_id="B", line_type="固话", subscriber_kind="个人", status="拆机"),
        ],
        policy,
    )
    assert not dead
    assert (rows["A"]["line_type"], rows["A"]["subscriber_kind"], rows["A"]["status"]) == (
        "MOBILE",
        "INDIVIDUAL",
        "ACTIVE",
    )
    assert (rows["B"]["line_type"], rows["B"]["status"]) == ("FIXED", "TERMINATED")


def test_organisation_rules(policy):
    rows, _ = classify(
        [
            organisation(line_id="OK"),
            organisation(line_id="NOHANDLER", handler_name="", handler_doc_number=None),
            organisation(line_id="BADHANDLER", handler_doc_number="110105194912310021"),
            organisation(line_id="ORGHANDLER", handler_doc_type="USCC", handler_doc_number="91110000600037341L"),
            organisation(line_id="SHORT", name="星辰"),
            organisation(line_id="PERSONDOC", doc_type="RESIDENT_ID", doc_number="11010519491231002X"),
            organisation(line_id="DIGITS", name="第1食品厂有限公司"),
        ],
        policy,
    )
    assert rows["OK"]["identity_status"] == "COMPLETE"
    assert rows["NOHANDLER"]["identity_status"] == "INCOMPLETE"
    assert rows["NOHANDLER"]["reasons"] == ["HANDLER_MISSING"]
    assert rows["BADHANDLER"]["reasons"] == ["HANDLER_INVALID"]
    assert rows["ORGHANDLER"]["reasons"] == ["HANDLER_INVALID"]
    assert rows["SHORT"]["reasons"] == ["NAME_TOO_SHORT"]
    assert rows["PERSONDOC"]["reasons"] == ["DOC_TYPE_NOT_ALLOWED_FOR_KIND"]
    assert rows["DIGITS"]["identity_status"] == "COMPLETE"  # digits are fine in unit names


def test_organisation_documents(policy):
    body = "91110108" + "77255161"
    valid = body + "1" + uscc_char(body + "1")
    cases = {
        "USCC": ("USCC", valid, []),
        "LEGACY": ("BUSINESS_LICENSE", "110108012345670", []),
        "LEGACYBAD": ("BUSINESS_LICENSE", "110108012345671", ["DOC_NUMBER_CHECKSUM"]),
        "ORGCODE": ("ORG_CODE", "60003734-1", []),
        "ORGBAD": ("ORG_CODE", "60003734-2", ["DOC_NUMBER_CHECKSUM"]),
        "PDY": ("ORG_CODE", "PDY00001" + "0", ["DOC_NUMBER_FORMAT"]),
        "EMBEDDED": ("USCC", "91110000600037342P", ["DOC_NUMBER_CHECKSUM"]),
        "AUTHORITY": ("USCC", uscc("L", "1", "110105"), []),  # a pair outside GB 32100: review flag only
        "PAIR": ("USCC", uscc("8", "8", "110105"), []),
        "ORGUSCC": ("ORG_CODE", valid, []),
        "NATIONAL": ("USCC", uscc("9", "1", "100000"), []),
        "LEGACY19": ("BUSINESS_LICENSE", licence("190101"), ["DOC_NUMBER_CODE"]),
    }
    rows, _ = classify([organisation(line_id=k, doc_type=t, doc_number=n) for k, (t, n, _) in cases.items()], policy)
    for key, (_, _, reasons) in cases.items():
        if key == "PDY":
            assert "DOC_NUMBER_FORMAT" in rows[key]["reasons"]
        else:
            assert rows[key]["reasons"] == reasons, key
    for key in ("AUTHORITY", "PAIR"):
        assert (rows[key]["flags"], rows[key]["needs_review"]) == (["DOC_NUMBER_CODE_REVIEW"], True), key


# The labels of operator exports (CRM/BSS vocabularies) and what the decree's three enums make of them.
EXPORT_LABELS = {
    "line_type": {
        "MOBILE": ["移动电话", "手机号码", "5G", "td-scdma"],
        "FIXED": ["座机", "固网", "pstn", "Landline"],
        "DATA_CARD": ["数据卡", "流量卡", "无线上网卡"],
    },
    "subscriber_kind": {
        "INDIVIDUAL": ["个人客户", "公众客户", "自然人"],
        "ORGANIZATION": ["集团客户", "政企客户", "企业", "Corporate"],
    },
    "status": {
        "ACTIVE": ["正常在用", "在网", "已开通"],
        "SUSPENDED": ["单停", "双向停机", "欠费停机", "挂失", "停机保号", "预销户"],
        "TERMINATED": ["已拆机", "已销户", "注销", "离网", "携出", "Cancelled"],
    },
}


@pytest.mark.parametrize("field", sorted(EXPORT_LABELS))
def test_operator_export_labels_are_enum_aliases(policy, field):
    pairs = [(value, label) for value, labels in EXPORT_LABELS[field].items() for label in labels]
    rows, dead = classify(
        [person(line_id=f"L{i}", **{field: f" {label} "}) for i, (_, label) in enumerate(pairs)], policy
    )
    assert not dead
    assert [rows[f"L{i}"][field] for i in range(len(pairs))] == [value for value, _ in pairs]


def test_labels_outside_the_decree_stay_bad_enum(policy):
    # broadband and IoT are not the decree's telephone lines; numeric status codes differ between systems
    rows, dead = classify(
        [
            person(line_id="W", line_type="宽带"),
            person(line_id="I", line_type="物联网卡"),
            person(line_id="N", status="1"),
        ],
        policy,
    )
    assert not rows and [(d["reason"], d["field"]) for d in dead] == [
        ("BAD_ENUM", "line_type"),
        ("BAD_ENUM", "line_type"),
        ("BAD_ENUM", "status"),
    ]


def test_dead_letters_one_per_row_with_reason_and_location(policy):
    rows, dead = classify(
        [
            person(line_id=""),
            person(line_id="E1", line_type="PREPAID"),
            person(line_id="E2", status=None),
            person(line_id="D1", activated_on="2019-13-40"),
            person(line_id="D2", updated_at="yesterday"),
            person(line_id="D3", terminated_on="1900-02-29"),
            person(line_id="OK"),
        ],
        policy,
    )
    assert list(rows) == ["OK"]
    got = [(d["reason"], d["source_row"], d["field"]) for d in dead]
    assert got == [
        ("LINE_ID_MISSING", 1, "line_id"),
        ("BAD_ENUM", 2, "line_type"),
        ("BAD_ENUM", 3, "status"),
        ("BAD_DATE", 4, "activated_on"),
        ("BAD_DATE", 5, "updated_at"),
        ("BAD_DATE", 6, "terminated_on"),
    ]
    assert all(d["step"] == "scan" and d["source_file"] == "base.csv" for d in dead)
    assert "张三" not in repr(dead) and "11010519491231002X" not in repr(dead)


def test_birth_date_is_relative_to_as_of(policy):
    number = citizen("110101", "20261201")
    assert "DOC_NUMBER_BIRTH_DATE" in one(policy, doc_number=number)["reasons"]
    later = classify([person(doc_number=number)], policy, as_of=dt.date(2027, 1, 1))[0]["L1"]
    assert later["identity_status"] == "COMPLETE"


def test_msisdn_is_normalised(policy):
    assert one(policy, msisdn="+86 138-0013-8000")["msisdn"] == "13800138000"
    assert one(policy, msisdn="0086 13800138000")["msisdn"] == "13800138000"
    assert one(policy, msisdn="010-6552 9988")["msisdn"] == "01065529988"
    # A fixed number written with +86 regains its trunk 0.
    assert one(policy, msisdn="+86 10 6552 9988")["msisdn"] == "01065529988"
    assert one(policy, msisdn="+86 (755) 1234-5678")["msisdn"] == "075512345678"


def test_reasons_follow_catalogue_order(policy):
    row = one(policy, doc_type="驾驶证", name="张", address="哈哈")
    assert row["reasons"] == sorted(row["reasons"], key=LINE_REASONS.index)


@pytest.mark.parametrize("name", ["张某某", "某某公司"])
def test_so_and_so_names_are_placeholders(policy, name):
    kind = "ORGANIZATION" if name.endswith("公司") else "INDIVIDUAL"
    fields = organisation(name=name) if kind == "ORGANIZATION" else person(name=name)
    rows, _ = classify([fields], policy)
    assert rows["L1"]["reasons"] == ["NAME_PLACEHOLDER"]


# Province-level codes of GB/T 2260 that a region may start with (docs/policy.md "Regions"), built here
# from the ranges rather than copied from the code.
_PROVINCES = {
    f"{c}" for lo, hi in ((11, 15), (21, 23), (31, 37), (41, 46), (50, 54), (61, 65)) for c in range(lo, hi + 1)
}
_PROVINCES |= {"71", "81", "82"}


def test_regions_outside_gbt2260_are_flagged_and_left_out(policy):
    """A region that is not six digits under a province-level code flags the line REGION_INVALID and never
    reaches an output as it is (formula injection, typos, short codes); the identity status is untouched."""
    samples = [
        "110105",
        "３７０７０２",
        " 650102 ",
        "810000",
        '=HYPERLINK("x")',
        "@SUM(1+1)",
        "3707",
        "1101050",
        "990101",
        "160101",
        "AB0101",
        "",
        None,
    ]
    for prefix in range(100):  # every two-digit prefix of an otherwise plain code
        samples.append(f"{prefix:02d}0101")
    rows = [person(line_id=f"L{i}", region=value) for i, value in enumerate(samples)]
    table = finalize(classify_batch(raw_table(rows), policy, AS_OF, CTX, SALT).classified)
    got = {r["line_id"]: r for r in table.to_pylist()}
    for i, value in enumerate(samples):
        text = None if value is None else unicodedata.normalize("NFKC", value).strip() or None
        valid = text is not None and len(text) == 6 and text.isascii() and text.isdigit() and text[:2] in _PROVINCES
        row = got[f"L{i}"]
        assert row["region"] == (text if valid else None), (i, row["region"])
        assert ("REGION_INVALID" in row["flags"]) == (text is not None and not valid), i
        assert row["needs_review"] == (text is not None and not valid), i
        assert row["identity_status"] == "COMPLETE", i
