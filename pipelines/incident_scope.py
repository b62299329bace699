"""The incident's Beam job: reads wired to the scope, the writes, and the counts checked in the job.

Used by ``backfill incident`` (:mod:`pipelines.incident`). The job reads the
merged base (``ReadMergedBase``), the vault's key table (``ReadVaultTable``,
with ``--vault``) and the line list (``ReadLineIds``, with ``--lines``) as
Arrow batches, scopes them (:class:`transforms.compliance.incident_scope.ScopeIncident`),
writes ``affected_lines/`` and the report, and ends with
:class:`pipelines.io.finalize.Finalize`: :func:`summarise` turns the summed
counts into the manifest's block and fails the job on any imbalance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import apache_beam as beam

from pipelines.incident_report import write_report_from_counts
from pipelines.io.affected_lines import WriteAffectedLines
from pipelines.io.finalize import Finalize
from pipelines.io.line_lists import ReadLineIds
from pipelines.io.merged_beam import ReadMergedBase, ReadVaultTable
from pipelines.progress import NO_PROGRESS
from pipelines.io.phase import Phase
from transforms.compliance.incident_scope import ScopeIncident
from transforms.core.metrics import SumCounts

if TYPE_CHECKING:
    from pipelines.incident import _Job
    from pipelines.io.publish import Publication

__all__ = ["build_pipeline", "summarise"]

_BY = ("region", "field", "vault_field", "join_key_version", "vault_key_version")


def _sorted(counts: dict) -> dict:
    return {k: counts[k] for k in sorted(counts, key=lambda k: (k == "(none)", k))}


def _listed(listed: dict, block: dict, problems: list[str]) -> None:
    """A line list's counts: read = joined, distinct = found + unknown."""
    rows, distinct = listed.get("rows", 0), listed.get("distinct", 0)
    found, unknown = listed.get("found", 0), listed.get("unknown", 0)
    block.update(given=distinct, listed_rows=rows, duplicates=rows - distinct, unknown=unknown)
    if listed.get("unreadable"):
        block["unreadable_rows"] = listed["unreadable"]
    if rows == 0:
        problems.append("the --lines file holds no line_id")
    elif rows != listed.get("rows_joined", 0) or distinct != found + unknown:
        problems.append(
            f"incident counts do not balance for the line list ({rows:,} ids read, "
            f"{listed.get('rows_joined', 0):,} joined; {distinct:,} distinct, {found:,} found + {unknown:,} unknown)"
        )


def summarise(counts: dict) -> tuple[dict, list[str]]:
    """The manifest's counts block and the balances that fail (see the module docstring)."""
    base, affected, written = (counts.get(k, {}) for k in ("base", "affected", "written"))
    vault = counts.get("vault", {})
    rows_in, n, passed = base.get("rows_in", 0), base.get("affected", 0), base.get("not_affected", 0)
    block = {
        "base_lines_read": rows_in,
        "affected": n,
        "not_affected": passed,
        "unknown": 0,
        "lines_with_identity": affected.get("lines_with_identity", 0),
        "subscribers_by_document": counts.get("subscribers_by_document", 0),
        "shreddable": affected.get("shreddable", 0),
        "shredded": written.get("shredded", 0),
        "rows_written": written.get("rows", 0),
        "by": {name: _sorted(affected.get(name, {})) for name in _BY},
    }
    problems = []
    if rows_in != n + passed:
        problems.append(
            f"incident counts do not balance for the base ({rows_in:,} lines read, {n:,} affected + {passed:,} not)"
        )
    if not n == affected.get("lines", 0) == block["rows_written"]:
        problems.append(f"incident counts do not balance: {n:,} lines affected, {block['rows_written']:,} written")
    if "listed" in counts:
        _listed(counts["listed"], block, problems)
    if "wrapped_not_in_base" in vault:
        block["vault_lines_not_in_base"] = vault["wrapped_not_in_base"]
    if vault.get("foreign_keysets"):
        problems.append(
            f"the vault's key table was made under keyset {sorted(vault['foreign_keysets'])[0]}, "
            "not under the keyset given with --keys"
        )
    block["balanced"] = not problems
    return block, problems


def build_pipeline(p: beam.Pipeline, job: _Job, pub: Publication, spill_dir: str | None, progress=NO_PROGRESS) -> None:
    """Wire the job into ``p``: everything it writes goes under ``pub.stage``; ``progress`` counts the base read."""
    inputs = {"base": p | "ReadMergedBase" >> ReadMergedBase(job.base_splits, job.args.batch_size)}
    progress.count(inputs["base"], "read")
    tallies = []
    if job.listing is not None:
        listed = p | "ReadLineIds" >> ReadLineIds(job.listing, job.args.batch_size)
        inputs["listed"] = listed.ids
        tallies.append(listed.counts)
    if job.vault is not None:
        inputs["vault_keys"] = p | "ReadVaultKeys" >> ReadVaultTable(job.vault, "keys")
    keyset_id = job.keyset.keyset_id if job.keyset is not None else None
    outputs = inputs | "ScopeIncident" >> ScopeIncident(job.scope, job.n_buckets, spill_dir, keyset_id)
    written, write_counts = outputs.affected | "WriteAffectedLines" >> WriteAffectedLines(pub.stage, job.args.shred)
    counts = (
        (outputs.tallies, write_counts, *tallies)
        | "FlattenCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombineGlobally(SumCounts())
    )
    report = counts | "WriteReport" >> beam.FlatMap(write_report_from_counts, pub.stage, job.report_static, summarise)
    # With --shred the run goes on after the job (the shred, then the report again): the job's output is a
    # phase the launcher publishes, never switched in by the job itself (on an object store it would be).
    target = Phase.at(pub.stage, pub.step, pub.run_id) if job.args.shred else pub
    after = [written, report]
    counts | "Finalize" >> Finalize(target, job.manifest_static, summarise, after=after, started=job.timer.started)
