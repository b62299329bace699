"""What keeps a purge from publishing a vault that opens nothing: one purge at a time into an OUT, and the
staged vault's data keys checked against the keyset as it is when OUT is switched in.

A purge copies the input vault's key table into its staged folder before its shred. That copy is no vault
the keyset knows, so a key change that runs meanwhile (another purge, an incident's shred, ``keys shred``,
``keys rotate --retire-old``) re-wraps the input vault and takes the version that wrapped the copy out of
use: the copy then opens nothing. :func:`check_opens` runs under the keyset's lock, held until OUT is
switched in (from then on OUT/vault is a known vault), and refuses to publish such a copy.
"""

from __future__ import annotations


from pipelines.common import UserError
from pipelines.io.folder_lock import one_run_at_a_time

__all__ = ["one_purge_at_a_time", "check_opens"]


def one_purge_at_a_time(out: str):
    """An exclusive lock on the local OUT folder while this purge runs: a second purge into the same OUT is
    refused in one line before it reads or shreds anything. Object stores: not locked."""
    return one_run_at_a_time(
        out,
        "another purge is writing into it; run one retention at a time per folder (nothing was read or "
        "shredded by this one)",
    )


def check_opens(keys: str, staged_vault: str, dead_before: set[str]) -> None:
    """The staged vault's data keys are wrapped by versions in use now, but those that opened nothing when the
    purge began (``dead_before``: copied as they were). Any other version out of use was retired by another
    key change meanwhile: publishing would replace OUT with a vault that opens nothing; and so would a vault
    none of whose versions is in use (a kept copy completed without restoring its key). Call under the
    keyset's lock."""
    from pipelines.io.vault_files import column_values, table_files
    from transforms.crypto.keyset import Keyset

    usable = set(Keyset.load(keys).versions("vault"))
    versions = column_values(table_files(staged_vault, "keys"), "vault_key_version")
    lost = sorted(versions - usable - dead_before)
    if versions and not versions & usable:  # all of it out of use, whenever: the vault would open no line at all
        lost = sorted(versions - usable)
    if lost:
        raise UserError(
            f"the purge's copy of the vault's key table is wrapped by vault key {lost[0]}, which another key "
            "change (a purge, a shred, a rotation) took out of use: it would open nothing, so nothing was "
            f"published; `backfill keys restore --key-version {lost[0]}` puts it back in use"
        )
