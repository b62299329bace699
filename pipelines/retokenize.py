"""The pipeline behind ``backfill keys retokenize``: a merged base's tokens under the primary join key.

    backfill keys rotate --keys secure/keys.json --join
    backfill keys retokenize --keys secure/keys.json --base out/merge/base --vault out/merge/vault \\
        --out out/retokenized [Beam flags...]

Reads the merged base and its vault, opens each tokenized line's values and
tokenizes them again (``transforms.merge.retokenize``), and writes ``OUT/base/``
(every line; masks unchanged), ``OUT/dead_letter/`` (the lines that could not
be re-tokenized, kept in OUT/base with their old tokens, with a reason) and
``OUT/manifest.json`` with the coverage: lines re-tokenized (or already under
the primary key) / lines with tokens. The vault does not change: keep using it.
"""

from __future__ import annotations

import contextlib
import logging
import math

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.common import UserError, beam_options, is_local_runner, new_run, runner_name
from pipelines.common import write_dead_letters
from pipelines.manifest import Timer, keys_block, read_json, write_json
from pipelines.io.merged_base import base_kind, column_values, plan_merged_splits, vault_shards
from pipelines.io.merged_beam import ReadMergedBase, ReadVaultTable, write_merged_base
from pipelines.io.finalize import Finalize
from pipelines.io.publish import check_apart, check_owned, publishing
from pipelines.progress import progress
from transforms.core.deadletter import DeadLetterContext
from transforms.core.metrics import SumCounts
from transforms.core.shuffle import spill_area
from transforms.merge.retokenize import RetokenizeBase

__all__ = ["retokenize"]

log = logging.getLogger("backfill.keys")
ROWS_PER_BUCKET = 250_000
OUTPUTS = ("base", "dead_letter", "summary.json", "manifest.json")  # what a re-tokenization writes into OUT
PHASES = ("read", "retokenized")  # of the progress lines


def _plan_inputs(base: str, vault_dir: str, keyset) -> tuple[list, object, dict]:
    """The merged base's splits and file list, and the vault's shards, made under ``keyset``."""
    if base_kind([base]) != "merged":
        raise UserError(f"--base {base} is not a merged base (backfill merge OUT/base): nothing to re-tokenize")
    splits, info = plan_merged_splits([base])
    shards = vault_shards(vault_dir)
    foreign = column_values(shards["keys"], "keyset_id") - {keyset.keyset_id}
    if foreign:
        raise UserError(f"--vault {vault_dir} was made under keyset {sorted(foreign)[0]}, not {keyset.keyset_id}")
    return splits, info, shards


def manifest_counts(counts: dict) -> tuple[dict, list[str]]:
    """The manifest's counts (with the coverage) and the balances that fail, checked in the job: every line
    read is written, and every line with tokens is re-tokenized, already current or failed (kept as it was)."""
    counts = dict(counts)
    covered = counts.get("retokenized", 0) + counts.get("already_current", 0)
    with_tokens = counts.get("with_tokens", 0)
    counts["coverage"] = 1.0 if with_tokens == 0 else covered / with_tokens
    problems = []
    if counts.get("lines", 0) != counts.get("lines_out", 0):
        problems.append(f"retokenize read {counts.get('lines', 0):,} lines and wrote {counts.get('lines_out', 0):,}")
    if with_tokens != covered + counts.get("failed", 0):
        problems.append(f"retokenize accounts for {covered + counts.get('failed', 0):,} of {with_tokens:,} lines")
    return counts, problems


def _lines_out(table) -> dict:
    return {"lines_out": table.num_rows}


def retokenize(
    keys_path: str, base: str, vault_dir: str, out: str, beam_args: list[str] | None = None, progress_seconds=None
) -> dict:
    """Run the re-tokenize pipeline; returns its manifest (coverage in ``counts``)."""
    from transforms.crypto.keyset import Keyset

    timer = Timer()
    keyset = Keyset.load(keys_path)
    out = out.rstrip("/") or out  # "/" stays "/"
    sources = {"--base": base, "--vault": vault_dir, "--keys": keys_path}
    check_apart(out, sources)  # real paths: --out may not be, contain or lie inside an input
    check_owned(out, "retokenize")
    splits, info, shards = _plan_inputs(base, vault_dir, keyset)
    target = FileSystems.join(out, "base")
    run_id, started = new_run("retokenize")
    options = beam_options(beam_args or [], step="retokenize", run_id=run_id)
    ctx = DeadLetterContext("retokenize", run_id, started)
    n_buckets = max(1, math.ceil(info.estimated_rows / ROWS_PER_BUCKET))
    log.info(
        "retokenize %s: ~%s lines, %s bucket(s), to join key %s",
        run_id,
        f"{info.estimated_rows:,}",
        f"{n_buckets:,}",
        keyset.primary_join_version,
    )
    # Written beside OUT and switched in at the end (pipelines/io/publish.py); the spill is sealed under a
    # per-run key in a private local folder (transforms/core/shuffle.py).
    spilling = spill_area("retokenize") if is_local_runner(options) else contextlib.nullcontext()
    watch = progress("retokenize", run_id, dict.fromkeys(PHASES, info.estimated_rows), options, progress_seconds)
    with publishing(out, "retokenize", run_id, inputs=sources, produces=OUTPUTS) as pub, spilling as spill_dir:
        counts_path = pub.path("summary.json")
        with watch as prog, beam.Pipeline(options=options) as p:
            inputs = {
                "base": p | "ReadMergedBase" >> ReadMergedBase(splits),
                "vault_keys": p | "ReadVaultKeys" >> ReadVaultTable(shards["keys"], "keys"),
                "vault_values": p | "ReadVaultValues" >> ReadVaultTable(shards["values"], "values"),
            }
            outputs = inputs | "RetokenizeBase" >> RetokenizeBase(keys_path, ctx, n_buckets, spill_dir)
            prog.count(inputs["base"], "read")
            prog.count(outputs.base, "retokenized")
            written = [
                write_merged_base(outputs.base, pub.path("base")),
                write_dead_letters(outputs.dead_letter, pub.path("dead_letter", "part")),
                outputs.counts | "WriteCounts" >> beam.Map(lambda c: write_json(counts_path, c)),
            ]
            manifest = {
                "step": "retokenize",
                "run_id": run_id,
                "started": started,
                "keys": keys_block(keyset, vault=False),
                "inputs": {"base": info.files, "vault": vault_dir},
                "outputs": {"base": target, "dead_letter": FileSystems.join(out, "dead_letter")},
                "runner": runner_name(options),
            }
            tallies = (outputs.counts, outputs.base | "CountLinesOut" >> beam.Map(_lines_out))
            counts = tallies | "AllCounts" >> beam.Flatten() | "SumCounts" >> beam.CombineGlobally(SumCounts())
            counts | "Finalize" >> Finalize(pub, manifest, manifest_counts, after=written, started=timer.started)
        manifest = read_json(pub.written("manifest.json"))  # written by the job, balances checked there
    return manifest


def failed_lines(out: str, limit: int = 10) -> list[str]:
    """The first failed lines (line_id: reason) from OUT/dead_letter, for the command's message."""
    import json

    found = []
    for meta in FileSystems.match([FileSystems.join(out.rstrip("/"), "dead_letter", "*.jsonl")])[0].metadata_list:
        with FileSystems.open(meta.path) as handle:
            for line in handle.read().decode("utf-8").splitlines():
                row = json.loads(line)
                found.append(f"{row['line_id']} ({row['reason']})")
                if len(found) >= limit:
                    return found
    return found
