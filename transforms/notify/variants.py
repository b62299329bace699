"""Campaign A/B variants: template variants with weights, and which line gets which.

Beam-free. A campaign names template variants under ``variants`` (each
overrides some of the ``sms`` and ``call`` texts; an empty one sends the
campaign's ``templates``), and a wave splits its lines between some of them
with weights (docs/notify.md, "A/B variants"):

    variants:
      control: {}
      deadline-first:
        sms: {zh-CN: "..."}
    waves:
      - {wave: 1, start: 2026-12-01, channels: [sms, call, announcement],
         variants: [{name: control, weight: 1}, {name: deadline-first, weight: 1}]}

Which variant a line gets depends only on the campaign id and the line id, so
it is the same in every run, every wave with the same weights, every worker
and every batch split. Each line id gets a 128-bit tag from the keyed hash of
:mod:`transforms.scan.keyed_hash` (AES CBC-MAC, vectorised over the batch)
under a key derived from the campaign id (public: the split needs to be
stable and even, not secret); the tag's first 53 bits, read as a fraction of
2**53, fall in one variant's share of the cumulative weights. Announcements
go to a region, not a line: they have no variant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.notify.campaign_checks import _fail
from transforms.scan.keyed_hash import TAG_BYTES, keyed_hash

__all__ = [
    "Variant",
    "variant_key",
    "thresholds",
    "assign_variants",
    "variant_names",
    "compile_variants",
    "wave_variants",
]

_SEP = "\x1f"
_BITS = 53  # a double holds them exactly: shares are computed as fractions of 2**53
LINE_CHANNELS = ("sms", "call")


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    weight: float  # positive, as written (1, 2.5 ...)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight}


def variant_key(campaign_id: str) -> bytes:
    """The 16-byte hash key of a campaign's split (derived from its id: the same in every run)."""
    return hashlib.sha256(f"notify-variant{_SEP}{campaign_id}".encode()).digest()[:16]


def thresholds(weights) -> np.ndarray:
    """The first draw (of 2**53) of each variant after the first: cumulative weight shares."""
    w = np.asarray(weights, np.float64)
    shares = np.cumsum(w)[:-1] / w.sum()
    return np.floor(shares * float(1 << _BITS)).astype(np.uint64)


def _draws(line_ids, campaign_id: str) -> np.ndarray:
    """A uniform 53-bit draw per line id (nulls as empty ids): the first bits of its keyed-hash tag."""
    if isinstance(line_ids, pa.ChunkedArray):
        line_ids = line_ids.combine_chunks()
    tags = keyed_hash(pc.fill_null(line_ids.cast(pa.string()), ""), variant_key(campaign_id))
    n = len(tags)
    raw = np.frombuffer(tags.buffers()[1], np.uint8)[tags.offset * TAG_BYTES : (tags.offset + n) * TAG_BYTES]
    first = np.ascontiguousarray(raw.reshape(n, TAG_BYTES)[:, :8]).view(">u8").ravel().astype(np.uint64)
    return first >> np.uint64(64 - _BITS)


def assign_variants(line_ids, campaign_id: str, variants: tuple[Variant, ...]) -> np.ndarray:
    """The index (into ``variants``) of each line's variant: vectorised, stable across runs and batches."""
    if not variants:
        raise ValueError("no variants to assign")
    return np.searchsorted(thresholds([v.weight for v in variants]), _draws(line_ids, campaign_id), side="right")


def variant_names(which: np.ndarray | None, variants: tuple[Variant, ...], n: int) -> pa.Array:
    """The ``variant`` column: each row's variant name, or nulls when the wave has none."""
    if which is None:
        return pa.nulls(n, pa.string())
    return pa.array([v.name for v in variants], pa.string()).take(pa.array(which, pa.int32()))


def compile_variants(raw: dict[str, Any], source: str, locale: str) -> dict[str, dict[str, dict[str, str]]]:
    """The ``variants`` definitions (name -> channel -> locale -> text), checked: sms and call only, each
    channel with a text in the campaign's locale. Wording and fit are checked with the other templates."""
    defined = raw.get("variants") or {}
    for name, channels in defined.items():
        if "announcement" in channels:
            raise _fail(
                source,
                f"variants.{name}.announcement",
                "an announcement goes to a region, not a line: it has no variants",
            )
        for channel, texts in channels.items():
            if locale not in texts:
                raise _fail(source, f"variants.{name}.{channel}", f"no text for the campaign's locale {locale!r}")
    return {name: {c: dict(t) for c, t in channels.items()} for name, channels in defined.items()}


def wave_variants(raw_wave: dict[str, Any], i: int, defined: dict, source: str) -> tuple[Variant, ...]:
    """The variants of ``waves[i]``, checked: names unique and defined, weights positive and finite, and a
    line channel (sms or call) in the wave for them to split."""
    entries = raw_wave.get("variants") or []
    if entries and not set(raw_wave["channels"]) & set(LINE_CHANNELS):
        raise _fail(
            source,
            f"waves[{i}].variants",
            f"wave {raw_wave['wave']} sends no sms or call: variants split lines, and announcements go to regions",
        )
    out: list[Variant] = []
    for j, entry in enumerate(entries):
        name, weight, where = entry["name"], entry["weight"], f"waves[{i}].variants[{j}]"
        if any(v.name == name for v in out):
            raise _fail(source, f"{where}.name", f"variant {name!r} is named twice in wave {raw_wave['wave']}")
        if name not in defined:
            known = ", ".join(sorted(defined)) or "none"
            raise _fail(source, f"{where}.name", f"{name!r} is not defined under variants (defined: {known})")
        if not math.isfinite(weight) or weight <= 0:
            raise _fail(source, f"{where}.weight", f"{weight!r} must be a positive number")
        out.append(Variant(name, weight))
    return tuple(out)
