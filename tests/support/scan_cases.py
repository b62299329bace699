"""The edge cases of the scan's differential test (tests/test_scan_oracle.py): each row, and the identity
status and reasons both the vectorised and the naive classifier must give it."""

from __future__ import annotations

from tests.support.doc_numbers import citizen, fprid_2017, fprid_2023, gbt2260_codes, licence, uscc
from tests.support.rows import organisation, person

# Worked examples of docs/regulation.md §2 and the rules of docs/policy.md, with the
# verdict both sides must give. The numbers are the published samples; those of the code
# tables (§2.8) are built from their parts with computed check characters.
P, O = person, organisation  # noqa: E741  (short names keep the table of cases readable)
_UNLISTED = next(f"44{k:04d}" for k in range(10_000) if f"44{k:04d}" not in gbt2260_codes())
_FPRID = "FOREIGN_PERMANENT_RESIDENT_ID"
EDGE_CASES = {
    "2.1 V1 GB example": (P(), "COMPLETE", ()),
    "2.1 V2 check 1": (P(doc_number="360426199101010071"), "COMPLETE", ()),
    "2.1 V3 check 2": (P(doc_number="440308199901101512"), "COMPLETE", ()),
    "2.1 V5 2000-02-29": (P(doc_number="110101200002290018"), "COMPLETE", ()),
    "2.1 V6 lower x": (P(doc_number="11010519491231002x"), "COMPLETE", ()),
    "2.1 I1 checksum": (P(doc_number="110105194912310021"), "INVALID", ("DOC_NUMBER_CHECKSUM",)),
    "2.1 I2 checksum": (P(doc_number="15000019970319128X"), "INVALID", ("DOC_NUMBER_CHECKSUM",)),
    "2.1 I3 1900-02-29": (P(doc_number="110101190002290011"), "INVALID", ("DOC_NUMBER_BIRTH_DATE",)),
    "2.1 I5 month 13": (P(doc_number="110101199013010012"), "INVALID", ("DOC_NUMBER_BIRTH_DATE",)),
    "2.1 I7 future": (P(doc_number="110101203101010011"), "INVALID", ("DOC_NUMBER_BIRTH_DATE",)),
    "2.1 I8 over 150": (P(doc_number="110101187001010017"), "INVALID", ("DOC_NUMBER_BIRTH_DATE",)),
    "2.1 I9 region": (P(doc_number="990000199001010017"), "INVALID", ("DOC_NUMBER_REGION",)),
    "2.1 I10 both": (P(doc_number="111111111111111111"), "INVALID", ("DOC_NUMBER_CHECKSUM", "DOC_NUMBER_BIRTH_DATE")),
    "2.1 GB 1880 example": (P(doc_number="440524188001010014"), "COMPLETE", ()),
    "2.1 first generation": (P(doc_number="610104620927690"), "INVALID", ("DOC_NUMBER_FIRST_GENERATION",)),
    "2.1 grouped, minus, NBSP, BOM": (P(doc_number="\u00a0110105\u221219491231 002X\ufeff"), "COMPLETE", ()),
    "2.1 full-width": (P(doc_number="１１０１０５１９４９１２３１００２Ｘ"), "COMPLETE", ()),
    "5 spreadsheet damage": (P(doc_number="1.10105E+17"), "INVALID", ("DOC_NUMBER_FORMAT",)),
    "2.2 permit as resident ID": (
        P(doc_number="810000199408230021"),
        "INVALID",
        ("DOC_NUMBER_REGION", "DOC_TYPE_MISMATCH"),
    ),
    "2.2 permit": (P(doc_type="港澳台居民居住证", doc_number="830000199201300022"), "COMPLETE", ()),
    "2.2 resident ID as permit": (P(doc_type="HMT_RESIDENCE_PERMIT"), "INVALID", ("DOC_TYPE_MISMATCH",)),
    "2.3 new FPRID as resident ID": (
        P(doc_number="911840198001010013"),
        "INVALID",
        ("DOC_NUMBER_REGION", "DOC_TYPE_MISMATCH"),
    ),
    "2.3 new FPRID 81 as resident ID": (
        P(doc_number=fprid_2023("81", "840")),
        "INVALID",
        ("DOC_NUMBER_REGION", "DOC_TYPE_MISMATCH"),
    ),
    "2.3 new FPRID": (P(doc_type="FOREIGN_PERMANENT_RESIDENT_ID", doc_number="911840198001010013"), "COMPLETE", ()),
    "2.3 old FPRID": (P(doc_type="永久居留证", doc_number="USA110080010111"), "COMPLETE", ()),
    "2.4 USCC V1": (O(doc_number="91110000600037341L"), "COMPLETE", ()),
    "2.4 USCC V5 check 0": (O(doc_number="911101085923662400"), "COMPLETE", ()),
    "2.4 USCC V9 authority Y": (O(doc_number="Y1330100MA2AB0018U"), "COMPLETE", ()),
    "2.4 USCC I2 letter O": (O(doc_number="91110000600O37341L"), "INVALID", ("DOC_NUMBER_FORMAT",)),
    "2.4 USCC I5 lower case": (O(doc_number="91230184ma1buflt44"), "COMPLETE", ()),
    "2.4 USCC I6 embedded code": (O(doc_number="91110000600037342P"), "INVALID", ("DOC_NUMBER_CHECKSUM",)),
    # An authority and category pair outside GB 32100: the review flag DOC_NUMBER_CODE_REVIEW, not a failure.
    "2.8 USCC authority B": (O(doc_number=uscc("B", "1", "110105")), "COMPLETE", ()),
    "2.8 USCC trade union 8 + 8": (O(doc_number=uscc("8", "8", "110105")), "COMPLETE", ()),
    "2.8 USCC pair and province 88": (O(doc_number=uscc("B", "1", "880106")), "INVALID", ("DOC_NUMBER_CODE",)),
    "2.8 USCC province 88": (O(doc_number=uscc("9", "1", "880106")), "INVALID", ("DOC_NUMBER_CODE",)),
    "2.8 USCC national level": (O(doc_number=uscc("N", "3", "100000")), "COMPLETE", ()),
    "2.8 licence region 19": (O(doc_type="营业执照", doc_number=licence("190101")), "INVALID", ("DOC_NUMBER_CODE",)),
    "2.8 FPRID 2017 KAA": (P(doc_type=_FPRID, doc_number=fprid_2017("KAA")), "INVALID", ("DOC_NUMBER_CODE",)),
    "2.8 FPRID 2023 province 99": (
        P(doc_type=_FPRID, doc_number=fprid_2023("99", "840")),
        "INVALID",
        ("DOC_NUMBER_CODE",),
    ),
    "2.8 FPRID 2023 nation 999": (
        P(doc_type=_FPRID, doc_number=fprid_2023("11", "999")),
        "INVALID",
        ("DOC_NUMBER_CODE",),
    ),
    "2.8 division review": (P(doc_number=citizen(_UNLISTED, "19800101")), "COMPLETE", ()),
    "2.8 HK identity card": (
        P(doc_type="香港居民身份证", doc_number="A1234567"),
        "INVALID",
        ("DOC_TYPE_NOT_ACCEPTED",),
    ),
    "1.3 mislabelled HK card": (P(doc_type="香港身份证", doc_number="A1234567"), "INVALID", ("DOC_NUMBER_FORMAT",)),
    "1.3 mislabelled Macao card": (P(doc_type="澳门身份证", doc_number="M12345678"), "COMPLETE", ()),
    "1.3 police card": (P(doc_type="人民警察证", doc_number="京公警字第012345号"), "COMPLETE", ()),
    "5 Latin name on a resident ID": (P(name="ZHANG San"), "COMPLETE", ()),
    "5 Latin name on a passport": (P(doc_type="护照", doc_number="E12345678", name="John Smith"), "COMPLETE", ()),
    "2.5 org code": (O(doc_type="ORG_CODE", doc_number="10000018-X"), "COMPLETE", ()),
    "2.5 org code as USCC": (O(doc_type="组织机构代码证", doc_number="91110000600037341L"), "COMPLETE", ()),
    "2.5 org code PDY": (O(doc_type="ORG_CODE", doc_number="PDY00001X"), "INVALID", ("DOC_NUMBER_FORMAT",)),
    "2.6 legacy licence": (O(doc_type="营业执照", doc_number="110108012345670"), "COMPLETE", ()),
    "2.7 Taiwan old form": (P(doc_type="台胞证", doc_number="0561682001（D）"), "COMPLETE", ()),
    "2.7 HK 10 characters": (P(doc_type="港澳证", doc_number="H123456789"), "INVALID", ("DOC_NUMBER_FORMAT",)),
    "1.3 review label": (P(doc_type="回乡证", doc_number="H12345678"), "COMPLETE", ()),
    "1.3 not accepted": (P(doc_type="驾驶证"), "INVALID", ("DOC_TYPE_NOT_ACCEPTED",)),
    "1.3 unknown label": (P(doc_type="身分证"), "INVALID", ("DOC_TYPE_UNKNOWN",)),
    "Art. 8 document for person": (
        P(doc_type="USCC", doc_number="91110000600037341L"),
        "INVALID",
        ("DOC_TYPE_NOT_ALLOWED_FOR_KIND",),
    ),
    "5 dots folded": (P(name="阿.卜．杜"), "COMPLETE", ()),
    "5 two dots": (P(name="阿··卜"), "INVALID", ("NAME_FORMAT",)),
    "5 digit in name": (P(name="张三１"), "INVALID", ("NAME_FORMAT",)),
    "5 zero-width name": (P(name="\u200b\u3000"), "INCOMPLETE", ("NAME_MISSING",)),
    "6 name placeholder": (P(name="机主本人"), "INVALID", ("NAME_PLACEHOLDER",)),
    "5 organisation name short": (O(name="某公司"), "INVALID", ("NAME_TOO_SHORT",)),
    "5 address short": (P(address="北京"), "INVALID", ("ADDRESS_TOO_SHORT", "ADDRESS_NOT_SPECIFIC")),
    "5 traditional address": (P(address="香港新界沙田區禾輋邨豐和樓"), "COMPLETE", ()),
    "5 latin address": (P(address="12 Main Street Apt 5"), "COMPLETE", ()),
    "5 latin address vague": (P(address="Main Street Somewhere"), "INVALID", ("ADDRESS_NOT_SPECIFIC",)),
    "6 address placeholder": (P(address="同上"), "INVALID", ("ADDRESS_PLACEHOLDER",)),
    "Art. 8 handler missing": (O(handler_name=" "), "INCOMPLETE", ("HANDLER_MISSING",)),
    "Art. 8 handler org document": (O(handler_doc_type="USCC"), "INVALID", ("HANDLER_INVALID",)),
    "Art. 8 handler bad number": (O(handler_doc_number="110105194912310021"), "INVALID", ("HANDLER_INVALID",)),
    "absence wins": (P(doc_number="123", address=None), "INCOMPLETE", ("ADDRESS_MISSING", "DOC_NUMBER_FORMAT")),
    "missing": (
        O(doc_type=None, doc_number=" ", name="\u3000", address=""),
        "MISSING",
        ("DOC_TYPE_MISSING", "DOC_NUMBER_MISSING", "NAME_MISSING", "ADDRESS_MISSING"),
    ),
    "enum aliases": (P(line_type=" mobile ", status="拆机", subscriber_kind="个人"), "COMPLETE", ()),
    "bad enum": (P(status="PENDING"), "DEAD", ("BAD_ENUM",)),
    "no line_id": (P(line_id="\u3000"), "DEAD", ("LINE_ID_MISSING",)),
    "bad date": (P(activated_on="2021-02-30"), "DEAD", ("BAD_DATE",)),
    "bad zone": (P(updated_at="2024-01-01T08:00:00+15:00"), "DEAD", ("BAD_DATE",)),
}
