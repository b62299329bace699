"""Document numbers one at a time, in plain Python (the naive baseline's document checks).

Part of the naive rules (:mod:`bench.naive_rules` re-exports :func:`number_reasons`),
written from docs/policy.md "Document numbers" and docs/regulation.md §2 without
the vectorised code of ``transforms/``; only the scalar check characters of
``transforms.scan.checkdigits`` are shared, and the code tables' data (docs/policy.md
"Code tables"), which :func:`bench.naive_rules.prepare` reads into plain sets. Every function takes and returns
Python values; nothing here logs or raises with a value in the message.
"""

from __future__ import annotations

import datetime as dt

import regex

from transforms.scan.checkdigits import gb11714_char, mod11_10_char, mod11_2_char, uscc_char

__all__ = ["number_reasons", "number_reviews", "NUMBER_DEFAULTS"]

_USCC_SET = frozenset("0123456789ABCDEFGHJKLMNPQRTUWXY")  # docs/regulation.md §2.4: no I O Z S V
_HK_MACAO = regex.compile(r"[HM](?:[0-9]{8}|[0-9]{10})|[HM]A[0-9]{7}")  # docs/regulation.md §2.7 (HA/MA: 2024)
_TAIWAN = regex.compile(r"[0-9]{8}|[0-9]{10}(?:\([A-Z]\))?")  # docs/regulation.md §2.7
_ALNUM = regex.compile(r"[A-Z0-9]+")

FORMAT, CHECKSUM, BIRTH, REGION, FIRST_GEN, MISMATCH, CODE = (
    "DOC_NUMBER_FORMAT",
    "DOC_NUMBER_CHECKSUM",
    "DOC_NUMBER_BIRTH_DATE",
    "DOC_NUMBER_REGION",
    "DOC_NUMBER_FIRST_GENERATION",
    "DOC_TYPE_MISMATCH",
    "DOC_NUMBER_CODE",
)
DIVISION_REVIEW, CODE_REVIEW = "DOC_NUMBER_DIVISION_REVIEW", "DOC_NUMBER_CODE_REVIEW"


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _birth_ok(y: int, m: int, d: int, as_of: dt.date, max_age: int) -> bool:
    """A real date, not after as_of, not more than max_age years before it (2.1)."""
    try:
        born = dt.date(y, m, d)
    except ValueError:
        return False
    try:
        oldest = as_of.replace(year=as_of.year - max_age)
    except ValueError:  # as_of is Feb 29
        oldest = dt.date(as_of.year - max_age, 3, 1)
    return oldest <= born <= as_of


def _id18_shape(n: str) -> bool:
    return len(n) == 18 and _digits(n[:17]) and (n[17] == "X" or _digits(n[17]))


def _id18_checks(n: str, as_of, cfg) -> set:
    """MOD 11-2 check character and YYYYMMDD birth date of an 18-character number."""
    out = set()
    if mod11_2_char(n[:17]) != n[17]:
        out.add(CHECKSUM)
    if not _birth_ok(int(n[6:10]), int(n[10:12]), int(n[12:14]), as_of, cfg["max_age_years"]):
        out.add(BIRTH)
    return out


def _citizen_id(n: str, as_of, cfg) -> set:
    provinces = cfg["province_codes"]
    if _id18_shape(n):
        out = _id18_checks(n, as_of, cfg)
        if n[:2] not in provinces:
            out.add(REGION)
        # A residence permit (2.2) or a 2023 permanent-resident number (2.3) filed as a citizen's.
        if n[:6] in cfg["hmt_prefixes"] or _new_fprid(n, cfg):
            out.add(MISMATCH)
        return out
    if len(n) == 15 and _digits(n):  # GB 11643-1989, 19YYMMDD, void since 2013-01-01
        out = set()
        if as_of >= cfg["_void_since"]:
            out.add(FIRST_GEN)
        if not _birth_ok(1900 + int(n[6:8]), int(n[8:10]), int(n[10:12]), as_of, cfg["max_age_years"]):
            out.add(BIRTH)
        if n[:2] not in provinces:
            out.add(REGION)
        return out
    return {FORMAT}


def _new_fprid(n: str, cfg) -> bool:
    """A 9 and a province-level code (71, 81, 82 too): a 2023 permanent-resident number (2.3)."""
    return n[0] == "9" and n[1:3] in cfg["_province_level"]


def _hmt_residence_permit(n: str, as_of, cfg) -> set:
    if not _id18_shape(n):
        return {FORMAT}
    if n[:6] in cfg["hmt_prefixes"]:
        return _id18_checks(n, as_of, cfg)
    if n[:2] in cfg["province_codes"] or _new_fprid(n, cfg):
        return _id18_checks(n, as_of, cfg) | {MISMATCH}  # a citizen's or an FPRID number
    return {FORMAT}


def _division(code: str, cfg) -> bool:
    """A registering division (docs/policy.md "Code tables"): six digits under a province-level code, or the
    national-level code."""
    return _digits(code) and len(code) == 6 and (code[:2] in cfg["_province_level"] or code == cfg["_national"])


def _foreign_permanent_resident_id(n: str, as_of, cfg) -> set:
    if _id18_shape(n):
        if n[0] == "9":  # 2023 card: province, then ISO 3166-1 numeric nationality
            coded = n[1:3] in cfg["_province_level"] and n[3:6] in cfg["_numeric"]
            return _id18_checks(n, as_of, cfg) | (set() if coded else {CODE})
        if "1" <= n[0] <= "8":  # a citizen's number
            return _id18_checks(n, as_of, cfg) | {MISMATCH}
        return {FORMAT}
    if len(n) == 15 and n[:3].isascii() and n[:3].isalpha() and n[:3].isupper() and _digits(n[3:]):
        # 2004/2017 card: YYMMDD at [7:13], either century; its check digit is not enforced.
        yy, mm, dd = int(n[7:9]), int(n[9:11]), int(n[11:13])
        age = cfg["max_age_years"]
        out = set() if n[:3] in cfg["_alpha3"] else {CODE}  # 2004/2017 card: ISO 3166-1 alpha-3
        if not (_birth_ok(1900 + yy, mm, dd, as_of, age) or _birth_ok(2000 + yy, mm, dd, as_of, age)):
            out.add(BIRTH)
        return out
    return {FORMAT}


def _uscc_shape(n: str) -> bool:
    return len(n) == 18 and all(c in _USCC_SET for c in n)


def _uscc_bad(n: str) -> bool:
    """GB 32100 mod 31, and the embedded organisation code's GB 11714 check (2.4, 2.5)."""
    return uscc_char(n[:17]) != n[17] or gb11714_char(n[8:16]) != n[16]


def _uscc_reasons(n: str, cfg) -> set:
    """Checksums (2.4, 2.5), and the registering division (code tables); the authority and its category are
    a review flag (:func:`number_reviews`)."""
    out = {CHECKSUM} if _uscc_bad(n) else set()
    if not _division(n[2:8], cfg):
        out.add(CODE)
    return out


def _uscc(n: str, as_of, cfg) -> set:
    if not _uscc_shape(n):
        return {FORMAT}
    return _uscc_reasons(n, cfg)


def _org_code(n: str, as_of, cfg) -> set:
    if _uscc_shape(n):  # since the 2015 reform the line may carry the USCC that embeds the code (2.4)
        return _uscc_reasons(n, cfg)
    body = n[:8]
    ok = (
        len(n) == 9
        and body.isascii()
        and all(c.isdigit() or c.isupper() for c in body)
        and (n[8] == "X" or _digits(n[8]))
    )
    if not ok or any(n.startswith(p) for p in cfg["org_code_reserved_prefixes"]):
        return {FORMAT}
    return {CHECKSUM} if gb11714_char(body) != n[8] else set()


def _business_license(n: str, as_of, cfg) -> set:
    if _uscc_shape(n):
        return _uscc_reasons(n, cfg)
    if len(n) == 15 and _digits(n):  # legacy registration number, MOD 11,10 (2.6), under a registering division
        out = {CHECKSUM} if mod11_10_char(n[:14]) != n[14] else set()
        return out if _division(n[:6], cfg) else out | {CODE}
    return {FORMAT}


def _legacy_tax(n: str, cfg) -> set | None:
    """A 15-character tax registration number (docs/regulation.md §2.9): six digits, under a province-level code,
    then an organisation code (2.5); None when it is not one."""
    org = n[6:]
    shaped = _digits(n[:6]) and org.isascii() and all(c.isdigit() or c.isupper() for c in org[:8])
    if not shaped or not (org[8] == "X" or _digits(org[8])):
        return None
    if any(org.startswith(p) for p in cfg["org_code_reserved_prefixes"]):
        return None
    out = {CHECKSUM} if gb11714_char(org[:8]) != org[8] else set()
    return out if n[:2] in cfg["_province_level"] else out | {CODE}


def _tax_reading(n: str, as_of, cfg) -> tuple[str | None, str, set]:
    """(reading, the number as read, reasons) of a tax registration number: the legacy 15 characters (or, when
    that reading fails, a valid 15-digit business registration number), a USCC or a citizen number (18), a
    citizen number and a two-digit sequence (20). An 18-digit number is valid when
    either reading is; else the reasons of the reading whose check character holds, the USCC's first."""
    if len(n) == 15:
        legacy = _legacy_tax(n, cfg)
        if legacy and _digits(n) and not _business_license(n, as_of, cfg):  # a licence number filed as the tax one
            return "licence", n, set()
        return ("legacy", n, legacy) if legacy is not None else (None, n, {FORMAT})
    if len(n) == 20 and _id18_shape(n[:18]) and _digits(n[18:]):
        return "citizen", n[:18], _citizen_id(n[:18], as_of, cfg)
    if len(n) != 18 or not _uscc_shape(n):
        return None, n, {FORMAT}
    uscc = _uscc_reasons(n, cfg)
    if not _id18_shape(n):
        return "uscc", n, uscc
    citizen = _citizen_id(n, as_of, cfg)
    for reading, reasons in (("uscc", uscc), ("citizen", citizen)):
        if not reasons:
            return reading, n, reasons
    for reading, reasons in (("uscc", uscc), ("citizen", citizen)):
        if CHECKSUM not in reasons:
            return reading, n, reasons
    return None, n, {CHECKSUM}


def _tax_registration(n: str, as_of, cfg) -> set:
    return _tax_reading(n, as_of, cfg)[2]


def _alnum(n: str, low: int, high: int) -> bool:
    return low <= len(n) <= high and _ALNUM.fullmatch(n) is not None


def _free_text(n: str, as_of, cfg) -> set:
    # Military IDs have no reliable format (docs/regulation.md §2.7): length, and not junk (§6).
    # "One character repeated" (0000, XXXX) is junk too (docs/policy.md "Document numbers");
    # transforms/scan/documents.py does the same.
    if not (cfg["free_text_min"] <= len(n) <= cfg["free_text_max"]) or n in cfg["_placeholders"]:
        return {FORMAT}
    return {FORMAT} if len(set(n)) == 1 else set()


def _simple(check_fn):
    return lambda n, as_of, cfg: set() if check_fn(n, cfg) else {FORMAT}


_CHECKS = {
    "citizen_id": _citizen_id,
    "hmt_residence_permit": _hmt_residence_permit,
    "foreign_permanent_resident_id": _foreign_permanent_resident_id,
    "hk_macao_permit": _simple(lambda n, cfg: _HK_MACAO.fullmatch(n) is not None),
    "taiwan_permit": _simple(lambda n, cfg: _TAIWAN.fullmatch(n) is not None),
    "passport": _simple(lambda n, cfg: _alnum(n, cfg["passport_min"], cfg["passport_max"])),
    "free_text": _free_text,
    "uscc": _uscc,
    "org_code": _org_code,
    "business_license": _business_license,
    # "a USCC, or 6 to 32 letters and digits": every USCC is 18 letters and digits.
    "uscc_or_alnum": _simple(lambda n, cfg: _alnum(n, cfg["alnum_min"], cfg["alnum_max"])),
    "tax_registration": _tax_registration,
}


def _uscc_review(number: str, cfg) -> set:
    return set() if number[1] in cfg["_uscc_categories"].get(number[0], "") else {CODE_REVIEW}


def _division_review(number: str, provinces, cfg) -> set:
    return {DIVISION_REVIEW} if number[:2] in provinces and number[:6] not in cfg["_divisions"] else set()


def number_reviews(check: str, number: str, cfg, as_of: dt.date | None = None) -> set:
    """Review flags of one normalised number: a citizen number (18 or 15 digits) under a citizen province
    code whose six-digit division is not in the GB/T 2260 table; a USCC (where the check takes one) whose
    authority and category are not a pair of GB 32100's table; a tax registration number (``as_of`` needed),
    by the reading :func:`_tax_reading` takes: the legacy number's division as a citizen number's (under a
    province-level code), the USCC's or the citizen number's flags."""
    if check == "tax_registration":
        reading, read, _ = _tax_reading(number, as_of, cfg)
        if reading == "legacy":
            return _division_review(read, cfg["_province_level"], cfg)
        if reading == "uscc":
            return _uscc_review(read, cfg)
        check, number = ("citizen_id", read) if reading == "citizen" else (check, read)
    if check in ("uscc", "business_license", "org_code") and _uscc_shape(number):
        return _uscc_review(number, cfg)
    if check != "citizen_id" or not (_id18_shape(number) or (len(number) == 15 and _digits(number))):
        return set()
    return _division_review(number, cfg["province_codes"], cfg)


def number_reasons(check: str, number: str, as_of: dt.date, cfg) -> set:
    """Reason codes of one normalised number under one check (cfg: :func:`bench.naive_rules.prepare`'s "numbers")."""
    return _CHECKS[check](number, as_of, cfg)


# docs/policy.md's values, for a policy file that leaves a key out.
NUMBER_DEFAULTS = {
    "province_codes": [
        f"{c}" for lo, hi in ((11, 15), (21, 23), (31, 37), (41, 46), (50, 54), (61, 65)) for c in range(lo, hi + 1)
    ],
    "max_age_years": 150,
    "first_generation_void_since": "2013-01-01",
    "hmt_prefixes": ["810000", "820000", "830000"],
    "free_text_min": 4,
    "free_text_max": 32,
    "passport_min": 5,
    "passport_max": 17,
    "alnum_min": 6,
    "alnum_max": 32,
    "org_code_reserved_prefixes": ["PDY"],
    "placeholders": [],
}
