"""Taking vault key versions out of use: retire or schedule them, and destroy the due ones that no
known vault still needs (``pipelines/keys.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.common import UserError
from pipelines.keys_session import _log_keys
from pipelines.keys_vaults import _plan_versions, _read_plans
from pipelines.reveal import utc_now, who

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.registry import Registry


def _retire(keyset: Keyset, versions: list[str], now: bool) -> str | None:
    """Take ``versions`` out of use: destroyed at once (``now``), else scheduled; returns destroy_after."""
    after = None
    for version in versions:
        if now:
            keyset.retire(version)
        else:
            after = keyset.schedule_destruction(version) or after
    return after


def _destroy_due(keyset: Keyset, registry: Registry, keys_path: str, actor: str | None) -> tuple[list, dict]:
    """Destroy the versions whose waiting period is over, unless a known vault still has data keys under
    them; returns (destroyed, {version: [vaults that still need it]}) and records what was done."""
    due = keyset.due()
    if not due:
        return [], {}
    blocked: dict[str, list[str]] = {}
    for folder in registry.vaults:
        try:
            plan = _read_plans(keyset, [folder], None)[0]
        except UserError:
            for version in due:
                blocked.setdefault(version, []).append(f"{folder} (cannot be read)")
            continue
        if plan.status != "ok":
            continue
        used = _plan_versions(plan)  # one column, a row group at a time
        for version in due:
            if version in used:
                blocked.setdefault(version, []).append(folder)
    destroyed = [v for v in due if v not in blocked]
    for version in destroyed:
        keyset.retire(version)
    if destroyed:
        keyset.save(keys_path)
    if destroyed or blocked:
        record = {"event": "keys_destroy", "at": utc_now(), **who(actor), "destroyed": destroyed, "blocked": blocked}
        _log_keys(keyset, registry, keys_path, record)
    return destroyed, blocked
