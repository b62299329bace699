"""``backfill keys init`` and ``backfill keys wrap``: create a keyset, wrapped or not, and wrap one in place.

* ``init --keys PATH`` (no ``--kek``): a keyset in clear in a local file, mode 0600 (the embedded default,
  as it always was).
* ``init --keys URI --kek KEK``: a keyset wrapped by a key-encryption key (``gcp-kms://``, ``aws-kms://`` or
  ``local-kek://PATH``, whose file is created when missing); a keyset at a URI must be wrapped.
* ``wrap --keys URI --kek KEK``: rewrite the keyset wrapped by KEK (a keyset in clear, or one wrapped by
  another KEK, which must still open it), under the keyset's lock, with a record in the keys log.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from pipelines.common import UserError
from pipelines.keys_session import _log_keys, _session, _user_errors, keys_audit_dir
from pipelines.reveal import refuse_other_log, utc_now, who

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset

__all__ = ["init_keyset", "wrap_keyset"]


def _kek(kek_uri: str, *, create: bool = True):
    """The KEK a URI names; a local KEK's file is created when it is missing (mode 0600) and ``create``, and
    said on stderr: the keyset cannot be opened without it. Without ``create`` a missing file is an error."""
    from transforms.crypto.kek import create_local_kek, kek_for

    kek = kek_for(kek_uri)
    if kek.uri.startswith("local-kek://"):
        path = kek.uri[len("local-kek://") :]
        if not create and not os.path.exists(path):
            raise UserError(
                f"--kek {kek.uri}: no such key-encryption key file; give --new-kek to create one there (a mistyped "
                "path would wrap the keyset under a key nobody knows of); nothing was changed"
            )
        if create_local_kek(kek.uri):
            print(
                f"created a new key-encryption key at {path} (mode 0600): the keyset cannot be opened without it; "
                "keep a copy with the keyset's backups",
                file=sys.stderr,
            )
    return kek


def init_keyset(
    keys_path: str,
    *,
    kek: str | None = None,
    force: bool = False,
    actor: str | None = None,
    audit_log: str | None = None,
) -> Keyset:
    """Create a keyset (j1, v1, a1), wrapped under ``kek`` when given; refuses to replace one unless ``force``."""
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.registry import open_registry

    if kek is None and "://" in keys_path:
        raise UserError(
            f"a keyset at {keys_path} must be wrapped by a key-encryption key: give --kek (gcp-kms://, "
            "aws-kms:// or local-kek://PATH); nothing was written"
        )
    refuse_other_log(audit_log, os.path.join(keys_audit_dir(keys_path), "keys.jsonl"))
    with _user_errors():
        keyset = Keyset.generate(_kek(kek) if kek else None)
        keyset.save(keys_path, overwrite=force)
        with open_registry(keys_path, replace_foreign=True) as (keyset, registry):
            record = {
                "event": "keys_init",
                "at": utc_now(),
                **who(actor),
                "primary": {"join": keyset.primary_join_version, "vault": keyset.primary_vault_version},
                "kek": keyset.kms_key_uri,
            }
            _log_keys(keyset, registry, keys_path, record)
    return keyset


def wrap_keyset(
    keys_path: str,
    kek: str | None,
    *,
    actor: str | None = None,
    audit_log: str | None = None,
    new_kek: bool = False,
) -> dict:
    """Wrap the keyset under ``kek`` from now on (its key versions unchanged); a missing local KEK file is
    created only when ``new_kek`` says so."""
    if not kek:
        raise UserError("keys wrap needs --kek (gcp-kms://, aws-kms:// or local-kek://PATH)")
    with _user_errors():
        new = _kek(kek, create=new_kek)
    with _session(keys_path, audit_log) as (keyset, registry):
        before = keyset.kms_key_uri
        keyset.wrap_with(new)
        keyset.save(keys_path)
        record = {"event": "keys_wrap", "at": utc_now(), **who(actor), "kek": new.uri, "previous_kek": before}
        _log_keys(keyset, registry, keys_path, record)
    return {"keyset_id": keyset.keyset_id, **record}
