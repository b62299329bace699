"""One vault's key table rewritten by a Beam job for a key change (a shred, a rotation): the job and its counts.

    counts = run_vault_job(VaultJob(vault=..., key_files=..., keys_path=..., lines=..., ...))

The job reads the newest key-table generation shard by shard
(``pipelines/io/merged_base.py`` ``ReadVaultTable``), drops the lines to shred
and the data keys earlier shreds dropped, re-wraps the rest under the new
primary vault key version (``transforms/crypto/rewrap.py``), and writes a
*staged* generation (``pipelines/io/vault_files.py`` ``staged_generation``)
with the rows it dropped (``dropped/``, line_id and dek_id: the registry
records the dek ids). It ends with :class:`pipelines.io.finalize.Finalize`
on a :class:`pipelines.io.phase.Phase` in the staging folder: the balance
(``keys_in = keys_out + dropped``) is checked inside the job, and nothing is
in force until the caller publishes the staged generation. A dry run writes no
rows: its counts go to a private temporary folder.

**The lines to shred.** A list (``keys shred --line-id``, an incident) or
:class:`LineFiles`, Parquet files of a ``line_id`` column (retention: the due
lines, millions at 300 million lines, written by its first job). A list of at
most ``SIDE_INPUT_LIMIT`` ids reaches the workers as a side input and the key
table is not shuffled; anything larger (and every ``LineFiles``) is joined by
line bucket, so no process holds the set. The registry's earlier shredded data
keys follow the same rule. Memory is flat in the key table's size either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import tempfile
from typing import Iterator, Union

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.common import is_local_runner
from pipelines.io.finalize import Finalize
from pipelines.io.merged_beam import ReadVaultTable
from pipelines.io.phase import Phase, read_phase
from schemas import arrow_schema
from transforms.core.samples import sample_list
from transforms.core.shuffle import spill_area
from transforms.crypto.rewrap import DROPPED_SCHEMA, SIDE_INPUT_LIMIT, RewrapFn, RewrapKeyTable

__all__ = [
    "LineFiles",
    "Lines",
    "VaultJob",
    "run_vault_job",
    "summarise_job",
    "line_chunks",
    "line_count",
    "dry_run_folder",
    "dropped_deks",
]

ROWS_PER_BUCKET = 200_000  # key rows per bucket of a join (about 40 MB of key rows)


@dataclasses.dataclass(frozen=True)
class LineFiles:
    """Line ids in Parquet files (a ``line_id`` column, no repeats): a set too large to pass around."""

    pattern: str
    count: int


Lines = Union[list, LineFiles]


def line_count(lines: Lines | None) -> int:
    if lines is None:
        return 0
    return lines.count if isinstance(lines, LineFiles) else len(lines)


def line_chunks(lines: Lines, size: int = 50_000) -> Iterator[list[str]]:
    """The line ids, ``size`` at a time (a file is read one row group at a time)."""
    if not isinstance(lines, LineFiles):
        for start in range(0, len(lines), size):
            yield list(lines[start : start + size])
        return
    for meta in FileSystems.match([lines.pattern])[0].metadata_list:
        with FileSystems.open(meta.path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=size, columns=["line_id"]):
                yield batch.column(0).to_pylist()


@dataclasses.dataclass
class VaultJob:
    """One vault's part in a key change."""

    vault: str
    key_files: list[str]
    keys_path: str
    usable: list[str]  # the vault key versions that open (their data keys are re-wrapped)
    primary: str  # the version they are re-wrapped under (saved in the keyset before the job)
    lines: Lines | None  # the lines whose data keys are dropped
    deks: list[str]  # data keys earlier shreds dropped (not in the vault the shred names)
    named: bool  # the vault the shred names: lines without a data key there are reported
    run_id: str
    staging: str  # the staged generation's folder (a private temporary folder in a dry run)
    prefix: str  # its shard prefix
    rows: int  # key rows (from the footers): the joins' buckets
    dry_run: bool = False
    options: object = None  # PipelineOptions; None: the local FnApiRunner


def summarise_job(counts: dict) -> tuple[dict, list[str]]:
    """The job's checked counts (module level: Finalize calls it in the job)."""
    names = ("keys_in", "dropped_lines", "dropped_deks", "rewrapped", "already_unreadable", "keys_out", "missing")
    block = {name: int(counts.get(name, 0)) for name in names}
    block["versions_out"] = dict(sorted((counts.get("versions_out") or {}).items()))
    block["dropped_sample"] = sample_list(counts, "dropped_sample")
    block["missing_sample"] = sample_list(counts, "missing_sample")
    problems = []
    if block["keys_in"] != block["keys_out"] + block["dropped_lines"] + block["dropped_deks"]:
        problems.append(
            f"the key table does not balance ({block['keys_in']:,} rows in, {block['keys_out']:,} out, "
            f"{block['dropped_lines'] + block['dropped_deks']:,} dropped)"
        )
    if block["keys_out"] != block["rewrapped"] + block["already_unreadable"]:
        problems.append(f"{block['keys_out']:,} key rows written but {block['rewrapped']:,} re-wrapped")
    return block, problems


def _line_tables(p, lines: Lines, label: str):
    if isinstance(lines, LineFiles):
        return p | label >> beam.io.ReadFromParquetBatched(lines.pattern, columns=["line_id"])
    return p | label >> beam.Create([pa.table({"line_id": pa.array(list(lines), pa.string())})])


def _small(lines: Lines | None) -> bool:
    return lines is not None and not isinstance(lines, LineFiles) and len(lines) <= SIDE_INPUT_LIMIT


def _build(p, job: VaultJob, spill_dir: str | None) -> None:
    inputs = {"keys": p | "ReadKeys" >> ReadVaultTable(job.key_files, "keys")}
    deks = job.deks if job.deks and not job.named else None
    if line_count(job.lines):
        inputs["lines"] = _line_tables(p, job.lines, "ReadLines")
    if deks:
        inputs["deks"] = p | "ReadDeks" >> beam.Create([pa.table({"dek_id": pa.array(sorted(deks), pa.string())})])
    n = max(1, math.ceil(job.rows / ROWS_PER_BUCKET))
    small = {"lines": _small(job.lines), "deks": bool(deks) and len(deks) <= SIDE_INPUT_LIMIT}
    rewrap = RewrapFn(job.keys_path, job.usable, job.primary, job.dry_run)
    out = inputs | "RewrapKeyTable" >> RewrapKeyTable(
        rewrap, small=small, report_missing=job.named, n_buckets=n, spill_dir=spill_dir
    )
    written = []
    if not job.dry_run:
        written.append(
            out.keys
            | "WriteKeys"
            >> beam.io.WriteToParquetBatched(job.prefix, schema=arrow_schema("vault_key"), file_name_suffix=".parquet")
        )
        written.append(
            out.dropped
            | "WriteDropped"
            >> beam.io.WriteToParquetBatched(
                FileSystems.join(job.staging, "dropped", "part"), schema=DROPPED_SCHEMA, file_name_suffix=".parquet"
            )
        )
    phase = Phase.at(job.staging, "shred", job.run_id)
    static = {"phase": "rewrap", "vault": job.vault, "run_id": job.run_id, "primary": job.primary}
    # (a dry run writes nothing: Finalize waits on the counts themselves; it refuses an empty ``after``)
    out.counts | "Finalize" >> Finalize(phase, static, summarise_job, after=written or [out.counts])


def run_vault_job(job: VaultJob) -> dict:
    """Run the job; returns its checked counts (``summarise_job``). Raises what the job raised."""
    from pipelines.common import beam_options

    options = job.options if job.options is not None else beam_options([])
    spill = spill_area("shred") if is_local_runner(options) else contextlib.nullcontext()
    with spill as spill_dir:
        with beam.Pipeline(options=options) as p:
            _build(p, job, spill_dir)
    return read_phase(Phase.at(job.staging, "shred", job.run_id))["counts"]


@contextlib.contextmanager
def dry_run_folder() -> Iterator[str]:
    """A private temporary folder for a dry run's counts (nothing is written next to a vault)."""
    folder = tempfile.mkdtemp(prefix="backfill-shred-dry-run-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def dropped_deks(staging: str) -> Iterator[str]:
    """The dek ids a job dropped (its ``dropped/`` files), a row group at a time."""
    for meta in FileSystems.match([FileSystems.join(staging, "dropped", "*.parquet")])[0].metadata_list:
        with FileSystems.open(meta.path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(columns=["dek_id"]):
                yield from batch.column(0).to_pylist()
