"""The tax registration certificate (税务登记证) and its number (docs/regulation.md §2.9, docs/policy.md).

Before the 2015-2016 "three certificates in one" reform an organisation's tax registration number was 15 characters:
the six-digit GB/T 2260 division of the tax office and the nine-character GB 11714 organisation code (国税函〔2006〕
820号); since the reform it is the USCC (国家税务总局公告2015年第66号), and an individual business without one is
registered under its owner's citizen identity number, alone or with a two-digit sequence. Every number here is built
by the test: the divisions come from the policy's code tables, the organisation code's check character from the
small GB 11714 implementation below (not the product's).

    .venv/bin/python -m pytest -q tests/test_tax_registration.py
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from bench.naive_rules import number_reasons, number_reviews, prepare
from tests.support.rows import AS_OF, organisation, person
from tests.support.scan import classify
from transforms.scan.documents import REASONS, REVIEWS, check_document_numbers
from transforms.scan.normalize import normalize_doc_number, normalize_label
from transforms.scan.policy import load_policy

FORMAT, CHECKSUM, BIRTH, REGION, FIRST_GEN, MISMATCH, CODE = REASONS
DIVISION_REVIEW, CODE_REVIEW = REVIEWS
TAX = "tax_registration"


def gb11714(body: str) -> str:
    """GB 11714-1997: weights 3 7 9 10 5 8 4 2 over the values 0-9, A=10 .. Z=35; C9 = 11 - (S mod 11), 10 is
    written X and 11 is written 0."""
    values = [int(c) if c.isdigit() else ord(c) - ord("A") + 10 for c in body]
    c9 = 11 - sum(v * w for v, w in zip(values, (3, 7, 9, 10, 5, 8, 4, 2))) % 11
    return {10: "X", 11: "0"}.get(c9, str(c9))


def mod11_2(body: str) -> str:
    """GB 11643: weights 2^(17-i) mod 11, check '10X98765432'[S mod 11]."""
    return "10X98765432"[sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(body)) % 11]


def mod11_10(body: str) -> str:
    """ISO 7064 MOD 11,10 of the 15-digit business registration number."""
    p = 10
    for d in body:
        s = (p + int(d)) % 10 or 10
        p = 2 * s % 11
    return str((11 - p) % 10)


@pytest.fixture(scope="module")
def policy():
    return load_policy()


@pytest.fixture(scope="module")
def divisions(policy) -> list[str]:
    """Six-digit county-level divisions of the code tables, one per province-level code that has one."""
    table = [line[:6] for line in policy.code_tables.divisions.splitlines()]
    chosen = {}
    for code in table:
        if not code.endswith("00") and code[:2] not in chosen:
            chosen[code[:2]] = code
    return sorted(chosen.values())


def tax_number(division: str, body: str) -> str:
    return division + body + gb11714(body)


def org_bodies(rng: random.Random, count: int) -> list[str]:
    """Eight-character bodies (mostly digits, as legacy codes were, some with letters), covering the check
    characters X (C9 = 10) and 0 (C9 = 11) as well."""
    bodies, checks = [], set()
    while len(bodies) < count or not {"X", "0"} <= checks:
        alphabet = "0123456789" if rng.random() < 0.7 else "0123456789ABCDEFGHJKLMNPQRTUWXY"
        body = "".join(rng.choice(alphabet) for _ in range(8))
        bodies.append(body)
        checks.add(gb11714(body))
    return bodies


def _reasons(values: list[str]) -> list[set[str]]:
    numbers = normalize_doc_number(pa.array(values, pa.string()))
    out = check_document_numbers(pa.array([TAX] * len(values)), numbers, AS_OF)
    return [{code for code in REASONS + REVIEWS if out[code][i]} for i in range(len(values))]


def test_own_gb11714_agrees_with_the_standards_examples():
    # docs/regulation.md §2.5: 60003734-1, MA1BUFLT-4, 10000018-X, 10000004-0.
    assert [gb11714(b) for b in ("60003734", "MA1BUFLT", "10000018", "10000004")] == ["1", "4", "X", "0"]


def test_tax_registration_is_an_organisation_document_with_its_labels(policy):
    assert policy.documents["TAX_REGISTRATION"] == ("ORGANIZATION", TAX)
    for label in ("税务登记证", "税务登记证号", "纳税人识别号", "TAX_REGISTRATION"):
        assert policy.label_lookup[normalize_label(pa.array([label])).to_pylist()[0]] == "TAX_REGISTRATION", label
    # The licence keeps its own labels.
    for label in ("营业执照", "工商注册号", "06", "201"):
        assert policy.label_lookup[normalize_label(pa.array([label])).to_pylist()[0]] == "BUSINESS_LICENSE", label


def test_legacy_tax_numbers_under_the_tax_certificate_are_complete(policy, divisions):
    rng = random.Random(2006)
    bodies = org_bodies(rng, 24)
    labels = ["税务登记证", "税务登记证号", "纳税人识别号", "TAX_REGISTRATION"]
    rows = []
    for i, body in enumerate(bodies):
        number = tax_number(rng.choice(divisions), body)
        typed = number if i % 3 else number[:6] + "-" + number[6:14] + "-" + number[14]  # as printed, hyphenated
        rows.append(
            organisation(line_id=f"T{i}", msisdn=f"138{i:08d}", doc_type=labels[i % len(labels)], doc_number=typed)
        )
    out, dead = classify(rows, policy)
    assert not dead
    for row in rows:
        got = out[row["line_id"]]
        assert (got["identity_status"], got["reasons"], got["flags"]) == ("COMPLETE", [], []), row["line_id"]


def test_a_wrong_organisation_check_character_is_a_checksum_failure(divisions):
    rng = random.Random(820)
    bad = []
    for body in org_bodies(rng, 30):
        good = tax_number(rng.choice(divisions), body)
        # another check character, but not one that makes an all-digit number a valid licence number (below)
        bad.append(next(n for n in (good[:-1] + c for c in "0123456789X" if c != good[-1]) if not _licence(n)))
    assert _reasons(bad) == [{CHECKSUM}] * len(bad)


def _licence(number: str) -> bool:
    return number.isdigit() and len(number) == 15 and mod11_10(number[:14]) == number[14]


def test_a_business_registration_number_filed_as_the_tax_number_is_valid(policy, divisions):
    """Operators' exports file the licence's 15-digit number under 税务登记证 (their checkers group the two labels):
    a valid MOD 11,10 number there is valid too, with no flag; a bad one is a checksum failure."""
    rng = random.Random(66)
    numbers = []
    while len(numbers) < 20:
        head = rng.choice(divisions) + "".join(rng.choice("0123456789") for _ in range(8))
        number = head + mod11_10(head)
        if gb11714(number[6:14]) != number[14]:  # not also a tax number by chance: the licence reading decides
            numbers.append(number)
    bad = [n[:-1] + str((int(n[-1]) + 1) % 10) for n in numbers]
    bad = [n for n in bad if gb11714(n[6:14]) != n[14]]
    assert _reasons(numbers) == [set()] * len(numbers)
    assert _reasons(bad) == [{CHECKSUM}] * len(bad) and bad
    cfg = prepare(policy)["numbers"]
    assert all(not number_reasons(TAX, n, AS_OF, cfg) and not number_reviews(TAX, n, cfg, AS_OF) for n in numbers)
    assert all(number_reasons(TAX, n, AS_OF, cfg) == {CHECKSUM} for n in bad)


def test_the_division_of_a_legacy_tax_number(policy, divisions):
    body = "60003734"
    known = set(line[:6] for line in policy.code_tables.divisions.splitlines())
    # Under a province-level code but missing from the table: a lawful tax office code may be historical or a
    # development zone's (国税函〔2006〕820号, 闽国税发〔2003〕133号), so a review flag, not a failure.
    unlisted = next(f"11{n:04d}" for n in range(9999, 0, -1) if f"11{n:04d}" not in known)
    assert _reasons([tax_number(divisions[0], body), tax_number(unlisted, body)]) == [set(), {DIVISION_REVIEW}]
    # Not under a province-level code: DOC_NUMBER_CODE; not six digits: DOC_NUMBER_FORMAT.
    assert (
        _reasons([tax_number("990105", body), tax_number("001234", body), tax_number("100000", body)]) == [{CODE}] * 3
    )
    assert _reasons([tax_number("11A105", body), tax_number("1101O5", body)]) == [{FORMAT}] * 2
    # Both a bad division and a bad check character: both reported.
    assert _reasons(["990105" + body + "2"]) == [{CODE, CHECKSUM}]


def test_ill_formed_tax_numbers(divisions):
    good = tax_number(divisions[0], "60003734")
    pdy = tax_number(divisions[0], "PDY00001")  # the self-defined range, not for exchange (§2.5)
    lengths = [good[:-1], good[:-2], good + "1", good + "12", good[:6] + "60003734", "1" * 21, good[:6]]
    assert _reasons([*lengths, pdy, good[:-1] + "Y", good[:8] + "*" + good[9:], "未知", "000000"]) == [{FORMAT}] * (
        len(lengths) + 5
    )


def test_a_uscc_and_the_individual_business_forms(policy):
    uscc = "91110000600037341L"  # §2.4 V1: since the reform the tax number is the USCC
    owner = "110105194912310" + "02" + "X"  # the standard's example citizen number (§2.1)
    assert mod11_2(owner[:17]) == "X"
    born_1990 = "440305199001010" + "01"
    born_1990 += mod11_2(born_1990)
    values = [uscc, owner, owner + "00", born_1990 + "01", uscc[:-1] + "M", owner[:-1] + "1" + "01"]
    assert _reasons(values) == [set(), set(), set(), set(), {CHECKSUM}, {CHECKSUM}]
    bad_birth = "110105194913310" + "01"
    bad_birth += mod11_2(bad_birth)
    # A citizen number's own rules apply: the birth date, the province.
    no_province = "990105199001010" + "01"
    no_province += mod11_2(no_province)
    assert _reasons([bad_birth, bad_birth + "01", no_province]) == [{BIRTH}, {BIRTH}, {REGION}]
    # A sequence that is not two digits: not a tax number.
    assert _reasons([owner + "0A", owner + "1", owner + "001"]) == [{FORMAT}] * 3


def test_the_naive_oracle_agrees_on_tax_numbers(policy, divisions):
    cfg = prepare(policy)["numbers"]
    rng = random.Random(66)
    values = [tax_number(rng.choice(divisions), body) for body in org_bodies(rng, 40)]
    values += [v[:-1] + "7" for v in values[:10]] + ["990105600037341", "11A105600037341", "110105PDY000011"]
    values += ["91110000600037341L", "91110000600037341M", "11010519491231002X", "11010519491231002X01"]
    values += ["110105194912310021", "11010519491231002X0", "1101051949123100211"]
    expected = _reasons(values)
    for value, want in zip(values, expected):
        got = number_reasons(TAX, value, AS_OF, cfg) | number_reviews(TAX, value, cfg, AS_OF)
        assert got == want, value


def test_a_tax_line_is_checked_like_the_vectorised_scan_by_the_naive_classifier(policy, divisions):
    from bench.naive import classify_row

    good = tax_number(divisions[1], "60003734")
    rows = [
        organisation(line_id="A", msisdn="13900000001", doc_type="税务登记证", doc_number=good),
        organisation(line_id="B", msisdn="13900000002", doc_type="税务登记证", doc_number=good[:-1] + "2"),
        organisation(line_id="C", msisdn="13900000003", doc_type="纳税人识别号", doc_number="91110000600037341L"),
        person(line_id="D", msisdn="13900000004", doc_type="税务登记证", doc_number=good),
    ]
    out, _ = classify(rows, policy)
    for row in rows:
        naive = classify_row({**row, "_src_file": "base.csv", "_src_row": 1}, policy, AS_OF)
        assert (naive["identity_status"], naive["reasons"]) == (
            out[row["line_id"]]["identity_status"],
            out[row["line_id"]]["reasons"],
        ), row["line_id"]
    assert out["B"]["reasons"] == [CHECKSUM]
    assert out["D"]["reasons"] == ["DOC_TYPE_NOT_ALLOWED_FOR_KIND"]


def test_the_business_licence_is_still_checked_with_mod_11_10(policy, divisions):
    """Lines labelled 营业执照 (or 工商注册号) keep the licence's rule (§2.6): a legacy tax number there is no licence
    number unless its last digit happens to be the MOD 11,10 check."""
    licence = "11010801234567"
    licence += mod11_10(licence)
    bad_licence = licence[:-1] + str((int(licence[-1]) + 1) % 10)
    tax = next(
        n
        for n in (tax_number(d, b) for d in divisions for b in ("60003734", "77255161", "12345678"))
        if n.isdigit() and mod11_10(n[:14]) != n[14]
    )
    rows = [
        organisation(line_id="L1", msisdn="13700000001", doc_type="营业执照", doc_number=licence),
        organisation(line_id="L2", msisdn="13700000002", doc_type="营业执照", doc_number=bad_licence),
        organisation(line_id="L3", msisdn="13700000003", doc_type="工商注册号", doc_number=bad_licence),
        organisation(line_id="L4", msisdn="13700000004", doc_type="营业执照", doc_number=tax),
        organisation(line_id="L5", msisdn="13700000005", doc_type="税务登记证", doc_number=tax),
    ]
    out, dead = classify(rows, policy)
    assert not dead
    assert (out["L1"]["identity_status"], out["L1"]["reasons"]) == ("COMPLETE", [])
    for line in ("L2", "L3", "L4"):
        assert (out[line]["identity_status"], out[line]["reasons"]) == ("INVALID", [CHECKSUM]), line
    assert (out["L5"]["identity_status"], out["L5"]["reasons"]) == ("COMPLETE", [])
