"""The scalar reference of the document-number rules, and random numbers to compare it with
(tests/test_documents.py, tests/test_documents_arrays.py).

``ref_reasons`` applies docs/policy.md "Document numbers" and "Code tables" one number at a time with
the check characters of tests/support/doc_numbers.py and the code tables as the standards state them;
``valid_number`` builds a number of each check kind from random parts, ``corrupt`` damages it.
"""

from __future__ import annotations

import datetime
import random
import re

import pyarrow as pa

from tests.support.doc_numbers import (
    NATIONAL,
    PROVINCE_LEVEL,
    USCC_CATEGORIES,
    USCC_SET,
    citizen,
    countries,
    gbt2260_codes,
    ref_gb11714,
    ref_mod11_10,
    ref_mod11_2,
    ref_uscc,
)
from transforms.scan.documents import REASONS, REVIEWS, DocumentRules, check_document_numbers

FORMAT, CHECKSUM, BIRTH, REGION, FIRST_GEN, MISMATCH, CODE = REASONS
DIVISION_REVIEW, CODE_REVIEW = REVIEWS
AS_OF = datetime.date(2024, 6, 30)
RULES = DocumentRules()
PROVINCES = sorted(RULES.province_codes)
ALPHA3, NUMERIC = countries()
DIVISIONS = gbt2260_codes()
DIVISION_LIST, ALPHA3_LIST, NUMERIC_LIST = sorted(DIVISIONS), sorted(ALPHA3), sorted(NUMERIC)


def ref_birth_ok(y: int, m: int, d: int, as_of: datetime.date, max_age: int = 150) -> bool:
    try:
        born = datetime.date(y, m, d)
    except ValueError:
        return False
    return born <= as_of and (y, m, d) >= (as_of.year - max_age, as_of.month, as_of.day)


def _full(pattern: str, x: str) -> bool:
    return re.fullmatch(pattern, x) is not None


def ref_division(code: str) -> bool:
    """A registering division (docs/policy.md "Code tables"): a province-level code and four digits, or 100000."""
    return _full(r"[0-9]{6}", code) and (code[:2] in PROVINCE_LEVEL or code == NATIONAL)


def ref_uscc_paired(x: str) -> bool:
    """Positions 1-2 of a USCC: an authority and one of its categories (GB 32100 tables 1-2)."""
    return x[1] in USCC_CATEGORIES.get(x[0], "")


def _uscc_shaped(x: str) -> bool:
    return len(x) == 18 and all(c in USCC_SET for c in x)


def ref_reviews(kind: str, x: str, as_of: datetime.date = AS_OF) -> set[str]:
    """DOC_NUMBER_DIVISION_REVIEW: a well-formed citizen number under a province code, division not in GB/T 2260.
    DOC_NUMBER_CODE_REVIEW: a well-formed USCC (where the check takes one) whose authority and category are not a
    pair of GB 32100's table. A tax registration number: the flags of the reading ref_tax takes (a legacy
    number's division under a province-level code but not in GB/T 2260 is the division flag)."""
    if kind == "tax_registration":
        reading, read, _ = ref_tax(x, as_of)
        if reading == "legacy":
            return {DIVISION_REVIEW} if x[:2] in PROVINCE_LEVEL and x[:6] not in DIVISIONS else set()
        if reading in (None, "licence"):
            return set()
        kind, x = reading, read
    if kind in ("uscc", "business_license", "org_code") and _uscc_shaped(x):
        return set() if ref_uscc_paired(x) else {CODE_REVIEW}
    shaped = _full(r"[0-9]{17}[0-9X]", x) or _full(r"[0-9]{15}", x)
    ok = kind == "citizen_id" and shaped and x[:2] in RULES.province_codes
    return {DIVISION_REVIEW} if ok and x[:6] not in DIVISIONS else set()


def _ref_id18_checks(x: str, as_of: datetime.date) -> set[str]:
    out = set()
    if ref_mod11_2(x[:17]) != x[17]:
        out.add(CHECKSUM)
    if not ref_birth_ok(int(x[6:10]), int(x[10:12]), int(x[12:14]), as_of):
        out.add(BIRTH)
    return out


def _ref_citizen_shaped(kind: str, x: str, as_of: datetime.date) -> set[str]:
    """Citizen numbers, residence permits and permanent-resident numbers (§2.1-§2.3, §2.8)."""
    prov = RULES.province_codes
    id18 = _full(r"[0-9]{17}[0-9X]", x)
    new_fprid = id18 and x[0] == "9" and x[1:3] in PROVINCE_LEVEL  # 71, 81, 82 too (§2.3)
    if kind == "citizen_id":
        if _full(r"[0-9]{15}", x):
            out = {FIRST_GEN} if as_of >= datetime.date(2013, 1, 1) else set()
            if not ref_birth_ok(1900 + int(x[6:8]), int(x[8:10]), int(x[10:12]), as_of):
                out.add(BIRTH)
            return out | ({REGION} if x[:2] not in prov else set())
        if not id18:
            return {FORMAT}
        out = _ref_id18_checks(x, as_of) | ({REGION} if x[:2] not in prov else set())
        return out | ({MISMATCH} if x[:6] in RULES.hmt_prefixes or new_fprid else set())
    if kind == "hmt_residence_permit":
        if id18 and x[:6] in RULES.hmt_prefixes:
            return _ref_id18_checks(x, as_of)
        if id18 and (x[:2] in prov or new_fprid):
            return _ref_id18_checks(x, as_of) | {MISMATCH}
        return {FORMAT}
    if id18 and x[0] == "9":
        coded = x[1:3] in PROVINCE_LEVEL and x[3:6] in NUMERIC
        return _ref_id18_checks(x, as_of) | (set() if coded else {CODE})
    if id18 and x[0] in "12345678":
        return _ref_id18_checks(x, as_of) | {MISMATCH}
    if _full(r"[A-Z]{3}[0-9]{12}", x):
        yy, mm, dd = int(x[7:9]), int(x[9:11]), int(x[11:13])
        ok = ref_birth_ok(1900 + yy, mm, dd, as_of) or ref_birth_ok(2000 + yy, mm, dd, as_of)
        return (set() if ok else {BIRTH}) | (set() if x[:3] in ALPHA3 else {CODE})
    return {FORMAT}


def _ref_organisation(kind: str, x: str) -> set[str]:
    """USCC, legacy licences and organisation codes (§2.4-§2.6, §2.8); an organisation code line may carry a USCC."""
    if kind == "org_code" and _uscc_shaped(x):
        kind = "uscc"
    if kind in ("uscc", "business_license") and len(x) == 18:
        if not _uscc_shaped(x):
            return {FORMAT}
        bad = ref_uscc(x[:17]) != x[17] or ref_gb11714(x[8:16]) != x[16]
        return ({CHECKSUM} if bad else set()) | (set() if ref_division(x[2:8]) else {CODE})
    if kind == "business_license" and _full(r"[0-9]{15}", x):
        bad = ref_mod11_10(x[:14]) != x[14]
        return ({CHECKSUM} if bad else set()) | (set() if ref_division(x[:6]) else {CODE})
    if kind in ("uscc", "business_license"):
        return {FORMAT}
    if not _full(r"[0-9A-Z]{8}[0-9X]", x) or x.startswith("PDY"):
        return {FORMAT}
    return {CHECKSUM} if ref_gb11714(x[:8]) != x[8] else set()


def ref_tax(x: str, as_of: datetime.date = AS_OF) -> tuple[str | None, str, set[str]]:
    """A tax registration number (docs/regulation.md §2.9) as (check it is read by, the part read, reasons): 6 digits
    under a province-level code + an organisation code ("legacy"; when that fails, a valid 15-digit business
    registration number: "licence"); a USCC or a citizen number, whichever is valid,
    else whichever has a right check character (the USCC first); a citizen number + 2 digits."""
    if _full(r"[0-9]{6}[0-9A-Z]{8}[0-9X]", x) and not x[6:].startswith("PDY"):
        bad = ref_gb11714(x[6:14]) != x[14]
        reasons = ({CHECKSUM} if bad else set()) | (set() if x[:2] in PROVINCE_LEVEL else {CODE})
        if reasons and _full(r"[0-9]{15}", x) and not _ref_organisation("business_license", x):
            return "licence", x, set()  # a business registration number filed as the tax number
        return "legacy", x, reasons
    if _full(r"[0-9]{17}[0-9X][0-9]{2}", x):
        return "citizen_id", x[:18], _ref_citizen_shaped("citizen_id", x[:18], as_of)
    if not _uscc_shaped(x):
        return None, x, {FORMAT}
    if not _full(r"[0-9]{17}[0-9X]", x):
        return "uscc", x, _ref_organisation("uscc", x)
    readings = [("uscc", _ref_organisation("uscc", x)), ("citizen_id", _ref_citizen_shaped("citizen_id", x, as_of))]
    for reading, reasons in readings:
        if not reasons:
            return reading, x, reasons
    for reading, reasons in readings:
        if CHECKSUM not in reasons:
            return reading, x, reasons
    return None, x, {CHECKSUM}


def ref_reasons(kind: str, x: str, as_of: datetime.date = AS_OF) -> set[str]:
    """The rules of docs/policy.md, one number at a time."""
    if kind == "tax_registration":
        return ref_tax(x, as_of)[2]
    if kind in ("citizen_id", "hmt_residence_permit", "foreign_permanent_resident_id"):
        return _ref_citizen_shaped(kind, x, as_of)
    if kind in ("uscc", "business_license", "org_code"):
        return _ref_organisation(kind, x)
    if kind == "hk_macao_permit":
        return set() if _full(r"[HM]([0-9]{8}|[0-9]{10})|[HM]A[0-9]{7}", x) else {FORMAT}
    if kind == "taiwan_permit":
        return set() if _full(r"[0-9]{8}|[0-9]{10}(\([A-Z]\))?", x) else {FORMAT}
    if kind == "passport":
        return set() if _full(r"[A-Z0-9]{5,17}", x) else {FORMAT}
    if kind == "free_text":
        ok = 4 <= len(x) <= 32 and x not in RULES.number_placeholders and len(set(x)) > 1
        return set() if ok else {FORMAT}
    if kind == "uscc_or_alnum":
        return set() if _full(r"[A-Z0-9]{6,32}", x) else {FORMAT}
    raise AssertionError(kind)


def reasons_of(
    kind: str | None, numbers: list[str | None], as_of: datetime.date = AS_OF, rules: DocumentRules = RULES
) -> list[set[str]]:
    out = check_document_numbers(
        pa.array([kind] * len(numbers), pa.string()), pa.array(numbers, pa.string()), as_of, rules
    )
    return [{r for r in REASONS if out[r][i]} for i in range(len(numbers))]


def one(kind: str, number: str, as_of: datetime.date = AS_OF, **rules) -> set[str]:
    return reasons_of(kind, [number], as_of, DocumentRules(**rules))[0]


def with_wrong_last(number: str, alphabet: str) -> str:
    return number[:-1] + next(c for c in alphabet if c != number[-1])


def _random_date(rng: random.Random) -> str:
    y = rng.choice([rng.randrange(1860, 2030), 1900, 2000, 1874, 2024])
    m = rng.choice([2, 2, rng.randrange(0, 14)])
    d = rng.choice([29, 30, 31, rng.randrange(0, 32)])
    return f"{y:04d}{m:02d}{d:02d}"


def valid_number(kind: str, rng: random.Random) -> str:
    digits = lambda k: "".join(rng.choice("0123456789") for _ in range(k))  # noqa: E731
    if kind in ("citizen_id", "hmt_residence_permit", "foreign_permanent_resident_id"):
        region = {
            "citizen_id": rng.choice([rng.choice(DIVISION_LIST), rng.choice(PROVINCES) + digits(4)]),
            "hmt_residence_permit": rng.choice(RULES.hmt_prefixes),
            "foreign_permanent_resident_id": "9"
            + rng.choice(PROVINCE_LEVEL)
            + rng.choice([rng.choice(NUMERIC_LIST), digits(3)]),
        }[kind]
        if kind == "citizen_id" and rng.random() < 0.15:  # first generation
            return region + _random_date(rng)[2:] + digits(3)
        if kind == "foreign_permanent_resident_id" and rng.random() < 0.3:  # 2004/2017 card
            letters = rng.choice([rng.choice(ALPHA3_LIST), "".join(rng.choice("ABCUSZ") for _ in range(3))])
            return letters + digits(4) + _random_date(rng)[2:] + digits(2)
        return citizen(region, _random_date(rng), digits(3))
    if kind == "hk_macao_permit":
        if rng.random() < 0.2:  # the 2024 permit of non-Chinese permanent residents
            return rng.choice("HM") + "A" + digits(7)
        return rng.choice("HM") + digits(rng.choice([8, 10]))
    if kind == "taiwan_permit":
        return rng.choice([digits(8), digits(10), digits(10) + "(" + rng.choice("ABDX") + ")"])
    if kind == "passport":
        return "".join(rng.choice("EGKP0123456789") for _ in range(rng.randrange(5, 18)))
    if kind == "free_text":
        return rng.choice(["南字第", "武字第", "", "JUN"]) + digits(rng.randrange(1, 10))
    if kind == "tax_registration" and rng.random() < 0.25:  # an individual business owner's number (+ 2 digits)
        return valid_number("citizen_id", rng)[:18] + rng.choice(["", digits(2)])
    body = "".join(rng.choice(USCC_SET[:10] + "ABCMNP") for _ in range(8))
    org = body + ref_gb11714(body)
    division = rng.choice([rng.choice(PROVINCE_LEVEL) + digits(4), NATIONAL, digits(6)])
    uscc = rng.choice("15932NYA8B") + rng.choice("12359") + division + org
    uscc += ref_uscc(uscc)
    if kind == "org_code" and rng.random() < 0.6:
        return org
    if kind == "business_license" and rng.random() < 0.4:
        legacy = division + digits(8)
        return legacy + ref_mod11_10(legacy)
    if kind == "tax_registration" and rng.random() < 0.6:  # a tax office's division + an organisation code
        return rng.choice([rng.choice(DIVISION_LIST), division]) + org
    return uscc


def corrupt(x: str, rng: random.Random) -> str:
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
