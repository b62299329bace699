"""``backfill keys rotate``: a new join or vault key version, re-wrapping the vaults' data keys."""

from __future__ import annotations

from pipelines.keys_retire import _destroy_due, _retire
from pipelines.keys_session import _log_keys, _session
from pipelines.keys_vaults import (
    _append_vault_records,
    _clear_staged,
    _known_vaults,
    _publish_plans,
    _read_plans,
    _run_rewrap,
    _summary,
    _vault_records,
)
from pipelines.reveal import utc_now, who


def rotate(
    keys_path: str,
    *,
    join: bool = False,
    vault_dir: str | None = None,
    retire_old: bool = False,
    now: bool = False,
    actor: str | None = None,
    audit_log: str | None = None,
) -> dict:
    """Add a join or a vault key version; for the vault, re-wrap ``vault_dir``'s data keys (with
    ``retire_old``: every known vault's, then the older versions are scheduled for destruction)."""
    from pipelines.common import new_run
    from transforms.crypto.registry import location

    with _session(keys_path, audit_log) as (keyset, registry):
        destroyed, _ = _destroy_due(keyset, registry, keys_path, actor)
        record = {"event": "keys_rotate_join" if join else "keys_rotate_vault", "at": utc_now(), **who(actor)}
        older = keyset.versions("join" if join else "vault")
        plans = []
        if vault_dir:
            folders = _known_vaults(registry, vault_dir) if retire_old else [location(vault_dir)]
            plans = _read_plans(keyset, folders, location(vault_dir))
            _clear_staged(plans)
        version = keyset.rotate_join() if join else keyset.rotate_vault()
        if vault_dir:  # keyset saved, staged key tables: a failure here changes nothing
            _run_rewrap(keyset, keys_path, plans, older, None, registry.shredded_deks, run_id=new_run("rotate")[0])
        record.update(keyset_id=keyset.keyset_id, new_version=version, previous=older, destroyed_due=destroyed)
        if vault_dir:
            registry.add_vault(vault_dir, by="keys rotate")
            _append_vault_records(
                keyset, registry, keys_path, _vault_records(plans, None, {**record, "cause": "rotate"}), "keys.jsonl"
            )
            registry.save()
        keyset.save(keys_path)  # the new version is durable before anything wrapped by it is
        if vault_dir:
            _publish_plans(plans)
            named = plans[0]
            record.update(vault_dir=named.vault, rewrapped=named.kept, vaults=_summary(plans))
            if retire_old:
                record["destroy_after"] = _retire(keyset, older, now)
                record["retired"], record["destroyed"] = older, bool(now)
                keyset.save(keys_path)
        _log_keys(keyset, registry, keys_path, record)
    return record
