"""``backfill keys shred``: crypto-shred lines in every vault the keyset knows (``pipelines/keys.py``).

The steps, in this order, under the keyset's lock:

1. check every known vault (each key-table shard's footer; nothing is read whole) and remove the staging
   folders a killed change left;
2. add the new vault key version and **save the keyset**: the jobs' workers load it from ``--keys`` in
   ``DoFn.setup()``;
3. one Beam job per vault (``pipelines/shred_job.py``): drop the lines' data keys (and every earlier
   shred's), re-wrap the rest under the new version, write a *staged* generation, balance checked in the
   job; then check that every line had a data key in the named vault. A failure here removes the staged
   generations and saves the keyset back as it was: nothing has changed;
4. **record the shred** (one record per line in the shred log, a ``vault_rewrap`` record in every other
   vault that changes), then the registry (the vault, the dropped data keys) is saved: nothing
   irreversible happens before the shred is on record;
5. publish every vault's staged key table (renamed into place as its newest generation);
6. only then take the older vault key versions out of use, and record the key change in the keys log.

A run killed in 3 leaves every vault as it was (the keyset has a new primary; the older versions still
open). One killed in 5 leaves some vaults published and some not: ``keys rotate --vault DIR
--retire-old`` completes it (the registry knows the dropped data keys).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from pipelines.common import UserError
from pipelines.keys_retire import _destroy_due, _retire
from pipelines.keys_session import _log_keys, _session
from pipelines.keys_vaults import (
    _append_vault_records,
    _clear_staged,
    _dropped_deks,
    _known_vaults,
    _Plan,
    _publish_plans,
    _read_plans,
    _rewrap_plans,
    _run_rewrap,
    _summary,
    _vault_records,
)
from pipelines.flags import looks_plain
from pipelines.reveal import audit_dir, utc_now, who
from pipelines.shred_job import LineFiles, Lines, line_chunks, line_count

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.registry import Registry

__all__ = ["shred_lines"]


def shred_lines(
    keys_path: str,
    vault_dir: str,
    line_ids: Lines,
    *,
    reason: str | None = None,
    actor: str | None = None,
    audit_log: str | None = None,
    shred_log: str | None = None,
    published_as: str | None = None,
    dry_run: bool = False,
    now: bool = False,
    options=None,
    before_record: Callable[[], None] | None = None,
) -> dict:
    """Crypto-shred lines in every vault the keyset knows (see the module docstrings here and of
    ``pipelines/keys.py``).

    Args:
        line_ids: a list of line ids, or :class:`pipelines.shred_job.LineFiles` (Parquet files of a
            ``line_id`` column, no repeats) for a set too large for a list (retention).
        vault_dir: the vault the lines are named in (they must have a data key there).
        shred_log: for a vault staged before it is published (retention): the log of its published home,
            ``HOME/../audit/shred.jsonl``; the vault is registered as ``HOME`` (``published_as``, or the
            folder of its name beside that audit folder). The command line refuses any other log.
        dry_run: read and check only: nothing is written, saved or recorded.
        now: destroy the older vault key versions at once instead of scheduling their destruction.
        options: Beam PipelineOptions of the re-wrap jobs (default: the local FnApiRunner).
        before_record: called once every job has written and checked, right before the first record (from there
            on the shred is under way: an incident keeps its scope then, even if it is killed).
    """
    from pipelines.common import new_run
    from transforms.crypto.registry import location

    lines = line_ids if isinstance(line_ids, LineFiles) else list(dict.fromkeys(line_ids))
    named = location(vault_dir)
    home, log_folder = _shred_home(named, keys_path, shred_log, published_as)
    run_id = new_run("shred")[0]
    with _session(keys_path, audit_log) as (keyset, registry):
        destroyed = [] if dry_run else _destroy_due(keyset, registry, keys_path, actor)[0]
        plans = _read_plans(keyset, _known_vaults(registry, named, home), named)
        older = keyset.versions("vault")
        jobs = {"exact": named, "run_id": run_id, "options": options}
        if dry_run:
            primary = keyset.primary_vault_version
            _rewrap_plans(keys_path, plans, older, primary, lines, registry.shredded_deks, dry_run=True, **jobs)
            _check_lines(plans[0], lines, vault_dir)
            return _shred_result(keyset, home, lines, plans, keyset.rotate_vault(), older, now, True)  # not saved
        _clear_staged(plans)
        new_version = keyset.rotate_vault()
        check = lambda: _check_lines(plans[0], lines, vault_dir)  # noqa: E731
        _run_rewrap(keyset, keys_path, plans, older, lines, registry.shredded_deks, check=check, **jobs)
        result = _shred_result(keyset, home, lines, plans, new_version, older, now, False)
        record = _shred_record(keyset, home, actor, reason, new_version, older, now)
        if before_record is not None:
            before_record()
        _record_shred(keyset, registry, keys_path, log_folder, plans, named, home, lines, record)
        result["destroy_after"] = record["destroy_after"] = _apply_shred(
            keyset, registry, keys_path, plans, home, older, now
        )
        keys_record = {"event": "keys_shred", **record, "lines": line_count(lines), "rewrapped": plans[0].kept}
        _log_keys(keyset, registry, keys_path, {**keys_record, "vaults": _summary(plans), "destroyed_due": destroyed})
    return result


def _shred_home(named: str, keys_path: str, shred_log: str | None, published_as: str | None) -> tuple[str, str]:
    """The vault's home (where it is registered: its published folder) and the folder of its shred log."""
    if shred_log and "://" in shred_log:  # a URI is a URI: never a local path made of it
        return published_as or named, shred_log.rstrip("/").rsplit("/", 1)[0]
    home = published_as or (
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(shred_log))), os.path.basename(named))
        if shred_log
        else named
    )
    log_folder = os.path.dirname(os.path.abspath(shred_log)) if shred_log else audit_dir(home, keys_path)
    return home, log_folder


def _check_lines(plan: _Plan, lines: Lines, vault_dir: str) -> None:
    """Every line must have had a data key in the named vault (its job counted the ones without)."""
    counts = plan.counts or {}
    if counts.get("missing"):
        first, more = counts["missing_sample"][0], counts["missing"] - 1
        first = first if looks_plain(first) else "(not quoted: it looks like an identity value, not a line id)"
        raise UserError(
            f"line {first}{f' (and {more} more)' if more else ''} has no data key in {vault_dir}: unknown, or "
            "already shredded; nothing was shredded"
        )


def _shred_result(
    keyset: Keyset,
    home: str,
    lines: Lines,
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
        "lines": None if isinstance(lines, LineFiles) else lines,
        "lines_count": line_count(lines),
        "rewrapped": plans[0].kept,
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
    lines: Lines,
    record: dict,
) -> None:
    """The records come first: no shred goes unrecorded. One per line in the shred log (appended a chunk at a
    time), a ``vault_rewrap`` record for every other vault that changes."""
    from pipelines.shred_log import append_line_records
    from transforms.crypto.registry import location

    append_line_records(keyset, registry, log_folder, "shred.jsonl", line_chunks(lines), record)
    others = [p for p in plans if p.vault not in (named, location(home))]
    _append_vault_records(
        keyset, registry, keys_path, _vault_records(others, None, {**record, "cause": "shred"}), "keys.jsonl"
    )


def _apply_shred(
    keyset: Keyset, registry: Registry, keys_path: str, plans: list[_Plan], home: str, older: list[str], now: bool
) -> str | None:
    """Register, publish every vault, then take the older versions out of use; returns destroy_after."""
    registry.add_vault(home, by="keys shred")
    registry.add_shredded(_dropped_deks(plans))
    registry.save()  # the dropped data keys are known before any vault is published (an interrupted shred)
    _publish_plans(plans)  # from here on the lines' data keys are gone from every known vault
    destroy_after = _retire(keyset, older, now)
    keyset.save(keys_path)  # and from here on no unknown copy of a key table opens either
    return destroy_after
