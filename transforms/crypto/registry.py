"""The keyset's registry: the vaults it knows and the heads of its audit chains.

A file beside the keyset (``keys/keys.json`` -> ``keys/keys.registry.json``,
mode 0600, written atomically under the keyset's lock; an object beside a
keyset at a URI, written whole under its lock object: see
``transforms/crypto/keyset_store.py``), authenticated with an HMAC under the
keyset's audit key, holding no secret::

    {"format": "subscriber-backfill/keyset-registry/1", "keyset_id": "ks_9f2c...",
     "vaults": {"/srv/out/day1/vault": {"registered_at": "...", "by": "merge", "run_id": "merge-..."}},
     "chains": {"/srv/out/day1/audit": {"seq": 12, "mac": "<hex>"}},
     "shredded_deks": ["3fa1c2d4e5f60718", ...],
     "mac": "<hex>"}

* ``vaults``: every vault folder a merge, compaction, retention, reveal or
  ``keys`` command wrote or opened with this keyset. Before a vault key
  version is taken out of use, the data keys of every one of them are
  re-wrapped (``pipelines/keys.py``), so a shred in one copy never makes
  another copy's lines unreadable.
* ``chains``: the last record (sequence number and MAC) appended to each
  audit folder's chain (``transforms/crypto/audit.py``): the witness that shows
  a log whose tail was cut off.
* ``shredded_deks``: the data-key ids a shred dropped. Every later re-wrap
  drops key rows with these ids too, so a vault written from an older copy, or
  missed by an interrupted shred, never carries a shredded line forward. A
  line registered again gets a new data key, which is not in the list.

A copy of the keyset file without this file knows no vault and no chain
head: keyset backups need the same control as the keyset (see docs/keys-and-vault.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac as std_hmac
import json
import os

from transforms.crypto.keyset import Keyset, KeysetError, keyset_lock
from transforms.crypto.keyset_store import is_remote, join, parent, read_bytes, write_bytes

__all__ = [
    "Registry",
    "registry_path",
    "location",
    "folder_location",
    "vault_audit_dir",
    "open_registry",
    "refuse_copied_keyset",
]

FORMAT = "subscriber-backfill/keyset-registry/1"


def registry_path(keys_path: str) -> str:
    """``KEYS.registry.json`` beside the keyset (``keys.json`` -> ``keys.registry.json``), local or a URI."""
    if is_remote(keys_path):
        folder, name = keys_path.rsplit("/", 1)
        return f"{folder}/{os.path.splitext(name)[0]}.registry.json"
    root, _ = os.path.splitext(os.path.abspath(keys_path))
    return root + ".registry.json"


def location(path: str) -> str:
    """How a folder is named in the registry: a local path resolved (symlinks, ``..``), a URI as given."""
    if "://" in path:
        return path.rstrip("/")
    return os.path.realpath(path)


def folder_location(path: str) -> str:
    """How an audit folder is named: its parent resolved, its own name kept (a link in its place is not
    followed, so it can be refused); a URI as given."""
    if is_remote(path):
        return path.rstrip("/")
    path = os.path.abspath(path.rstrip("/") or path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def vault_audit_dir(vault_dir: str, keys_path: str) -> str:
    """The audit folder of a vault: ``VAULT/../audit`` for a local vault.

    A remote vault (gs://) is not the keyset's to append to: its chain lives under the keyset's folder
    (local, or the keyset's own prefix for a keyset at a URI), ``KEYS_DIR/audit/vaults/<sha256 of the URI,
    16 hex>``: a fixed place, never one the user picks."""
    if "://" in vault_dir:
        import hashlib

        digest = hashlib.sha256(location(vault_dir).encode("utf-8")).hexdigest()[:16]
        return join(parent(keys_path), "audit", "vaults", digest)
    return os.path.join(os.path.dirname(location(vault_dir)), "audit")


@contextlib.contextmanager
def open_registry(keys_path: str, *, replace_foreign: bool = False):
    """``(keyset, registry)`` under the keyset's lock; a keyset without an audit key gets one (saved).

    The caller saves the registry (and the keyset) it changes before leaving the block."""
    with keyset_lock(keys_path):
        keyset = Keyset.load(keys_path)
        if keyset.add_audit_key():
            keyset.save(keys_path)
        yield keyset, Registry.load(keys_path, keyset, replace_foreign=replace_foreign)


def refuse_copied_keyset(keys_path: str, keyset: Keyset) -> None:
    """Before a command that changes keys starts (retention, an incident's shred): refused in one line when the
    keyset and its registry are a copy of one still in its place (:meth:`Registry.refuse_if_copied`)."""
    Registry.load(keys_path, keyset).refuse_if_copied()


def _home(keys_path: str) -> str:
    """Where a keyset is: its file's resolved path, or its URI as given."""
    return keys_path.rstrip("/") if is_remote(keys_path) else os.path.realpath(keys_path)


def _exists(keys_path: str) -> bool:
    """Whether a keyset file is (still) there; one that cannot be looked at counts as there."""
    try:
        return read_bytes(keys_path, "registry", missing_ok=True) is not None
    except KeysetError:
        return True


def _same_file(a: str, b: str) -> bool:
    """One local keyset reached by two paths (a bind mount, a hard link): not a copy."""
    if is_remote(a) or is_remote(b):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _canonical(doc: dict) -> bytes:
    body = {k: v for k, v in doc.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Registry:
    """The registry of one keyset; load it under the keyset's lock (:func:`keyset_lock`) to change it."""

    def __init__(self, path: str, keyset: Keyset, doc: dict, home: str | None = None):
        self.path, self._keyset, self._doc = path, keyset, doc
        self._home = home  # where this keyset is now (recorded in the registry when it is saved)
        recorded = doc.get("home")
        # The registry (and the keyset) copied elsewhere while the original is still there: its vaults are the
        # original's, which a key change made from the copy would re-wrap (see :meth:`refuse_if_copied`).
        copied = recorded and home and recorded != home and _exists(recorded) and not _same_file(recorded, home)
        self.copied_from = recorded if copied else None

    @classmethod
    def load(cls, keys_path: str, keyset: Keyset, *, replace_foreign: bool = False) -> "Registry":
        """The registry beside ``keys_path`` (empty when there is none).

        One that names another keyset is an error, unless ``replace_foreign`` (``keys init --force``)."""
        path = registry_path(keys_path)
        empty = {"format": FORMAT, "keyset_id": keyset.keyset_id, "vaults": {}, "chains": {}, "shredded_deks": []}
        try:
            data = read_bytes(path, "registry", missing_ok=True)
        except KeysetError:
            raise KeysetError(f"registry {path} of keyset {keyset.keyset_id} cannot be read or is not JSON") from None
        home = _home(keys_path)
        if data is None:
            return cls(path, keyset, empty, home)
        try:
            doc = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise KeysetError(f"registry {path} of keyset {keyset.keyset_id} cannot be read or is not JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise KeysetError(f"registry {path} is not a keyset registry of format {FORMAT}")
        if doc.get("keyset_id") != keyset.keyset_id:
            if replace_foreign:
                return cls(path, keyset, empty, home)
            raise KeysetError(f"registry {path} belongs to keyset {doc.get('keyset_id')}, not {keyset.keyset_id}")
        mac = keyset.audit_mac(b"registry")
        mac.update(_canonical(doc))
        if not std_hmac.compare_digest(mac.finalize().hex(), str(doc.get("mac", ""))):
            raise KeysetError(f"registry {path} of keyset {keyset.keyset_id} failed authentication (edited)")
        for name in ("vaults", "chains", "shredded_deks"):
            doc.setdefault(name, empty[name])
        return cls(path, keyset, doc, home)

    def save(self) -> None:
        """Write atomically (a local file: mode 0600, a temporary file and a rename; an object: one write),
        with its MAC."""
        doc = {k: v for k, v in self._doc.items() if k != "mac"}
        if self._home and not self.copied_from:  # a copy keeps naming its original (a move adopts its new place)
            doc["home"] = self._home
        mac = self._keyset.audit_mac(b"registry")
        mac.update(_canonical(doc))
        doc["mac"] = mac.finalize().hex()
        write_bytes(self.path, json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8") + b"\n", "registry")
        self._doc = doc

    # -- vaults --------------------------------------------------------------------------------------------
    @property
    def vaults(self) -> list[str]:
        return sorted(self._doc["vaults"])

    def refuse_if_copied(self) -> None:
        """A key change (rotation, shred, retention) re-wraps every vault the registry knows: from a copy of the
        keyset and its registry, those are the original's vaults, which would then open under keys the original
        keyset does not have. Refused in one line while the original is still where the registry says."""
        if self.copied_from:
            raise KeysetError(
                f"keyset {self._home} is a copy of {self.copied_from} (its registry names that keyset's vaults): a "
                "key change from the copy would re-wrap the original's vaults; rehearse with a copy of the keyset "
                "file alone (no registry), or, if the keyset was moved here for good, remove the original first"
            )

    def add_vault(self, vault_dir: str, by: str, run_id: str | None = None) -> str:
        where = location(vault_dir)
        entry = self._doc["vaults"].setdefault(where, {"registered_at": _now(), "by": by})
        if run_id:
            entry["run_id"] = run_id
        return where

    # -- audit chains -------------------------------------------------------------------------------------
    def chain_head(self, folder: str) -> tuple[int, str] | None:
        head = self._doc["chains"].get(folder_location(folder))
        return (int(head["seq"]), str(head["mac"])) if head else None

    def set_chain_head(self, folder: str, seq: int, mac: str) -> None:
        self._doc["chains"][folder_location(folder)] = {"seq": seq, "mac": mac}

    @property
    def chains(self) -> dict[str, tuple[int, str]]:
        return {k: (int(v["seq"]), str(v["mac"])) for k, v in self._doc["chains"].items()}

    # -- shredded data keys -------------------------------------------------------------------------------
    @property
    def shredded_deks(self) -> set[str]:
        return set(self._doc["shredded_deks"])

    def add_shredded(self, dek_ids) -> None:
        self._doc["shredded_deks"] = sorted(set(self._doc["shredded_deks"]) | set(dek_ids))
