"""The Decree 25 rules one value at a time, in plain Python (the naive baseline).

Written from docs/policy.md (the policy and its reason codes), docs/contract.md
("Identity status") and docs/regulation.md (§2, §5, §6), without
the vectorised code of ``transforms/``: it is the other side of the
differential test ``tests/test_scan_oracle.py`` and the per-row work that
``bench.naive`` times. Only the scalar check characters of
``transforms.scan.checkdigits`` are shared (they have their own tests against
docs/regulation.md's worked examples).

The document-number checks (docs/policy.md "Document numbers"; docs/regulation.md
§2) are in :mod:`bench.naive_documents`; :func:`number_reasons` is re-exported here.
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

from bench.naive_documents import NUMBER_DEFAULTS, number_reasons, number_reviews

__all__ = [
    "clean",
    "label",
    "doc_number",
    "person_name",
    "msisdn",
    "parse_date",
    "parse_timestamp",
    "number_reasons",
    "number_reviews",
    "name_reasons",
    "name_charset",
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
_NOT_HAN_NAME = regex.compile(r"[\p{Script=Latin}\p{Nd} ]")
_DATE = regex.compile(
    r"(?P<y>[0-9]{4})(?:[-/.](?P<m>[0-9]{1,2})[-/.](?P<d>[0-9]{1,2})|(?P<m2>[0-9]{2})(?P<d2>[0-9]{2}))"
    r"(?:[T ](?P<H>[0-9]{1,2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:[.,](?P<f>[0-9]{1,9}))?)?)?"
    r" ?(?P<z>Z|[+-][0-9]{2}:?[0-9]{2})?"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


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
    """Upper-cased, without inner spaces and hyphens, and without the ``<`` fillers that end an MRZ number."""
    text = clean(value)
    if text is None:
        return None
    if text.startswith('="') and text.endswith('"') and len(text) >= 3:  # a spreadsheet's text marks
        text = text[2:-1]
    text = text.removeprefix("'")
    return _NUMBER_SEPARATORS.sub("", upper(text)).rstrip("<") or None


def person_name(value) -> str | None:
    """Middle-dot look-alikes (and '.' between two Han characters) become U+00B7."""
    text = clean(value)
    if text is None:
        return None
    return _HAN_DOT_HAN.sub(MIDDLE_DOT, _DOT_LOOKALIKES.sub(MIDDLE_DOT, text))


def msisdn(value) -> str | None:
    """The national number; +86 / 0086 / 86 dropped, a fixed line's trunk 0 restored."""
    text = clean(value)
    if text is None or regex.search(r"[0-9][eE][+-]?[0-9]", text):  # scientific notation: digits lost
        return None
    text = regex.sub(r"^(\+?[0-9]+)\.0+$", r"\1", text)  # a float's rendering of the number
    text = "".join(c for c in text if c == "+" or "0" <= c <= "9")
    for prefix in ("+86", "0086"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    else:
        if text.startswith("86") and len(text) >= 11:
            text = text[2:]
        else:
            return text if text and len(text) <= MSISDN_MAX_CHARS else None
    if not (text.startswith("1") and 11 <= len(text) <= 13 and text.isdigit()):
        text = "0" + text
    return text if len(text) <= MSISDN_MAX_CHARS else None


MSISDN_MAX_CHARS = 14  # a national number: at most 13 digits, or a fixed line with its trunk 0


# --- dates (data contract; BAD_DATE) ---


def _moment(value, check_zone: bool = True):
    """(present, (date, hh, mm, ss, micros, zone offset in minutes) or None when not a valid time)."""
    text = clean(value)
    if text is None:
        return False, None
    match = _DATE.fullmatch(regex.sub(r"^([0-9]{4})年([0-9]{1,2})月([0-9]{1,2})日", r"\1-\2-\3", text))
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


# --- the policy, prepared once (the document-number checks: bench/naive_documents.py) ---


def _code_tables(policy, numbers: dict) -> None:
    """The policy's code tables as Python sets (docs/policy.md "Code tables"), read from its YAML section
    (the default policy's when it has none); the GB/T 2260 codes from the compiled table's text."""
    import pycountry

    from transforms.scan.policy import load_policy

    section = policy.raw.get("code_tables") or load_policy().raw["code_tables"]
    numbers["_uscc_categories"] = dict(section["uscc_authorities"]["categories"])
    numbers["_province_level"] = frozenset(section["province_level_codes"]["codes"])
    numbers["_national"] = section["national_division"]
    numbers["_divisions"] = frozenset(line.split("\t")[0] for line in policy.code_tables.divisions.splitlines())
    countries = section["countries"]
    alpha3, numeric = set(countries.get("extra_alpha3") or ()), set(countries.get("extra_numeric") or ())
    if countries.get("pycountry", True):
        alpha3 |= {c.alpha_3 for c in (*pycountry.countries, *pycountry.historic_countries)}
        numeric |= {c.numeric for c in pycountry.countries}
    numbers["_alpha3"], numbers["_numeric"] = frozenset(alpha3), frozenset(numeric)


def prepare(policy) -> dict:
    """The policy's sections with their lists turned into lookup sets, once per policy."""
    numbers = {**NUMBER_DEFAULTS, **policy.document_numbers}
    _code_tables(policy, numbers)
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


def region(value, province_level) -> tuple[str | None, bool]:
    """(the region kept in the output, valid): six ASCII digits under a province-level code, or absent."""
    text = clean(value)
    if text is None:
        return None, True
    text = regex.sub(r"^([0-9]{6})\.0+$", r"\1", text)  # a float's rendering of the code
    if len(text) == 6 and all("0" <= c <= "9" for c in text) and text[:2] in province_level:
        return text, True
    return None, False


def name_charset(name: str) -> bool:
    """A name with Latin letters, digits or a space inside (NAME_CHARSET_REVIEW on mainland documents)."""
    return _NOT_HAN_NAME.search(name) is not None


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
