"""Document-number checks of the Decree 25 default policy, vectorised over Arrow.

What: :func:`check_document_numbers` takes, per row, a check kind (one of :data:`CHECKS`; the policy picks it
from the document type) and an already normalised document number (NFKC, upper-cased, spaces and hyphens
removed), and returns one boolean vector per reason code of :data:`REASONS`, as listed in docs/policy.md,
"Document numbers", and per review flag of :data:`REVIEWS`. Every failed check of a row is reported, except that
a row with ``DOC_NUMBER_FORMAT`` gets no other reason. The coded parts of a number (a USCC's authority, category
and division, a licence's division, a permanent-resident number's nationality and province) are looked up in the
policy's code tables (:mod:`transforms.scan.code_tables`): a part outside its table is ``DOC_NUMBER_CODE``, but
for two review flags (the number stays valid): a citizen number's (or a legacy tax number's) six-digit division
outside the GB/T 2260 table is ``DOC_NUMBER_DIVISION_REVIEW`` (an incomplete table must not fail a lawful number),
a USCC's authority and category pair outside GB 32100's table ``DOC_NUMBER_CODE_REVIEW`` (validator projects
disagree on that table). The tax registration check is :mod:`transforms.scan.tax_numbers`.

How: the kind column is dictionary-encoded once; for each kind present its
rows are taken out, checked, and the verdicts scattered back. Fixed-width
numbers are checked with numpy on the uint8 byte matrix of
:func:`transforms.scan.checkdigits.char_matrix` (check characters from that module);
free-form ones with Arrow compute kernels (RE2 regexes, lengths, set lookups).
Python loops run over kinds, prefixes and digit positions, never over rows.

No document number is ever put in an exception message or a log line.

Example::

    reasons = check_document_numbers(
        pa.array(["citizen_id", "uscc", None]),
        pa.array(["11010519491231002X", "91110000600037342P", "x"]),
        as_of=datetime.date(2024, 6, 30))
    reasons["DOC_NUMBER_CHECKSUM"]  # array([False,  True, False])
"""

from __future__ import annotations

import datetime
import functools
import unicodedata
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.scan.checkdigits import USCC_CHARSET, char_matrix, gb11714, mod11_10, mod11_2, uscc_mod31
from transforms.scan.code_tables import alpha3_table, byte_pairs, numeric_table, pair_table
from transforms.scan.divisions import divisions_known
from transforms.scan.document_rules import DocumentRules
from transforms.scan.tax_numbers import check_tax_registration

__all__ = ["DocumentRules", "CHECKS", "REASONS", "REVIEWS", "check_document_numbers"]

CHECKS = (
    "citizen_id",
    "hmt_residence_permit",
    "foreign_permanent_resident_id",
    "hk_macao_permit",
    "taiwan_permit",
    "passport",
    "free_text",
    "uscc",
    "org_code",
    "business_license",
    "uscc_or_alnum",
    "tax_registration",
)

REASONS = (
    "DOC_NUMBER_FORMAT",
    "DOC_NUMBER_CHECKSUM",
    "DOC_NUMBER_BIRTH_DATE",
    "DOC_NUMBER_REGION",
    "DOC_NUMBER_FIRST_GENERATION",
    "DOC_TYPE_MISMATCH",
    "DOC_NUMBER_CODE",
)
FORMAT, CHECKSUM, BIRTH, REGION, FIRST_GEN, MISMATCH, CODE = REASONS
REVIEWS = ("DOC_NUMBER_DIVISION_REVIEW", "DOC_NUMBER_CODE_REVIEW")
DIVISION_REVIEW, CODE_REVIEW = REVIEWS

_Verdicts = dict[str, np.ndarray]
_X = ord("X")
_USCC_SET = np.zeros(256, bool)
_USCC_SET[np.frombuffer(USCC_CHARSET.encode(), np.uint8)] = True
# Days per month, indexed by month 0..12 (0 = no such month).
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


@functools.lru_cache(maxsize=8)
def _province_pairs(codes: frozenset[str]) -> np.ndarray:
    """(256, 256) table: True at [byte1, byte2] when the two bytes spell a province code."""
    table = np.zeros((256, 256), bool)
    for code in codes:
        if len(code) != 2 or not (code.isascii() and code.isdigit()):
            raise ValueError("province_codes must be 2-digit strings")
        table[ord(code[0]), ord(code[1])] = True
    return table


def _matrix(values: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """char_matrix in Fortran order: each position's bytes are contiguous, which
    makes the per-position compares and row reductions below 3-5x faster."""
    return char_matrix(values, width, order="F")


def _digits(m: np.ndarray) -> np.ndarray:
    return (m - np.uint8(48)) < 10  # uint8 wrap-around: one compare per byte


def _uppers(m: np.ndarray) -> np.ndarray:
    return (m - np.uint8(65)) < 26


def _number(m: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Decimal value of columns [start, stop) (meaningless where they are not digits)."""
    value = m[:, start].astype(np.int64) - 48
    for j in range(start + 1, stop):
        value = value * 10 + m[:, j] - 48
    return value


def _has_prefix(m: np.ndarray, prefixes: tuple[str, ...]) -> np.ndarray:
    hit = np.zeros(len(m), bool)
    for prefix in prefixes:
        p = np.frombuffer(prefix.encode(), np.uint8)
        if len(p) <= m.shape[1]:
            hit |= (m[:, : len(p)] == p).all(axis=1)
    return hit


def _birth_ok(
    year: np.ndarray, month: np.ndarray, day: np.ndarray, as_of: datetime.date, rules: DocumentRules
) -> np.ndarray:
    """A real Gregorian date, not after as_of, not more than max_age_years before it (2.1)."""
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))  # 1900 no, 2000 yes
    month_ok = (month >= 1) & (month <= 12)
    last = _MONTH_DAYS[np.where(month_ok, month, 0)] + (leap & (month == 2))
    ymd, today = year * 10000 + month * 100 + day, as_of.year * 10000 + as_of.month * 100 + as_of.day
    # "More than N years before as_of": earlier than as_of's month/day N years back.
    oldest = today - rules.max_age_years * 10000
    return month_ok & (day >= 1) & (day <= last) & (ymd <= today) & (ymd >= oldest)


def _id18(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Byte matrix and format mask of ``^\\d{17}[\\dX]$`` (2.1-2.3)."""
    m, fits = _matrix(values, 18)
    ok = fits & _digits(m[:, :17]).all(axis=1) & (_digits(m[:, 17]) | (m[:, 17] == _X))
    return m, ok


def _id18_checksum_birth(m: np.ndarray, as_of: datetime.date, rules: DocumentRules) -> tuple[np.ndarray, np.ndarray]:
    """MOD 11-2 mismatch (2.1) and bad YYYYMMDD at [6:14] of 18-character numbers."""
    bad_check = mod11_2(m[:, :17]) != m[:, 17]
    good_birth = _birth_ok(_number(m, 6, 10), _number(m, 10, 12), _number(m, 12, 14), as_of, rules)
    return bad_check, ~good_birth


def _new_fprid(m: np.ndarray, rules: DocumentRules) -> np.ndarray:
    """A 9 then a province-level code (71, 81 and 82 included, as the permanent-resident check reads it):
    the 2023 permanent-resident number (docs/regulation.md §2.3)."""
    return (m[:, 0] == ord("9")) & byte_pairs(_province_pairs(rules.code_tables().province_level), m, 1)


def _division_ok(m: np.ndarray, start: int, rules: DocumentRules) -> np.ndarray:
    """Six digits at ``[start, start + 6)``: a province-level code and four digits, or the national-level
    code (a USCC's positions 3-8, a licence's first six digits; docs/regulation.md §2.4, §2.6, §2.8)."""
    tables = rules.code_tables()
    national = np.frombuffer(tables.national_division.encode(), np.uint8)
    body = m[:, start : start + 6]
    provinces = byte_pairs(_province_pairs(tables.province_level), m, start)
    return _digits(body).all(axis=1) & (provinces | (body == national).all(axis=1))


def _unlisted_division(m: np.ndarray, rows: np.ndarray, rules: DocumentRules) -> np.ndarray:
    """Rows whose first six digits are not a code of the GB/T 2260 table (current and historical)."""
    known = divisions_known(rules.code_tables().divisions)
    return rows & ~known[np.where(rows, _number(m, 0, 6), 0)]


def _citizen_id(values: pa.Array, as_of: datetime.date, rules: DocumentRules) -> _Verdicts:
    # 2.1: 18 digits (GB 11643-1999), or the void 15-digit first generation (GB 11643-1989).
    provinces = _province_pairs(frozenset(rules.province_codes))
    m, ok18 = _id18(values)
    m15, fits15 = _matrix(values, 15)
    ok15 = fits15 & _digits(m15).all(axis=1)
    bad_check, bad_birth = _id18_checksum_birth(m, as_of, rules)
    birth15 = _birth_ok(
        1900 + _number(m15, 6, 8), _number(m15, 8, 10), _number(m15, 10, 12), as_of, rules
    )  # century implicit: 19YYMMDD
    region18 = provinces[m[:, 0], m[:, 1]]
    region15 = provinces[m15[:, 0], m15[:, 1]]
    # docs/policy.md "Document numbers": a residence-permit (docs/regulation.md §2.2)
    # or new permanent-resident (§2.3) number filed as a citizen's.
    other = _has_prefix(m, rules.hmt_prefixes) | _new_fprid(m, rules)
    return {
        FORMAT: ~(ok18 | ok15),
        CHECKSUM: ok18 & bad_check,
        BIRTH: (ok18 & bad_birth) | (ok15 & ~birth15),
        REGION: (ok18 & ~region18) | (ok15 & ~region15),
        FIRST_GEN: ok15 & (as_of >= rules.first_generation_void_since),
        MISMATCH: ok18 & other,
        # docs/regulation.md §2.8: a review flag, never a failure.
        DIVISION_REVIEW: _unlisted_division(m, ok18 & region18, rules)
        | _unlisted_division(m15, ok15 & region15, rules),
    }


def _hmt_residence_permit(values: pa.Array, as_of: datetime.date, rules: DocumentRules) -> _Verdicts:
    # 2.2: the citizen algorithm with a fixed address code 810000/820000/830000.
    provinces = _province_pairs(frozenset(rules.province_codes))
    m, ok = _id18(values)
    hmt = ok & _has_prefix(m, rules.hmt_prefixes)
    other = ok & ~hmt & (provinces[m[:, 0], m[:, 1]] | _new_fprid(m, rules))
    checked = hmt | other
    bad_check, bad_birth = _id18_checksum_birth(m, as_of, rules)
    return {FORMAT: ~checked, MISMATCH: other, CHECKSUM: checked & bad_check, BIRTH: checked & bad_birth}


def _foreign_permanent_resident_id(values: pa.Array, as_of: datetime.date, rules: DocumentRules) -> _Verdicts:
    # 2.3: 2023 card, 18 digits starting with 9 (MOD 11-2, YYYYMMDD at [6:14]);
    # 2004/2017 card, 3 letters + 12 digits, YYMMDD at [7:13], 7-3-1 check not enforced
    # (its layout is not officially confirmed).
    m, ok18 = _id18(values)
    new = ok18 & (m[:, 0] == ord("9"))
    citizen_shaped = ok18 & ((m[:, 0] - np.uint8(49)) < 8)  # first digit 1-8
    checked18 = new | citizen_shaped
    bad_check, bad_birth = _id18_checksum_birth(m, as_of, rules)
    m15, fits15 = _matrix(values, 15)
    old = fits15 & _uppers(m15[:, :3]).all(axis=1) & _digits(m15[:, 3:]).all(axis=1)
    yy, mm, dd = _number(m15, 7, 9), _number(m15, 9, 11), _number(m15, 11, 13)
    old_birth = _birth_ok(1900 + yy, mm, dd, as_of, rules) | _birth_ok(2000 + yy, mm, dd, as_of, rules)
    # §2.8: the 2017 card's nationality is ISO 3166-1 alpha-3; the 2023 card's province a province-level
    # code and its nationality ISO 3166-1 numeric.
    tables = rules.code_tables()
    letters = m15[:, :3].astype(np.int64) - 65
    alpha3 = alpha3_table(tables.alpha3)[np.where(old, letters @ np.array([676, 26, 1]), 0)]
    province = byte_pairs(_province_pairs(tables.province_level), m, 1)
    nationality = numeric_table(tables.numeric)[np.where(new, _number(m, 3, 6), 0)]
    return {
        FORMAT: ~(checked18 | old),
        MISMATCH: citizen_shaped,
        CHECKSUM: checked18 & bad_check,
        BIRTH: (checked18 & bad_birth) | (old & ~old_birth),
        CODE: (new & ~(province & nationality)) | (old & ~alpha3),
    }


def _uscc_parts(values: pa.Array, rules: DocumentRules) -> _Verdicts:
    """FORMAT (as the mask of well-formed codes), CHECKSUM, CODE and CODE_REVIEW of unified social credit
    codes (docs/regulation.md §2.4, §2.8)."""
    m, fits = _matrix(values, 18)
    ok = fits & _USCC_SET[m].all(axis=1)
    # Mod-31 check char, and the embedded organisation code [8:17] with its own
    # GB 11714 check (A=10..Z=35, not the USCC values: 2.4, 2.5).
    bad = (uscc_mod31(m[:, :17]) != m[:, 17]) | (gb11714(m[:, 8:16]) != m[:, 16])
    # The registering division (3-8) of the code tables; an authority + category pair (1-2) outside GB 32100's
    # table is only a review flag (§2.4: validator projects disagree on that table).
    paired = byte_pairs(pair_table(rules.code_tables().uscc_pairs), m, 0)
    return {FORMAT: ok, CHECKSUM: ok & bad, CODE: ok & ~_division_ok(m, 2, rules), CODE_REVIEW: ok & ~paired}


def _uscc(values: pa.Array, as_of: datetime.date, rules: DocumentRules) -> _Verdicts:
    parts = _uscc_parts(values, rules)
    return {**parts, FORMAT: ~parts[FORMAT]}


def _uscc_or(other: _Verdicts, uscc: _Verdicts) -> _Verdicts:
    """A USCC or the document's own number (``other``: FORMAT as the mask of well-formed numbers)."""
    out = {reason: uscc[reason] | other.get(reason, False) for reason in (CHECKSUM, CODE, CODE_REVIEW)}
    return {**out, FORMAT: ~(uscc[FORMAT] | other[FORMAT])}


def _org_code(values: pa.Array, as_of: datetime.date, rules: DocumentRules) -> _Verdicts:
    # 2.5: 8 of [0-9A-Z] + check [0-9X]; the self-defined PDY range is not for exchange. Since the 2015
    # three-certificates-in-one reform the line may carry the USCC that embeds the code (2.4, 2.5).
    m, fits = _matrix(values, 9)
    body = m[:, :8]
    ok = fits & (_digits(body) | _uppers(body)).all(axis=1) & (_digits(m[:, 8]) | (m[:, 8] == _X))
    ok &= ~_has_prefix(m, rules.org_code_reserved_prefixes)
    return _uscc_or({FORMAT: ok, CHECKSUM: ok & (gb11714(body) != m[:, 8])}, _uscc_parts(values, rules))


def _business_license(values: pa.Array, as_of: datetime.date, rules: DocumentRules) -> _Verdicts:
    # A USCC (2.4) or the legacy 15-digit registration number, MOD 11,10 (2.6), under a registering division (2.8).
    m15, fits15 = _matrix(values, 15)
    legacy = fits15 & _digits(m15).all(axis=1)
    own = {
        FORMAT: legacy,
        CHECKSUM: legacy & (mod11_10(m15[:, :14]) != m15[:, 14]),
        CODE: legacy & ~_division_ok(m15, 0, rules),
    }
    return _uscc_or(own, _uscc_parts(values, rules))


def _regex_kind(pattern: Callable[[DocumentRules], str]) -> Callable[..., _Verdicts]:
    def check(values: pa.Array, as_of: datetime.date, rules: DocumentRules) -> _Verdicts:
        # RE2 via Arrow: ^ and $ anchor the whole value (no multi-line mode).
        hit = pc.fill_null(pc.match_substring_regex(values, pattern(rules)), False)
        return {FORMAT: ~hit.to_numpy(zero_copy_only=False)}

    return check


def _free_text(values: pa.Array, as_of: datetime.date, rules: DocumentRules) -> _Verdicts:
    # 2.7: military IDs have no reliable format; only length and placeholders (6).
    length = pc.utf8_length(values)
    ok = pc.and_(pc.greater_equal(length, rules.free_text_min), pc.less_equal(length, rules.free_text_max))
    placeholders = pa.array(sorted({_normalise(p) for p in rules.number_placeholders}), pa.string())
    # One character repeated (0000, XXXX): RE2 has no backreferences, but a value
    # equals itself shifted by one character exactly when all its characters agree.
    repeated = pc.equal(pc.utf8_slice_codeunits(values, 1), pc.utf8_slice_codeunits(values, 0, -1))
    bad = pc.or_(pc.invert(ok), pc.or_(pc.is_in(values, value_set=placeholders), repeated))
    return {FORMAT: pc.fill_null(bad, True).to_numpy(zero_copy_only=False)}


def _normalise(placeholder: str) -> str:
    """The caller's normalisation of numbers, applied to configured placeholders."""
    folded = unicodedata.normalize("NFKC", placeholder).upper()
    return "".join(folded.split()).replace("-", "")


_KINDS: dict[str, Callable[[pa.Array, datetime.date, DocumentRules], _Verdicts]] = {
    "citizen_id": _citizen_id,
    "hmt_residence_permit": _hmt_residence_permit,
    "foreign_permanent_resident_id": _foreign_permanent_resident_id,
    "hk_macao_permit": _regex_kind(lambda r: r"^([HM]([0-9]{8}|[0-9]{10})|[HM]A[0-9]{7})$"),  # 2.7 (HA/MA: 2024)
    "taiwan_permit": _regex_kind(lambda r: r"^([0-9]{8}|[0-9]{10}(\([A-Z]\))?)$"),  # 2.7
    "passport": _regex_kind(lambda r: f"^[A-Z0-9]{{{r.passport_min},{r.passport_max}}}$"),
    "free_text": _free_text,
    "uscc": _uscc,
    "org_code": _org_code,
    "business_license": _business_license,
    # docs/policy.md "Document numbers": "a USCC, or 6 to 32 letters and digits". Every USCC is 18 of
    # [0-9A-Z], so the USCC branch is implied by the alphanumeric one.
    "uscc_or_alnum": _regex_kind(lambda r: f"^[A-Z0-9]{{{r.alnum_min},{r.alnum_max}}}$"),
    "tax_registration": lambda v, d, r: check_tax_registration(v, d, r, _uscc_parts, _citizen_id, _business_license),
}
assert tuple(_KINDS) == CHECKS


def _string_array(values: pa.Array | pa.ChunkedArray, name: str) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        raise TypeError(f"{name} must be a pyarrow Array or ChunkedArray")
    return values if values.type == pa.string() else values.cast(pa.string())


def check_document_numbers(
    checks: pa.Array | pa.ChunkedArray,
    numbers: pa.Array | pa.ChunkedArray,
    as_of: datetime.date,
    rules: DocumentRules = DocumentRules(),
) -> dict[str, np.ndarray]:
    """Reason codes (and review flags) of document numbers, one boolean vector each.

    Args:
        checks: string array (or chunked, or dictionary-encoded), the check kind
            (one of CHECKS) per row; null = no check for this row.
        numbers: string array of ALREADY NORMALISED numbers (NFKC, upper-cased,
            spaces and hyphens removed); null = absent.
        as_of: the processing date for birth-date and first-generation rules.
        rules: the tunable policy.

    Returns:
        ``{code: bool ndarray of len(numbers)}`` with every key of REASONS and of
        REVIEWS. Rows with a null check or a null number are all False.

    Raises:
        ValueError: lengths differ, or a check kind is not in CHECKS.
    """
    numbers = _string_array(numbers, "numbers")
    if isinstance(checks, pa.ChunkedArray):
        checks = checks.combine_chunks()
    if not isinstance(checks, pa.DictionaryArray):
        # One hash pass over the kinds instead of one string comparison per kind.
        checks = pc.dictionary_encode(_string_array(checks, "checks"))
    if len(checks) != len(numbers):
        raise ValueError("checks and numbers differ in length")
    if isinstance(as_of, datetime.datetime):  # a datetime does not compare with a date
        as_of = as_of.date()
    n = len(numbers)
    out = {reason: np.zeros(n, bool) for reason in REASONS + REVIEWS}
    kinds = checks.dictionary.cast(pa.string()).to_pylist()
    codes = pc.fill_null(checks.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    codes[~numbers.is_valid().to_numpy(zero_copy_only=False)] = -1
    counts = np.bincount(codes[codes >= 0], minlength=len(kinds))
    used = [(code, kind) for code, kind in enumerate(kinds) if counts[code] and kind is not None]
    unknown = sum(kind not in _KINDS for _, kind in used)
    if unknown:  # the values are not echoed: a misplaced column would leak numbers
        raise ValueError(f"{unknown} check kind(s) not in CHECKS")
    for code, kind in used:
        if counts[code] == n:
            rows, subset = slice(None), numbers
        else:
            rows = np.flatnonzero(codes == code)
            subset = numbers.take(pa.array(rows))
        for reason, hit in _KINDS[kind](subset, as_of, rules).items():
            out[reason][rows] = hit
    return out
