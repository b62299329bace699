"""Text normalisation of identity and line fields, over Arrow arrays.

Every check of the policy runs on normalised values (docs/policy.md
"Normalisation", docs/regulation.md §5):

* NFKC (full-width digits and letters become ASCII, U+3000 and U+00A0 spaces);
* Unicode format characters (category Cf: U+200B, U+FEFF, ...) are removed,
  which NFKC does not do;
* white space is trimmed and collapsed; a value that is empty afterwards is
  absent (null);
* document numbers are upper-cased (``x`` -> ``X``) and lose inner spaces
  and hyphens;
* in names, the middle-dot look-alikes fold to U+00B7, and so do ``.`` / ``．``
  between two Han characters. Dots are never removed or merged: a malformed
  sequence stays malformed for the name check to see.

All functions are vectorised (pyarrow.compute). NFKC and the regex passes are
costly over Chinese text, so one numpy pass over the UTF-8 buffer first picks
the rows that can change, and only those go through them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "clean_text",
    "normalize_doc_number",
    "normalize_name",
    "normalize_label",
    "normalize_enum",
    "normalize_msisdn",
    "MIDDLE_DOT",
    "rows_with_bytes",
    "as_strings",
    "contiguous",
]

MIDDLE_DOT = "\u00b7"
# Look-alikes of U+00B7 (docs/regulation.md §5); U+FF65 becomes U+30FB under NFKC.
_DOT_LOOKALIKES = r"[\x{0387}\x{30FB}\x{FF65}\x{2022}\x{2027}\x{2219}\x{22C5}\x{2E31}\x{16EB}]"
_HAN_DOT_HAN = r"(\p{Han})[.\x{FF0E}](\p{Han})"
_FORMAT_CHARS = r"\p{Cf}"
_SPACE_RUN = r"[\s\p{Z}]+"
_DOC_SEPARATORS = r"[\s\p{Z}\-\x{2010}-\x{2015}\x{2212}]"


def contiguous(values) -> pa.Array:
    """One contiguous array from an array or a chunked array (its type kept)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def as_strings(values) -> pa.Array:
    """One contiguous ``string`` array from an array, a chunked array or a list."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, pa.string())
    return values if values.type == pa.string() else values.cast(pa.string())


def rows_with_bytes(values: pa.Array, byte_test) -> np.ndarray:
    """Rows whose UTF-8 bytes contain a byte for which ``byte_test`` is true.

    One numpy pass over the array's data buffer: a cheap pre-filter before
    NFKC or a regex, which then run only on the rows that can match.
    """
    n = len(values)
    if n == 0 or values.buffers()[2] is None:
        return np.zeros(n, bool)
    offsets = np.frombuffer(values.buffers()[1], np.int32)[values.offset : values.offset + n + 1]
    buf = np.frombuffer(values.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    if len(buf) == 0:
        return np.zeros(n, bool)
    test = byte_test(buf)
    count = np.count_nonzero(test)
    if count == 0:
        return np.zeros(n, bool)
    if count > n:
        # Dense marks (e.g. Chinese text): one OR per row over its bytes. reduceat takes the
        # non-empty rows only, so each segment is exactly one row's bytes.
        starts = offsets - offsets[0]
        nonempty = starts[1:] > starts[:-1]
        out = np.zeros(n, bool)
        out[nonempty] = np.logical_or.reduceat(test, starts[:-1][nonempty])
        return out
    # Sparse marks: marks per row = marks before the row's end - marks before its start.
    before = np.searchsorted(np.flatnonzero(test), offsets - offsets[0])
    return before[1:] > before[:-1]


def _non_cjk_lead(buf: np.ndarray) -> np.ndarray:
    """UTF-8 lead bytes other than those of U+4000-U+9FFF (0xE4-0xE9).

    The CJK unified ideographs that Chinese names and addresses are made of
    are left alone by NFKC; full-width forms, U+3000, the Cf and Z characters
    and the middle-dot look-alikes all have other lead bytes.
    """
    return (buf >= 0xEA) | ((buf - np.uint8(0xC2)) < 0x22)  # 0xC2-0xE3 by uint8 wrap-around


def _needs_cleaning(buf: np.ndarray) -> np.ndarray:
    """Bytes that NFKC, the Cf strip or the white-space pass can change: control bytes, the lead
    bytes of _non_cjk_lead (0xC2-0xE3, 0xEA-0xFF; uint8 wrap-around makes a range one compare), and
    the first of two spaces (spaces are rare: found by index, not by a shifted full-buffer compare)."""
    test = buf < 0x20
    test |= buf >= 0xEA
    test |= (buf - np.uint8(0xC2)) < 0x22
    spaces = np.flatnonzero(buf == 0x20)
    if len(spaces) > 1:
        test[spaces[:-1][np.diff(spaces) == 1]] = True
    return test


def _subset(values: pa.Array, rows: np.ndarray, fn) -> pa.Array:
    """Apply ``fn`` to the selected rows only."""
    if not rows.any():
        return values
    mask = pa.array(rows)
    return pc.replace_with_mask(values, mask, fn(values.filter(mask)))


def _offsets(values: pa.Array) -> np.ndarray:
    return np.frombuffer(values.buffers()[1], np.int32)[values.offset : values.offset + len(values) + 1]


def _empty_to_null(values: pa.Array) -> pa.Array:
    offsets = _offsets(values)
    empty = (offsets[1:] == offsets[:-1]) & values.is_valid().to_numpy(zero_copy_only=False)
    if not empty.any():
        return values
    return pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), values)


def _untrimmed(values: pa.Array) -> np.ndarray:
    """Rows whose first or last character may be white space (a superset of what a trim changes):
    an ASCII byte up to the space, or a non-ASCII character other than U+4000-U+9FFF."""
    n = len(values)
    if n == 0 or values.buffers()[2] is None:
        return np.zeros(n, bool)
    offsets = _offsets(values)
    if offsets[-1] == offsets[0]:  # no bytes at all
        return np.zeros(n, bool)
    buf = np.frombuffer(values.buffers()[2], np.uint8)
    starts, ends = offsets[:-1], offsets[1:]
    filled = ends > starts
    first = buf[np.where(filled, starts, 0)]
    last = buf[np.where(filled, ends - 1, 0)]
    lead = buf[np.where(filled & (ends - starts >= 3), ends - 3, 0)]
    cjk_last = (ends - starts >= 3) & (lead >= 0xE4) & (lead <= 0xE9)
    odd_first = (first <= 0x20) | ((first >= 0x80) & ((first < 0xE4) | (first > 0xE9)))
    odd_last = (last <= 0x20) | ((last >= 0x80) & ~cjk_last)
    return filled & (odd_first | odd_last)


def _full_clean(values: pa.Array) -> pa.Array:
    values = pc.utf8_normalize(values, "NFKC")
    values = pc.replace_substring_regex(values, _FORMAT_CHARS, "")
    return pc.replace_substring_regex(values, _SPACE_RUN, " ")


def clean_text(values) -> pa.Array:
    """NFKC, drop format characters, trim and collapse white space; '' -> null.

    Only the rows a byte test says can change are cleaned (on the others every step is the identity:
    ASCII and U+4000-U+9FFF are NFKC-stable), and the result is copied once."""
    values = as_strings(values)
    rows = rows_with_bytes(values, _needs_cleaning) | _untrimmed(values)
    values = _subset(values, rows, lambda v: pc.utf8_trim_whitespace(_full_clean(v)))
    return _empty_to_null(values)


def _has_doc_separator(buf: np.ndarray) -> np.ndarray:
    return (buf == 0x20) | (buf == 0x2D) | (buf >= 0xC2)


def normalize_doc_number(values) -> pa.Array:
    """Clean text, upper-case, drop a spreadsheet's text marks (``'`` before, ``="..."`` around), inner spaces and
    hyphens, and the ``<`` fillers that end a number read from a passport's machine-readable zone (ICAO 9303: a
    9-character field, ``AB1234567`` or ``E1234567<``)."""
    values = pc.utf8_upper(clean_text(values))
    values = _subset(values, _first_byte_in(values, b"'="), _without_text_marks)
    values = _subset(
        values,
        rows_with_bytes(values, _has_doc_separator),
        lambda v: pc.replace_substring_regex(v, _DOC_SEPARATORS, ""),
    )
    values = _subset(values, rows_with_bytes(values, _is_filler), lambda v: pc.replace_substring_regex(v, "<+$", ""))
    return _empty_to_null(values)


def _without_text_marks(values: pa.Array) -> pa.Array:
    """The marks an export puts on a number so that a spreadsheet keeps it as text (all its digits, its leading
    zeros): a formula ``="110101199003070011"`` or a leading apostrophe ``'110101199003070011``."""
    return pc.replace_substring_regex(pc.replace_substring_regex(values, r'^="(.*)"$', r"\1"), r"^'", "")


def _is_filler(buf: np.ndarray) -> np.ndarray:
    return buf == 0x3C  # "<"


def _fold_dots(values: pa.Array) -> pa.Array:
    values = pc.replace_substring_regex(values, _DOT_LOOKALIKES, MIDDLE_DOT)
    # Two passes: a match consumes the Han character after the dot, so in
    # 阿.卜.杜 the second dot is only reached by the second pass (RE2 has no
    # look-around).
    for _ in range(2):
        values = pc.replace_substring_regex(values, _HAN_DOT_HAN, r"\1" + MIDDLE_DOT + r"\2")
    return values


def _maybe_dot(buf: np.ndarray) -> np.ndarray:
    return (buf == 0x2E) | _non_cjk_lead(buf)


def normalize_name(values) -> pa.Array:
    """Clean text and fold middle-dot look-alikes to U+00B7."""
    values = clean_text(values)
    return _subset(values, rows_with_bytes(values, _maybe_dot), _fold_dots)


def normalize_label(values) -> pa.Array:
    """A raw document label or enum value, as looked up in the policy."""
    return pc.utf8_upper(clean_text(values))


def normalize_enum(values) -> pa.Array:
    """Enum values are matched after trimming, ignoring case."""
    return normalize_label(values)


MSISDN_MAX_CHARS = 14  # a national number: at most 13 digits (data cards, IoT) or a fixed line with its trunk 0


def normalize_msisdn(values) -> pa.Array:
    """The national number: separators dropped, +86 / 0086 / 86 removed; none when longer than a telephone
    number can be.

    Fixed lines keep (or, after a country code, regain) their trunk ``0``:
    ``+86 10 6552 9988`` becomes ``01065529988`` (docs/regulation.md §3).
    Validity per channel is the notify step's business, not the scan's.
    """
    values = clean_text(values)
    values = _subset(values, rows_with_bytes(values, _not_digit), _digits_of_msisdn)
    # Only a number starting with + 0 or 8 can carry a country code: the regex runs on those alone.
    maybe = _first_byte_in(values, b"+08")
    international = np.zeros(len(values), bool)
    if maybe.any():
        found = pc.match_substring_regex(values.filter(pa.array(maybe)), r"^(?:\+86|0086|86\d{9,})")
        international[maybe] = pc.fill_null(found, False).to_numpy(zero_copy_only=False)
    values = _subset(values, international, _national)
    # No national number is longer (a mobile has 11 digits, a data card or IoT number 13, a fixed line 0 + 10 or
    # 11): a longer one is something else typed into the column, such as a document number, whose digits would
    # be written out as a "number": none is kept.
    too_long = pc.greater(pc.utf8_length(values), MSISDN_MAX_CHARS)
    return _empty_to_null(pc.if_else(pc.fill_null(too_long, False), pa.scalar(None, pa.string()), values))


def _digits_of_msisdn(values: pa.Array) -> pa.Array:
    """Numbers with other characters than digits: separators dropped. A spreadsheet's or dataframe's float
    rendering of the number is undone (``13800138000.0`` is 13800138000, not 138001380000); one in scientific
    notation (``1.38001E+12``) has lost digits it does not show and is no number (none: a text to a stranger's
    phone is worse than no text)."""
    values = pc.replace_substring_regex(values, r"^(\+?[0-9]+)\.0+$", r"\1")
    scientific = pc.match_substring_regex(values, r"[0-9][eE][+-]?[0-9]")
    values = pc.if_else(pc.fill_null(scientific, False), pa.scalar(None, pa.string()), values)
    return pc.replace_substring_regex(values, r"[^0-9+]", "")


def _national(values: pa.Array) -> pa.Array:
    """Numbers that carried a country code, in national form."""
    values = pc.replace_substring_regex(values, r"^(?:\+86|0086|86)", "")
    mobile = pc.match_substring_regex(values, r"^1\d{10,12}$")  # mobile, data card and IoT numbers
    trunk = pc.binary_join_element_wise("0", values, "")
    return pc.if_else(pc.fill_null(mobile, True), values, trunk)


def _first_byte_in(values: pa.Array, allowed: bytes) -> np.ndarray:
    """Rows whose first byte is one of ``allowed`` (empty rows and nulls: False)."""
    offsets = _offsets(values)
    filled = (offsets[1:] > offsets[:-1]) & values.is_valid().to_numpy(zero_copy_only=False)
    if not filled.any():
        return filled
    buf = np.frombuffer(values.buffers()[2], np.uint8)
    first = buf[np.where(filled, offsets[:-1], 0)]
    return filled & np.isin(first, np.frombuffer(allowed, np.uint8))


def _not_digit(buf: np.ndarray) -> np.ndarray:
    return (buf < 0x30) | (buf > 0x39)
