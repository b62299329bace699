"""The keyset: versioned join keys (tokens) and vault keys (data-key wrapping).

A keyset is a JSON document that ``backfill keys init`` creates and ``backfill
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

Where it lives (``transforms/crypto/keyset_store.py``): ``--keys`` is a local file or a URI any Beam file
system reads (``gs://``, ``s3://``). Wrapped by a key-encryption key (``gcp-kms://``, ``aws-kms://``,
``local-kek://``: ``transforms/crypto/kek.py``), the document above is sealed under a data key the KEK wraps
(``transforms/crypto/keyset_sealed.py``) and names its KEK, so loading it needs only its location; a keyset
outside a local file must be wrapped. In clear (``kms_key_uri`` null) it is a local file only, and a file that
group or others can access is refused. Writes are atomic (a local temporary file and a rename, mode 0600; one
object write).

Modelled on Tink's ``KeysetHandle``: a :class:`Keyset` cannot be built
directly, cannot be pickled (so it never travels in a Beam graph: DoFns take
the keyset *URI* and call :meth:`Keyset.load` in ``setup()``, which unwraps it
once per worker process), and never hands out key bytes:
``transforms.crypto.tokenize`` and ``transforms.crypto.vault`` get keyed
primitives (an HMAC object, an AESGCM object) from its private methods.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transforms.crypto.kek import Kek, kek_for
from transforms.crypto.keyset_sealed import forget, is_wrapped, named_kek, open_sealed, seal
from transforms.crypto.keyset_store import is_remote, keyset_lock, read_bytes, write_bytes
from transforms.crypto.keyset_support import KeyInfo, KeysetError, _now, _stamp, parse_time

__all__ = ["Keyset", "KeysetError", "KeyInfo", "FORMAT", "DESTROY_WAIT", "keyset_lock", "parse_time"]

FORMAT = "subscriber-backfill/keyset/1"
_ALGORITHMS = {"join": "HMAC-SHA256", "vault": "AES-256-GCM", "audit": "HMAC-SHA256"}
_PREFIX = {"join": "j", "vault": "v", "audit": "a"}
_REQUIRED = ("join", "vault")  # the audit key is added on first use to a keyset made before it existed
DESTROY_WAIT = dt.timedelta(days=30)  # Cloud KMS's default wait before a scheduled version is destroyed
_AUDIT_INFO = b"subscriber-backfill/audit/1\x00"
_KEY_BYTES = 32
_PRIVATE = object()  # construction token: only this module builds a Keyset


def _parse(path: str, data: bytes) -> dict:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise KeysetError(f"keyset {path} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise KeysetError(f"keyset {path} is not a keyset of format {FORMAT}")
    return doc


class Keyset:
    """A loaded keyset. Build with :meth:`generate` or :meth:`load`."""

    def __init__(self, *, _token=None, _doc: dict | None = None, _material: dict | None = None, _kek=None):
        if _token is not _PRIVATE:
            raise TypeError("Keyset cannot be built directly: use Keyset.generate() or Keyset.load(path)")
        self._doc = _doc
        self.__material = _material  # {version: bytes}; name-mangled, never printed
        self._kek = _kek  # the key-encryption key that wraps it (None: a local file in clear)

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
    def generate(cls, kek: str | Kek | None = None) -> "Keyset":
        """A new keyset with j1, v1 and a1, from the OS's secure random source; wrapped under ``kek`` (a
        key-encryption-key URI or object) when it is saved, or in clear without one."""
        kek = kek_for(kek) if isinstance(kek, str) else kek
        doc = {
            "format": FORMAT,
            "keyset_id": "ks_" + secrets.token_hex(8),
            "created_at": _now(),
            "kms_key_uri": kek.uri if kek else None,
            "keys": [],
        }
        ks = cls(_token=_PRIVATE, _doc=doc, _material={}, _kek=kek)
        for purpose in _PREFIX:
            ks._add(purpose)
        return ks

    @classmethod
    def load(cls, path: str, kek: Kek | None = None) -> "Keyset":
        """Read a keyset: a local file (refused unless mode 0600) or a URI (``gs://``, ``s3://``...).

        A wrapped keyset is opened by the key-encryption key it names (one KEK call per process and keyset
        version: ``transforms/crypto/keyset_sealed.py``); ``kek`` replaces that KEK's client (tests) and must
        be the one named. A keyset in clear is only read from a local file."""
        data = read_bytes(path)
        doc = _parse(path, data)
        if is_wrapped(doc):
            inner, kek = open_sealed(path, data, doc, kek)
            outer_id, doc = doc["keyset_id"], _parse(path, inner)
            if doc.get("keyset_id") != outer_id or doc.get("kms_key_uri") != kek.uri:
                raise KeysetError(f"keyset {path} does not match its envelope (keyset id or KEK)")
        elif is_remote(path):
            raise KeysetError(f"keyset {path} is not wrapped by a key-encryption key: outside a local file it must be")
        elif kek is not None or doc.get("kms_key_uri"):
            raise KeysetError(f"keyset {path} is not wrapped by a key-encryption key")
        if doc.get("format") != FORMAT:
            raise KeysetError(f"keyset {path} is not a keyset of format {FORMAT}")
        material: dict[str, bytes] = {}
        try:
            for key in doc["keys"]:
                secret = key.pop("material", None)
                if key["state"] == "retired":
                    continue
                raw = base64.b64decode(secret, validate=True)
                if len(raw) != _KEY_BYTES:
                    raise ValueError
                material[key["version"]] = raw
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise KeysetError(f"keyset {path} has a malformed key entry") from None
        ks = cls(_token=_PRIVATE, _doc=doc, _material=material, _kek=kek)
        for purpose in _REQUIRED:
            ks._primary(purpose)  # exactly one usable primary per purpose
        return ks

    @staticmethod
    def named_kek(path: str) -> str | None:
        """The key-encryption key a keyset names, read without unwrapping it (None: a keyset in clear)."""
        return named_kek(_parse(path, read_bytes(path)))

    def wrap_with(self, kek: str | Kek) -> None:
        """Wrap this keyset under another key-encryption key from its next :meth:`save` on."""
        self._kek = kek_for(kek) if isinstance(kek, str) else kek
        self._doc["kms_key_uri"] = self._kek.uri

    def save(self, path: str, *, overwrite: bool = True) -> None:
        """Write the keyset whole: wrapped under its KEK (a fresh data key each time), or in clear to a local
        file; atomically (a local file: a temporary file, fsync, a rename, mode 0600; an object: one write)."""
        if self._kek is None and is_remote(path):
            raise KeysetError(
                f"keyset {path}: outside a local file a keyset must be wrapped by a key-encryption key (--kek); "
                "nothing was written"
            )
        doc = json.loads(json.dumps(self._doc))
        for key in doc["keys"]:
            raw = self.__material.get(key["version"])
            key["material"] = None if raw is None else base64.b64encode(raw).decode("ascii")
        data = json.dumps(doc, indent=2).encode("utf-8") + b"\n"
        if self._kek is not None:
            data = seal(data, self.keyset_id, self._kek)
        write_bytes(path, data, create_only=not overwrite)
        forget(path)

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
                f"{key['destroy_after']} and opens nothing (backfill keys restore --key-version {version} undoes it "
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
