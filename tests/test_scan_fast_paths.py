"""The classifier's shortcuts give what the plain computation gives, on values built to trip them.

Each shortcut (a byte pre-filter, a one-pass alternation, a numpy gather, work per distinct value) is
compared with the same result computed the long way, row by row or on every row, over random strings
drawn from an alphabet of the characters the shortcuts reason about.
"""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from transforms.scan.arrow_columns import bits_to_lists
from transforms.scan.checkdigits import char_matrix
from transforms.scan.identity_text import _contains_any
from transforms.scan.normalize import _full_clean, clean_text, normalize_doc_number, normalize_msisdn, rows_with_bytes

# ASCII, CJK (U+4000-U+9FFF and outside it), white space of every kind, format characters, full-width
# forms, Latin-1, a 4-byte character, controls.
ALPHABET = list("aZ09 .-+·市区路号張王\u3400\uf900") + [
    "\u3000",
    "\u00a0",
    "\u0085",
    "\u2003",
    "\u2028",
    "\u200b",
    "\ufeff",
    "\u00ad",
    "\uff11",
    "\uff21",
    "é",
    "\U00020000",
    "\t",
    "\n",
    "\x1f",
    "  ",
]


def _strings(seed: int, n: int, max_len: int) -> list:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.05:
            out.append(None)
        elif roll < 0.1:
            out.append("")
        else:
            out.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, max_len))))
    return out


def _plain_clean(values: pa.Array) -> pa.Array:
    """Every step on every row, no pre-filter."""
    cleaned = pc.utf8_trim_whitespace(_full_clean(values))
    return pc.if_else(pc.equal(pc.binary_length(cleaned), 0), pa.scalar(None, pa.string()), cleaned)


@pytest.mark.parametrize("seed,max_len", [(1, 3), (2, 8), (3, 30)])
def test_clean_text_equals_cleaning_every_row(seed, max_len):
    values = pa.array(_strings(seed, 3000, max_len), pa.string())
    assert clean_text(values).equals(_plain_clean(values))
    # Mostly clean values: the pre-filter then skips most rows.
    mostly = pa.array(["王小明", " 王小明", "王小明 ", "abc", "", None, "市\u3000", "\u3000市"] * 200, pa.string())
    assert clean_text(mostly).equals(_plain_clean(mostly))


@pytest.mark.parametrize("seed", [4, 5])
def test_rows_with_bytes_dense_and_sparse(seed):
    strings = _strings(seed, 2000, 12)
    values = pa.array(strings, pa.string())
    for byte_test, wanted in [
        (lambda buf: (buf >= 0xE4) & (buf <= 0xE9), lambda b: any(0xE4 <= x <= 0xE9 for x in b)),  # dense
        (lambda buf: buf == 0x2B, lambda b: 0x2B in b),  # sparse
    ]:
        expected = [s is not None and wanted(s.encode()) for s in strings]
        assert rows_with_bytes(values, byte_test).tolist() == expected


def test_contains_any_equals_substring_search():
    strings = _strings(6, 2000, 10)
    values = pa.array(strings, pa.string())
    rng = np.random.default_rng(6)
    for rows in (np.ones(len(strings), bool), rng.random(len(strings)) < 0.2):
        for needles in (["市", "区", "路号", "a.Z", "+"], ["·"], []):
            expected = [bool(r) and s is not None and any(n in s for n in needles) for s, r in zip(strings, rows)]
            assert _contains_any(values, rows, needles).tolist() == expected


@pytest.mark.parametrize("share", [1.0, 0.8, 0.1, 0.0])
def test_char_matrix_gathers_the_right_bytes(share):
    rng = random.Random(int(share * 10))
    strings = [
        "".join(rng.choice("0123456789X") for _ in range(18 if rng.random() < share else rng.randint(0, 20)))
        for _ in range(500)
    ] + ([None] if share < 1 else [])
    values = pa.array(strings, pa.string())
    for order in ("C", "F"):
        matrix, fits = char_matrix(values, 18, order=order)
        assert fits.tolist() == [s is not None and len(s) == 18 for s in strings]
        for row, s in zip(matrix, strings):
            assert bytes(row) == (s.encode() if s is not None and len(s) == 18 else bytes(18))


def test_bits_to_lists_per_distinct_set():
    codes = tuple(f"C{i}" for i in range(20))
    bits = np.random.default_rng(7).integers(0, 1 << 20, 3000).astype(np.uint32) & np.uint32(0b1011_0000_0000_0101_0011)
    expected = [[codes[i] for i in range(20) if int(b) >> i & 1] for b in bits]
    assert bits_to_lists(bits, codes).to_pylist() == expected


def test_msisdn_country_code_only_where_the_first_character_allows_it():
    raw = ["+8613800138000", "008613800138000", "8613800138000", "13800138000", "+86 10 6552 9988", "86", "", None]
    raw += ["0086 21 1234 5678", "1 86 138", "+1 650 555 0100", " +8613800138000"]
    expected = ["13800138000", "13800138000", "13800138000", "13800138000", "01065529988", "86", None, None]
    expected += ["02112345678", "186138", "+16505550100", "13800138000"]
    assert normalize_msisdn(pa.array(raw, pa.string())).to_pylist() == expected


def test_msisdn_longer_than_a_national_number_is_none():
    # 13 digits (a data card or IoT number) and a fixed line with its trunk 0 are numbers; a document number typed
    # into the column (its digits, 15 or 17 of them) is not kept as one
    raw = ["1440123456789", "+86 1440123456789", "0755 1234 5678", "11010519491231002X", "110105491231002"]
    raw += ["１１０１０５１９４９１２３１００２Ｘ", "010-6552 9988-8001", "12345678901234"]
    expected = ["1440123456789", "1440123456789", "075512345678", None, None, None, None, "12345678901234"]
    assert normalize_msisdn(pa.array(raw, pa.string())).to_pylist() == expected


def test_msisdn_as_a_spreadsheet_or_dataframe_wrote_it():
    """``13800138000.0`` (a float column written out) is the number, not 138001380000; scientific notation has lost
    digits it does not show (``1.38001E+12`` of a 13-digit IoT number) and is no number; the oracle agrees."""
    from bench.naive_rules import msisdn

    numbers = ["13800138000", "1440123456789", "01065529988"]
    raw = [n + ".0" for n in numbers] + [n + ".000" for n in numbers] + ["+86" + numbers[0] + ".0"]
    raw += [f"{float(n):.5E}" for n in numbers[:2]] + [f"{float(numbers[0]):e}", "1.3800138e+10", "13800138000.5"]
    expected = numbers + numbers + [numbers[0]] + [None] * 4 + ["138001380005"]
    assert normalize_msisdn(pa.array(raw, pa.string())).to_pylist() == expected
    assert [msisdn(v) for v in raw] == expected


def test_a_float_column_is_read_as_the_whole_numbers_it_holds():
    """A dataframe's integer column that held a null is written as doubles: its whole values are read as the
    integers they are (below 2**53; 2**24 for single floats), not ``1.3800138e+10`` or ``110101.0``."""
    from transforms.core.rows import _to_string

    whole = [13800138000, 110101, 0, -7, 2**53 - 1]
    got = _to_string(pa.array([float(v) for v in whole] + [None, 1.5, 2.0**53 * 4], pa.float64()))[0].to_pylist()
    assert got[: len(whole)] == [str(v) for v in whole] and got[len(whole) :] == [None, "1.5", "3.602879701896397e+16"]
    single = _to_string(pa.array([110101.0, 13800138000.0], pa.float32()))[0].to_pylist()
    assert single[0] == "110101" and single[1] != "13800138000" and "e" in single[1]  # its digits are gone


def test_document_numbers_lose_the_marks_that_keep_a_spreadsheet_from_rounding_them():
    """Exports write ``'110101...`` or ``="110101..."`` so that a spreadsheet keeps all 18 digits: the number is
    what is inside; an apostrophe or equals sign elsewhere is left for the checks; the oracle agrees."""
    from bench.naive_rules import doc_number

    body = "11010119900307001"
    number = body + "10X98765432"[sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(body)) % 11]
    raw = ["'" + number, f'="{number}"', f"  '{number[:6]} {number[6:14]} {number[14:]} ", "'", '=""', "O'NEIL", "=1"]
    expected = [number, number, number, None, None, "O'NEIL", "=1"]
    assert normalize_doc_number(pa.array(raw, pa.string())).to_pylist() == expected
    assert [doc_number(v) for v in raw] == expected
