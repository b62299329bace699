"""``backfill keys shred``: crypto-shred lines in every vault the keyset knows (``pipelines/keys.py``).

The steps, in this order: plan in memory (read every known vault, drop the lines' data keys, re-wrap the
rest under a new vault key version); record the shred (no shred goes unrecorded); save the registry and
the keyset; write every vault's key table; take the older vault key versions out of use; record the
key change in the keys log.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipelines.common import UserError
from pipelines.keys_retire import _destroy_due, _retire
from pipelines.keys_session import _log_keys, _session
from pipelines.keys_vaults import (
    _append_vault_records,
    _known_vaults,
    _Plan,
    _read_plans,
    _rewrap_plans,
    _summary,
    _vault_records,
    _write_plans,
)
from pipelines.reveal import audit_dir, utc_now, who

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.registry import Registry

__all__ = ["shred_lines"]


def shred_lines(
    keys_path: str,
    vault_dir: str,
    line_ids: list[str],
    *,
    reason: str | None = None,
    actor: str | None = None,
    audit_log: str | None = None,
    shred_log: str | None = None,
    published_as: str | None = None,
    dry_run: bool = False,
    now: bool = False,
) -> dict:
    """Crypto-shred lines in every vault the keyset knows (see the module docstring of ``pipelines/keys.py``).

    Args:
        vault_dir: the vault the lines are named in (they must have a data key there).
        shred_log: for a vault staged before it is published (retention): the log of its published home,
            ``HOME/../audit/shred.jsonl``; the vault is registered as ``HOME`` (``published_as``, or the
            folder of its name beside that audit folder). The command line refuses any other log.
        dry_run: read and plan only: nothing is written, saved or recorded.
        now: destroy the older vault key versions at once instead of scheduling their destruction.
    """
    from transforms.crypto.registry import location

    line_ids = list(dict.fromkeys(line_ids))
    named = location(vault_dir)
    home, log_folder = _shred_home(named, keys_path, shred_log, published_as)
    with _session(keys_path, audit_log) as (keyset, registry):
        destroyed = [] if dry_run else _destroy_due(keyset, registry, keys_path, actor)[0]
        plans = _read_plans(keyset, _known_vaults(registry, named, home), named)
        _check_lines(plans[0], line_ids, vault_dir)
        older = keyset.versions("vault")
        new_version = keyset.rotate_vault()  # in memory until saved
        _rewrap_plans(keyset, plans, older, line_ids, registry.shredded_deks, exact=named)
        result = _shred_result(keyset, home, line_ids, plans, new_version, older, now, dry_run)
        if dry_run:
            return result
        record = _shred_record(keyset, home, actor, reason, new_version, older, now)
        _record_shred(keyset, registry, keys_path, log_folder, plans, named, home, line_ids, record)
        result["destroy_after"] = record["destroy_after"] = _apply_shred(
            keyset, registry, keys_path, plans, home, older, now
        )
        _log_keys(
            keyset,
            registry,
            keys_path,
            {
                "event": "keys_shred",
                **record,
                "lines": len(line_ids),
                "rewrapped": plans[0].kept.num_rows,
                "vaults": _summary(plans),
                "destroyed_due": destroyed,
            },
        )
    return result


def _shred_home(named: str, keys_path: str, shred_log: str | None, published_as: str | None) -> tuple[str, str]:
    """The vault's home (where it is registered: its published folder) and the folder of its shred log."""
    home = published_as or (
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(shred_log))), os.path.basename(named))
        if shred_log
        else named
    )
    log_folder = os.path.dirname(os.path.abspath(shred_log)) if shred_log else audit_dir(home, keys_path)
    return home, log_folder


def _check_lines(plan: _Plan, line_ids: list[str], vault_dir: str) -> None:
    """Every line must have a data key in the named vault."""
    present = set(plan.keys["line_id"].to_pylist())
    missing = [line for line in line_ids if line not in present]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(
            f"line {missing[0]}{more} has no data key in {vault_dir}: unknown, or already shredded; "
            "nothing was shredded"
        )


def _shred_result(
    keyset: Keyset,
    home: str,
    line_ids: list[str],
    plans: list[_Plan],
    new_version: str,
    older: list[str],
    now: bool,
    dry_run: bool,
) -> dict:
    """What the shred does (or, with ``dry_run``, would do)."""
    from transforms.crypto.registry import location

    return {
        "keyset_id": keyset.keyset_id,
        "vault_dir": location(home),
        "lines": line_ids,
        "rewrapped": plans[0].kept.num_rows,
        "new_vault_key_version": new_version,
        "retired_vault_key_versions": older,
        "destroyed": bool(now),
        "vaults": _summary(plans),
        "dry_run": dry_run,
    }


def _shred_record(
    keyset: Keyset, home: str, actor: str | None, reason: str | None, new_version: str, older: list[str], now: bool
) -> dict:
    """The fields every record of this shred carries."""
    from transforms.crypto.registry import location

    return {
        "at": utc_now(),
        **who(actor),
        "keyset_id": keyset.keyset_id,
        "vault_dir": location(home),
        "reason": reason,
        "new_vault_key_version": new_version,
        "retired_vault_key_versions": older,
        "destroyed": bool(now),
    }


def _record_shred(
    keyset: Keyset,
    registry: Registry,
    keys_path: str,
    log_folder: str,
    plans: list[_Plan],
    named: str,
    home: str,
    line_ids: list[str],
    record: dict,
) -> None:
    """The records come first: no shred goes unrecorded. One per line in the shred log, a ``vault_rewrap``
    record for every other vault that changes."""
    from transforms.crypto.audit import append
    from transforms.crypto.registry import location

    append(keyset, registry, log_folder, "shred.jsonl", [{"event": "shred", "line_id": x, **record} for x in line_ids])
    others = [p for p in plans if p.vault not in (named, location(home))]
    _append_vault_records(
        keyset, registry, keys_path, _vault_records(others, None, {**record, "cause": "shred"}), "keys.jsonl"
    )


def _apply_shred(
    keyset: Keyset, registry: Registry, keys_path: str, plans: list[_Plan], home: str, older: list[str], now: bool
) -> str | None:
    """Save, write every vault, then take the older versions out of use; returns destroy_after."""
    registry.add_vault(home, by="keys shred")
    registry.add_shredded(d for p in plans for d in p.dropped_deks)
    registry.save()  # the dropped data keys are known before any vault is written (an interrupted shred)
    keyset.save(keys_path)  # the new version is durable before anything wrapped by it is
    _write_plans(plans)  # from here on the lines' data keys are gone from every known vault
    destroy_after = _retire(keyset, older, now)
    keyset.save(keys_path)  # and from here on no unknown copy of a key table opens either
    return destroy_after
