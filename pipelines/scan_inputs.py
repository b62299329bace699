"""What ``backfill scan`` refuses to read as the subscriber base: a merged base.

A merge's (compact's, retention's) ``OUT/base/`` holds tokens and masks, no name, document number or address: a
scan of it would find every line's identity missing and the campaign would notify the whole base again. It is
told apart by the output it lies in (its manifest, ``pipelines/io/lineage.py``'s ``live_folder``) and, for a copy
without one, by its columns (a token column, no plaintext identity column; under any of their export names).
A raw export without identity columns is a raw export: its lines are all MISSING, as they should be.
"""

from __future__ import annotations

from pipelines.common import UserError
from transforms.core.column_names import contract_key
from pipelines.io.lineage import live_folder
from pipelines.io.paths import open_read
from pipelines.io.planning import InputError, InputInfo, plan_splits
from schemas import arrow_schema
from transforms.core.rows import BASE

__all__ = ["refuse_merged_base", "plan_raw_base"]

# every token and mask column of the merged-line contract (schemas/merged_line.avsc), handler ones included
_TOKENS = {name for name in arrow_schema("merged_line").names if name.endswith(("_token", "_mask"))}
_PLAINTEXT = {"doc_number", "name", "address"}


def _merged(path: str) -> bool:
    """A Parquet file whose columns are a merged base's: a token or mask column and no plaintext identity."""
    import pyarrow.parquet as pq

    if not path.lower().endswith(".parquet"):
        return False
    try:
        with open_read(path) as handle:
            names = pq.ParquetFile(handle).schema_arrow.names
    except Exception as exc:  # the type only: a message may quote data
        raise InputError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None
    keys = {contract_key(n, BASE) for n in names}
    return bool(keys & _TOKENS) and not keys & _PLAINTEXT


def _refusal(path: str, what: str) -> UserError:
    return UserError(
        f"--base {path} is {what} (tokens and masks, no identity columns), not an export of the subscriber "
        "base: a scan of it would find every line's identity missing; scan the raw export instead (the merged "
        "base's own identity_status and needs_registration columns, and backfill report --merged, tell which "
        "lines are complete); nothing was written"
    )


def refuse_merged_base(paths: list[str], info: InputInfo | None = None) -> None:
    """Refuse, in one line, a ``--base`` that is a merged base: by the output it lies in (before planning: a
    merge's OUT holds subfolders) or, given the plan's ``info``, by a file's columns (read only when the plan
    saw a token column)."""
    if info is None:
        for path in paths:
            if live_folder(path):
                raise _refusal(path, "a merged base, the output of a backfill merge, compact or retention")
        return
    if not {c.lower() for c in info.ignored_columns} & _TOKENS:
        return
    for path in info.files:
        if _merged(path):
            raise _refusal(path, "a file of a merged base")


def plan_raw_base(paths: list[str], *, encoding: str, rows_per_split: int) -> tuple[list, InputInfo]:
    """The base's splits and plan, a merged base refused in one line (by its output, then by its columns): the
    launcher's planning and the Beam job's first step (``--estimated-rows``) alike."""
    refuse_merged_base(paths)
    splits, info = plan_splits(paths, rows_per_split=rows_per_split, encoding=encoding)
    refuse_merged_base(paths, info)
    return splits, info
