"""The number check of the tax registration certificate (税务登记证), vectorised over Arrow.

What: :func:`check_tax_registration` gives, for already normalised numbers, one boolean vector per reason code and
review flag of :mod:`transforms.scan.documents` (docs/policy.md "Document numbers", docs/regulation.md §2.9). A tax
registration number is one of:

* 15 characters, the form of the certificates issued before the 2015-2016 "three certificates in one" reform: a
  six-digit division code, then a nine-character GB 11714 organisation code (§2.5). The first two digits must be a
  province-level code of the code tables, else ``DOC_NUMBER_CODE``; a six-digit code missing from the GB/T 2260
  table is only the review flag ``DOC_NUMBER_DIVISION_REVIEW``: a tax office keeps a code after the division
  changes and development zones were given codes of their own (§2.9). A wrong organisation-code check character
  is ``DOC_NUMBER_CHECKSUM``;
* a USCC (18 characters), checked as on a ``USCC`` line (§2.4);
* an individual business's: its owner's citizen identity number (18 characters), alone or followed by a two-digit
  sequence (20 characters), checked as on a ``RESIDENT_ID`` line (§2.1).

An 18-digit number can be read as a USCC and as a citizen number alike: it is valid when either reading is, else
it gets the reasons of the reading whose check character holds (the USCC's first), else ``DOC_NUMBER_CHECKSUM``.

How: the USCC and citizen readings are the document module's own checks, passed in (``uscc_parts``,
``citizen_id``), so this module does not import it; the 15-character form is checked here on the uint8 byte matrix
of :func:`transforms.scan.checkdigits.char_matrix`. No number is ever put in an exception message or a log line.
"""

from __future__ import annotations

import datetime
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.scan.checkdigits import char_matrix, gb11714
from transforms.scan.code_tables import byte_pairs, pair_table
from transforms.scan.divisions import divisions_known
from transforms.scan.document_rules import DocumentRules

__all__ = ["check_tax_registration"]

FORMAT, CHECKSUM, BIRTH, REGION, MISMATCH, CODE = (
    "DOC_NUMBER_FORMAT",
    "DOC_NUMBER_CHECKSUM",
    "DOC_NUMBER_BIRTH_DATE",
    "DOC_NUMBER_REGION",
    "DOC_TYPE_MISMATCH",
    "DOC_NUMBER_CODE",
)
DIVISION_REVIEW, CODE_REVIEW = "DOC_NUMBER_DIVISION_REVIEW", "DOC_NUMBER_CODE_REVIEW"
_CITIZEN = (CHECKSUM, BIRTH, REGION, MISMATCH)  # the reasons of the citizen reading of an 18-character number

_Verdicts = dict[str, np.ndarray]
_Check = Callable[..., _Verdicts]


def _digits(m: np.ndarray) -> np.ndarray:
    return (m - np.uint8(48)) < 10


def _uppers(m: np.ndarray) -> np.ndarray:
    return (m - np.uint8(65)) < 26


def _number6(m: np.ndarray) -> np.ndarray:
    return (m[:, :6].astype(np.int64) - 48) @ (10 ** np.arange(5, -1, -1))


def _legacy(values: pa.Array, rules: DocumentRules) -> _Verdicts:
    """The 15-character form (FORMAT as the mask of well-formed numbers): division + organisation code."""
    m, fits = char_matrix(values, 15, order="F")
    org, check = m[:, 6:14], m[:, 14]
    ok = fits & _digits(m[:, :6]).all(axis=1) & (_digits(org) | _uppers(org)).all(axis=1)
    ok &= _digits(check) | (check == ord("X"))
    for prefix in rules.org_code_reserved_prefixes:  # the self-defined organisation codes (§2.5)
        p = np.frombuffer(prefix.encode(), np.uint8)[:9]
        ok &= ~(m[:, 6 : 6 + len(p)] == p).all(axis=1)
    tables = rules.code_tables()
    province = byte_pairs(pair_table(tables.province_level), m, 0)
    known = divisions_known(tables.divisions)[np.where(ok, _number6(m), 0)]
    return {
        FORMAT: ok,
        CHECKSUM: ok & (gb11714(org) != check),
        CODE: ok & ~province,
        DIVISION_REVIEW: ok & province & ~known,
    }


def _citizen_shaped(values: pa.Array) -> np.ndarray:
    m, fits = char_matrix(values, 18, order="F")
    return fits & _digits(m[:, :17]).all(axis=1) & (_digits(m[:, 17]) | (m[:, 17] == ord("X")))


def _with_sequence(values: pa.Array) -> pa.Array:
    """The first 18 characters of the 20-character values that end in two digits; null elsewhere."""
    m, fits = char_matrix(values, 20, order="F")
    keep = fits & _digits(m[:, 18:]).all(axis=1)
    return pc.if_else(pa.array(keep), pc.utf8_slice_codeunits(values, 0, 18), pa.scalar(None, pa.string()))


def _pick(uscc: _Verdicts, citizen: _Verdicts, is_uscc: np.ndarray, is_citizen: np.ndarray) -> tuple:
    """(USCC rows, citizen rows, rows of neither) of the 18-character values, by the order of the docstring."""
    uscc_bad = uscc[CHECKSUM] | uscc[CODE]
    citizen_bad = np.logical_or.reduce([citizen[r] for r in _CITIZEN]) & is_citizen
    use_uscc = is_uscc & (~is_citizen | ~uscc_bad | (citizen_bad & ~uscc[CHECKSUM]))
    use_citizen = is_citizen & ~use_uscc & (~citizen_bad | ~citizen[CHECKSUM])
    return use_uscc, use_citizen, is_citizen & ~use_uscc & ~use_citizen


def _licence_numbers(values: pa.Array, legacy: _Verdicts, licence: _Verdicts) -> np.ndarray:
    """The 15-digit values that fail the tax reading but are valid business registration numbers."""
    m, fits = char_matrix(values, 15, order="F")
    failed = legacy[FORMAT] & (legacy[CHECKSUM] | legacy[CODE])
    return failed & fits & _digits(m).all(axis=1) & ~(licence[FORMAT] | licence[CHECKSUM] | licence[CODE])


def check_tax_registration(
    values: pa.Array,
    as_of: datetime.date,
    rules: DocumentRules,
    uscc_parts: _Check,
    citizen_id: _Check,
    business_license: _Check,
) -> _Verdicts:
    """Reasons and review flags of tax registration numbers (``uscc_parts(values, rules)``,
    ``citizen_id(values, as_of, rules)`` and ``business_license(values, as_of, rules)``: the USCC, resident ID and
    business licence checks of transforms.scan.documents). A 15-digit value that fails the tax reading but is a
    valid business registration number is valid: operators' exports file one certificate's number as the other's
    (the two certificates' labels are one group in operators' own checkers)."""
    legacy = _legacy(values, rules)
    uscc = uscc_parts(values, rules)  # FORMAT: the mask of well-formed codes
    citizen = citizen_id(values, as_of, rules)
    use_uscc, use_citizen, neither = _pick(uscc, citizen, uscc[FORMAT], _citizen_shaped(values))
    head = _with_sequence(values)
    owner = citizen_id(head, as_of, rules)
    sequenced = _citizen_shaped(head)
    out = {
        FORMAT: ~(legacy[FORMAT] | uscc[FORMAT] | sequenced),
        CHECKSUM: legacy[CHECKSUM] | (use_uscc & uscc[CHECKSUM]) | neither,
        CODE: legacy[CODE] | (use_uscc & uscc[CODE]),
        CODE_REVIEW: use_uscc & uscc[CODE_REVIEW],
        DIVISION_REVIEW: legacy[DIVISION_REVIEW]
        | (use_citizen & citizen[DIVISION_REVIEW])
        | (sequenced & owner[DIVISION_REVIEW]),
    }
    for reason in _CITIZEN:
        hits = (use_citizen & citizen[reason]) | (sequenced & owner[reason])
        out[reason] = out[reason] | hits if reason in out else hits
    licensed = _licence_numbers(values, legacy, business_license(values, as_of, rules))
    return {reason: hits & ~licensed for reason, hits in out.items()}
