"""A ``backfill keys`` change's session: the keyset and its registry under the keyset's lock, one-line
user errors, and the keys log (``KEYS_DIR/audit/keys.jsonl``) every change is recorded in."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from pipelines.common import UserError
from pipelines.reveal import refuse_other_log

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.registry import Registry


def keys_audit_dir(keys_path: str) -> str:
    """``KEYS_DIR/audit``: beside the keyset, a local folder or, for a keyset at a URI, its prefix."""
    from transforms.crypto.keyset_store import join, parent

    return join(parent(keys_path), "audit")


@contextlib.contextmanager
def _user_errors():
    """Keyset, vault and audit errors are the user's to fix: one line each."""
    from transforms.crypto.audit import AuditError
    from transforms.crypto.keyset import KeysetError
    from transforms.crypto.vault import VaultError

    try:
        yield
    except (KeysetError, VaultError, AuditError) as exc:
        raise UserError(str(exc)) from None


def check_kek(keys_path: str, kek: str | None) -> None:
    """``--kek`` given to a command on an existing keyset: it must be the key-encryption key the keyset
    names (read without unwrapping it)."""
    from transforms.crypto.kek import kek_for
    from transforms.crypto.keyset import Keyset

    if kek is None:
        return
    with _user_errors():
        wanted, named = kek_for(kek).uri, Keyset.named_kek(keys_path)
    if named is None:
        raise UserError(
            f"keyset {keys_path} is not wrapped (backfill keys wrap --kek {wanted} wraps it); nothing was done"
        )
    if named != wanted:
        raise UserError(f"keyset {keys_path} is wrapped by {named}, not by {wanted}; nothing was done")


@contextlib.contextmanager
def _session(keys_path: str, audit_log: str | None):
    """The keyset and its registry under the keyset's lock, the keys log's path checked."""
    from transforms.crypto.registry import open_registry

    refuse_other_log(audit_log, os.path.join(keys_audit_dir(keys_path), "keys.jsonl"))
    with _user_errors(), open_registry(keys_path) as (keyset, registry):
        yield keyset, registry


def _log_keys(keyset: Keyset, registry: Registry, keys_path: str, record: dict) -> None:
    from transforms.crypto.audit import append

    append(keyset, registry, keys_audit_dir(keys_path), "keys.jsonl", [record])
    registry.save()


def register_vault(keys_path: str, vault_dir: str, *, by: str, run_id: str | None = None) -> str:
    """Record a vault folder in the keyset's registry (a merge calls this before it writes OUT/vault), so
    that a shred or a key retirement re-wraps its data keys instead of making it unreadable."""
    from transforms.crypto.registry import open_registry

    with _user_errors(), open_registry(keys_path) as (_, registry):
        where = registry.add_vault(vault_dir, by=by, run_id=run_id)
        registry.save()
    return where
