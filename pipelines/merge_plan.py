"""The inputs of ``backfill merge`` planned: the base's kind and splits, the previous merge's vault shards,
both checked against the keyset. Used by :mod:`pipelines.merge`.
"""

from __future__ import annotations

import math

from pipelines.common import UserError
from pipelines.io.merged_base import base_kind, column_values, plan_merged_splits, vault_shards
from pipelines.io.planning import InputInfo, plan_splits

MOST_BUCKETS_PER_DEFAULT = 4  # a previous merge's cut is kept up to this many times the usual number of buckets


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


def plan_buckets(args, kind: str, base_splits: list, vault: dict | None, default: int, least: int) -> tuple[int, dict]:
    """The buckets of the merge's joins, and the inputs already cut by them (``pipelines/io/line_buckets.py``):
    ``(n, {table: {bucket: [Shard]}})``, each such file read straight by its bucket's task.

    ``default`` buckets, unless the previous merge's base is cut in N with ``least`` <= N <= 4 x ``default``
    (its buckets at most twice the usual size, and not so small that their tasks' overhead dominates): then
    N, so that its files and the vault shards cut alike need no shuffle. A ``--shuffle-buckets`` given reads
    every input through the shuffle."""
    if args.shuffle_buckets:
        return args.shuffle_buckets, {}
    from pipelines.io.line_buckets import Shard, files_by_bucket

    splits: dict[str, list] = {}
    for split in base_splits if kind == "merged" else []:
        splits.setdefault(split.path, []).append(split)
    tables = {"base": list(splits), **{f"vault_{t}": (vault or {}).get(t, []) for t in ("keys", "values")}}
    cut = {table: files_by_bucket(files) for table, files in tables.items() if files}
    n = cut["base"][0] if cut.get("base") and least <= cut["base"][0] <= MOST_BUCKETS_PER_DEFAULT * default else default
    direct: dict = {}
    for table, found in cut.items():
        if found and found[0] == n:
            sources = {b: splits[p] if table == "base" else [p] for b, p in found[1].items()}
            direct[table] = {b: [Shard(table, s, found[1][b], b, n) for s in sources[b]] for b in found[1]}
    return n, direct


def buckets_for(args, kind: str, base_splits: list, vault: dict | None, rows: int, rows_per_bucket: int):
    """:func:`plan_buckets` for a run of about ``rows`` lines: ``--shuffle-buckets`` or one bucket per
    ``rows_per_bucket`` lines by default, a previous cut kept down to buckets twice that size (merge, compact)."""
    default = args.shuffle_buckets or max(1, math.ceil(rows / rows_per_bucket))
    return plan_buckets(args, kind, base_splits, vault, default, math.ceil(rows / (2 * rows_per_bucket)))
