"""The wrapped keyset: the keyset document sealed under a data key that a key-encryption key wraps.

Envelope encryption: every save draws a fresh 32-byte data key (DEK), seals the whole keyset document
(``subscriber-backfill/keyset/1``, key material included) with AES-256-GCM under it, and has the
key-encryption key (KEK, ``transforms/crypto/kek.py``) wrap only the DEK::

    {"format": "subscriber-backfill/wrapped-keyset/1", "keyset_id": "ks_9f2c...",
     "kek": "aws-kms://arn:aws:kms:cn-north-1:123456789012:key/...",
     "wrapped_dek": "<base64>", "nonce": "<base64, 12 bytes>", "sealed": "<base64>"}

* the KEK wraps the DEK bound to ``{"format": "subscriber-backfill/wrapped-keyset/1", "keyset_id": ...}``
  (the AWS KMS encryption context, Cloud KMS's additional authenticated data, the local KEK's associated
  data): a wrapped DEK moved to another keyset does not unwrap;
* the seal's associated data is the canonical JSON of ``format``, ``keyset_id``, ``kek`` and ``wrapped_dek``:
  any edit to the file (another KEK named, another keyset id) fails authentication;
* nothing but the keyset id and the KEK's name is readable without the KEK: not even the key versions.

Loading costs one KEK call. A process keeps the keyset documents it opened, keyed by the keyset's location
and the SHA-256 of the wrapped bytes (at most ``_CACHED`` of them), so every DoFn of a Beam worker process
that loads the same keyset in ``setup()`` unwraps it once; a changed keyset (other bytes) is unwrapped again,
and a save in this process forgets what was kept for that location. Revoking the KEK (disabling the KMS key,
removing the IAM grant) takes effect for processes that start afterwards.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import json
import secrets
import threading

from transforms.crypto.kek import Kek, kek_for
from transforms.crypto.keyset_support import KeysetError

__all__ = ["WRAPPED_FORMAT", "is_wrapped", "seal", "open_sealed", "forget", "named_kek"]

WRAPPED_FORMAT = "subscriber-backfill/wrapped-keyset/1"
_FIELDS = ("format", "keyset_id", "kek", "wrapped_dek")
_CACHED = 8
_opened: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
_lock = threading.Lock()


def is_wrapped(doc) -> bool:
    return isinstance(doc, dict) and doc.get("format") == WRAPPED_FORMAT


def named_kek(doc) -> str | None:
    """The KEK a keyset document names: a wrapped keyset's ``kek`` (None for a keyset in clear)."""
    return doc.get("kek") if is_wrapped(doc) else None


def _context(keyset_id: str) -> dict[str, str]:
    return {"format": WRAPPED_FORMAT, "keyset_id": keyset_id}


def _aad(outer: dict) -> bytes:
    return json.dumps({k: outer[k] for k in _FIELDS}, sort_keys=True, separators=(",", ":")).encode("utf-8")


def seal(inner: bytes, keyset_id: str, kek: Kek) -> bytes:
    """The wrapped keyset's bytes: ``inner`` (the keyset document) sealed under a fresh DEK that ``kek`` wraps."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    dek, nonce = secrets.token_bytes(32), secrets.token_bytes(12)
    outer = {
        "format": WRAPPED_FORMAT,
        "keyset_id": keyset_id,
        "kek": kek.uri,
        "wrapped_dek": base64.b64encode(kek.wrap(dek, _context(keyset_id))).decode("ascii"),
    }
    sealed = AESGCM(dek).encrypt(nonce, inner, _aad(outer))
    outer["nonce"] = base64.b64encode(nonce).decode("ascii")
    outer["sealed"] = base64.b64encode(sealed).decode("ascii")
    return json.dumps(outer, indent=2).encode("utf-8") + b"\n"


def open_sealed(path: str, data: bytes, outer: dict, kek: Kek | None = None) -> tuple[bytes, Kek]:
    """``(inner document bytes, the KEK)`` of a wrapped keyset read from ``path`` as ``data``.

    ``kek``: the KEK to use (a test's client); it must be the one the keyset names."""
    named = outer.get("kek")
    if not isinstance(named, str) or not isinstance(outer.get("keyset_id"), str):
        raise KeysetError(f"keyset {path} is a malformed wrapped keyset")
    if kek is None:
        kek = kek_for(named)
    elif kek.uri != named:
        raise KeysetError(f"keyset {path} is wrapped by {named}, not by {kek.uri}")
    key = (path, hashlib.sha256(data).hexdigest())
    with _lock:
        if key in _opened:
            _opened.move_to_end(key)
            return _opened[key], kek
    inner = _unseal(path, outer, kek)
    with _lock:
        _opened[key] = inner
        while len(_opened) > _CACHED:
            _opened.popitem(last=False)
    return inner, kek


def _unseal(path: str, outer: dict, kek: Kek) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        wrapped = base64.b64decode(outer["wrapped_dek"], validate=True)
        nonce = base64.b64decode(outer["nonce"], validate=True)
        sealed = base64.b64decode(outer["sealed"], validate=True)
        aad = _aad(outer)
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise KeysetError(f"keyset {path} is a malformed wrapped keyset") from None
    dek = kek.unwrap(wrapped, _context(outer["keyset_id"]))  # the one KEK call
    try:
        return AESGCM(dek).decrypt(nonce, sealed, aad)
    except (InvalidTag, ValueError):
        raise KeysetError(f"keyset {path} failed authentication (altered, or not sealed by its KEK)") from None


def forget(path: str) -> None:
    """Drop what this process kept of the keyset at ``path`` (after it is rewritten)."""
    with _lock:
        for key in [k for k in _opened if k[0] == path]:
            del _opened[key]


def forget_all() -> None:
    """Drop everything kept (a long-lived process after a KEK was revoked; tests)."""
    with _lock:
        _opened.clear()
