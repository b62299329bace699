"""Envelope encryption of one blob: the one sealing scheme for files outside the vault's tables.

    envelope = Envelope.under_keyset(keyset, "landing")   # data keys wrapped by the primary vault key
    blob = envelope.seal(plain, name)                     # context binds the blob to its place
    plain = envelope.open(blob, name)                     # fails on another keyset, name or a flipped bit

Every seal draws a fresh AES-256-GCM data key and nonce; the data key is
wrapped by a key-encryption key: a vault key version of the keyset
(``under_keyset``), or a key that lives only in this process's memory
(``ephemeral``, for spill and temp files that must die with the process).
The associated data binds the purpose, the keyset, the caller's context
(a file name, a run id) and the key version, so a blob moved to another
place or purpose fails to open. Layout::

    MAGIC | 4-byte header length | header JSON (keyset_id, key_version, wrapped_dek, nonce) | ciphertext

The vault's per-line records use the same primitives (``transforms/crypto/vault.py``)
with a columnar layout; nothing else in the project encrypts.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Envelope", "EnvelopeError", "length_prefixed"]

MAGIC = b"SBENV1\n"
_NONCE = 12


class EnvelopeError(Exception):
    """A blob that cannot be opened; one line, never a value."""


def length_prefixed(*parts: str | bytes) -> bytes:
    """Unambiguous concatenation for associated data: each part as a 4-byte big-endian length, then its bytes."""
    out = []
    for part in parts:
        raw = part.encode("utf-8") if isinstance(part, str) else part
        out.append(len(raw).to_bytes(4, "big") + raw)
    return b"".join(out)


class Envelope:
    """Seal and open blobs under fresh data keys wrapped by one key-encryption key.

    Args:
      purpose: what the blobs are for ("landing", "spill"); part of the associated data.
      keyset_id: the keyset whose key wraps the data keys (recorded and checked on open).
      kek_for: key version -> AES-GCM key-encryption key.
      version: the key version new blobs are sealed under.
    """

    def __init__(self, purpose: str, keyset_id: str, kek_for: Callable[[str], AESGCM], version: str):
        self._head = length_prefixed("subscriber-backfill/envelope/1", purpose)
        self._keyset_id, self._kek_for, self._version = keyset_id, kek_for, version

    def __reduce__(self):
        raise TypeError("an Envelope cannot be pickled: build it where it is used")

    @classmethod
    def under_keyset(cls, keyset, purpose: str) -> "Envelope":
        """Data keys wrapped by the keyset's primary vault key (opened by any enabled version)."""
        return cls(purpose, keyset.keyset_id, keyset.vault_kek, keyset.primary_vault_version)

    @classmethod
    def ephemeral(cls, purpose: str) -> "Envelope":
        """Data keys wrapped by a random key held only in this process: what it seals is unreadable once
        the process is gone (a crash leaves ciphertext, never plaintext)."""
        kek = AESGCM(AESGCM.generate_key(256))
        run = os.urandom(8).hex()

        def kek_for(version: str) -> AESGCM:
            if version != "p1":
                raise EnvelopeError(f"key {version} is not this process's key")
            return kek

        return cls(purpose, f"process-{run}", kek_for, "p1")

    def _ad(self, keyset_id: str, version: str, context: tuple[str, ...]) -> bytes:
        return self._head + length_prefixed(keyset_id, version, *context)

    def seal(self, plaintext: bytes, *context: str) -> bytes:
        ad = self._ad(self._keyset_id, self._version, context)
        dek, nonce, wrap_nonce = AESGCM.generate_key(256), os.urandom(_NONCE), os.urandom(_NONCE)
        wrapped = wrap_nonce + self._kek_for(self._version).encrypt(wrap_nonce, dek, ad)
        header = json.dumps(
            {
                "keyset_id": self._keyset_id,
                "key_version": self._version,
                "wrapped_dek": base64.b64encode(wrapped).decode(),
                "nonce": base64.b64encode(nonce).decode(),
            }
        ).encode()
        return MAGIC + len(header).to_bytes(4, "big") + header + AESGCM(dek).encrypt(nonce, plaintext, ad)

    def open(self, blob: bytes, *context: str) -> bytes:
        """The plaintext; EnvelopeError when the blob is not ours, truncated, tampered or moved."""
        try:
            if not blob.startswith(MAGIC):
                raise ValueError("not a sealed blob")
            start = len(MAGIC) + 4
            size = int.from_bytes(blob[len(MAGIC) : start], "big")
            header = json.loads(blob[start : start + size])
            if header["keyset_id"] != self._keyset_id:
                raise EnvelopeError(f"sealed under keyset {header['keyset_id']}, not {self._keyset_id}")
            ad = self._ad(header["keyset_id"], header["key_version"], context)
            wrapped = base64.b64decode(header["wrapped_dek"])
            dek = self._kek_for(header["key_version"]).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], ad)
            return AESGCM(dek).decrypt(base64.b64decode(header["nonce"]), blob[start + size :], ad)
        except EnvelopeError:
            raise
        except (InvalidTag, ValueError, KeyError, TypeError) as exc:
            raise EnvelopeError(f"cannot be opened ({type(exc).__name__}: tampered, truncated or moved)") from None
