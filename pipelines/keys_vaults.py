"""The vaults a key change must carry along (``pipelines/keys.py``): every known vault's key table rewritten
by a Beam job into a staged generation, published only when the change is recorded, and the
``vault_rewrap`` records of the vaults that changed.

    plans = _read_plans(keyset, folders, named)          # status, every shard's footer: no rows read
    version = keyset.rotate_vault()
    _run_rewrap(keyset, keys_path, plans, older, ...)     # keyset saved, one job per vault (staged); undone on failure
    ...record the change...
    _publish_plans(plans)                                 # the staged generations put in place
    ...take older versions out of use...

No key table is read into memory here: each job reads its table shard by
shard (``pipelines/shred_job.py``). A killed change leaves every vault's
previous generation in force; the staging folders it left are removed by the
next change (under the keyset's lock).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING, Callable, Iterator

from pipelines.common import UserError
from pipelines.reveal import audit_dir

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.registry import Registry


@dataclasses.dataclass
class _Plan:
    """One vault's key table in a key change: its shards, then the job's checked counts and staged generation."""

    vault: str  # the registry's name of the folder
    status: str  # ok | missing (no such folder) | empty (no key table)
    files: list[str] = dataclasses.field(default_factory=list)  # the key table's shards (footers checked)
    counts: dict | None = None  # the job's counts (pipelines/shred_job.py summarise_job)
    staging: str | None = None  # the staged generation's folder, until published or discarded

    @property
    def dropped(self) -> list[str]:
        """The lines whose data keys are dropped (the first ``SAMPLE`` of them; ``dropped_count`` counts all)."""
        return list((self.counts or {}).get("dropped_sample", []))

    @property
    def dropped_count(self) -> int:
        c = self.counts or {}
        return c.get("dropped_lines", 0) + c.get("dropped_deks", 0)

    @property
    def dead(self) -> int:
        """Data keys under versions that open nothing already (left as they are)."""
        return (self.counts or {}).get("already_unreadable", 0)

    @property
    def rewrapped(self) -> int:
        return (self.counts or {}).get("rewrapped", 0)

    @property
    def kept(self) -> int:
        """Key rows written (re-wrapped and already unreadable)."""
        return (self.counts or {}).get("keys_out", 0)


def _exists(path: str) -> bool:
    """A vault folder exists: locally a directory; on an object store (no folders there, only keys under a
    prefix) any object under ``PATH/``."""
    if "://" not in path:
        return os.path.isdir(path)
    from pipelines.io.publish_guards import exists

    return exists(path)


def _read_plans(keyset: Keyset, folders: list[str], named: str | None) -> list[_Plan]:
    """The key tables of ``folders`` (every shard's footer read); a known vault that cannot be read stops the
    change, naming it."""
    from pipelines.io.vault_files import check_table
    from transforms.crypto.vault import VaultError

    plans = []
    for folder in folders:
        if not _exists(folder):
            if folder == named:
                raise UserError(f"no vault at {folder}; nothing was changed")
            plans.append(_Plan(folder, "missing"))
            continue
        try:
            files = check_table(folder, "keys")
        except VaultError as exc:
            raise UserError(
                f"vault {folder}, known to keyset {keyset.keyset_id}, cannot be read ({exc}): its data keys "
                "still need the vault key versions in use; repair it, or delete the folder if that copy is not "
                "needed; nothing was changed"
            ) from None
        if not files:
            if folder == named:
                raise UserError(f"no vault at {folder} (no complete keys/ table); nothing was changed")
            plans.append(_Plan(folder, "empty"))
            continue
        plans.append(_Plan(folder, "ok", files))
    return plans


def _plan_versions(plan: _Plan) -> set:
    """The vault key versions a vault's key table uses (one column, a row group at a time)."""
    from pipelines.io.vault_files import column_values

    return column_values(plan.files, "vault_key_version") if plan.status == "ok" else set()


def _rewrap_plans(
    keys_path: str,
    plans: list[_Plan],
    usable: list[str],
    primary: str,
    lines,
    shredded_deks: set[str],
    *,
    exact: str | None = None,
    run_id: str,
    dry_run: bool = False,
    options=None,
) -> None:
    """One job per vault (``pipelines/shred_job.py``): drop the lines' (and every earlier shred's) data keys,
    re-wrap the rest under ``primary``; each writes a staged generation (none in a dry run).

    In the vault ``exact`` (the one a shred names) only ``lines`` are dropped: what it shreds there is exactly
    what was asked. A job that fails stops the change, naming its vault."""
    from pipelines.io.vault_files import staged_generation, table_rows
    from pipelines.shred_job import VaultJob, dry_run_folder, run_vault_job

    for plan in plans:
        if plan.status != "ok":
            continue
        with dry_run_folder() if dry_run else contextlib.nullcontext() as scratch:
            staging, prefix = (scratch, "") if dry_run else staged_generation(plan.vault, "keys", run_id)
            plan.staging = None if dry_run else staging
            job = VaultJob(
                vault=plan.vault,
                key_files=plan.files,
                keys_path=keys_path,
                usable=list(usable),
                primary=primary,
                lines=lines,
                deks=sorted(shredded_deks),
                named=plan.vault == exact,
                run_id=run_id,
                staging=staging,
                prefix=prefix,
                rows=table_rows(plan.files),
                dry_run=dry_run,
                options=options,
            )
            try:
                plan.counts = run_vault_job(job)
            except Exception as exc:
                raise UserError(f"vault {plan.vault} cannot be re-wrapped ({_why(exc)}); nothing was changed") from exc


def _why(exc: BaseException) -> str:
    """The one-line reason of a failed job (a keyset or vault error's own text; otherwise its type)."""
    from pipelines.common import _beam_wrapped, _user_message

    return _user_message(exc) or _beam_wrapped(exc) or f"unexpected {type(exc).__name__}"


def _run_rewrap(
    keyset: Keyset, keys_path: str, plans: list[_Plan], usable: list[str], lines, shredded_deks: set[str], **kw
) -> None:
    """Save the keyset with its new primary (the jobs' workers load it from ``keys_path``), run every vault's job,
    then ``check()``; on any failure the staged generations are removed and the keyset saved back as it was:
    nothing has changed."""
    from transforms.crypto.keyset import Keyset

    check: Callable[[], None] | None = kw.pop("check", None)
    before = Keyset.load(keys_path)  # as it is on disk: without the new version
    keyset.save(keys_path)  # the new version is durable before anything is wrapped by it
    try:
        _rewrap_plans(keys_path, plans, usable, keyset.primary_vault_version, lines, shredded_deks, **kw)
        if check is not None:
            check()
    except BaseException:
        _discard_plans(plans)
        before.save(keys_path)
        raise


def _clear_staged(plans: list[_Plan]) -> None:
    """Staging folders killed key changes left in the vaults (no change is running: the keyset is locked)."""
    from pipelines.io.vault_files import remove_staged

    for plan in plans:
        if plan.status == "ok":
            remove_staged(plan.vault, "keys")


def _discard_plans(plans: list[_Plan]) -> None:
    from pipelines.io.vault_files import remove_staged

    for plan in plans:
        if plan.staging:
            remove_staged(plan.vault, "keys", plan.staging)
            plan.staging = None


def _publish_plans(plans: list[_Plan]) -> None:
    """Put every staged generation in place (from here on the dropped data keys are gone from each vault)."""
    from pipelines.io import vault_files

    for plan in plans:
        if plan.staging:
            vault_files.publish_staged(plan.vault, "keys", plan.staging)
            plan.staging = None


def _dropped_deks(plans: list[_Plan]) -> Iterator[str]:
    """The dek ids every staged job dropped, read from its files."""
    from pipelines.shred_job import dropped_deks

    for plan in plans:
        if plan.staging:
            yield from dropped_deks(plan.staging)


def _vault_records(plans: list[_Plan], skip: str | None, record: dict) -> list[tuple[str, dict]]:
    """A ``vault_rewrap`` record for the chain of every vault that changed (but ``skip``)."""
    out = []
    for plan in plans:
        if plan.status == "ok" and plan.vault != skip and (plan.dropped_count or plan.rewrapped):
            out.append(
                (
                    plan.vault,
                    {
                        **record,
                        "event": "vault_rewrap",
                        "vault_dir": plan.vault,
                        "lines_dropped": plan.dropped,
                        "lines_dropped_count": plan.dropped_count,
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
    if registry.vaults:  # from a copy of the keyset and its registry, they are the original's vaults
        registry.refuse_if_copied()
    return list(dict.fromkeys(first + registry.vaults))


def _summary(plans: list[_Plan]) -> list[dict]:
    return [
        {
            "vault": p.vault,
            "status": p.status,
            "lines_unreadable": p.dropped,
            "lines_unreadable_count": p.dropped_count,
            "rewrapped": p.rewrapped,
            "already_unreadable": p.dead,
            "keys_in": (p.counts or {}).get("keys_in", 0),
            "keys_out": p.kept,
        }
        for p in plans
    ]
