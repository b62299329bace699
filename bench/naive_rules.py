"""The Decree 25 rules one value at a time, in plain Python (the naive baseline).

Written from docs/policy.md (the policy and its reason codes), docs/contract.md
("Identity status") and docs/regulation.md (§2, §5, §6), without
the vectorised code of ``transforms/``: it is the other side of the
differential test ``tests/test_scan_oracle.py`` and the per-row work that
``bench.naive`` times. Only the scalar check characters of
``transforms.scan.checkdigits`` are shared (they have their own tests against
docs/regulation.md's worked examples).

Every function takes and returns Python values; nothing here logs or raises
with a value in the message.

    from bench.naive_rules import doc_number, number_reasons, prepare
    cfg = prepare(load_policy())["numbers"]
    number_reasons("citizen_id", doc_number(" 11010519491231002x "), date(2026, 11, 30), cfg)
    # -> set()
"""

from __future__ import annotations

import datetime as dt
import unicodedata

import regex

from transforms.scan.checkdigits import gb11714_char, mod11_10_char, mod11_2_char, uscc_char

__all__ = [
    "clean",
    "label",
    "doc_number",
    "person_name",
    "msisdn",
    "parse_date",
    "parse_timestamp",
    "number_reasons",
    "name_reasons",
    "address_reasons",
    "prepare",
    "MIDDLE_DOT",
]

MIDDLE_DOT = "\u00b7"
# docs/regulation.md §5: NFKC keeps U+200B / U+FEFF, so category Cf is stripped on its own.
_CF = regex.compile(r"\p{Cf}+")
_SPACES = regex.compile(r"[\s\p{Z}]+")
_NUMBER_SEPARATORS = regex.compile(r"[\s\p{Z}\-\u2010-\u2015\u2212]+")
# docs/regulation.md §5, the look-alikes table (U+FF65 is U+30FB after NFKC).
_DOT_LOOKALIKES = regex.compile("[\u0387\u30fb\uff65\u2022\u2027\u2219\u22c5\u2e31\u16eb]")
_HAN_DOT_HAN = regex.compile(r"(?<=\p{Han})[.\uff0e](?=\p{Han})")
_HAN = regex.compile(r"\p{Han}")
_ASCII_DIGIT = regex.compile(r"[0-9]")
_ANY_DIGIT = regex.compile(r"\p{Nd}")
_USCC_SET = frozenset("0123456789ABCDEFGHJKLMNPQRTUWXY")  # docs/regulation.md §2.4: no I O Z S V
_HK_MACAO = regex.compile(r"[HM](?:[0-9]{8}|[0-9]{10})")  # docs/regulation.md §2.7
_TAIWAN = regex.compile(r"[0-9]{8}|[0-9]{10}(?:\([A-Z]\))?")  # docs/regulation.md §2.7
_ALNUM = regex.compile(r"[A-Z0-9]+")
_DATE = regex.compile(
    r"(?P<y>[0-9]{4})(?:[-/.](?P<m>[0-9]{1,2})[-/.](?P<d>[0-9]{1,2})|(?P<m2>[0-9]{2})(?P<d2>[0-9]{2}))"
    r"(?:[T ](?P<H>[0-9]{1,2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:[.,](?P<f>[0-9]{1,9}))?)?)?"
    r" ?(?P<z>Z|[+-][0-9]{2}:?[0-9]{2})?"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

FORMAT, CHECKSUM, BIRTH, REGION, FIRST_GEN, MISMATCH = (
    "DOC_NUMBER_FORMAT",
    "DOC_NUMBER_CHECKSUM",
    "DOC_NUMBER_BIRTH_DATE",
    "DOC_NUMBER_REGION",
    "DOC_NUMBER_FIRST_GENERATION",
    "DOC_TYPE_MISMATCH",
)


# --- normalisation (docs/policy.md "Normalisation"; docs/regulation.md §5) ---


def clean(value) -> str | None:
    """NFKC, Cf removed, white space trimmed and collapsed; '' and None -> None."""
    if value is None:
        return None
    text = _CF.sub("", unicodedata.normalize("NFKC", str(value)))
    text = _SPACES.sub(" ", text).strip()
    return text or None


def upper(text: str) -> str:
    """Upper case one character at a time: ``str.upper`` turns ß into SS and would
    invent characters in a document number; a character whose upper case is
    longer stays as it is (Unicode's simple case mapping, as RE2 and Arrow do)."""
    if text.isascii():
        return text.upper()
    return "".join(u if len(u := c.upper()) == 1 else c for c in text)


def label(value) -> str | None:
    """A document label or enum value as the policy looks it up."""
    text = clean(value)
    return upper(text) if text else None


def doc_number(value) -> str | None:
    """Upper-cased, without inner spaces and hyphens."""
    text = clean(value)
    if text is None:
        return None
    return _NUMBER_SEPARATORS.sub("", upper(text)) or None


def person_name(value) -> str | None:
    """Middle-dot look-alikes (and '.' between two Han characters) become U+00B7."""
    text = clean(value)
    if text is None:
        return None
    return _HAN_DOT_HAN.sub(MIDDLE_DOT, _DOT_LOOKALIKES.sub(MIDDLE_DOT, text))


def msisdn(value) -> str | None:
    """The national number; +86 / 0086 / 86 dropped, a fixed line's trunk 0 restored."""
    text = clean(value)
    if text is None:
        return None
    text = "".join(c for c in text if c == "+" or "0" <= c <= "9")
    for prefix in ("+86", "0086"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    else:
        if text.startswith("86") and len(text) >= 11:
            text = text[2:]
        else:
            return text or None
    if not (text.startswith("1") and 11 <= len(text) <= 13 and text.isdigit()):
        text = "0" + text
    return text


# --- dates (data contract; BAD_DATE) ---


def _moment(value, check_zone: bool = True):
    """(present, (date, hh, mm, ss, micros, zone offset in minutes) or None when not a valid time)."""
    text = clean(value)
    if text is None:
        return False, None
    match = _DATE.fullmatch(text)
    if match is None:
        return True, None
    m, d = (match["m"], match["d"]) if match["m"] is not None else (match["m2"], match["d2"])
    try:
        day = dt.date(int(match["y"]), int(m), int(d))
    except ValueError:
        return True, None
    hh, mm, ss = (int(match[g] or 0) for g in ("H", "M", "S"))
    zone, offset = match["z"] or "Z", 0
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        offset = (int(digits[:2]) * 60 + int(digits[2:])) * (-1 if zone[0] == "-" else 1)
    if hh > 23 or mm > 59 or ss > 59 or (check_zone and abs(offset) > 14 * 60):
        return True, None
    micros = int((match["f"] or "0").ljust(6, "0")[:6])
    return True, (day, hh, mm, ss, micros, offset)


def parse_date(value) -> tuple[dt.date | None, bool]:
    """(date or None, bad): bad when a value is present and is not a date.

    A time part must be a real time of day; its zone is not looked at (docs/policy.md
    "Enums and dates": their zone is ignored; transforms/scan/dates.py ignores them too).
    """
    present, parts = _moment(value, check_zone=False)
    if parts is None:
        return None, present
    return parts[0], False


def parse_timestamp(value) -> tuple[int | None, bool]:
    """(microseconds since the epoch, UTC, or None; bad). No zone means UTC."""
    present, parts = _moment(value)
    if parts is None:
        return None, present
    day, hh, mm, ss, micros, offset = parts
    moment = dt.datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=dt.timezone.utc)
    seconds = (moment - _EPOCH) // dt.timedelta(seconds=1) - offset * 60
    return seconds * 1_000_000 + micros, False


# --- document numbers (docs/policy.md "Document numbers"; docs/regulation.md §2) ---


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
        if n[:6] in cfg["hmt_prefixes"] or (n[0] == "9" and n[1:3] in provinces):
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


def _hmt_residence_permit(n: str, as_of, cfg) -> set:
    if not _id18_shape(n):
        return {FORMAT}
    if n[:6] in cfg["hmt_prefixes"]:
        return _id18_checks(n, as_of, cfg)
    provinces = cfg["province_codes"]
    if n[:2] in provinces or (n[0] == "9" and n[1:3] in provinces):
        return _id18_checks(n, as_of, cfg) | {MISMATCH}  # a citizen's or an FPRID number
    return {FORMAT}


def _foreign_permanent_resident_id(n: str, as_of, cfg) -> set:
    if _id18_shape(n):
        if n[0] == "9":
            return _id18_checks(n, as_of, cfg)
        if "1" <= n[0] <= "8":  # a citizen's number
            return _id18_checks(n, as_of, cfg) | {MISMATCH}
        return {FORMAT}
    if len(n) == 15 and n[:3].isascii() and n[:3].isalpha() and n[:3].isupper() and _digits(n[3:]):
        # 2004/2017 card: YYMMDD at [7:13], either century; its check digit is not enforced.
        yy, mm, dd = int(n[7:9]), int(n[9:11]), int(n[11:13])
        age = cfg["max_age_years"]
        if not (_birth_ok(1900 + yy, mm, dd, as_of, age) or _birth_ok(2000 + yy, mm, dd, as_of, age)):
            return {BIRTH}
        return set()
    return {FORMAT}


def _uscc_shape(n: str) -> bool:
    return len(n) == 18 and all(c in _USCC_SET for c in n)


def _uscc_bad(n: str) -> bool:
    """GB 32100 mod 31, and the embedded organisation code's GB 11714 check (2.4, 2.5)."""
    return uscc_char(n[:17]) != n[17] or gb11714_char(n[8:16]) != n[16]


def _uscc(n: str, as_of, cfg) -> set:
    if not _uscc_shape(n):
        return {FORMAT}
    return {CHECKSUM} if _uscc_bad(n) else set()


def _org_code(n: str, as_of, cfg) -> set:
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
        return {CHECKSUM} if _uscc_bad(n) else set()
    if len(n) == 15 and _digits(n):  # legacy registration number, MOD 11,10 (2.6)
        return {CHECKSUM} if mod11_10_char(n[:14]) != n[14] else set()
    return {FORMAT}


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
}


def number_reasons(check: str, number: str, as_of: dt.date, cfg) -> set:
    """Reason codes of one normalised number under one check (cfg: :func:`prepare`'s "numbers")."""
    return _CHECKS[check](number, as_of, cfg)


# docs/policy.md's values, for a policy file that leaves a key out.
_NUMBER_DEFAULTS = {
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


def prepare(policy) -> dict:
    """The policy's sections with their lists turned into lookup sets, once per policy."""
    numbers = {**_NUMBER_DEFAULTS, **policy.document_numbers}
    numbers["province_codes"] = frozenset(numbers["province_codes"])
    numbers["hmt_prefixes"] = frozenset(numbers["hmt_prefixes"])
    numbers["_void_since"] = dt.date.fromisoformat(numbers["first_generation_void_since"])
    numbers["_placeholders"] = frozenset(doc_number(p) for p in numbers.get("placeholders", ()))
    names = dict(policy.names)
    names["_placeholders"] = frozenset(upper(p) for p in names["placeholders"])
    addresses = dict(policy.addresses)
    addresses["_placeholders"] = frozenset(upper(p) for p in addresses["placeholders"])
    return {"numbers": numbers, "names": names, "addresses": addresses}


# --- regions (docs/policy.md "Regions") ---


def region(value, provinces) -> tuple[str | None, bool]:
    """(the region kept in the output, valid): six ASCII digits under a province-level code, or absent."""
    text = clean(value)
    if text is None:
        return None, True
    if len(text) == 6 and all("0" <= c <= "9" for c in text) and text[:2] in provinces | {"71", "81", "82"}:
        return text, True
    return None, False


# --- names and addresses (docs/policy.md "Names", "Addresses"; docs/regulation.md §5, §6) ---


def name_reasons(name: str, is_person: bool, cfg) -> set:
    """NAME_PLACEHOLDER (exclusive), NAME_TOO_SHORT, NAME_FORMAT of a present, normalised name."""
    subs = cfg.get("person_placeholder_substrings" if is_person else "organization_placeholder_substrings", ())
    if upper(name) in cfg["_placeholders"] or any(s in name for s in subs):
        return {"NAME_PLACEHOLDER"}
    out = set()
    if len(name) < (cfg["person_min_chars"] if is_person else cfg["organization_min_chars"]):
        out.add("NAME_TOO_SHORT")
    seps = cfg.get("separators", "·.-")
    doubled = any(a in seps and b in seps for a, b in zip(name, name[1:]))
    if (
        name[0] in seps
        or name[-1] in seps
        or doubled
        or len(name) > cfg["max_chars"]
        or (is_person and _ANY_DIGIT.search(name))
    ):
        out.add("NAME_FORMAT")
    return out


def address_reasons(address: str, cfg) -> set:
    """ADDRESS_PLACEHOLDER (exclusive), ADDRESS_TOO_SHORT, ADDRESS_NOT_SPECIFIC."""
    if upper(address) in cfg["_placeholders"]:
        return {"ADDRESS_PLACEHOLDER"}
    out = set()
    if len(address) < cfg["min_chars"]:
        out.add("ADDRESS_TOO_SHORT")
    if _HAN.search(address):
        if not any(k in address for k in cfg["keywords"]):
            out.add("ADDRESS_NOT_SPECIFIC")
    elif len(address) < cfg["latin_min_chars"] or not _ASCII_DIGIT.search(address):
        out.add("ADDRESS_NOT_SPECIFIC")
    return out
