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
    return os.path.join(os.path.dirname(os.path.abspath(keys_path)), "audit")


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
