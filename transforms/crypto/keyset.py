"""The keyset: versioned join keys (tokens) and vault keys (data-key wrapping).

A keyset is a JSON file that ``backfill keys init`` creates and ``backfill
keys rotate`` extends::

    {"format": "subscriber-backfill/keyset/1", "keyset_id": "ks_9f2c...",
     "created_at": "2026-11-30T08:00:00Z", "kms_key_uri": null,
     "keys": [{"purpose": "join", "version": "j1", "state": "primary",
               "algorithm": "HMAC-SHA256", "created_at": "...",
               "retired_at": null, "material": "<base64, 32 bytes>"}, ...]}

Three purposes: ``join`` (j1, j2, ...: tokens), ``vault`` (v1, v2, ...: data-key
wrapping) and ``audit`` (a1: the HMAC key of the chained audit logs, never
rotated or retired; a keyset made before it gets one on its first audited use).

Key states: ``primary`` (one per purpose: new tokens, new wraps), ``enabled``
(an older version that still opens or tokenizes on request),
``destroy_scheduled`` (taken out of use: it opens nothing, but its material is
kept until ``destroy_after``, as Cloud KMS schedules a version's destruction;
:meth:`Keyset.restore` undoes it until then) and ``retired`` (material
destroyed; the entry stays as history, and nothing it protected can be opened
again: this is what makes crypto-shredding reach old vault copies).

Modelled on Tink's ``KeysetHandle``: a :class:`Keyset` cannot be built
directly, cannot be pickled (so it never travels in a Beam graph: DoFns take
the keyset *path* and call :meth:`Keyset.load` in ``setup()``), and never
hands out key bytes: ``transforms.crypto.tokenize`` and ``transforms.crypto.vault`` get
keyed primitives (an HMAC object, an AESGCM object) from its private methods.
A file that group or others can access is refused. Files are written
atomically (a temporary file in the same folder, then a rename), mode 0600.

Production may wrap the key material with a KMS: a keyset that names a
``kms_key_uri`` must be loaded with a :class:`KeyWrapper`; only the local
file (no wrapper) is implemented here.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import secrets
import tempfile

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transforms.crypto.keyset_support import (
    KeyInfo,
    KeysetError,
    KeyWrapper,
    _now,
    _stamp,
    check_permissions,
    keyset_lock,
    parse_time,
)

__all__ = ["Keyset", "KeysetError", "KeyInfo", "KeyWrapper", "FORMAT", "DESTROY_WAIT", "keyset_lock", "parse_time"]

FORMAT = "subscriber-backfill/keyset/1"
_ALGORITHMS = {"join": "HMAC-SHA256", "vault": "AES-256-GCM", "audit": "HMAC-SHA256"}
_PREFIX = {"join": "j", "vault": "v", "audit": "a"}
_REQUIRED = ("join", "vault")  # the audit key is added on first use to a keyset made before it existed
DESTROY_WAIT = dt.timedelta(days=30)  # Cloud KMS's default wait before a scheduled version is destroyed
_AUDIT_INFO = b"subscriber-backfill/audit/1\x00"
_KEY_BYTES = 32
_PRIVATE = object()  # construction token: only this module builds a Keyset


class Keyset:
    """A loaded keyset. Build with :meth:`generate` or :meth:`load`."""

    def __init__(self, *, _token=None, _doc: dict | None = None, _material: dict | None = None):
        if _token is not _PRIVATE:
            raise TypeError("Keyset cannot be built directly: use Keyset.generate() or Keyset.load(path)")
        self._doc = _doc
        self.__material = _material  # {version: bytes}; name-mangled, never printed

    # -- refuse to travel -------------------------------------------------
    def __reduce__(self):
        raise TypeError("a Keyset cannot be pickled: pass the keyset path and call Keyset.load() in DoFn.setup()")

    def __reduce_ex__(self, protocol):
        return self.__reduce__()

    def __repr__(self) -> str:
        return f"<Keyset {self.keyset_id} join={self.primary_join_version} vault={self.primary_vault_version}>"

    __str__ = __repr__

    # -- construction -----------------------------------------------------
    @classmethod
    def generate(cls, kms_key_uri: str | None = None) -> "Keyset":
        """A new keyset with j1 and v1, from the OS's secure random source."""
        doc = {
            "format": FORMAT,
            "keyset_id": "ks_" + secrets.token_hex(8),
            "created_at": _now(),
            "kms_key_uri": kms_key_uri,
            "keys": [],
        }
        ks = cls(_token=_PRIVATE, _doc=doc, _material={})
        for purpose in _PREFIX:
            ks._add(purpose)
        return ks

    @classmethod
    def load(cls, path: str, wrapper: KeyWrapper | None = None) -> "Keyset":
        """Read a keyset file (permissions checked first)."""
        if "://" in path:
            raise KeysetError(f"keyset {path}: only a local keyset file is supported (remote keysets need a KMS)")
        check_permissions(path)
        try:
            with open(path, "rb") as handle:
                doc = json.loads(handle.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise KeysetError(f"keyset {path} is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise KeysetError(f"keyset {path} is not a keyset of format {FORMAT}")
        if doc.get("kms_key_uri") and wrapper is None:
            raise KeysetError(f"keyset {path} is wrapped by {doc['kms_key_uri']}; no KMS wrapper is configured")
        material: dict[str, bytes] = {}
        try:
            for key in doc["keys"]:
                secret = key.pop("material", None)
                if key["state"] == "retired":
                    continue
                raw = base64.b64decode(secret, validate=True)
                if doc.get("kms_key_uri"):
                    raw = cls._kms("decrypt", wrapper, raw, doc["keyset_id"], key["version"])
                if len(raw) != _KEY_BYTES:
                    raise ValueError
                material[key["version"]] = raw
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise KeysetError(f"keyset {path} has a malformed key entry") from None
        ks = cls(_token=_PRIVATE, _doc=doc, _material=material)
        for purpose in _REQUIRED:
            ks._primary(purpose)  # exactly one usable primary per purpose
        return ks

    def save(self, path: str, *, overwrite: bool = True, wrapper: KeyWrapper | None = None) -> None:
        """Write atomically, mode 0600: a temporary file, fsync, then a rename."""
        if "://" in path:
            raise KeysetError(f"keyset {path}: only a local keyset file is supported (remote keysets need a KMS)")
        if not overwrite and os.path.exists(path):
            raise KeysetError(f"keyset {path} already exists (pass --force to replace it)")
        if self.kms_key_uri and wrapper is None:
            raise KeysetError(f"keyset {self.keyset_id} is wrapped by {self.kms_key_uri}; no KMS wrapper is configured")
        doc = json.loads(json.dumps(self._doc))
        for key in doc["keys"]:
            raw = self.__material.get(key["version"])
            if raw is not None and doc.get("kms_key_uri"):
                raw = self._kms("encrypt", wrapper, raw, doc["keyset_id"], key["version"])
            key["material"] = None if raw is None else base64.b64encode(raw).decode("ascii")
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".keyset-", dir=folder)  # created 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(doc, indent=2).encode("utf-8") + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            if overwrite:
                os.replace(tmp, path)
            else:  # a hard link never replaces: no race with another init
                os.link(tmp, path)
                os.unlink(tmp)
        except FileExistsError:
            os.unlink(tmp)
            raise KeysetError(f"keyset {path} already exists (pass --force to replace it)") from None
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _kms(op: str, wrapper: KeyWrapper, data: bytes, keyset_id: str, version: str) -> bytes:
        """Wrap or unwrap one key's material with the KMS, bound to keyset and version."""
        try:
            return getattr(wrapper, op)(data, f"{FORMAT}|{keyset_id}|{version}".encode())
        except Exception:  # the KMS client's own message may quote its inputs
            raise KeysetError(f"the KMS could not {op} key {version} of keyset {keyset_id}") from None

    # -- what may be shown ------------------------------------------------
    @property
    def keyset_id(self) -> str:
        return self._doc["keyset_id"]

    @property
    def created_at(self) -> str:
        return self._doc["created_at"]

    @property
    def kms_key_uri(self) -> str | None:
        return self._doc.get("kms_key_uri")

    @property
    def primary_join_version(self) -> str:
        return self._primary("join")

    @property
    def primary_vault_version(self) -> str:
        return self._primary("vault")

    def info(self) -> list[KeyInfo]:
        """Every key version, oldest first, without material."""
        return [
            KeyInfo(
                k["purpose"],
                k["version"],
                k["state"],
                k["algorithm"],
                k["created_at"],
                k.get("retired_at"),
                k.get("destroy_after"),
            )
            for k in self._doc["keys"]
        ]

    def versions(self, purpose: str, states: tuple[str, ...] = ("primary", "enabled")) -> list[str]:
        return [k["version"] for k in self._doc["keys"] if k["purpose"] == purpose and k["state"] in states]

    # -- changes ------------------------------------------------------------
    def rotate_join(self) -> str:
        """Add a join-key version and make it primary; tokens must be re-made."""
        return self._add("join")

    def rotate_vault(self) -> str:
        """Add a vault-key version and make it primary; data keys must be re-wrapped."""
        return self._add("vault")

    def retire(self, version: str) -> None:
        """Destroy a non-primary version's material now; the entry stays as history."""
        key = self._retirable(version)
        if key["state"] != "retired":
            key["state"], key["retired_at"] = "retired", _now()
            self.__material.pop(version, None)

    def schedule_destruction(
        self, version: str, *, now: dt.datetime | None = None, wait: dt.timedelta = DESTROY_WAIT
    ) -> str | None:
        """Take a non-primary version out of use now and destroy its material after ``wait``.

        Returns its ``destroy_after`` (None when it is already destroyed). From now on the
        version opens nothing; :meth:`restore` undoes this until :meth:`destroy_due` runs after
        the date."""
        key = self._retirable(version)
        if key["state"] == "enabled":
            key["state"] = "destroy_scheduled"
            key["destroy_after"] = _stamp((now or dt.datetime.now(dt.timezone.utc)) + wait)
        return key.get("destroy_after") if key["state"] == "destroy_scheduled" else None

    def restore(self, version: str) -> None:
        """Put a version scheduled for destruction back in use (``enabled``)."""
        key = self._entry(version)
        if key["state"] != "destroy_scheduled":
            raise KeysetError(
                f"key {version} of keyset {self.keyset_id} is {key['state']}, not scheduled for destruction"
            )
        key["state"] = "enabled"
        key.pop("destroy_after", None)

    def due(self, now: dt.datetime | None = None) -> list[str]:
        """The versions scheduled for destruction whose ``destroy_after`` has passed."""
        now = now or dt.datetime.now(dt.timezone.utc)
        return [
            k["version"]
            for k in self._doc["keys"]
            if k["state"] == "destroy_scheduled" and parse_time(k["destroy_after"]) <= now
        ]

    def scheduled(self) -> dict[str, str]:
        """version -> destroy_after of every version scheduled for destruction."""
        return {k["version"]: k["destroy_after"] for k in self._doc["keys"] if k["state"] == "destroy_scheduled"}

    def _retirable(self, version: str) -> dict:
        key = self._entry(version)
        if key["state"] == "primary":
            raise KeysetError(f"key {version} of keyset {self.keyset_id} is primary and cannot be retired")
        if key["purpose"] == "audit":
            raise KeysetError(f"key {version} of keyset {self.keyset_id} verifies the audit logs and is never retired")
        return key

    @property
    def has_audit_key(self) -> bool:
        return any(k["purpose"] == "audit" and k["state"] == "primary" for k in self._doc["keys"])

    def add_audit_key(self) -> str | None:
        """Give a keyset made before chained audit logs its audit key (a1); None when it has one."""
        return None if self.has_audit_key else self._add("audit")

    def _add(self, purpose: str) -> str:
        keys = self._doc["keys"]
        n = 1 + sum(1 for k in keys if k["purpose"] == purpose)
        version = f"{_PREFIX[purpose]}{n}"
        for k in keys:
            if k["purpose"] == purpose and k["state"] == "primary":
                k["state"] = "enabled"
        keys.append(
            {
                "purpose": purpose,
                "version": version,
                "state": "primary",
                "algorithm": _ALGORITHMS[purpose],
                "created_at": _now(),
                "retired_at": None,
            }
        )
        self.__material[version] = secrets.token_bytes(_KEY_BYTES)
        return version

    def _entry(self, version: str) -> dict:
        for k in self._doc["keys"]:
            if k["version"] == version:
                return k
        raise KeysetError(f"key version {version} is not in keyset {self.keyset_id}")

    def _primary(self, purpose: str) -> str:
        found = [k["version"] for k in self._doc["keys"] if k["purpose"] == purpose and k["state"] == "primary"]
        if len(found) != 1 or found[0] not in self.__material:
            raise KeysetError(f"keyset {self.keyset_id} has no single usable primary {purpose} key")
        return found[0]

    def _secret(self, purpose: str, version: str) -> bytes:
        key = self._entry(version)
        if key["purpose"] != purpose:
            raise KeysetError(f"key {version} of keyset {self.keyset_id} is not a {purpose} key")
        if key["state"] == "destroy_scheduled":
            raise KeysetError(
                f"key {version} of keyset {self.keyset_id} is scheduled for destruction after "
                f"{key['destroy_after']} and opens nothing (backfill keys restore --version {version} undoes it "
                "until then)"
            )
        if key["state"] == "retired" or version not in self.__material:
            raise KeysetError(f"key {version} of keyset {self.keyset_id} is retired (its material is destroyed)")
        return self.__material[version]

    # -- keyed primitives for transforms/crypto only: tokenize, vault, envelope (never the bytes) ----
    def join_mac(self, version: str, domain: bytes) -> hmac.HMAC:
        """A pre-keyed HMAC-SHA256 under a per-domain subkey (HKDF) of a join key."""
        subkey = HKDF(hashes.SHA256(), 32, salt=None, info=domain).derive(self._secret("join", version))
        return hmac.HMAC(subkey, hashes.SHA256())

    def audit_mac(self, domain: bytes) -> hmac.HMAC:
        """A pre-keyed HMAC-SHA256 under a per-domain subkey (HKDF, an info label of its own) of the audit
        key: the MAC of the chained audit logs and of the keyset's registry."""
        if not self.has_audit_key:
            raise KeysetError(
                f"keyset {self.keyset_id} has no audit key yet: run any `backfill keys` change (e.g. "
                "`backfill keys destroy-due`) to add one"
            )
        subkey = HKDF(hashes.SHA256(), 32, salt=None, info=_AUDIT_INFO + domain).derive(
            self._secret("audit", self._primary("audit"))
        )
        return hmac.HMAC(subkey, hashes.SHA256())

    def vault_kek(self, version: str) -> AESGCM:
        """AES-256-GCM under a vault key version (wraps the per-line data keys)."""
        return AESGCM(self._secret("vault", version))
