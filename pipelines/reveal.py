"""backfill reveal: decrypt one line's identity from the vault, on record.

    backfill reveal --keys keys.json --vault out/merge/vault --line-id L0001 \\
        --purpose "complaint 2026-118: verify the holder" [--fields name,doc_number] [--actor zhang.wei]
    backfill reveal --keys keys.json --merged out/merge --line-id L0001 --purpose "..."   # its vault/
    python -m pipelines.reveal ...

Prints ``field: value`` lines as UTF-8 text. Every attempt that reads the vault
(revealed, unknown line, a record that fails authentication, a vault file that
cannot be read) first appends one JSON line to the vault's own audit log,
``VAULT/../audit/reveal.jsonl`` (a gs:// vault's is under the keyset's folder,
``KEYS_DIR/audit/vaults/<hash>/``); the log cannot be moved: ``--audit-log``
naming any other file is refused. The record is chained to the one before it
with an HMAC under the keyset's audit key (``transforms/crypto/audit.py``)::

    {"event": "reveal", "at": "2026-11-30T08:00:00Z", "actor": "ops", "uid": 1000,
     "stated_actor": "zhang.wei", "host": "...", "line_id": "L0001", "requested_fields": null,
     "fields": ["name"], "purpose": "...", "keyset_id": "ks_...", "vault_dir": "/srv/out/merge/vault",
     "vault_key_version": "v2", "dek_id": "...", "registration_event_id": "E123", "outcome": "revealed",
     "seq": 7, "mac": "..."}

``actor`` is the operating-system user the process runs as (from its uid, not
from the environment); ``--actor`` is recorded beside it as ``stated_actor``.
Values never are. A reveal whose record cannot be appended fails closed: exit
1, nothing printed. Without a purpose (or with a blank one), or without a
keyset that loads, nothing is read and nothing recorded.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import unicodedata

from pipelines.common import ArgumentParser, UserError, refuse_document_numbers, run_main, split_beam_flags
from pipelines.flags import add_merged, looks_plain

__all__ = ["audit_dir", "record_audit", "reveal", "utc_now", "who", "main", "FIELD_ORDER", "OUTCOMES"]

FIELD_ORDER = ("doc_type", "doc_number", "name", "address", "handler_doc_type", "handler_doc_number", "handler_name")
_IDENTITY_VALUES = ("doc_number", "name", "address", "handler_doc_number", "handler_name")
_WITHHELD = "(withheld: it held identity values)"
OUTCOMES = {
    "UnknownLine": "unknown_line",
    "AuthenticationFailed": "failed_authentication",
    "VaultUnreadable": "vault_unreadable",
}


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def audit_dir(vault_dir: str, keys_path: str) -> str:
    """The vault's audit folder (``VAULT/../audit``; see ``transforms.crypto.registry.vault_audit_dir``)."""
    from transforms.crypto.registry import vault_audit_dir

    return vault_audit_dir(vault_dir, keys_path)


def refuse_other_log(given: str | None, expected: str, flag: str = "--audit-log") -> None:
    """A log path given on the command line must be the one the records go to anyway."""
    if given is not None and os.path.realpath(given) != os.path.realpath(expected):
        raise UserError(f"{flag} {given}: the audit log is {expected} and cannot be moved; nothing was done")


def who(stated_actor: str | None) -> dict:
    """Who acts: the OS user of this process (by uid), the actor named on the command line, the host."""
    import pwd

    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a container user without a name
        user = f"uid:{uid}"
    stated = (stated_actor or "").strip() or None
    return {"actor": user, "uid": uid, "stated_actor": stated, "host": platform.node()}


def record_audit(
    keys_path: str,
    folder: str,
    log: str,
    records: list[dict],
    *,
    vault_dir: str | None = None,
    nothing: str = "nothing was shown",
) -> list[dict]:
    """Append records to FOLDER's chain under the keyset's lock; register the vault and the new chain head.

    Raises UserError (one line, ending in ``nothing``) when they cannot be appended."""
    from transforms.crypto.audit import AuditError, append
    from transforms.crypto.keyset import KeysetError
    from transforms.crypto.registry import open_registry

    try:
        with open_registry(keys_path) as (keyset, registry):
            if vault_dir:
                registry.add_vault(vault_dir, by=records[0]["event"] if records else "audit")
            done = append(keyset, registry, folder, log, records)
            registry.save()
            return done
    except (AuditError, KeysetError, OSError) as exc:
        why = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror}: {exc.filename}"
        raise UserError(f"the audit record could not be written ({why}); {nothing}") from None


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill reveal", description=__doc__.splitlines()[0])
    p.add_argument("--keys", required=True, help="keyset file (mode 0600)")
    add_merged(p, base_help=None, vault_help="vault folder (keys/ and values/), local or gs://")
    p.add_argument("--line-id", required=True, help="the line to reveal")
    p.add_argument("--purpose", default=None, help="why this line is revealed (required; recorded)")
    p.add_argument("--fields", default=None, help="comma-separated fields to reveal (default: all)")
    p.add_argument("--actor", default=None, help="who asks, recorded as stated_actor beside the OS user")
    p.add_argument(
        "--audit-log", default=None, help="refused unless it names the vault's own log (VAULT/../audit/reveal.jsonl)"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _vault_exists(vault_dir: str) -> bool:
    if "://" in vault_dir:
        from pipelines.io.publish_guards import exists

        return exists(vault_dir)  # a prefix: FileSystems.exists does not see it
    return os.path.isdir(vault_dir)


def reveal(
    keys_path: str,
    vault_dir: str,
    line_id: str,
    purpose: str | None,
    *,
    fields: list[str] | None = None,
    actor: str | None = None,
    audit_log: str | None = None,
) -> dict[str, str]:
    """Decrypt one line after recording the attempt; returns field -> value.

    The record goes to the vault's audit chain before anything is returned; a failed attempt is
    recorded with its outcome and raises UserError; a record that cannot be written raises UserError."""
    from transforms.crypto.keyset import Keyset, KeysetError

    purpose = (purpose or "").strip()
    if not purpose:
        raise UserError("a purpose is required: --purpose TEXT says why this line is revealed; nothing was read")
    refuse_document_numbers("--purpose", purpose)
    refuse_document_numbers("--actor", actor)
    if not line_id.strip() or any(unicodedata.category(c) in ("Cc", "Cf") for c in line_id):
        raise UserError("--line-id is empty or holds control characters; nothing was read")
    folder = audit_dir(vault_dir, keys_path)
    refuse_other_log(audit_log, os.path.join(folder, "reveal.jsonl"))
    try:
        keyset = Keyset.load(keys_path)
    except KeysetError as exc:
        raise UserError(str(exc)) from None
    if not _vault_exists(vault_dir):
        raise UserError(f"no vault at {vault_dir}; nothing was read")
    record = _attempt(keyset, vault_dir, line_id, fields, purpose, actor)
    opened, error = _open_line(keyset, vault_dir, line_id, fields, record)
    line_values = record.pop("_values", {})
    if error is None and _quotes_values(line_values, purpose, actor):
        # the purpose or the actor holds one of this line's own values: that text is not recorded, nothing shown
        record.update(purpose=_WITHHELD, stated_actor=record["stated_actor"] and _WITHHELD, outcome="refused_purpose")
        error = "--purpose or --actor holds this line's own identity values; say why without them; nothing was shown"
        opened = {}
    elif error is not None and record["outcome"] == "unknown_line" and not looks_plain(line_id):
        record["line_id"] = _WITHHELD  # a document number or a name typed as the line id is not kept
        error = "that --line-id is not in the vault, and it looks like an identity value, not a line id"
    if error is None:
        order = fields or [f for f in FIELD_ORDER if f in opened] + sorted(set(opened) - set(FIELD_ORDER))
        record["fields"] = [f for f in order if f in opened]
        record["outcome"] = "revealed" if opened else "no_values"
    record_audit(keys_path, folder, "reveal.jsonl", [record], vault_dir=vault_dir)  # before anything is shown
    if error is not None:
        raise UserError(error)
    return {f: opened[f] for f in record["fields"]}


def _squeezed(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def _line_values(vault, keys, values, line_id: str, opened: dict[str, str]) -> dict[str, str]:
    """The line's identity values, those not asked for too (to check the purpose against; never shown): each
    field that opens by itself (a damaged field not asked for does not stop the reveal)."""
    from transforms.crypto.vault import VaultError

    found = dict(opened)
    for field in _IDENTITY_VALUES:
        if field not in found:
            try:
                found.update(vault.open(keys, values, line_id, [field]))
            except VaultError:
                pass
    return found


def _quotes_values(opened: dict[str, str], *texts: str | None) -> bool:
    """Whether free text the record keeps holds one of the line's identity values (spaces and widths aside)."""
    said = [_squeezed(t) for t in texts if t]
    values = [_squeezed(v) for f, v in opened.items() if f in _IDENTITY_VALUES and v]
    return any(v in t for v in values if len(v) >= 2 for t in said)


def _attempt(keyset, vault_dir: str, line_id: str, fields: list[str] | None, purpose: str, actor: str | None) -> dict:
    """The reveal's audit record before the vault is read (its key row and outcome still unknown)."""
    from transforms.crypto.registry import location

    return {
        "event": "reveal",
        "at": utc_now(),
        **who(actor),
        "line_id": line_id,
        "requested_fields": fields,
        "fields": [],
        "purpose": purpose,
        "keyset_id": keyset.keyset_id,
        "vault_dir": location(vault_dir),
        "vault_key_version": None,
        "dek_id": None,
        "registration_event_id": None,
        "outcome": None,
    }


def _open_line(keyset, vault_dir: str, line_id: str, fields: list[str] | None, record: dict) -> tuple[dict, str | None]:
    """Read and open the line: (field -> value, None), or ({}, the error) with the outcome in ``record``.

    The line's key row (version, data key, registration) goes into ``record`` whatever happens next."""
    from pipelines.io.vault_files import read_vault
    from transforms.crypto.vault import Vault, VaultError

    opened, error = {}, None
    try:
        keys, values = read_vault(vault_dir, [line_id])
        vault = Vault(keyset)
        info = vault.key_info(keys, line_id) or {}
        record.update({k: info.get(k) for k in ("vault_key_version", "dek_id", "registration_event_id")})
        opened = vault.open(keys, values, line_id, fields)
        record["_values"] = _line_values(vault, keys, values, line_id, opened)
    except VaultError as exc:
        record["outcome"] = OUTCOMES.get(type(exc).__name__, "vault_error")
        error = str(exc)
    except Exception as exc:  # anything else while reading: recorded, then one line (no value is in it)
        record["outcome"] = "vault_unreadable"
        error = f"the vault at {vault_dir} cannot be read ({type(exc).__name__})"
    return opened, error


def _fields(p: ArgumentParser, text: str | None) -> list[str] | None:
    """The fields ``--fields`` names, checked before anything is read or recorded: a mistyped name is an error
    (it used to be recorded as a reveal of nothing, exit 0). Only a plain word is quoted back (letters and
    ``_``, as every field name): a document number or a name typed there is not."""
    if text is None:
        return None
    fields = [f.strip() for f in text.split(",") if f.strip()]
    plain = [f.isascii() and f.replace("_", "").isalpha() for f in fields]
    unknown = [f if word else "(not a field name)" for f, word in zip(fields, plain) if f not in FIELD_ORDER]
    if not fields or unknown:
        what = f"unknown field {', '.join(unknown)}" if unknown else "no field named"
        p.error(f"argument --fields: {what} (fields: {', '.join(FIELD_ORDER)})")
    return fields


def _body(argv) -> int:
    p = parser()
    args, _ = split_beam_flags(p, argv, pipeline=False)
    fields = _fields(p, args.fields)
    shown = reveal(
        args.keys, args.vault, args.line_id, args.purpose, fields=fields, actor=args.actor, audit_log=args.audit_log
    )
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    for field, value in shown.items():
        print(f"{field}: {value}")
    missing = [f for f in (fields or []) if f not in shown]
    if missing or not shown:
        print(
            f"backfill reveal: no value in the vault for line {args.line_id}: "
            f"{', '.join(missing) if missing else 'no fields'}",
            file=sys.stderr,
        )
    return 0


def main(argv=None) -> int:
    return run_main("backfill reveal", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
