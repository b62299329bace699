"""Keyset support: the error, key info, time stamps and the permission check of a local key file.

Split from :mod:`transforms.crypto.keyset` (which re-exports these names); this
module holds no key material and builds no :class:`~transforms.crypto.keyset.Keyset`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import stat


class KeysetError(Exception):
    """A keyset problem; ``str()`` is one line and never holds key material."""


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


def check_permissions(path: str, what: str = "keyset") -> None:
    """Refuse a keyset (or key-encryption key) file that anyone but its owner can access, and a keyset that is
    a symbolic link: its lock and registry would lie beside the link, not beside the keyset, and a save would
    replace the link with a second keyset (two keysets then, one of them missing every later change)."""
    if what == "keyset" and os.path.islink(path):
        raise KeysetError(
            f"keyset {path} is a symbolic link to {os.path.realpath(path)}: give --keys that file itself "
            "(its lock and registry are beside it); nothing was done"
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        hint = f" (create one with: backfill keys init --keys {path})" if what == "keyset" else ""
        raise KeysetError(f"{what} {path} not found{hint}") from None
    except OSError as exc:
        raise KeysetError(f"{what} {path} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeysetError(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise KeysetError(f"{what} {path} is accessible by group or others (mode {mode:04o}); run: chmod 600 {path}")
