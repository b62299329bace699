"""What a purge keeps and moves once its shred begins: the staged folder marked *kept* at once (a killed run
keeps it too), the kept folders of earlier purges into the same OUT, and the vault key versions the base's
``vault_key_version`` column moves to.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipelines.io.publish import Publication
from pipelines.io.publish_guards import _STAGE, MARKER, _marker, _read_json, _remote, _write_private

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset

__all__ = ["keep_from_now", "kept_stages", "moved_versions"]


def keep_from_now(pub: Publication, reason: str) -> None:
    """From here on the staged folder is kept on failure, and its marker says so now: a run killed (SIGKILL)
    after this point leaves a folder no later run removes, and the next purge into OUT names it."""
    pub.keep_on_failure(reason)
    if not _remote(pub.stage):
        _write_private(os.path.join(pub.stage, MARKER), _marker(pub.step, pub.run_id, "kept", reason=reason))


def kept_stages(out: str, step: str = "retention") -> list[str]:
    """The staged folders of earlier runs of ``step`` (a purge, an incident) into ``out`` kept after their shred
    began (local OUT only), but the one OUT's manifest says its vault came from (a completed purge)."""
    if _remote(out):
        return []
    target = os.path.realpath(os.path.expanduser(out.rstrip("/") or out))
    parent, name = os.path.split(target)
    manifest = _read_json(os.path.join(target, "manifest.json")) or {}
    used = os.path.realpath(str((manifest.get("inputs") or {}).get("vault") or ""))
    kept = []
    for entry in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        path = os.path.join(parent, entry)
        if not entry.startswith(name + _STAGE) or os.path.realpath(os.path.join(path, "vault")) == used:
            continue
        marker = _read_json(os.path.join(path, MARKER)) or {}
        if marker.get("step") == step and marker.get("state") == "kept":
            kept.append(path)
    return kept


def moved_versions(keyset: Keyset, versions_in: dict, before: dict, shred: dict | None) -> dict[str, str]:
    """How the base's ``vault_key_version`` moves (old -> new) so that it says what the vault now holds.

    A shred re-wraps every data key under a version in use (``before["vault_versions"]``) by its new version;
    keys under other versions stay as they are. When the purged vault's key table then holds one version only
    (the usual case, and the case of a purge completed from a vault an interrupted run re-wrapped), every line
    with a data key is under it. The column is the base's own: a line it records without a version stays so."""
    after = set(versions_in)
    moved: dict[str, str] = {}
    if shred:
        new = shred["new_vault_key_version"]
        moved = {v: new for v in before["vault_versions"]}
        after = {new} | (after - set(before["vault_versions"]))
    if len(after) == 1:
        (only,) = after
        known = {k.version for k in keyset.info() if k.purpose == "vault"} | set(versions_in)
        moved = {v: only for v in known}
    return {old: new for old, new in moved.items() if old != new}
