"""The inputs of ``backfill merge`` planned: the base's kind and splits, the previous merge's vault shards,
both checked against the keyset. Used by :mod:`pipelines.merge`.
"""

from __future__ import annotations

from pipelines.common import UserError
from pipelines.io.merged_base import base_kind, column_values, plan_merged_splits, vault_shards
from pipelines.io.planning import InputInfo, plan_splits


def _plan_base(args, keyset) -> tuple[str, list, InputInfo]:
    """The base's kind and splits; a merged base's tokens must be under the primary join key."""
    kind = base_kind(args.base)
    if kind == "raw":
        return (kind, *plan_splits(args.base, encoding=args.encoding))
    base_splits, base_info = plan_merged_splits(args.base)
    versions = column_values(base_info.files, "join_key_version") - {None}
    if versions - {keyset.primary_join_version}:
        raise UserError(
            f"the base's tokens are under join key {', '.join(sorted(versions))} but the primary "
            f"join key is {keyset.primary_join_version}: run backfill keys retokenize first"
        )
    return kind, base_splits, base_info


def _plan_vault(args, keyset, kind: str) -> dict | None:
    """The previous merge's vault shards, made under this keyset."""
    vault = vault_shards(args.vault) if args.vault else None
    if vault:
        foreign = column_values(vault["keys"], "keyset_id") - {keyset.keyset_id}
        if foreign:
            raise UserError(
                f"--vault {args.vault} was made under keyset {sorted(foreign)[0]}, "
                f"not {keyset.keyset_id} (--keys {args.keys})"
            )
    elif kind == "merged":
        raise UserError(
            f"--base {args.base[0]} is a merged base: give its --vault too (the previous merge's OUT/vault); "
            "without it OUT/vault would hold only this run's registrations"
        )
    return vault
