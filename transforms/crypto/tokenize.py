"""Join tokens and display masks of identity values, over Arrow arrays.

**Tokens.** A token is HMAC-SHA256 of the *normalised* value (the scan's
normalisation: ``transforms.scan.normalize``) under a subkey of a join-key
version, derived with HKDF per field kind, so the three kinds never share a
token::

    subkey(kind) = HKDF-SHA256(join key jN, info="subscriber-backfill/token/1/" + kind)
    token        = "jN:" + base64url(HMAC-SHA256(subkey(kind), utf8(normalised value))[:18])

18 bytes (144 bits) give 24 base64url characters without padding, e.g.
``j1:Vb3y0Yq...`` (27 characters). Null (absent) values stay null. Handler
document numbers use the ``doc_number`` kind, so one number has one token
wherever it appears; handler names use ``name``. A token is a PRF output
(Tink's "deterministic redaction of PII"): it cannot be reversed, only
re-computed from the value, so re-tokenizing after ``keys rotate --join-key``
needs the originals from the vault.

**Masks** (of the normalised value; L = its length in characters; the stars
are a fixed run, so a mask does not tell the length; null stays null):

======================  ===========================================  ==============
kind                    rule                                         example
======================  ===========================================  ==============
name                    L >= 2: first character + ``**``             张三 -> 张**
                        L = 1: ``**``                                张 -> **
doc_number              L >= 10: first 3 + ``****`` + last 2          110****2X
                        4 <= L <= 9: first 1 + ``****`` + last 1      E****8
                        2 <= L <= 3: first 1 + ``****``              AB -> A****
                        L = 1: ``****``
address                 L >= 12: first 6 + ``****``                  北京市海淀区****
                        4 <= L <= 11: first 2 + ``****``             北京****
                        L <= 3: ``****``
======================  ===========================================  ==============

So a mask never shows more than half of a value's characters.

Speed: values are dictionary-encoded first, so a value repeated in a batch
(common names, one document on many lines) is MACed once (unless a sample of
a large batch shows no repeats: then the encoding is skipped); each MAC copies a
pre-keyed HMAC object (no key schedule per value); the digests are cut and
base64-encoded in one numpy pass. ``python -m bench.crypto`` measures it.
"""

from __future__ import annotations

import base64

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.crypto.keyset import Keyset
from transforms.scan.normalize import as_strings, clean_text, normalize_doc_number, normalize_name

__all__ = ["Tokenizer", "FIELD_KINDS", "TOKEN_BYTES", "normalize", "masks"]

FIELD_KINDS = ("doc_number", "name", "address")
TOKEN_BYTES = 18  # a multiple of 3: base64 without padding, no per-value encode
_NORMALIZERS = {"doc_number": normalize_doc_number, "name": normalize_name, "address": clean_text}
_DOMAIN = b"subscriber-backfill/token/1/"
_NAME_STARS, _STARS = "**", "****"
# (minimum length, characters kept at the head, characters kept at the tail)
_MASK_TIERS = {
    "name": ([(2, 1, 0)], _NAME_STARS),
    "doc_number": ([(10, 3, 2), (4, 1, 1), (2, 1, 0)], _STARS),
    "address": ([(12, 6, 0), (4, 2, 0)], _STARS),
}


def _kind(field_kind: str) -> str:
    if field_kind not in _NORMALIZERS:
        raise ValueError(f"unknown field kind {field_kind!r} (one of {', '.join(FIELD_KINDS)})")
    return field_kind


def normalize(field_kind: str, values) -> pa.Array:
    """The normalised values that tokens and masks are made of."""
    return _NORMALIZERS[_kind(field_kind)](as_strings(values))


def _mostly_distinct(values: pa.Array, sample: int = 2_048) -> bool:
    """True when a sample of a large batch has (almost) no repeated value."""
    if len(values) < 4 * sample:
        return False
    head = values.slice(0, sample)
    present = sample - head.null_count
    return present > 0 and pc.count_distinct(head).as_py() >= 0.95 * present


class Tokenizer:
    """Keyed, deterministic, domain-separated tokens under one join-key version.

    Args:
        keyset: a loaded :class:`~transforms.crypto.keyset.Keyset`.
        version: the join-key version; default the keyset's primary.

    Like the keyset, a Tokenizer cannot be pickled: build it in ``setup()``.
    """

    def __init__(self, keyset: Keyset, version: str | None = None):
        self._keyset = keyset
        self._version = version or keyset.primary_join_version
        self._macs: dict[tuple[str, str], object] = {}

    def __reduce__(self):
        raise TypeError("a Tokenizer cannot be pickled: build it from the keyset path in DoFn.setup()")

    def __repr__(self) -> str:
        return f"<Tokenizer {self._keyset.keyset_id} {self._version}>"

    @property
    def version(self) -> str:
        return self._version

    def tokens(self, field_kind: str, values, *, normalized: bool = False) -> pa.Array:
        """Tokens of ``values`` under this tokenizer's join-key version.

        Args:
            field_kind: ``doc_number``, ``name`` or ``address``.
            values: strings (Arrow array, chunked array or list); nulls stay null.
            normalized: true when ``values`` already went through :func:`normalize`.

        Returns:
            A string array of tokens, ``jN:`` + 24 base64url characters.
        """
        return self.tokens_with_version(field_kind, values, self._version, normalized=normalized)

    def tokens_with_version(self, field_kind: str, values, version: str, *, normalized: bool = False) -> pa.Array:
        """As :meth:`tokens`, under another (enabled) join-key version: re-tokenizing."""
        values = as_strings(values) if normalized else normalize(field_kind, values)
        if len(values) == 0:
            return pa.array([], pa.string())
        if _mostly_distinct(values):  # hashing every value to find no repeats costs more than it saves
            tokens = self._mac_all(_kind(field_kind), version, pc.fill_null(values, ""))
            return pc.if_else(pc.is_valid(values), tokens, pa.scalar(None, pa.string()))
        encoded = pc.dictionary_encode(values)
        dictionary = self._mac_all(_kind(field_kind), version, encoded.dictionary)
        return pc.take(dictionary, encoded.indices)

    def token(self, field_kind: str, value: str | None) -> str | None:
        """The token of one value (a convenience over :meth:`tokens`)."""
        return self.tokens(field_kind, pa.array([value], pa.string()))[0].as_py()

    def digests(self, domain: str, values: pa.Array, version: str | None = None) -> pa.Array:
        """Keyed digests of arbitrary strings under a domain of their own (not a field kind): ``jN:`` + 24
        base64url characters, never comparable with a token. ``version``: an enabled join-key version
        (default this tokenizer's), so a digest kept from before a rotation can be compared again."""
        values = as_strings(values)
        if len(values) == 0:
            return pa.array([], pa.string())
        out = self._mac_all(f"digest/{domain}", version or self._version, pc.fill_null(values, ""))
        return pc.if_else(pc.is_valid(values), out, pa.scalar(None, pa.string()))

    def _mac(self, kind: str, version: str):
        key = (kind, version)
        if key not in self._macs:
            self._macs[key] = self._keyset.join_mac(version, _DOMAIN + kind.encode())
        return self._macs[key]

    def _mac_all(self, kind: str, version: str, unique: pa.Array) -> pa.Array:
        """One MAC per distinct value; digests cut and encoded in one pass."""
        n = len(unique)
        if n == 0:
            return pa.array([], pa.string())
        copy = self._mac(kind, version).copy
        digests = []
        append = digests.append
        for raw in unique.cast(pa.binary()).to_pylist():
            mac = copy()
            mac.update(raw)
            append(mac.finalize())
        cut = np.frombuffer(b"".join(digests), np.uint8).reshape(n, 32)[:, :TOKEN_BYTES]
        text = np.frombuffer(base64.urlsafe_b64encode(cut.tobytes()), np.uint8).reshape(n, -1)
        prefix = np.frombuffer(f"{version}:".encode("ascii"), np.uint8)
        rows = np.empty((n, len(prefix) + text.shape[1]), np.uint8)
        rows[:, : len(prefix)] = prefix
        rows[:, len(prefix) :] = text
        width = rows.shape[1]
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(rows.tobytes()))


def _keep(values: pa.Array, head: int, tail: int, stars: str) -> pa.Array:
    parts = [pc.utf8_slice_codeunits(values, 0, head), pa.scalar(stars)]
    if tail:
        parts.append(pc.utf8_slice_codeunits(values, -tail))
    return pc.binary_join_element_wise(*parts, "")


def masks(field_kind: str, values, *, normalized: bool = False) -> pa.Array:
    """Display masks of ``values`` by the rules in the module docstring (vectorised)."""
    tiers, stars = _MASK_TIERS[_kind(field_kind)]
    values = as_strings(values) if normalized else normalize(field_kind, values)
    if len(values) == 0:
        return pa.array([], pa.string())
    length = pc.fill_null(pc.utf8_length(values), 0)
    conditions = [pc.greater_equal(length, minimum) for minimum, _, _ in tiers]
    choices = [_keep(values, head, tail, stars) for _, head, tail in tiers]
    out = pc.case_when(
        pc.make_struct(*conditions, field_names=[str(i) for i in range(len(tiers))]), *choices, pa.scalar(stars)
    )
    return pc.if_else(pc.is_null(values), pa.scalar(None, pa.string()), out)
