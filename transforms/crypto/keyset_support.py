"""Keyset support: the error, the KMS seam, key info, time stamps, the lock and the permission check.

Split from :mod:`transforms.crypto.keyset` (which re-exports these names); this
module holds no key material and builds no :class:`~transforms.crypto.keyset.Keyset`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import os
import stat
from typing import Protocol


class KeysetError(Exception):
    """A keyset problem; ``str()`` is one line and never holds key material."""


class KeyWrapper(Protocol):
    """The KMS seam: an AEAD that encrypts key material at rest.

    A Cloud KMS (or Tink KMS AEAD) client implementing these two methods can
    be passed to :meth:`Keyset.load` and :meth:`Keyset.save`.
    """

    key_uri: str

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes: ...

    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes: ...


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """What may be shown about one key version: never its material."""

    purpose: str
    version: str
    state: str
    algorithm: str
    created_at: str
    retired_at: str | None
    destroy_after: str | None = None


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _now() -> str:
    return _stamp(dt.datetime.now(dt.timezone.utc))


def parse_time(text: str) -> dt.datetime:
    """A keyset or audit time stamp (``2026-11-30T08:00:00Z``) as an aware datetime."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@contextlib.contextmanager
def keyset_lock(path: str):
    """One keyset change at a time: an exclusive flock on ``PATH.lock`` (the keyset must exist).

    Everything that changes the keyset, its registry or an audit chain's head holds it; it is not
    re-entrant (a second flock from the same process on a new descriptor would wait for ever)."""
    check_permissions(path)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_permissions(path: str) -> None:
    """Refuse a keyset file that anyone but its owner can access."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeysetError(f"keyset {path} not found (create one with: backfill keys init --keys {path})") from None
    except OSError as exc:
        raise KeysetError(f"keyset {path} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeysetError(f"keyset {path} is not a regular file")
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise KeysetError(f"keyset {path} is accessible by group or others (mode {mode:04o}); run: chmod 600 {path}")
