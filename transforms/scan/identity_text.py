"""Checks of names and addresses (docs/policy.md "Names", "Addresses"; docs/regulation.md §5, §6).

Vectorised over normalised Arrow string arrays: each function returns one
boolean numpy mask per reason code. A placeholder is exclusive: a value that
is junk is reported as junk, not also as too short or malformed.

Regexes are costly over Chinese text, so each runs only on the rows a cheap
test says it can match: placeholders are short, digits and separators have
known bytes, and the keywords of a list are searched together, as one RE2
alternation.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.scan.normalize import rows_with_bytes

__all__ = ["check_names", "check_addresses", "name_charset_review"]


def _np(mask) -> np.ndarray:
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def _on_rows(values: pa.Array, rows: np.ndarray, test) -> np.ndarray:
    """``test`` (an Arrow predicate) evaluated on the selected rows only."""
    out = np.zeros(len(values), bool)
    count = np.count_nonzero(rows)
    if 2 * count > len(values):  # most rows: testing them all is cheaper than copying them out
        return _np(test(values)) & rows
    if count:
        out[rows] = _np(test(values.filter(pa.array(rows))))
    return out


def _placeholder(values: pa.Array, present: np.ndarray, length: np.ndarray, words) -> np.ndarray:
    """Exact placeholder values, compared case-insensitively; only short values can be one."""
    words = [w.upper() for w in words]
    if not words:
        return np.zeros(len(values), bool)
    longest = max(len(w) for w in words)
    value_set = pa.array(words, pa.string())
    return present & _on_rows(
        values, present & (length <= longest), lambda v: pc.is_in(pc.utf8_upper(v), value_set=value_set)
    )


def _contains_any(values: pa.Array, rows: np.ndarray, needles) -> np.ndarray:
    """Rows holding any of the literal ``needles``: one RE2 pass of their alternation, several times
    faster than one substring pass per needle."""
    if not needles:
        return np.zeros(len(values), bool)
    pattern = "|".join(re.escape(needle) for needle in needles)
    return _on_rows(values, rows, lambda v: pc.match_substring_regex(v, pattern))


def _digit_byte(buf: np.ndarray) -> np.ndarray:
    return (buf >= 0x30) & (buf <= 0x39)


def _maybe_other_digit(buf: np.ndarray) -> np.ndarray:
    # ASCII digits, or a lead byte outside the CJK block (other scripts' digits).
    return _digit_byte(buf) | ((buf >= 0xC2) & ((buf < 0xE4) | (buf > 0xE9)))


def check_names(names: pa.Array, is_person: np.ndarray, cfg) -> dict[str, np.ndarray]:
    """NAME_PLACEHOLDER, NAME_TOO_SHORT, NAME_FORMAT for present names.

    ``is_person``: the name is a person's (the rules for organisations differ).
    """
    present = _np(names.is_valid())
    length = pc.fill_null(pc.utf8_length(names), 0).to_numpy()
    placeholder = _placeholder(names, present, length, cfg["placeholders"])
    placeholder |= _contains_any(names, present & is_person, cfg.get("person_placeholder_substrings", ()))
    placeholder |= _contains_any(names, present & ~is_person, cfg.get("organization_placeholder_substrings", ()))

    min_chars = np.where(is_person, cfg["person_min_chars"], cfg["organization_min_chars"])
    too_short = present & ~placeholder & (length < min_chars)

    separators = cfg.get("separators", "·.-")
    sep_bytes = {c.encode()[0] for c in separators}
    sep = "[" + re.escape(separators) + "]"
    maybe_sep = rows_with_bytes(names, lambda buf: np.isin(buf, list(sep_bytes)))
    bad_separators = _on_rows(names, maybe_sep, lambda v: pc.match_substring_regex(v, f"^{sep}|{sep}$|{sep}{{2,}}"))
    maybe_digit = is_person & rows_with_bytes(names, _maybe_other_digit)
    digits = _on_rows(names, maybe_digit, lambda v: pc.match_substring_regex(v, r"\p{Nd}"))
    too_long = length > cfg["max_chars"]
    fmt = present & ~placeholder & (bad_separators | digits | too_long)
    return {"NAME_PLACEHOLDER": placeholder, "NAME_TOO_SHORT": too_short, "NAME_FORMAT": fmt}


def _maybe_not_han(buf: np.ndarray) -> np.ndarray:
    # ASCII letters, digits and the space, or a lead byte outside the CJK block (Latin-1 and Latin
    # Extended letters, other scripts' digits; the middle dot too, which the regex then lets pass).
    ascii_alnum = ((buf | 0x20) - 0x61 < 26) | _digit_byte(buf) | (buf == 0x20)
    return ascii_alnum | ((buf >= 0xC2) & ((buf < 0xE4) | (buf > 0xE9)))


def name_charset_review(names: pa.Array, rows: np.ndarray) -> np.ndarray:
    """NAME_CHARSET_REVIEW: on the selected rows (a person's name on a mainland document), a name with
    Latin letters, digits or a space inside (docs/policy.md "Names"). A review flag, not a failure."""
    maybe = rows & _np(names.is_valid()) & rows_with_bytes(names, _maybe_not_han)
    return _on_rows(names, maybe, lambda v: pc.match_substring_regex(v, r"[\p{Latin}\p{Nd} ]"))


def _cjk_lead(buf: np.ndarray) -> np.ndarray:
    # Lead bytes of U+4000-U+9FFF: CJK unified ideographs (and the 64 Yijing
    # hexagram symbols at U+4DC0, which no address is made of).
    return (buf >= 0xE4) & (buf <= 0xE9)


def _other_han_lead(buf: np.ndarray) -> np.ndarray:
    # Lead bytes of the other blocks that hold Han characters (extension A at
    # U+3400, compatibility ideographs at U+F900, the supplementary planes).
    return (buf == 0xE3) | (buf == 0xEF) | (buf >= 0xF0)


def check_addresses(addresses: pa.Array, cfg) -> dict[str, np.ndarray]:
    """ADDRESS_PLACEHOLDER, ADDRESS_TOO_SHORT, ADDRESS_NOT_SPECIFIC for present addresses."""
    present = _np(addresses.is_valid())
    length = pc.fill_null(pc.utf8_length(addresses), 0).to_numpy()
    placeholder = _placeholder(addresses, present, length, cfg["placeholders"])
    too_short = present & ~placeholder & (length < cfg["min_chars"])

    checked = present & ~placeholder
    has_han = checked & rows_with_bytes(addresses, _cjk_lead)
    maybe_han = checked & ~has_han & rows_with_bytes(addresses, _other_han_lead)
    has_han |= _on_rows(addresses, maybe_han, lambda v: pc.match_substring_regex(v, r"\p{Han}"))
    # All keywords in one pass (an RE2 alternation of the literals).
    has_keyword = _contains_any(addresses, checked & has_han, cfg["keywords"])
    latin = checked & ~has_han
    has_digit = _on_rows(addresses, latin, lambda v: pc.match_substring_regex(v, r"\d"))
    latin_vague = latin & ((length < cfg["latin_min_chars"]) | ~has_digit)
    not_specific = (checked & has_han & ~has_keyword) | latin_vague
    return {
        "ADDRESS_PLACEHOLDER": placeholder,
        "ADDRESS_TOO_SHORT": too_short,
        "ADDRESS_NOT_SPECIFIC": not_specific,
    }
