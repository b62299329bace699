"""backfill keys: create, rotate, show, shred and destroy keys of the tokens and the vault.

    backfill keys init --keys keys.json [--force]                                   # local, in clear
    backfill keys init --keys s3://bucket/keys/keys.json --kek aws-kms://arn:aws:kms:...:key/ID
    backfill keys wrap --keys keys.json --kek gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K
    backfill keys show --keys keys.json [--json]
    backfill keys rotate --keys keys.json --join-key
    backfill keys rotate --keys keys.json --vault-key
    backfill keys rotate --keys keys.json --vault out/merge/vault [--retire-old [--now]]     # a vault key
    backfill keys shred --keys keys.json --vault out/merge/vault --line-id L0001 [--line-id ...] \\
        [--reason "retention: terminated 2023-05-02"] [--actor NAME] [--dry-run] [--now]
    backfill keys destroy-due --keys keys.json
    backfill keys restore --keys keys.json --key-version v1
    backfill keys retokenize --keys keys.json --merged out/merge --out out/retokenized [Beam flags...]

**Where the keyset lives.** ``--keys`` is a local file or a URI (``gs://``,
``s3://``); a keyset at a URI is wrapped by a key-encryption key (``--kek`` at
``init`` or ``wrap``; ``pipelines/keys_init.py``) and names it, so every other
command needs only ``--keys``; ``--kek`` given to them must be that KEK.

**The vaults a keyset knows.** A merge, a compaction, a retention purge, a
reveal and every command here record the vault folder they write or open in
the keyset's registry (``KEYS.registry.json`` beside the keyset;
``transforms/crypto/registry.py``).

**shred** crypto-shreds lines: in every vault the registry knows (and the one
named), it drops the lines' data-key rows and re-wraps every other data key
under a new vault key version, *then* takes the older versions out of use.
So no other line of any known vault becomes unreadable, while the shredded
lines are gone from all of them, and any copy the registry does not know
(a backup made with ``cp``) no longer opens at all. A known vault that cannot
be read or re-wrapped stops the shred before anything changes, naming it.
``--dry-run`` prints what would become unreadable (per vault: how many lines,
their line_ids; never a value) and changes nothing. The older versions are
*scheduled* for destruction (``destroy_after`` = now + 30 days, as Cloud KMS
schedules a version's destruction): from now on they open nothing, their
material is destroyed by the first ``keys`` command after that date (or by
``keys destroy-due``), and ``keys restore --key-version vN`` undoes it until then.
``--now`` destroys them at once. A due version still wrapping data keys in a
known vault (one registered after the shred) is not destroyed; the vault is
named.

**rotate --vault DIR** (a new vault key; ``--vault-key`` alone adds one
without re-wrapping) re-wraps DIR's data keys under the new version; with ``--retire-old`` every known vault is re-wrapped and the older
versions are scheduled for destruction (``--now``: destroyed), which also
completes an interrupted shred (the data keys it dropped are in the registry).

**Audit.** Every change appends a chained record (``transforms/crypto/audit.py``)
to the keyset's log ``KEYS_DIR/audit/keys.jsonl``; a shred appends one record
per line to the named vault's ``VAULT/../audit/shred.jsonl``, and every other
vault it re-wraps gets a ``vault_rewrap`` record in its ``VAULT/../audit/keys.jsonl``.
The logs cannot be moved: ``--audit-log`` and ``--shred-log`` naming another
file are refused. The actor is the OS user; ``--actor`` is recorded as
``stated_actor``. Do not run a shred while a merge writes a known vault.

``retokenize`` (after ``rotate --join-key``) rewrites a merged base's tokens under
the primary join key from the vault's originals (``pipelines/retokenize.py``)
and reports its coverage; it exits 1, listing the first failed lines, unless
every tokenized line is covered.

The steps live beside this module: ``keys_init`` (init and wrap), ``keys_session`` (the keyset under its
lock, the keys log, the ``--kek`` check),
``keys_vaults`` (the known vaults' key tables, each re-wrapped by a Beam job into a staged generation, then
published: ``shred_job``), ``keys_retire``
(older versions out of use), ``keys_rotate``, ``keys_shred`` and ``keys_parser`` (the flags).
"""

from __future__ import annotations

import json
import os
import sys

from pipelines.common import ArgumentParser, UserError, refuse_document_numbers, run_main, split_beam_flags
from pipelines.keys_init import init_keyset, wrap_keyset
from pipelines.keys_parser import build_parser
from pipelines.keys_retire import _destroy_due
from pipelines.keys_rotate import rotate
from pipelines.keys_session import _log_keys, _session, _user_errors, check_kek, keys_audit_dir, register_vault
from pipelines.keys_shred import shred_lines
from pipelines.reveal import audit_dir, record_audit, refuse_other_log, utc_now, who

__all__ = [
    "init_keyset",
    "wrap_keyset",
    "rotate",
    "shred_lines",
    "destroy_due",
    "restore",
    "register_vault",
    "show",
    "main",
]

_SHOWN_IDS = 20  # line_ids listed per vault by --dry-run


def parser() -> ArgumentParser:
    return build_parser(__doc__.splitlines()[0])


def destroy_due(keys_path: str, *, actor: str | None = None, audit_log: str | None = None) -> dict:
    """Destroy the vault and join key versions whose waiting period is over (see the module docstring)."""
    with _session(keys_path, audit_log) as (keyset, registry):
        destroyed, blocked = _destroy_due(keyset, registry, keys_path, actor)
        return {
            "keyset_id": keyset.keyset_id,
            "destroyed": destroyed,
            "blocked": blocked,
            "scheduled": keyset.scheduled(),
        }


def restore(keys_path: str, version: str, *, actor: str | None = None, audit_log: str | None = None) -> dict:
    """Put a version scheduled for destruction back in use."""
    with _session(keys_path, audit_log) as (keyset, registry):
        keyset.restore(version)
        keyset.save(keys_path)
        record = {"event": "keys_restore", "at": utc_now(), **who(actor), "version": version}
        _log_keys(keyset, registry, keys_path, record)
    return record


def show(keys_path: str) -> dict:
    """What may be shown of a keyset: ids, versions, states, dates; never material."""
    from transforms.crypto.keyset import Keyset

    with _user_errors():
        keyset = Keyset.load(keys_path)
    return {
        "keyset_id": keyset.keyset_id,
        "created_at": keyset.created_at,
        "kms_key_uri": keyset.kms_key_uri,
        "keys": [vars(info) for info in keyset.info()],
    }


def _print_show(args) -> int:
    info = show(args.keys)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"keyset {info['keyset_id']} created {info['created_at']} (KEK: {info['kms_key_uri'] or 'none, in clear'})")
    print(f"  {'purpose':<8} {'version':<8} {'state':<18} {'algorithm':<12} {'created_at':<21} retired_at")
    for k in info["keys"]:
        when = k["retired_at"] or (f"destroy after {k['destroy_after']}" if k.get("destroy_after") else "-")
        print(
            f"  {k['purpose']:<8} {k['version']:<8} {k['state']:<18} {k['algorithm']:<12} {k['created_at']:<21} {when}"
        )
    return 0


def _print_rotate(args) -> int:
    if args.join and (args.vault_dir or args.retire_old):
        raise UserError("--vault and --retire-old go with --vault-key, not --join-key")
    if args.retire_old and not args.vault_dir:
        raise UserError("--retire-old needs --vault DIR (the vault re-wrapped before old keys are destroyed)")
    if args.now and not args.retire_old:
        raise UserError("--now goes with --retire-old")
    done = rotate(
        args.keys,
        join=args.join,
        vault_dir=args.vault_dir,
        retire_old=args.retire_old,
        now=args.now,
        actor=args.actor,
        audit_log=args.audit_log,
    )
    print(
        f"keyset {done['keyset_id']}: {done['new_version']} is now the primary {'join' if args.join else 'vault'} key"
    )
    if args.join:
        print(
            f"  tokens in the base are still {', '.join(done['previous'])}: run `backfill keys retokenize` "
            "to move them (joins across versions do not match)"
        )
    elif args.vault_dir:
        print(f"  re-wrapped {done['rewrapped']:,} data keys in {args.vault_dir}")
        for v in done["vaults"][1:]:
            print(f"  re-wrapped {v['rewrapped']:,} data keys in {v['vault']} ({v['status']})")
        if args.retire_old:
            print("  " + _retired_text(done["retired"], done["destroy_after"]))
    else:
        print("  existing data keys stay wrapped by older versions until a rotate with --vault DIR")
    return 0


def _retired_text(versions: list[str], destroy_after: str | None) -> str:
    if not versions:
        return "no older vault key in use"
    if destroy_after:
        return (
            f"{', '.join(versions)} open nothing now and are destroyed after {destroy_after} "
            f"(backfill keys restore --key-version {versions[0]} undoes it until then)"
        )
    return f"destroyed {', '.join(versions)}"


def _ids(ids: list[str], total: int | None = None) -> str:
    total = len(ids) if total is None else total  # ids may be the first of them only
    return ", ".join(ids[:_SHOWN_IDS]) + (f" and {total - _SHOWN_IDS:,} more" if total > _SHOWN_IDS else "")


def _print_shred(args) -> int:
    done = shred_lines(
        args.keys,
        args.vault,
        args.line_id,
        reason=args.reason,
        actor=args.actor,
        audit_log=args.audit_log,
        shred_log=None,
        dry_run=args.dry_run,
        now=args.now,
    )
    if done["dry_run"]:
        print(f"dry run: nothing was changed. Shredding {len(done['lines']):,} line(s) would make unreadable:")
    else:
        print(
            f"shredded {len(done['lines']):,} line(s) in {args.vault}; re-wrapped {done['rewrapped']:,} data keys "
            f"under {done['new_vault_key_version']}"
        )
    for v in done["vaults"]:
        if v["status"] != "ok":
            print(f"  {v['vault']}: {'not found' if v['status'] == 'missing' else 'no key table'} (nothing to do)")
            continue
        lost, n_lost = v["lines_unreadable"], v.get("lines_unreadable_count", len(v["lines_unreadable"]))
        print(
            f"  {v['vault']}: {n_lost:,} line(s)" + (f" ({_ids(lost, n_lost)})" if lost else "") + f"; "
            f"{v['rewrapped']:,} other data key(s) {'would be ' if done['dry_run'] else ''}re-wrapped"
            + (f"; {v['already_unreadable']:,} already unreadable" if v["already_unreadable"] else "")
        )
    versions = done["retired_vault_key_versions"]
    if done["dry_run"]:
        when = "destroyed at once" if args.now else "scheduled for destruction"
        print(f"  and every copy of a vault not listed here: vault key {', '.join(versions) or '-'} would be {when}")
    else:
        print("  " + _retired_text(versions, done.get("destroy_after")))
    return 0


def _refuse_identity_text(args) -> None:
    """Text the keys and shred logs keep, or an error quotes, holds no identity value: a document number in
    ``--actor`` or a shred's ``--reason`` is refused (as a reveal's ``--purpose``), and so is a control
    character in a value quoted back (``--line-id``, ``--key-version``), before anything is read or written."""
    refuse_document_numbers("--actor", args.actor)
    refuse_document_numbers("--reason", getattr(args, "reason", None))
    for flag, values in (
        ("--line-id", getattr(args, "line_id", None)),
        ("--key-version", [getattr(args, "version", "")]),
    ):
        if any(isinstance(v, str) and not v.isprintable() for v in values or []):
            raise UserError(f"{flag} holds control characters; nothing was done")


def _body(argv) -> int:
    args, beam_args = split_beam_flags(parser(), argv, pipeline=lambda a: a.action == "retokenize")
    _refuse_identity_text(args)
    if args.action == "shred" and args.shred_log is not None:
        refuse_other_log(args.shred_log, os.path.join(audit_dir(args.vault, args.keys), "shred.jsonl"), "--shred-log")
    if args.action not in ("init", "wrap"):
        check_kek(args.keys, args.kek)
    if args.action == "init":
        keyset = init_keyset(args.keys, kek=args.kek, force=args.force, actor=args.actor, audit_log=args.audit_log)
        how = f"wrapped by {keyset.kms_key_uri}" if keyset.kms_key_uri else "mode 0600"
        print(
            f"created keyset {keyset.keyset_id} at {args.keys} ({how}): join key "
            f"{keyset.primary_join_version}, vault key {keyset.primary_vault_version}"
        )
    elif args.action == "wrap":
        done = wrap_keyset(args.keys, args.kek, actor=args.actor, audit_log=args.audit_log, new_kek=args.new_kek)
        print(f"keyset {done['keyset_id']} at {args.keys} is wrapped by {done['kek']}")
    elif args.action == "show":
        return _print_show(args)
    elif args.action == "rotate":
        return _print_rotate(args)
    elif args.action == "shred":
        return _print_shred(args)
    elif args.action == "destroy-due":
        done = destroy_due(args.keys, actor=args.actor, audit_log=args.audit_log)
        print(f"keyset {done['keyset_id']}: destroyed {', '.join(done['destroyed']) or 'nothing'}")
        for version, when in done["scheduled"].items():
            print(f"  {version}: destroyed after {when}")
        if done["blocked"]:
            version, vaults = next(iter(done["blocked"].items()))
            raise UserError(
                f"key {version} is due but vault {vaults[0]} still has data keys under it: restore it "
                f"(backfill keys restore --key-version {version}) and re-wrap that vault, or delete that copy"
            )
    elif args.action == "restore":
        done = restore(args.keys, args.version, actor=args.actor, audit_log=args.audit_log)
        print(f"restored {done['version']}: it opens again")
    else:
        return _retokenize(args, beam_args)
    return 0


def _retokenize(args, beam_args: list[str]) -> int:
    from pipelines.retokenize import failed_lines, retokenize

    refuse_other_log(args.audit_log, os.path.join(keys_audit_dir(args.keys), "keys.jsonl"))
    with _user_errors():
        manifest = retokenize(args.keys, args.base, args.vault, args.out, beam_args, args.progress_seconds)
    counts = manifest["counts"]
    record_audit(
        args.keys,
        keys_audit_dir(args.keys),
        "keys.jsonl",
        [
            {
                "event": "keys_retokenize",
                "at": utc_now(),
                **who(args.actor),
                "join_key_version": manifest["keys"]["join"],
                "base": args.base,
                "out": args.out,
                **{k: counts.get(k, 0) for k in ("lines", "with_tokens", "retokenized", "already_current", "failed")},
            }
        ],
        nothing="the retokenized base is written but its record is missing",
    )
    covered = counts.get("retokenized", 0) + counts.get("already_current", 0)
    print(
        f"retokenized {args.base} -> {args.out}/base under join key {manifest['keys']['join']}: "
        f"coverage {covered:,} / {counts.get('with_tokens', 0):,} lines with tokens "
        f"({100 * counts['coverage']:.2f}%); "
        f"{counts.get('lines', 0) - counts.get('with_tokens', 0):,} lines have none"
    )
    if counts.get("failed", 0):
        shown = failed_lines(args.out)
        raise UserError(
            f"{counts['failed']:,} line(s) could not be re-tokenized and keep their old tokens: "
            f"{', '.join(shown)}{' ...' if counts['failed'] > len(shown) else ''} "
            f"(all in {args.out}/dead_letter)"
        )
    return 0


def main(argv=None) -> int:
    return run_main("backfill keys", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
