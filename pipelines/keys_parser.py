"""The command line of ``backfill keys`` (``pipelines/keys.py``): its subcommands and flags."""

from __future__ import annotations

import argparse

from pipelines.common import ArgumentParser
from pipelines.flags import add_merged, add_progress_flag


_KEK_CHECK = "key-encryption key the keyset must be wrapped by (checked; the keyset names its own)"
kek_help = {
    "init": "wrap the new keyset under this key-encryption key: gcp-kms://projects/P/locations/L/keyRings/R/"
    "cryptoKeys/K, aws-kms://arn:aws:kms:REGION:ACCOUNT:key/ID or local-kek://PATH (created if missing); "
    "required for a keyset at a URI",
    "wrap": "the key-encryption key to wrap the keyset under from now on (gcp-kms://, aws-kms://, local-kek://)",
}


_SWITCH = "\0switch"  # ``rotate --vault`` given bare: the old spelling of --vault-key


def _rotate_which(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``rotate``: which key. ``--vault`` bare is the old switch (``--vault-key``); ``--vault DIR`` implies it."""
    if args.vault_dir == _SWITCH:
        args.vault_dir, args.vault_key = None, True
    if args.vault_dir is not None and not args.join:
        args.vault_key = True
    if args.join and args.vault_key:
        parser.error("--join-key and --vault-key: rotate one key at a time")
    if not (args.join or args.vault_key):
        parser.error("say which key: --join-key or --vault-key (or --vault DIR)")


def _rotate_flags(rot: ArgumentParser) -> None:
    """``rotate``: which key (``--join-key`` or ``--vault-key``), the vault re-wrapped (``--vault DIR``)."""
    which = rot.add_mutually_exclusive_group()
    which.add_argument(
        "--join-key", "--join", dest="join", action="store_true", help="new join key: a retokenize run must follow"
    )
    which.add_argument("--vault-key", action="store_true", help="new vault key (implied by --vault DIR)")
    rot.add_argument(
        "--vault",
        "--vault-dir",
        dest="vault_dir",
        nargs="?",
        const=_SWITCH,
        metavar="DIR",
        help="vault folder whose data keys are re-wrapped under the new vault key",
    )
    rot.checks.append(_rotate_which)
    rot.add_argument(
        "--retire-old",
        action="store_true",
        help="re-wrap every known vault, then schedule the older vault keys for destruction",
    )
    rot.add_argument("--now", action="store_true", help="with --retire-old: destroy the older keys at once")


def _retokenize_flags(retok: ArgumentParser) -> None:
    add_merged(
        retok,
        base_help="merged base folder (a merge, compact or retention OUT/base)",
        vault_help="its vault folder (OUT/vault)",
        vault_required=True,
        append=False,
    )
    retok.add_argument("--out", required=True, help="output folder: OUT/base, OUT/dead_letter, OUT/manifest.json")
    add_progress_flag(retok)


def build_parser(description: str) -> ArgumentParser:
    p = ArgumentParser(prog="backfill keys", description=description)
    sub = p.add_subparsers(
        dest="action",
        required=True,
        metavar="{init,show,rotate,shred,destroy-due,restore,wrap,retokenize}",
        parser_class=ArgumentParser,
    )

    def command(name: str, help_: str, version: bool = True) -> ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_, version=version)
        c.add_argument("--keys", required=True, help="keyset: a local file (mode 0600) or a URI (gs://, s3://)")
        c.add_argument("--kek", default=None, help=kek_help.get(name, _KEK_CHECK))
        c.add_argument("--actor", default=None, help="who acts, recorded as stated_actor beside the OS user")
        c.add_argument(
            "--audit-log", default=None, help="refused unless it names the keys log (KEYS_DIR/audit/keys.jsonl)"
        )
        c.add_argument("--debug", action="store_true", help="show tracebacks")
        return c

    command("init", "create a keyset: join key j1, vault key v1, audit key a1").add_argument(
        "--force", action="store_true", help="replace an existing keyset (its data becomes unreadable)"
    )
    command("show", "list key versions and states (never the secrets)").add_argument(
        "--json", action="store_true", help="print JSON"
    )
    _rotate_flags(command("rotate", "add a join-key or a vault-key version"))
    shred = command("shred", "destroy lines' data keys in every known vault (crypto-shredding), with a record")
    shred.add_argument("--vault", required=True, help="vault folder")
    shred.add_argument("--line-id", required=True, action="append", help="line to shred; repeatable")
    shred.add_argument("--reason", default=None, help="why (recorded in the shred log)")
    shred.add_argument(
        "--shred-log", default=None, help="refused unless it names the vault's log (VAULT/../audit/shred.jsonl)"
    )
    shred.add_argument("--dry-run", action="store_true", help="show what would become unreadable; change nothing")
    shred.add_argument("--now", action="store_true", help="destroy the older vault keys at once (no waiting period)")
    command("destroy-due", "destroy the key versions whose waiting period is over")
    command("restore", "put a key version scheduled for destruction back in use", version=False).add_argument(
        "--key-version", "--version", dest="version", required=True, help="the version (vN or jN)"
    )
    command("wrap", "wrap the keyset under a (new) key-encryption key, in place").add_argument(
        "--new-kek",
        action="store_true",
        help="create the local-kek:// file when it does not exist (without it a missing file is an error: a "
        "mistyped path would wrap the keyset under a new key nobody knows of)",
    )
    _retokenize_flags(
        command("retokenize", "rewrite a merged base's tokens under the primary join key; report coverage")
    )
    return p
