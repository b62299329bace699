"""Checks of names and addresses (DESIGN.md "Names", "Addresses"; domain.md 5, 6).

Vectorised over normalised Arrow string arrays: each function returns one
boolean numpy mask per reason code. A placeholder is exclusive: a value that
is junk is reported as junk, not also as too short or malformed.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["check_names", "check_addresses"]


def _np(mask) -> np.ndarray:
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def _contains_any(values: pa.Array, needles) -> np.ndarray:
    out = np.zeros(len(values), bool)
    for needle in needles:
        out |= _np(pc.match_substring(values, needle))
    return out


def check_names(names: pa.Array, is_person: np.ndarray, cfg) -> dict[str, np.ndarray]:
    """NAME_PLACEHOLDER, NAME_TOO_SHORT, NAME_FORMAT for present names.

    ``is_person``: the name is a person's (the rules for organisations differ).
    """
    present = _np(names.is_valid())
    upper = pc.utf8_upper(names)
    placeholders = pa.array([p.upper() for p in cfg["placeholders"]], pa.string())
    placeholder = _np(pc.is_in(upper, value_set=placeholders))
    placeholder |= is_person & _contains_any(names, cfg.get("person_placeholder_substrings", ()))
    placeholder |= ~is_person & _contains_any(names, cfg.get("organization_placeholder_substrings", ()))
    placeholder &= present

    length = pc.fill_null(pc.utf8_length(names), 0).to_numpy()
    min_chars = np.where(is_person, cfg["person_min_chars"], cfg["organization_min_chars"])
    too_short = present & ~placeholder & (length < min_chars)

    sep = "[" + re.escape(cfg.get("separators", "·.-")) + "]"
    bad_separators = _np(pc.match_substring_regex(names, f"^{sep}|{sep}$|{sep}{{2,}}"))
    digits = is_person & _np(pc.match_substring_regex(names, r"\p{Nd}"))
    too_long = length > cfg["max_chars"]
    fmt = present & ~placeholder & (bad_separators | digits | too_long)
    return {"NAME_PLACEHOLDER": placeholder, "NAME_TOO_SHORT": too_short, "NAME_FORMAT": fmt}


def check_addresses(addresses: pa.Array, cfg) -> dict[str, np.ndarray]:
    """ADDRESS_PLACEHOLDER, ADDRESS_TOO_SHORT, ADDRESS_NOT_SPECIFIC for present addresses."""
    present = _np(addresses.is_valid())
    upper = pc.utf8_upper(addresses)
    placeholders = pa.array([p.upper() for p in cfg["placeholders"]], pa.string())
    placeholder = present & _np(pc.is_in(upper, value_set=placeholders))
    length = pc.fill_null(pc.utf8_length(addresses), 0).to_numpy()
    too_short = present & ~placeholder & (length < cfg["min_chars"])

    has_han = _np(pc.match_substring_regex(addresses, r"\p{Han}"))
    keywords = "|".join(re.escape(k) for k in cfg["keywords"])
    has_keyword = _np(pc.match_substring_regex(addresses, f"(?:{keywords})"))
    has_digit = _np(pc.match_substring_regex(addresses, r"\d"))
    latin_vague = ~has_han & ((length < cfg["latin_min_chars"]) | ~has_digit)
    not_specific = present & ~placeholder & ((has_han & ~has_keyword) | latin_vague)
    return {
        "ADDRESS_PLACEHOLDER": placeholder,
        "ADDRESS_TOO_SHORT": too_short,
        "ADDRESS_NOT_SPECIFIC": not_specific,
    }
