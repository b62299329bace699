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
    "text_units",
    "segment_count",
    "segments_of",
    "sign",
    "mask_numbers",
    "Template",
    "TemplateError",
    "render_rows",
    "sms_lengths_rows",
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
# Longest value a per-line placeholder can take, for the "does it fit" check. ``{region}`` renders the
# region's name (GB/T 2260): the longest full name of the default policy's table (27 UCS-2 units; notify
# checks again with the longest name of the policy it runs with).
LONGEST_REGION = "新疆维吾尔自治区巴音郭楞蒙古自治州库尔勒经济技术开发区"
MASK_STARS = "****"  # a fixed run: mask_numbers
WORST_CASE = {"msisdn_masked": "144****1234", "region": LONGEST_REGION, "count": "999999999"}
# Values that are plain GSM-7 ASCII (numbers, masks, codes): as long in septets as in UCS-2 units.
_PLAIN = r"^[0-9A-Za-z*#+\-.,:/() ]*$"


class TemplateError(ValueError):
    """A template that cannot be used; ``str()`` is one line."""


def text_units(text: str) -> tuple[bool, int, int]:
    """(all GSM-7, GSM-7 septets, UCS-2 code units) of a piece of text. Both lengths add up over the
    pieces of a message, so a message is measured piece by piece (:meth:`Template.sms_lengths`)."""
    gsm7 = all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)
    septets = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text) if gsm7 else 0
    return gsm7, septets, len(text.encode("utf-16-le")) // 2


def sms_units(text: str) -> tuple[str, int]:
    """(encoding, length in that encoding's units) of one message."""
    gsm7, septets, ucs2 = text_units(text)
    return ("GSM7", septets) if gsm7 else ("UCS2", ucs2)


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
    """First 3 and last 4 digits around a fixed ``****``: ``13800138000`` -> ``138****8000``, the fixed line
    ``075512345678`` -> ``075****5678`` (docs/keys-and-vault.md "Masks"). The run of stars is always 4, so a
    mask does not tell a number's length (a fixed line's 10 to 12 digits look alike). Numbers shorter than 8
    keep only their last 2 digits (``****45``), so a mask never shows a whole number. Vectorised; nulls stay null.
    """
    if isinstance(numbers, pa.ChunkedArray):
        numbers = numbers.combine_chunks()
    n = pc.utf8_length(numbers)
    long = pc.fill_null(pc.greater_equal(n, 8), False)
    masked_long = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(numbers, 0, 3), MASK_STARS, pc.utf8_slice_codeunits(numbers, -4), ""
    )
    masked_short = pc.binary_join_element_wise(MASK_STARS, pc.utf8_slice_codeunits(numbers, -2), "")
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

    def worst_case(self, region: str | None = None) -> str:
        """The longest message: the longest number, count and region name (``region``, if given)."""
        return self.render_one({**WORST_CASE, "region": region or WORST_CASE["region"]})

    def render(self, columns: dict[str, pa.Array], n: int) -> pa.Array:
        """One message per row; ``columns`` holds each per-line placeholder."""
        if not self.variables:
            return pa.repeat(pa.scalar(self.render_one({}), pa.string()), n)
        args = [pa.scalar(v, pa.string()) if k == "lit" else _text(columns[v]) for k, v in self.parts]
        return pc.binary_join_element_wise(*args, pa.scalar("", pa.string()))

    def sms_lengths(self, columns: dict[str, pa.Array], n: int) -> tuple[np.ndarray, np.ndarray]:
        """(units, gsm7) of each rendered message, as :func:`sms_units` measures the whole text.

        GSM-7 septets and UCS-2 units add up over the pieces of a message, and
        a message is GSM-7 only when every piece is: the literals are measured
        once, each placeholder column by :func:`_column_units` (plain ASCII
        values from their length, the others, such as region names, once per
        distinct value), and the sums give each message's encoding and length.
        """
        gsm7_lit, septets_lit, ucs2_lit = text_units("".join(v for k, v in self.parts if k == "lit"))
        gsm7 = np.full(n, gsm7_lit)
        septets = np.full(n, septets_lit, np.int64)
        ucs2 = np.full(n, ucs2_lit, np.int64)
        for name in self.variables:
            col_gsm7, col_septets, col_ucs2 = _column_units(columns[name])
            gsm7 &= col_gsm7
            septets += col_septets
            ucs2 += col_ucs2
        return np.where(gsm7, septets, ucs2), gsm7


def render_rows(templates, which: np.ndarray | None, columns: dict[str, pa.Array], n: int) -> pa.Array:
    """One message per row, row i rendered with ``templates[which[i]]`` (the first template when ``which`` is
    None), as :meth:`Template.render` renders it. The templates' literals and the placeholder columns are
    gathered into one array, and one ``take`` in row order (each row's pieces, padded with empty text) lays
    every message's pieces end to end: no per-template grouping, no per-row Python."""
    if n == 0:
        return pa.array([], pa.string())
    which = np.zeros(n, np.int64) if which is None else np.asarray(which, np.int64)
    names = sorted({name for t in templates for name in t.variables})
    pieces = [pa.array([""] + [v for t in templates for k, v in t.parts if k == "lit"], pa.string())]
    base, start = {}, len(pieces[0])
    for name in names:
        pieces.append(_text(columns[name]))
        base[name], start = start, start + n
    width = max([len(t.parts) for t in templates] + [1])
    index = np.zeros((n, width), np.int64)  # 0: the empty text that pads shorter templates
    rows, literal = np.arange(n, dtype=np.int64), 1
    for i, template in enumerate(templates):
        mine = which == i
        for j, (kind, value) in enumerate(template.parts):
            if kind == "lit":
                index[mine, j], literal = literal, literal + 1
            else:
                index[mine, j] = base[value] + rows[mine]
    taken = pa.concat_arrays(pieces).take(pa.array(index.reshape(-1)))
    offsets = np.frombuffer(taken.buffers()[1], np.int32)[taken.offset : taken.offset + n * width + 1 : width]
    data = taken.buffers()[2] or pa.py_buffer(b"")
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets.tobytes()), data])


def sms_lengths_rows(templates, which: np.ndarray | None, columns: dict[str, pa.Array], n: int):
    """:meth:`Template.sms_lengths` of each row's message, row i with ``templates[which[i]]``; each placeholder
    column is measured once for every template."""
    which = np.zeros(n, np.int64) if which is None else np.asarray(which, np.int64)
    measured = {name: _column_units(columns[name]) for name in {v for t in templates for v in t.variables}}
    units, gsm7 = np.zeros(n, np.int64), np.zeros(n, bool)
    for i, template in enumerate(templates):
        lit_gsm7, lit_septets, lit_ucs2 = text_units("".join(v for k, v in template.parts if k == "lit"))
        g, septets, ucs2 = np.full(n, lit_gsm7), np.full(n, lit_septets, np.int64), np.full(n, lit_ucs2, np.int64)
        for name in template.variables:
            col_gsm7, col_septets, col_ucs2 = measured[name]
            g, septets, ucs2 = g & col_gsm7, septets + col_septets, ucs2 + col_ucs2
        mine = which == i
        units[mine], gsm7[mine] = np.where(g, septets, ucs2)[mine], g[mine]
    return units, gsm7


def _column_units(values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`text_units` of each value of a column (nulls as empty text), vectorised: plain GSM-7 ASCII
    values (numbers, masks, codes) count their length; the others are measured once per distinct value."""
    col = _text(values)
    length = pc.utf8_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    plain = pc.match_substring_regex(col, _PLAIN).to_numpy(zero_copy_only=False)
    gsm7, septets, ucs2 = np.ones(len(col), bool), length.copy(), length.copy()
    odd = np.flatnonzero(~plain)
    if len(odd):
        others = col.take(pa.array(odd))
        distinct = pc.unique(others)
        measured = np.array([text_units(v) for v in distinct.to_pylist()], np.int64).reshape(-1, 3)
        at = pc.index_in(others, value_set=distinct).to_numpy(zero_copy_only=False)
        gsm7[odd], septets[odd], ucs2[odd] = measured[at, 0].astype(bool), measured[at, 1], measured[at, 2]
    return gsm7, septets, ucs2


def _text(values) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = pc.cast(values, pa.string())
    return pc.fill_null(values, "")
