"""Message rendering for notices: templates, masks, SMS encodings and segments.

Pure Python over Arrow arrays, no Beam. A template is split once into literal
parts and placeholders (constants such as the deadline are folded into the
literals); rendering one message per line is unavoidable, but it is done for a
whole batch at once with ``pyarrow.compute.binary_join_element_wise`` over the
literal parts and the masked-number column, never in a Python loop.

SMS length rules (docs/regulation.md §4): a message is GSM-7 when every
character is in the GSM 03.38 default alphabet (extension characters count
two septets), else UCS-2 (UTF-16 code units). GSM-7 fits 160 septets in one
part and 153 per part beyond; UCS-2 70 and 67. The signature counts with its
【】, and 【】 are not GSM-7, so every signed SMS is UCS-2.

    >>> sms_units("【某某通信】您好")
    ('UCS2', 8)
    >>> segment_count(71, "UCS2")
    2
"""

from __future__ import annotations

import dataclasses
import math
import string

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "sms_units",
    "segment_count",
    "segments_of",
    "sign",
    "mask_numbers",
    "Template",
    "TemplateError",
    "PLACEHOLDERS",
]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")  # escape + char: two septets each
SINGLE = {"GSM7": 160, "UCS2": 70}
MULTI = {"GSM7": 153, "UCS2": 67}

# Placeholders each channel's template may use. Per-line values are columns
# (msisdn_masked, region, count); the others are constants of the campaign.
PLACEHOLDERS = {
    "sms": ("msisdn_masked", "deadline", "campaign_id", "wave", "region"),
    "call": ("msisdn_masked", "deadline", "campaign_id", "wave", "region"),
    "announcement": ("region", "count", "deadline", "campaign_id", "wave"),
}
# Longest value a per-line placeholder can take, for the "does it fit" check.
WORST_CASE = {"msisdn_masked": "144*******1234", "region": "999999", "count": "999999999"}


class TemplateError(ValueError):
    """A template that cannot be used; ``str()`` is one line."""


def sms_units(text: str) -> tuple[str, int]:
    """(encoding, length in that encoding's units) of one message."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        return "GSM7", sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
    return "UCS2", len(text.encode("utf-16-le")) // 2


def segment_count(units: int, encoding: str) -> int:
    """Parts of one message of ``units`` characters in ``encoding``."""
    if units <= SINGLE[encoding]:
        return 1
    return math.ceil(units / MULTI[encoding])


def segments_of(units: np.ndarray, gsm7: np.ndarray) -> np.ndarray:
    """Vectorised :func:`segment_count` (``gsm7``: bool per message)."""
    units = np.asarray(units, np.int64)
    single = np.where(gsm7, SINGLE["GSM7"], SINGLE["UCS2"])
    multi = np.where(gsm7, MULTI["GSM7"], MULTI["UCS2"])
    return np.where(units <= single, 1, -(-units // multi)).astype(np.int32)


def sign(signature: str | None) -> str:
    """The head of every SMS: ``【signature】`` (brackets counted), or nothing."""
    return f"【{signature}】" if signature else ""


def mask_numbers(numbers: pa.Array) -> pa.Array:
    """First 3 and last 4 digits, the middle as ``*``: ``13800138000`` -> ``138****8000``.

    Numbers shorter than 8 keep only their last 2 digits, so a mask never shows
    a whole number. Vectorised; nulls stay null.
    """
    if isinstance(numbers, pa.ChunkedArray):
        numbers = numbers.combine_chunks()
    n = pc.utf8_length(numbers)
    long = pc.fill_null(pc.greater_equal(n, 8), False)
    stars_long = pc.binary_repeat("*", pc.max_element_wise(pc.subtract(n, 7), 0))
    masked_long = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(numbers, 0, 3), stars_long, pc.utf8_slice_codeunits(numbers, -4), ""
    )
    stars_short = pc.binary_repeat("*", pc.max_element_wise(pc.subtract(n, 2), 0))
    masked_short = pc.binary_join_element_wise(stars_short, pc.utf8_slice_codeunits(numbers, -2), "")
    return pc.if_else(long, masked_long, masked_short)


@dataclasses.dataclass(frozen=True)
class Template:
    """A template split once: literal parts and per-line placeholders, alternating.

    ``parts`` holds ``("lit", text)`` and ``("var", name)``; constant
    placeholders are already substituted. ``head`` (the SMS signature) is the
    first literal.
    """

    channel: str
    locale: str
    parts: tuple[tuple[str, str], ...]

    @classmethod
    def compile(
        cls, text: str, channel: str, locale: str, constants: dict[str, str], head: str = "", where: str = "template"
    ) -> "Template":
        allowed = PLACEHOLDERS[channel]
        parts: list[tuple[str, str]] = [("lit", head)] if head else []
        try:
            pieces = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(f"{where}: {exc} (write {{{{ and }}}} for literal braces)") from None
        for literal, name, spec, conversion in pieces:
            if literal:
                parts.append(("lit", literal))
            if name is None:
                continue
            if name not in allowed:
                known = ", ".join("{" + p + "}" for p in allowed)
                raise TemplateError(f"{where}: unknown placeholder {{{name}}} (known: {known})")
            if spec or conversion:
                raise TemplateError(f"{where}: placeholder {{{name}}} takes no format or conversion")
            if name in constants:
                parts.append(("lit", str(constants[name])))
            else:
                parts.append(("var", name))
        merged: list[tuple[str, str]] = []
        for kind, value in parts:  # fold adjacent literals: fewer columns to join
            if kind == "lit" and merged and merged[-1][0] == "lit":
                merged[-1] = ("lit", merged[-1][1] + value)
            elif kind != "lit" or value:
                merged.append((kind, value))
        return cls(channel, locale, tuple(merged))

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(v for k, v in self.parts if k == "var")

    def render_one(self, values: dict[str, str]) -> str:
        return "".join(v if k == "lit" else str(values[v]) for k, v in self.parts)

    def worst_case(self) -> str:
        return self.render_one(WORST_CASE)

    def render(self, columns: dict[str, pa.Array], n: int) -> pa.Array:
        """One message per row; ``columns`` holds each per-line placeholder."""
        if not self.variables:
            return pa.repeat(pa.scalar(self.render_one({}), pa.string()), n)
        args = [pa.scalar(v, pa.string()) if k == "lit" else _text(columns[v]) for k, v in self.parts]
        return pc.binary_join_element_wise(*args, pa.scalar("", pa.string()))

    def sms_lengths(self, columns: dict[str, pa.Array], n: int, rendered: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(units, gsm7) per message, from the literal parts plus each column's length.

        The literals are measured once. Placeholder values are numbers and
        region codes (ASCII): their length in either encoding is their string
        length; rows where any value is not plain GSM-7 ASCII are measured one
        by one (rare).
        """
        lit = "".join(v for k, v in self.parts if k == "lit")
        lit_enc, lit_units = sms_units(lit)
        units = np.full(n, lit_units, np.int64)
        odd = np.zeros(n, bool)
        for name in self.variables:
            col = _text(columns[name])
            units += pc.fill_null(pc.utf8_length(col), 0).to_numpy(zero_copy_only=False)
            plain = pc.fill_null(pc.match_substring_regex(col, r"^[0-9A-Za-z*#+\-.,:/() ]*$"), True)
            odd |= ~plain.to_numpy(zero_copy_only=False)
        gsm7 = np.full(n, lit_enc == "GSM7")
        for i in np.flatnonzero(odd):  # slow path: measure the rendered text itself
            enc, units[i] = sms_units(rendered[int(i)].as_py())
            gsm7[i] = enc == "GSM7"
        return units, gsm7


def _text(values) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = pc.cast(values, pa.string())
    return pc.fill_null(values, "")
