"""backfill reveal: decrypt one line's identity from the vault, on record.

    backfill reveal --keys keys.json --vault out/merge/vault --line-id L0001 \\
        --purpose "complaint 2026-118: verify the holder" [--fields name,doc_number] \\
        [--actor zhang.wei] [--audit-log /secure/audit/reveal.jsonl]
    python -m pipelines.reveal ...

Prints ``field: value`` lines as UTF-8 text. Before anything is printed, one
JSON line is appended to the audit log (default ``VAULT/../audit/reveal.jsonl``;
opened with O_APPEND, mode 0600)::

    {"event": "reveal", "at": "2026-11-30T08:00:00Z", "actor": "zhang.wei", "os_user": "ops",
     "host": "...", "line_id": "L0001", "fields": ["name"], "purpose": "...",
     "keyset_id": "ks_...", "vault_key_version": "v2", "dek_id": "...", "outcome": "revealed"}

Failed attempts (unknown line, a record that fails authentication) are
recorded too, with their outcome; values never are. Without a purpose (or
with a blank one) nothing is read.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import platform
import sys

from pipelines.common import ArgumentParser, UserError, run_main, split_beam_flags

__all__ = ["append_audit", "audit_path", "reveal", "utc_now", "who", "main", "FIELD_ORDER"]

FIELD_ORDER = ("doc_type", "doc_number", "name", "address", "handler_doc_type", "handler_doc_number", "handler_name")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def audit_path(vault_dir: str, name: str, explicit: str | None = None) -> str:
    """The audit log: ``explicit``, else ``VAULT/../audit/NAME``; local files only."""
    path = explicit or os.path.join(os.path.dirname(os.path.normpath(vault_dir)), "audit", name)
    if "://" in path:
        raise UserError(f"the audit log must be a local append-only file, not {path}; pass --audit-log PATH")
    return path


def append_audit(path: str, record: dict) -> None:
    """Append one JSON line (O_APPEND, fsync); the file is made 0600."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise UserError(f"cannot open the audit log {path} ({exc.strerror}); nothing was revealed") from None
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(fd)
    except OSError as exc:
        raise UserError(f"cannot write the audit log {path} ({exc.strerror})") from None
    finally:
        os.close(fd)


def who(actor: str | None) -> dict:
    """Who acts: the named actor (if given), the OS user and the host."""
    try:
        os_user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a name
        os_user = f"uid:{os.getuid()}"
    return {"actor": actor or os_user, "os_user": os_user, "host": platform.node()}


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill reveal", description=__doc__.splitlines()[0])
    p.add_argument("--keys", required=True, help="keyset file (mode 0600)")
    p.add_argument("--vault", required=True, help="vault folder (keys/ and values/), local or gs://")
    p.add_argument("--line-id", required=True, help="the line to reveal")
    p.add_argument("--purpose", default=None, help="why this line is revealed (required; recorded)")
    p.add_argument("--fields", default=None, help="comma-separated fields to reveal (default: all)")
    p.add_argument("--actor", default=None, help="who asks (default: the OS user)")
    p.add_argument("--audit-log", default=None, help="append-only audit log (default: VAULT/../audit/reveal.jsonl)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


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
    """Decrypt one line after recording the access; returns field -> value."""
    from transforms.crypto.keyset import Keyset, KeysetError
    from transforms.crypto.vault import AuthenticationFailed, UnknownLine, Vault, VaultError
    from pipelines.io.vault_files import read_vault

    purpose = (purpose or "").strip()
    if not purpose:
        raise UserError("a purpose is required: --purpose TEXT says why this line is revealed; nothing was read")
    log_path = audit_path(vault_dir, "reveal.jsonl", audit_log)
    try:
        keyset = Keyset.load(keys_path)
        keys, values = read_vault(vault_dir, [line_id])
    except (KeysetError, VaultError) as exc:
        raise UserError(str(exc)) from None
    vault = Vault(keyset)
    info = vault.key_info(keys, line_id) or {}
    record = {
        "event": "reveal",
        "at": utc_now(),
        **who(actor),
        "line_id": line_id,
        "requested_fields": fields,
        "fields": [],
        "purpose": purpose,
        "keyset_id": keyset.keyset_id,
        "vault_dir": vault_dir,
        "vault_key_version": info.get("vault_key_version"),
        "dek_id": info.get("dek_id"),
        "outcome": None,
    }
    try:
        opened = vault.open(keys, values, line_id, fields)
    except VaultError as exc:
        outcome = {UnknownLine: "unknown_line", AuthenticationFailed: "failed_authentication"}
        record["outcome"] = outcome.get(type(exc), "vault_error")
        append_audit(log_path, record)
        raise UserError(str(exc)) from None
    order = fields or [f for f in FIELD_ORDER if f in opened] + sorted(set(opened) - set(FIELD_ORDER))
    record["fields"] = [f for f in order if f in opened]
    record["outcome"] = "revealed" if opened else "no_values"
    append_audit(log_path, record)  # recorded before anything is shown
    return {f: opened[f] for f in record["fields"]}


def _body(argv) -> int:
    args, _ = split_beam_flags(parser(), argv, pipeline=False)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
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
