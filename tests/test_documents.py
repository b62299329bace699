"""Tests of transforms.scan.documents.check_document_numbers.

The check characters are computed here by small scalar reference
implementations written straight from the formulas of docs/regulation.md
(2.1, 2.4, 2.5, 2.6), independently of transforms.scan.checkdigits. A scalar
reference of the whole policy (``ref_reasons``) is compared row by row with
the vectorised result on many random, partly corrupted numbers; the worked
examples of docs/regulation.md and the boundary cases are asserted one by one.
"""

from __future__ import annotations

import datetime
import random
import re

import numpy as np
import pyarrow as pa
import pytest

from transforms.scan.documents import CHECKS, REASONS, DocumentRules, check_document_numbers

FORMAT, CHECKSUM, BIRTH, REGION, FIRST_GEN, MISMATCH = REASONS
AS_OF = datetime.date(2024, 6, 30)
RULES = DocumentRules()
PROVINCES = sorted(RULES.province_codes)
USCC_SET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


# ---- independent scalar references (docs/regulation.md) -----------------------------------------


def ref_mod11_2(body17: str) -> str:
    """2.1: W[i] = 2^(17-i) mod 11, C = "10X98765432"[S mod 11]."""
    s = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(body17))
    return "10X98765432"[s % 11]


def ref_uscc(body17: str) -> str:
    """2.4: W_i = 3^i mod 31, C18 = CHARSET[(31 - S mod 31) mod 31]."""
    s = sum(USCC_SET.index(c) * pow(3, i, 31) for i, c in enumerate(body17))
    return USCC_SET[(31 - s % 31) % 31]


def ref_gb11714(body8: str) -> str:
    """2.5: C9 = 11 - (S mod 11), A=10..Z=35; 10 -> X, 11 -> 0."""
    s = sum(int(c, 36) * w for c, w in zip(body8, [3, 7, 9, 10, 5, 8, 4, 2]))
    c9 = 11 - s % 11
    return {10: "X", 11: "0"}.get(c9, str(c9))


def ref_mod11_10(body14: str) -> str:
    """2.6: ISO 7064 MOD 11,10."""
    p = 10
    for d in body14:
        s = (p + int(d)) % 10 or 10
        p = (2 * s) % 11
    return str((11 - p) % 10)


def ref_birth_ok(y: int, m: int, d: int, as_of: datetime.date, max_age: int = 150) -> bool:
    try:
        born = datetime.date(y, m, d)
    except ValueError:
        return False
    return born <= as_of and (y, m, d) >= (as_of.year - max_age, as_of.month, as_of.day)


def _full(pattern: str, x: str) -> bool:
    return re.fullmatch(pattern, x) is not None


def ref_reasons(kind: str, x: str, as_of: datetime.date = AS_OF) -> set[str]:
    """The rules of docs/policy.md, one number at a time."""
    prov = RULES.province_codes
    id18 = _full(r"[0-9]{17}[0-9X]", x)

    def id18_checks() -> set[str]:
        out = set()
        if ref_mod11_2(x[:17]) != x[17]:
            out.add(CHECKSUM)
        if not ref_birth_ok(int(x[6:10]), int(x[10:12]), int(x[12:14]), as_of):
            out.add(BIRTH)
        return out

    new_fprid = id18 and x[0] == "9" and x[1:3] in prov
    if kind == "citizen_id":
        if _full(r"[0-9]{15}", x):
            out = {FIRST_GEN} if as_of >= datetime.date(2013, 1, 1) else set()
            if not ref_birth_ok(1900 + int(x[6:8]), int(x[8:10]), int(x[10:12]), as_of):
                out.add(BIRTH)
            return out | ({REGION} if x[:2] not in prov else set())
        if not id18:
            return {FORMAT}
        out = id18_checks() | ({REGION} if x[:2] not in prov else set())
        return out | ({MISMATCH} if x[:6] in RULES.hmt_prefixes or new_fprid else set())
    if kind == "hmt_residence_permit":
        if id18 and x[:6] in RULES.hmt_prefixes:
            return id18_checks()
        if id18 and (x[:2] in prov or new_fprid):
            return id18_checks() | {MISMATCH}
        return {FORMAT}
    if kind == "foreign_permanent_resident_id":
        if id18 and x[0] == "9":
            return id18_checks()
        if id18 and x[0] in "12345678":
            return id18_checks() | {MISMATCH}
        if _full(r"[A-Z]{3}[0-9]{12}", x):
            yy, mm, dd = int(x[7:9]), int(x[9:11]), int(x[11:13])
            ok = ref_birth_ok(1900 + yy, mm, dd, as_of) or ref_birth_ok(2000 + yy, mm, dd, as_of)
            return set() if ok else {BIRTH}
        return {FORMAT}
    if kind == "hk_macao_permit":
        return set() if _full(r"[HM]([0-9]{8}|[0-9]{10})", x) else {FORMAT}
    if kind == "taiwan_permit":
        return set() if _full(r"[0-9]{8}|[0-9]{10}(\([A-Z]\))?", x) else {FORMAT}
    if kind == "passport":
        return set() if _full(r"[A-Z0-9]{5,17}", x) else {FORMAT}
    if kind == "free_text":
        ok = 4 <= len(x) <= 32 and x not in RULES.number_placeholders and len(set(x)) > 1
        return set() if ok else {FORMAT}
    if kind in ("uscc", "business_license") and len(x) == 18:
        if not all(c in USCC_SET for c in x):
            return {FORMAT}
        bad = ref_uscc(x[:17]) != x[17] or ref_gb11714(x[8:16]) != x[16]
        return {CHECKSUM} if bad else set()
    if kind == "business_license" and _full(r"[0-9]{15}", x):
        return {CHECKSUM} if ref_mod11_10(x[:14]) != x[14] else set()
    if kind in ("uscc", "business_license"):
        return {FORMAT}
    if kind == "org_code":
        if not _full(r"[0-9A-Z]{8}[0-9X]", x) or x.startswith("PDY"):
            return {FORMAT}
        return {CHECKSUM} if ref_gb11714(x[:8]) != x[8] else set()
    if kind == "uscc_or_alnum":
        return set() if _full(r"[A-Z0-9]{6,32}", x) else {FORMAT}
    raise AssertionError(kind)


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


# ---- helpers ------------------------------------------------------------------------------


def reasons_of(
    kind: str | None, numbers: list[str | None], as_of: datetime.date = AS_OF, rules: DocumentRules = RULES
) -> list[set[str]]:
    out = check_document_numbers(
        pa.array([kind] * len(numbers), pa.string()), pa.array(numbers, pa.string()), as_of, rules
    )
    return [{r for r in REASONS if out[r][i]} for i in range(len(numbers))]


def one(kind: str, number: str, as_of: datetime.date = AS_OF, **rules) -> set[str]:
    return reasons_of(kind, [number], as_of, DocumentRules(**rules))[0]


def citizen(region: str, ymd: str, seq: str = "001") -> str:
    body = region + ymd + seq
    return body + ref_mod11_2(body)


def with_wrong_last(number: str, alphabet: str) -> str:
    return number[:-1] + next(c for c in alphabet if c != number[-1])


# ---- random numbers: generated valid, then corrupted ---------------------------------------


def _random_date(rng: random.Random) -> str:
    y = rng.choice([rng.randrange(1860, 2030), 1900, 2000, 1874, 2024])
    m = rng.choice([2, 2, rng.randrange(0, 14)])
    d = rng.choice([29, 30, 31, rng.randrange(0, 32)])
    return f"{y:04d}{m:02d}{d:02d}"


def _valid(kind: str, rng: random.Random) -> str:
    digits = lambda k: "".join(rng.choice("0123456789") for _ in range(k))  # noqa: E731
    if kind in ("citizen_id", "hmt_residence_permit", "foreign_permanent_resident_id"):
        region = {
            "citizen_id": rng.choice(PROVINCES) + digits(4),
            "hmt_residence_permit": rng.choice(RULES.hmt_prefixes),
            "foreign_permanent_resident_id": "9" + rng.choice(PROVINCES) + digits(3),
        }[kind]
        if kind == "citizen_id" and rng.random() < 0.15:  # first generation
            return region + _random_date(rng)[2:] + digits(3)
        if kind == "foreign_permanent_resident_id" and rng.random() < 0.3:  # 2004/2017 card
            return "".join(rng.choice("ABCUSZ") for _ in range(3)) + digits(4) + _random_date(rng)[2:] + digits(2)
        return citizen(region, _random_date(rng), digits(3))
    if kind == "hk_macao_permit":
        return rng.choice("HM") + digits(rng.choice([8, 10]))
    if kind == "taiwan_permit":
        return rng.choice([digits(8), digits(10), digits(10) + "(" + rng.choice("ABDX") + ")"])
    if kind == "passport":
        return "".join(rng.choice("EGKP0123456789") for _ in range(rng.randrange(5, 18)))
    if kind == "free_text":
        return rng.choice(["南字第", "武字第", "", "JUN"]) + digits(rng.randrange(1, 10))
    body = "".join(rng.choice(USCC_SET[:10] + "ABCMNP") for _ in range(8))
    org = body + ref_gb11714(body)
    uscc = rng.choice("15932NY") + rng.choice("123") + digits(6) + org
    uscc += ref_uscc(uscc)
    if kind == "org_code":
        return org
    if kind == "business_license" and rng.random() < 0.4:
        legacy = digits(14)
        return legacy + ref_mod11_10(legacy)
    return uscc


def _corrupt(x: str, rng: random.Random) -> str:
    roll = rng.random()
    pos = rng.randrange(len(x)) if x else 0
    noise = rng.choice("0123456789X9AIOZ中(-/ ")
    if roll < 0.35:
        return x
    if roll < 0.55:  # wrong check character
        return x[:-1] + rng.choice("0123456789XYL")
    if roll < 0.7:
        return x[:pos] + noise + x[pos + 1 :]
    if roll < 0.8:
        return x[:pos] + x[pos + 1 :]
    if roll < 0.9:
        return x[:pos] + noise + x[pos:]
    prefixes = ["810000", "820000", "911840", "110105", "990000", "000000", "PDY000", "NULL00"]
    return rng.choice(prefixes) + x[6:]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_mixed_batch_matches_the_scalar_reference(seed: int):
    rng = random.Random(seed)
    kinds = [rng.choice(CHECKS) for _ in range(6000)]
    numbers = [_corrupt(_valid(k, rng), rng) for k in kinds]
    out = check_document_numbers(pa.array(kinds), pa.array(numbers), AS_OF)
    seen = {k: set() for k in CHECKS}
    for i, (kind, x) in enumerate(zip(kinds, numbers)):
        got = {r for r in REASONS if out[r][i]}
        assert got == ref_reasons(kind, x), (kind, x)
        seen[kind] |= got or {"valid"}
    # The batch really exercises the branches (else this test would prove little).
    assert seen["citizen_id"] == set(REASONS) | {"valid"}
    assert seen["hmt_residence_permit"] == {FORMAT, CHECKSUM, BIRTH, MISMATCH, "valid"}
    assert seen["foreign_permanent_resident_id"] == {FORMAT, CHECKSUM, BIRTH, MISMATCH, "valid"}
    for kind in ("uscc", "org_code", "business_license"):
        assert seen[kind] == {FORMAT, CHECKSUM, "valid"}


@pytest.mark.parametrize(
    "kind,widths,alphabet",
    [
        ("citizen_id", (18,), "0123456789X"),
        ("hmt_residence_permit", (18,), "0123456789X"),
        ("foreign_permanent_resident_id", (18,), "0123456789X"),
        ("uscc", (18,), USCC_SET),
        ("org_code", (9,), "0123456789X"),
        ("business_license", (15, 18), "0123456789"),
    ],
)
def test_generated_check_characters_pass_and_any_other_fails(kind: str, widths: tuple, alphabet: str):
    rng = random.Random(kind)
    good = []
    while len(good) < 500:  # random bodies, check character from the reference
        x = _valid(kind, rng)
        if len(x) in widths and ref_reasons(kind, x) == set():
            good.append(x)
    assert {len(x) for x in good} == set(widths)
    assert all(r == set() for r in reasons_of(kind, good))
    bad = [with_wrong_last(x, rng.sample(alphabet, len(alphabet))) for x in good]
    assert all(r == {CHECKSUM} for r in reasons_of(kind, bad))


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


def test_travel_permits_passports_and_free_text_of_domain_2_7():
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


# ---- the array contract ---------------------------------------------------------------------


def test_nulls_get_no_reason_and_every_key_is_present():
    out = check_document_numbers(
        pa.array([None, "citizen_id", None, "passport"]), pa.array(["bad", None, None, "!"]), AS_OF
    )
    assert set(out) == set(REASONS)
    for hits in out.values():
        assert hits.dtype == np.bool_ and hits.shape == (4,)
    assert out[FORMAT].tolist() == [False, False, False, True]
    assert not any(out[r][:3].any() for r in REASONS)
    empty = check_document_numbers(pa.array([], pa.string()), pa.array([], pa.string()), AS_OF)
    assert all(v.shape == (0,) for v in empty.values()) and set(empty) == set(REASONS)
    nothing = check_document_numbers(pa.nulls(2, pa.string()), pa.array(["x", "y"]), AS_OF)
    assert not any(v.any() for v in nothing.values())


def _mixed(n: int = 400, seed: int = 7) -> tuple[list, list]:
    rng = random.Random(seed)
    kinds = [rng.choice(CHECKS + (None,)) for _ in range(n)]
    numbers = [None if rng.random() < 0.05 else _corrupt(_valid(k or "uscc", rng), rng) for k in kinds]
    return kinds, numbers


def _expected(kinds: list, numbers: list) -> dict[str, np.ndarray]:
    sets = [ref_reasons(k, x) if k is not None and x is not None else set() for k, x in zip(kinds, numbers)]
    return {r: np.array([r in s for s in sets], bool) for r in REASONS}


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for r in REASONS:
        np.testing.assert_array_equal(got[r], want[r], err_msg=r)


def test_sliced_arrays_with_different_offsets():
    kinds, numbers = _mixed()
    checks, values = pa.array(["uscc"] * 3 + kinds)[3:], pa.array(["x"] * 5 + numbers)[5:]
    assert (checks.offset, values.offset) == (3, 5)
    got = check_document_numbers(checks, values, AS_OF)
    _assert_same(got, _expected(kinds, numbers))
    got = check_document_numbers(pa.array(kinds)[17:301], pa.array(numbers)[17:301], AS_OF)
    _assert_same(got, _expected(kinds[17:301], numbers[17:301]))


def test_chunked_dictionary_and_large_string_inputs():
    kinds, numbers = _mixed(seed=8)
    want = _expected(kinds, numbers)
    chunked = check_document_numbers(
        pa.chunked_array([pa.array(kinds[:150], pa.string()), pa.array(kinds[150:], pa.string())]),
        pa.chunked_array([pa.array(numbers[:10]), pa.array(numbers[10:])]),
        AS_OF,
    )
    _assert_same(chunked, want)
    encoded = check_document_numbers(pa.array(kinds).dictionary_encode(), pa.array(numbers, pa.large_string()), AS_OF)
    _assert_same(encoded, want)


def test_bad_calls_raise_without_echoing_values():
    with pytest.raises(ValueError) as caught:
        check_document_numbers(pa.array(["11010519491231002X"]), pa.array(["11010519491231002X"]), AS_OF)
    assert "11010519491231002X" not in str(caught.value)
    with pytest.raises(ValueError):
        check_document_numbers(pa.array(["uscc"]), pa.array(["a", "b"]), AS_OF)
    # A kind that no row with a number uses is not an error.
    out = check_document_numbers(
        pa.array(["no_such_kind", "uscc"]).dictionary_encode()[1:], pa.array(["91110000600037341L"]), AS_OF
    )
    assert not any(v.any() for v in out.values())


def test_datetime_as_of_is_taken_as_its_date():
    x = citizen("110101", "20240630")
    assert one("citizen_id", x, datetime.datetime(2024, 6, 30, 23, 59)) == set()
