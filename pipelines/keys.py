"""backfill keys: create, rotate, show and shred keys of the tokens and the vault.

    backfill keys init --keys keys.json [--force]
    backfill keys show --keys keys.json [--json]
    backfill keys rotate --keys keys.json --join
    backfill keys rotate --keys keys.json --vault [--vault-dir out/merge/vault [--retire-old]]
    backfill keys shred --keys keys.json --vault out/merge/vault --line-id L0001 [--line-id ...] \\
        [--reason "retention: terminated 2023-05-02"] [--actor NAME]
    backfill keys retokenize --keys keys.json --base out/merge/base --vault out/merge/vault \\
        --out out/retokenized [Beam flags...]

Every change appends one JSON line, without secrets, to the keys audit log
(default ``KEYS_DIR/audit/keys.jsonl``); ``shred`` also appends one line per
shredded line to ``VAULT/../audit/shred.jsonl`` (who, when, why).

``shred`` crypto-shreds: it drops the lines' wrapped data keys, re-wraps every
other data key under a new vault key version and retires (destroys) all older
vault key versions, so neither an older copy of the values nor an older copy
of the key table can be opened for those lines. The cost: every other copy of
the vault (older merge outputs) becomes unreadable too. Do not run it while a
merge writes the same vault. ``rotate --vault --vault-dir DIR --retire-old``
completes an interrupted shred.

``retokenize`` (after ``rotate --join``) rewrites a merged base's tokens under
the primary join key from the vault's originals (``pipelines/retokenize.py``)
and reports its coverage; it exits 1, listing the first failed lines, unless
every tokenized line is covered.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from typing import TYPE_CHECKING

from pipelines.common import ArgumentParser, UserError, run_main, split_beam_flags
from pipelines.reveal import append_audit, audit_path, utc_now, who

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset

__all__ = ["init_keyset", "rotate", "shred_lines", "show", "main"]


def _audit_log(keys_path: str, explicit: str | None) -> str:
    return explicit or os.path.join(os.path.dirname(os.path.abspath(keys_path)), "audit", "keys.jsonl")


@contextlib.contextmanager
def _locked(keys_path: str):
    """One keyset change at a time (an flock on KEYS.lock); the keyset must exist."""
    from transforms.crypto.keyset import check_permissions

    check_permissions(keys_path)
    fd = os.open(keys_path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _user_errors():
    """Keyset and vault errors are the user's to fix: one line each."""
    from transforms.crypto.keyset import KeysetError
    from transforms.crypto.vault import VaultError

    try:
        yield
    except (KeysetError, VaultError) as exc:
        raise UserError(str(exc)) from None


def _versions(keyset: Keyset) -> dict:
    return {"join": keyset.primary_join_version, "vault": keyset.primary_vault_version}


def init_keyset(
    keys_path: str, *, force: bool = False, actor: str | None = None, audit_log: str | None = None
) -> Keyset:
    """Create a keyset file (j1, v1); refuses to replace one unless ``force``."""
    from transforms.crypto.keyset import Keyset

    with _user_errors():
        keyset = Keyset.generate()
        keyset.save(keys_path, overwrite=force)
    append_audit(
        _audit_log(keys_path, audit_log),
        {
            "event": "keys_init",
            "at": utc_now(),
            **who(actor),
            "keyset_id": keyset.keyset_id,
            "primary": _versions(keyset),
        },
    )
    return keyset


def rotate(
    keys_path: str,
    *,
    join: bool = False,
    vault_dir: str | None = None,
    retire_old: bool = False,
    actor: str | None = None,
    audit_log: str | None = None,
) -> dict:
    """Add a join or a vault key version; for the vault, re-wrap ``vault_dir``'s data keys."""
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.vault import Vault
    from pipelines.io.vault_files import read_table, write_table

    record = {"event": "keys_rotate_join" if join else "keys_rotate_vault", "at": utc_now(), **who(actor)}
    with _user_errors(), _locked(keys_path):
        keyset = Keyset.load(keys_path)
        keys = read_table(vault_dir, "keys") if vault_dir else None
        older = keyset.versions("join" if join else "vault")
        version = keyset.rotate_join() if join else keyset.rotate_vault()
        rewrapped = Vault(keyset).rewrap(keys) if vault_dir else None  # in memory: a failure changes nothing
        keyset.save(keys_path)  # the new version is durable before anything wrapped by it is
        record.update(keyset_id=keyset.keyset_id, new_version=version, previous=older)
        if vault_dir:
            write_table(vault_dir, "keys", rewrapped)
            record.update(vault_dir=vault_dir, rewrapped=keys.num_rows)
            if retire_old:
                for old in older:
                    keyset.retire(old)
                keyset.save(keys_path)
                record["retired"] = older
    append_audit(_audit_log(keys_path, audit_log), record)
    return record


def shred_lines(
    keys_path: str,
    vault_dir: str,
    line_ids: list[str],
    *,
    reason: str | None = None,
    actor: str | None = None,
    audit_log: str | None = None,
    shred_log: str | None = None,
) -> dict:
    """Crypto-shred lines (retention, leak response): see the module docstring."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from transforms.crypto.keyset import Keyset
    from transforms.crypto.vault import Vault
    from pipelines.io.vault_files import read_table, write_table

    line_ids = list(dict.fromkeys(line_ids))
    shred_path = audit_path(vault_dir, "shred.jsonl", shred_log)
    with _user_errors(), _locked(keys_path):
        keyset = Keyset.load(keys_path)
        keys = read_table(vault_dir, "keys")
        present = set(keys.filter(pc.is_in(keys["line_id"], pa.array(line_ids, pa.string())))["line_id"].to_pylist())
        missing = [line for line in line_ids if line not in present]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise UserError(
                f"line {missing[0]}{more} has no data key in {vault_dir}: unknown, or already shredded; "
                "nothing was shredded"
            )
        vault = Vault(keyset)
        older = keyset.versions("vault")
        new_version = keyset.rotate_vault()
        kept = vault.rewrap(vault.shred(keys, line_ids))  # in memory: a failure changes nothing
        record = {
            "at": utc_now(),
            **who(actor),
            "keyset_id": keyset.keyset_id,
            "vault_dir": vault_dir,
            "reason": reason,
            "new_vault_key_version": new_version,
            "retired_vault_key_versions": older,
        }
        for line_id in line_ids:  # the record comes first: no shred goes unrecorded
            append_audit(shred_path, {"event": "shred", "line_id": line_id, **record})
        keyset.save(keys_path)  # the new version is durable before anything wrapped by it is
        write_table(vault_dir, "keys", kept)  # from here on the lines' data keys are gone from this vault
        for old in older:
            keyset.retire(old)
        keyset.save(keys_path)  # and from here on no older copy of the key table opens either
    append_audit(
        _audit_log(keys_path, audit_log),
        {"event": "keys_shred", "lines": len(line_ids), "rewrapped": kept.num_rows, **record},
    )
    return {**record, "lines": line_ids, "rewrapped": kept.num_rows}


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


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill keys", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(
        dest="action", required=True, metavar="{init,show,rotate,shred,retokenize}", parser_class=ArgumentParser
    )

    def command(name: str, help_: str) -> ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_)
        c.add_argument("--keys", required=True, help="keyset file (mode 0600)")
        c.add_argument("--actor", default=None, help="who acts (default: the OS user)")
        c.add_argument("--audit-log", default=None, help="keys audit log (default: KEYS_DIR/audit/keys.jsonl)")
        c.add_argument("--debug", action="store_true", help="show tracebacks")
        return c

    command("init", "create a keyset: join key j1, vault key v1").add_argument(
        "--force", action="store_true", help="replace an existing keyset (its data becomes unreadable)"
    )
    command("show", "list key versions and states (never the secrets)").add_argument(
        "--json", action="store_true", help="print JSON"
    )
    rot = command("rotate", "add a join-key or a vault-key version")
    which = rot.add_mutually_exclusive_group(required=True)
    which.add_argument("--join", action="store_true", help="new join key: a retokenize run must follow")
    which.add_argument("--vault", action="store_true", help="new vault key: re-wraps data keys of --vault-dir")
    rot.add_argument("--vault-dir", default=None, help="vault folder whose data keys are re-wrapped")
    rot.add_argument("--retire-old", action="store_true", help="after re-wrapping, destroy older vault keys")
    shred = command("shred", "destroy lines' data keys (crypto-shredding), with a record")
    shred.add_argument("--vault", required=True, help="vault folder")
    shred.add_argument("--line-id", required=True, action="append", help="line to shred; repeatable")
    shred.add_argument("--reason", default=None, help="why (recorded in the shred log)")
    shred.add_argument("--shred-log", default=None, help="shred log (default: VAULT/../audit/shred.jsonl)")
    retok = command("retokenize", "rewrite a merged base's tokens under the primary join key; report coverage")
    retok.add_argument("--base", required=True, help="merged base folder (backfill merge OUT/base)")
    retok.add_argument("--vault", required=True, help="its vault folder (OUT/vault)")
    retok.add_argument("--out", required=True, help="output folder: OUT/base, OUT/dead_letter, OUT/manifest.json")
    return p


def _body(argv) -> int:
    args, beam_args = split_beam_flags(parser(), argv, pipeline=lambda a: a.action == "retokenize")
    if args.action == "init":
        keyset = init_keyset(args.keys, force=args.force, actor=args.actor, audit_log=args.audit_log)
        print(
            f"created keyset {keyset.keyset_id} at {args.keys} (mode 0600): join key "
            f"{keyset.primary_join_version}, vault key {keyset.primary_vault_version}"
        )
    elif args.action == "show":
        info = show(args.keys)
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        print(f"keyset {info['keyset_id']} created {info['created_at']} (KMS: {info['kms_key_uri'] or 'none'})")
        print(f"  {'purpose':<8} {'version':<8} {'state':<8} {'algorithm':<12} {'created_at':<21} retired_at")
        for k in info["keys"]:
            print(
                f"  {k['purpose']:<8} {k['version']:<8} {k['state']:<8} {k['algorithm']:<12} "
                f"{k['created_at']:<21} {k['retired_at'] or '-'}"
            )
    elif args.action == "rotate":
        if args.join and (args.vault_dir or args.retire_old):
            raise UserError("--vault-dir and --retire-old go with --vault, not --join")
        if args.retire_old and not args.vault_dir:
            raise UserError("--retire-old needs --vault-dir (the vault re-wrapped before old keys are destroyed)")
        done = rotate(
            args.keys,
            join=args.join,
            vault_dir=args.vault_dir,
            retire_old=args.retire_old,
            actor=args.actor,
            audit_log=args.audit_log,
        )
        print(
            f"keyset {done['keyset_id']}: {done['new_version']} is now the primary "
            f"{'join' if args.join else 'vault'} key"
        )
        if args.join:
            print(
                f"  tokens in the base are still {', '.join(done['previous'])}: run `backfill keys retokenize` "
                "to move them (joins across versions do not match)"
            )
        elif args.vault_dir:
            print(
                f"  re-wrapped {done['rewrapped']:,} data keys in {args.vault_dir}"
                + (f"; retired {', '.join(done['retired'])}" if args.retire_old else "")
            )
        else:
            print("  existing data keys stay wrapped by older versions until a rotate with --vault-dir")
    elif args.action == "shred":
        done = shred_lines(
            args.keys,
            args.vault,
            args.line_id,
            reason=args.reason,
            actor=args.actor,
            audit_log=args.audit_log,
            shred_log=args.shred_log,
        )
        print(
            f"shredded {len(done['lines'])} line(s) in {args.vault}; re-wrapped {done['rewrapped']:,} data keys "
            f"under {done['new_vault_key_version']}; retired {', '.join(done['retired_vault_key_versions'])}"
        )
    else:
        return _retokenize(args, beam_args)
    return 0


def _retokenize(args, beam_args: list[str]) -> int:
    from pipelines.retokenize import failed_lines, retokenize

    with _user_errors():
        manifest = retokenize(args.keys, args.base, args.vault, args.out, beam_args)
    counts = manifest["counts"]
    append_audit(
        _audit_log(args.keys, args.audit_log),
        {
            "event": "keys_retokenize",
            "at": utc_now(),
            **who(args.actor),
            "keyset_id": manifest["keys"]["keyset_id"],
            "join_key_version": manifest["keys"]["join"],
            "base": args.base,
            "out": args.out,
            **{k: counts.get(k, 0) for k in ("lines", "with_tokens", "retokenized", "already_current", "failed")},
        },
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
