"""The two Beam jobs of ``backfill retention`` (the crypto-shred between them is ``pipelines/keys_shred.py``'s).

1. **Find and purge** (:func:`run_purge`): the base's due lines, batch by batch, joined with the vault by
   line bucket (``transforms/compliance/retention_beam.py`` ``PurgeVault``): writes the staged vault's value
   rows without the due lines' (``STAGE/vault/values``), the lines purged (``STAGE/purged``) and the lines
   to shred (``STAGE/_purge/shred``). Its counts are checked in the job (:func:`summarise_purge`, through
   ``Finalize`` on a phase folder), so a vault made under another keyset or a side that does not balance
   stops the purge before anything is shredded.
2. **Rewrite the base** (:func:`run_rewrite`): a Map over the base's batches, the due lines blanked and
   ``vault_key_version`` moved as the shred moved the vault (``RewriteBase``); it ends with ``Finalize``, whose
   :func:`summarise_retention` checks every balance of the run (the first job's and the shred's counts are
   fed in beside its own) and writes ``STAGE/manifest.json``.

Memory is one record batch and one line bucket per worker, whatever the base's size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from pipelines.io.finalize import Finalize
from pipelines.io.merged_beam import ReadMergedBase, ReadVaultTable, write_merged_base, write_vault_table
from pipelines.io.phase import Phase, read_phase
from pipelines.io.publish import Publication
from pipelines.progress import progress
from pipelines.retention_base import ReadBaseColumns
from transforms.compliance.retention import IDENTITY_COLUMNS
from transforms.compliance.retention_beam import PurgeVault, RewriteBase
from transforms.core.metrics import SumCounts
from transforms.core.samples import sample_list
from transforms.core.shuffle import spill_area

__all__ = ["PurgeJob", "run_purge", "summarise_purge", "run_rewrite", "summarise_retention", "IDS_SCHEMA"]

SCAN_COLUMNS = ("line_id", "status", "terminated_on", *IDENTITY_COLUMNS)
IDS_SCHEMA = pa.schema([("line_id", pa.string())])


@dataclasses.dataclass
class PurgeJob:
    """What the first job needs (all picklable or plain)."""

    splits: list
    vault: dict[str, list[str]]  # the input vault's shards: keys, values
    stage: str  # the run's staged output folder
    phase: Phase  # STAGE/_purge
    cutoff: dt.date
    keyset_id: str
    vault_arg: str
    keys_arg: str
    n_buckets: int
    spill: bool
    options: object
    batch_size: int
    base_rows: int = 0  # planned: for the progress lines
    progress_seconds: float | None = None


def _write_ids(pcoll, prefix: str, label: str):
    return pcoll | label >> beam.io.WriteToParquetBatched(prefix, schema=IDS_SCHEMA, file_name_suffix=".parquet")


def run_purge(job: PurgeJob) -> dict:
    """Run the first job; returns its checked counts block (:func:`summarise_purge`)."""
    spill = spill_area("retention") if job.spill else contextlib.nullcontext()
    summarise = functools.partial(summarise_purge, keyset_id=job.keyset_id, vault=job.vault_arg, keys=job.keys_arg)
    watch = progress("retention", job.phase.run_id, {"read": job.base_rows}, job.options, job.progress_seconds)
    with spill as spill_dir, watch as prog:
        with beam.Pipeline(options=job.options) as p:
            inputs = {
                "base": p | "ReadBase" >> ReadBaseColumns(job.splits, SCAN_COLUMNS, job.batch_size),
                "keys": p | "ReadVaultKeys" >> ReadVaultTable(job.vault["keys"], "keys"),
                "values": p | "ReadVaultValues" >> ReadVaultTable(job.vault["values"], "values"),
            }
            prog.count(inputs["base"], "read")
            out = inputs | "PurgeVault" >> PurgeVault(job.cutoff, job.n_buckets, spill_dir)
            written = [
                write_vault_table(out.values, FileSystems.join(job.stage, "vault"), "values", "WriteVaultValues"),
                _write_ids(out.shred, FileSystems.join(job.phase.stage, "shred", "part"), "WriteShredLines"),
                _write_ids(out.purged, FileSystems.join(job.stage, "purged", "part"), "WritePurgedLines"),
            ]
            static = {"phase": "purge", "run_id": job.phase.run_id, "cutoff": job.cutoff.isoformat()}
            out.counts | "Finalize" >> Finalize(job.phase, static, summarise, after=written)
    return read_phase(job.phase)["counts"]


def summarise_purge(counts: dict, *, keyset_id: str, vault: str, keys: str) -> tuple[dict, list[str]]:
    """The first job's counts block and what does not hold: the vault's keyset, and every side's balance."""
    base, purge, v = counts.get("base", {}), counts.get("purge", {}), counts.get("vault", {})
    names = ("lines_in", "terminated", "terminated_without_date", "due", "due_with_identity")
    block = {
        "base": {n: base.get(n, 0) for n in names},
        "purge": {n: purge.get(n, 0) for n in ("due", "purged", "nothing_to_purge")},
        "vault": {
            **{n: v.get(n, 0) for n in ("keys_in", "keys_joined", "keys_to_shred", "values_in", "values_joined")},
            **{n: v.get(n, 0) for n in ("values_dropped", "values_kept")},
            "keys_by_version": dict(sorted((v.get("keys_by_version") or {}).items())),
        },
        "purged_line_ids": sample_list(counts, "purged_sample"),
    }
    problems = []
    foreign = sorted(set(v.get("keys_by_keyset") or {}) - {keyset_id})
    if foreign:
        problems.append(f"--vault {vault} was made under keyset {foreign[0]}, not {keyset_id} (--keys {keys})")
    b, p, w = block["base"], block["purge"], block["vault"]
    for ok, text in (
        (b["due"] == p["due"], f"{b['due']:,} due lines found in the base but {p['due']:,} joined with the vault"),
        (p["due"] == p["purged"] + p["nothing_to_purge"], f"due {p['due']:,} != purged + nothing to purge"),
        (w["keys_in"] == w["keys_joined"], f"{w['keys_in']:,} key rows read but {w['keys_joined']:,} joined"),
        (w["values_in"] == w["values_joined"], f"{w['values_in']:,} value rows read but {w['values_joined']:,} joined"),
        (w["values_in"] == w["values_dropped"] + w["values_kept"], "vault values in != dropped + kept"),
    ):
        if not ok:
            problems.append(f"the purge does not balance: {text}")
    return block, problems


def run_rewrite(
    pub: Publication, splits: list, cutoff: dt.date, moved: dict[str, str], earlier: dict, manifest: dict, **kw
) -> dict:
    """Run the last job (base rewritten, every balance checked, the manifest written); returns the manifest.
    ``kw``: options, batch_size, started, and for the progress lines base_rows and progress_seconds."""
    from pipelines.manifest import read_json

    phases = {"rewritten": kw.get("base_rows", 0)}
    watch = progress("retention", manifest["run_id"], phases, kw["options"], kw.get("progress_seconds"))
    with watch as prog, beam.Pipeline(options=kw["options"]) as p:
        base = p | "ReadBase" >> ReadMergedBase(splits, kw["batch_size"])
        out = base | "RewriteBase" >> RewriteBase(cutoff, moved)
        prog.count(out.base, "rewritten")
        written = write_merged_base(out.base, pub.path("base"))
        before = p | "EarlierCounts" >> beam.Create([earlier])  # the first job's and the shred's (checked there)
        counts = (
            (out.counts, before) | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> beam.CombineGlobally(SumCounts())
        )
        counts | "Finalize" >> Finalize(pub, manifest, summarise_retention, after=[written], started=kw["started"])
    return read_json(pub.written("manifest.json"))


def _vault_block(v: dict, shred: dict) -> dict:
    shredded = shred.get("dropped_lines", 0)
    keys_out = shred["keys_out"] if shred else v.get("keys_copied", 0)
    block = {
        "keys_in": v.get("keys_in", 0),
        "keys_shredded": shredded,
        "keys_out": keys_out,
        "values_in": v.get("values_in", 0),
        "values_dropped": v.get("values_dropped", 0),
        "values_out": v.get("values_kept", 0),
    }
    block["balanced"] = (
        block["keys_in"] == keys_out + shredded and block["values_in"] == block["values_out"] + block["values_dropped"]
    )
    return block


def summarise_retention(counts: dict) -> tuple[dict, list[str]]:
    """The manifest's counts (lines in = lines out; due = purged + nothing to purge; the vault's keys and values
    in = out + shredded/dropped) and the balances that fail."""
    base, purge, v, shred = (counts.get(n) or {} for n in ("base", "purge", "vault", "shred"))
    rewrite = counts.get("rewrite") or {}
    block = {
        **{n: base.get(n, 0) for n in ("lines_in", "terminated", "terminated_without_date", "due")},
        "due_with_identity": base.get("due_with_identity", 0),
        "lines_out": rewrite.get("lines_out", 0),
        "terminated_within_retention": base.get("terminated", 0)
        - base.get("terminated_without_date", 0)
        - base.get("due", 0),
        "purged": purge.get("purged", 0),
        "nothing_to_purge": purge.get("nothing_to_purge", 0),
        "fields_blanked": {k: n for k, n in (rewrite.get("blanked") or {}).items() if n},
        "vault": _vault_block(v, shred),
    }
    problems = [
        text
        for ok, text in (
            (block["lines_in"] == block["lines_out"], f"{block['lines_in']:,} lines in, {block['lines_out']:,} out"),
            (rewrite.get("lines_read", 0) == block["lines_in"], "the base changed between the two passes"),
            (rewrite.get("due", 0) == block["due"], "the due lines changed between the two passes"),
            (block["due"] == block["purged"] + block["nothing_to_purge"], "due != purged + nothing to purge"),
            (v.get("keys_to_shred", 0) == block["vault"]["keys_shredded"], "the shred dropped other data keys"),
            (not shred or shred.get("keys_in") == v.get("keys_in"), "the shred read another key table"),
            (block["vault"]["balanced"], "vault keys or values in != out + shredded or dropped"),
        )
        if not ok
    ]
    block["balanced"] = not problems
    return block, [f"the purge does not balance: {p}" for p in problems]
