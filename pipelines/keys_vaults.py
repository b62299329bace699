"""The vaults a key change must carry along (``pipelines/keys.py``): read every known vault's key
table, drop shredded lines' data keys and re-wrap the rest in memory, write them back, and the
``vault_rewrap`` records of the vaults that changed."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from pipelines.common import UserError
from pipelines.reveal import audit_dir

if TYPE_CHECKING:
    import pyarrow as pa

    from transforms.crypto.keyset import Keyset
    from transforms.crypto.registry import Registry


@dataclasses.dataclass
class _Plan:
    """One vault's key table before and after a re-wrap (in memory until written)."""

    vault: str  # the registry's name of the folder
    status: str  # ok | missing (no such folder) | empty (no key table)
    keys: pa.Table | None = None
    dropped: list[str] = dataclasses.field(default_factory=list)  # line_ids whose data keys are dropped
    dropped_deks: list[str] = dataclasses.field(default_factory=list)
    dead: int = 0  # data keys under versions that open nothing already (left as they are)
    kept: pa.Table | None = None

    @property
    def rewrapped(self) -> int:
        return 0 if self.kept is None else self.kept.num_rows - self.dead


def _exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(path) if "://" in path else os.path.isdir(path)


def _read_plans(keyset: Keyset, folders: list[str], named: str | None) -> list[_Plan]:
    """The key tables of ``folders``; a known vault that cannot be read stops the change, naming it."""
    from pipelines.io.vault_files import read_table, table_files
    from transforms.crypto.vault import VaultError

    plans = []
    for folder in folders:
        if not _exists(folder):
            if folder == named:
                raise UserError(f"no vault at {folder}; nothing was changed")
            plans.append(_Plan(folder, "missing"))
            continue
        try:
            if not table_files(folder, "keys"):
                if folder == named:
                    raise UserError(f"no vault at {folder} (no complete keys/ table); nothing was changed")
                plans.append(_Plan(folder, "empty"))
                continue
            keys = read_table(folder, "keys")
        except VaultError as exc:
            raise UserError(
                f"vault {folder}, known to keyset {keyset.keyset_id}, cannot be read ({exc}): its data keys "
                "still need the vault key versions in use; repair it, or delete the folder if that copy is not "
                "needed; nothing was changed"
            ) from None
        plans.append(_Plan(folder, "ok", keys))
    return plans


def _rewrap_plans(
    keyset: Keyset,
    plans: list[_Plan],
    usable: list[str],
    line_ids: list[str],
    shredded_deks: set[str],
    exact: str | None = None,
) -> None:
    """In memory: drop the lines' (and every earlier shred's) data keys, re-wrap the rest under the primary.

    In the vault ``exact`` (the one a shred names) only ``line_ids`` are dropped: what it shreds there is
    exactly what was asked. Data keys under a version that already opens nothing (retired, or scheduled
    for destruction) are left as they are: they are unreadable whatever happens here."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from transforms.crypto.vault import Vault, VaultError

    vault = Vault(keyset)
    for plan in plans:
        if plan.status != "ok":
            continue
        keys = plan.keys
        earlier = [] if plan.vault == exact else sorted(shredded_deks)
        drop = pc.or_(
            pc.is_in(keys["line_id"], pa.array(line_ids, pa.string())),
            pc.is_in(keys["dek_id"], pa.array(earlier, pa.string())),
        )
        gone = keys.filter(drop)
        plan.dropped = sorted(set(gone["line_id"].to_pylist()))
        plan.dropped_deks = sorted(set(gone["dek_id"].to_pylist()))
        rest = keys.filter(pc.invert(drop))
        live = pc.is_in(rest["vault_key_version"], pa.array(usable + [keyset.primary_vault_version], pa.string()))
        dead = rest.filter(pc.invert(live))
        plan.dead = dead.num_rows
        try:
            plan.kept = pa.concat_tables([vault.rewrap(rest.filter(live)), dead.cast(keys.schema)])
        except VaultError as exc:
            raise UserError(
                f"vault {plan.vault}, known to keyset {keyset.keyset_id}, cannot be re-wrapped ({exc}); "
                "nothing was changed"
            ) from None


def _write_plans(plans: list[_Plan]) -> None:
    from pipelines.io.vault_files import write_table

    for plan in plans:
        if plan.status == "ok":
            write_table(plan.vault, "keys", plan.kept)


def _vault_records(plans: list[_Plan], skip: str | None, record: dict) -> list[tuple[str, dict]]:
    """A ``vault_rewrap`` record for the chain of every vault that changed (but ``skip``)."""
    out = []
    for plan in plans:
        if plan.status == "ok" and plan.vault != skip and (plan.dropped or plan.rewrapped):
            out.append(
                (
                    plan.vault,
                    {
                        **record,
                        "event": "vault_rewrap",
                        "vault_dir": plan.vault,
                        "lines_dropped": plan.dropped,
                        "rewrapped": plan.rewrapped,
                    },
                )
            )
    return out


def _append_vault_records(keyset, registry, keys_path: str, items: list[tuple[str, dict]], log: str) -> None:
    from transforms.crypto.audit import append

    for vault, record in items:
        append(keyset, registry, audit_dir(vault, keys_path), log, [record])


def _known_vaults(registry: Registry, *named: str) -> list[str]:
    """The named folders first, then every other vault the registry knows."""
    from transforms.crypto.registry import location

    first = [location(n) for n in named if n]
    return list(dict.fromkeys(first + registry.vaults))


def _summary(plans: list[_Plan]) -> list[dict]:
    return [
        {
            "vault": p.vault,
            "status": p.status,
            "lines_unreadable": p.dropped,
            "rewrapped": p.rewrapped,
            "already_unreadable": p.dead,
        }
        for p in plans
    ]
