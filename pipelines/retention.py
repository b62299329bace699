"""backfill retention: purge the identity of lines terminated more than N years ago (Art. 11).

    backfill retention --base out/merge/base --vault out/merge/vault --keys keys/keyset.json \\
        --out out/retention --as-of 2026-12-01 [--policy FILE] [--actor NAME]
    python -m pipelines.retention ...

For every TERMINATED line of the merged base whose retention period is over
on ``--as-of`` (``as_of > terminated_on + N years``, N from the policy; see
``transforms/compliance/retention.py`` for the boundary and Feb 29), it writes:

* ``OUT/base/``: the whole base, same schema, the due lines' tokens, masks
  and document types blanked (null), ``join_key_version`` null, and
  ``vault_key_version`` as the vault now has it;
* ``OUT/vault/``: a copy of ``--vault`` without the due lines' value rows,
  then crypto-shredded with ``pipelines.keys.shred_lines`` (their data keys
  dropped, every other data key re-wrapped under a new vault key version,
  older versions retired; one record per line in ``OUT/audit/shred.jsonl``);
* ``OUT/manifest.json`` (step ``retention``): as-of, policy, cut-off date,
  the purged line_ids, counts that balance, key versions before and after.

Why a new vault under OUT rather than purging in place: the base and the
vault under OUT are one consistent pair and the inputs are not rewritten
while the run works. The shred retires the vault key versions that wrapped
the input vault's key table, so after the run the input vault opens no line
at all: OUT/vault is the live vault from then on, and the input merge output
should be deleted (its base still holds the purged lines' tokens and masks).
``--vault`` may be ``OUT/vault`` itself (a purge run again on its own
output; the one input allowed inside OUT).

OUT is written beside itself (``OUT.tmp-RUN_ID``) and switched in at the end
(``pipelines/io/publish.py``); the shred log is appended to
``OUT/audit/shred.jsonl`` directly. A run that fails before its shred leaves
OUT as it was; one that fails after it keeps ``OUT.tmp-RUN_ID`` (its vault
may be the only one that opens) and names it: the same command with
``--vault OUT.tmp-RUN_ID/vault`` completes the purge (delete that folder
afterwards).

Re-running on its own output purges nothing more and changes nothing: a due
line that has no token, mask, data key or value left (purged before, or it
never had an identity) is counted as ``nothing_to_purge``, and without lines
to shred the keyset is not touched.

Plain pyarrow, not a Beam pipeline: one streaming pass over the base's
Parquet files to find the due lines, the vault rewrite and shred (a single
keyset transaction under its lock, and the vault tables are read whole by
``pipelines.io.vault_files`` anyway), then one streaming pass that rewrites
each file. There is no shuffle or join that a runner would parallelise
usefully, and memory stays one record batch plus the vault tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import TYPE_CHECKING, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from pipelines.common import ArgumentParser, UserError, new_run, parse_as_of, run_main, split_beam_flags
from pipelines.io.publish import Publication, check_apart, check_owned, kept_stage, publishing
from pipelines.manifest import Timer, keys_block, policy_block, write_json
from pipelines.retention_base import _find_due, _rewrite_base, merged_base_files, merged_batches

if TYPE_CHECKING:
    import datetime as dt

    from transforms.crypto.keyset import Keyset
    from transforms.scan.policy import Policy

__all__ = ["run", "main", "format_summary", "merged_base_files", "merged_batches"]

OUTPUTS = ("base", "vault", "manifest.json")  # what a purge writes into OUT (audit/shred.jsonl is appended to)


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill retention", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, action="append", help="merged base (backfill merge OUT/base); repeatable")
    p.add_argument("--vault", required=True, help="the base's vault folder (OUT/vault)")
    p.add_argument("--keys", required=True, help="keyset file (mode 0600): the shred re-wraps the data keys")
    p.add_argument("--out", required=True, help="output folder: OUT/base, OUT/vault, OUT/audit, OUT/manifest.json")
    p.add_argument("--as-of", required=True, type=parse_as_of, help="date the retention periods are judged on")
    p.add_argument("--policy", default=None, help="policy YAML (retention.years_after_termination)")
    p.add_argument("--actor", default=None, help="who runs the purge (recorded in the shred log)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _same(a: str, b: str) -> bool:
    """The same folder, symbolic links resolved."""
    return os.path.realpath(a.rstrip("/")) == os.path.realpath(b.rstrip("/"))


@dataclasses.dataclass
class _Job:
    """One purge, its inputs checked before anything is read."""

    args: argparse.Namespace
    policy: Policy
    keyset: Keyset
    keys_before: dict
    files: list[str]
    out: str
    out_base: str
    out_vault: str
    in_place: bool
    run_id: str
    started: str
    timer: Timer

    @property
    def as_of(self) -> dt.date:
        return self.args.as_of


class _Purge(NamedTuple):
    """The vault's side of a purge: the lines purged, the data keys shredded, the tables before and after."""

    purged: list[str]
    shred_ids: pa.ChunkedArray
    keys_in: pa.Table
    values_in: pa.Table
    values_out: pa.Table
    shred: dict | None


def _inputs(args) -> dict:
    """Every path the purge reads, by flag: --out may be none of them, contain none, lie inside none (the one
    exception: ``--vault OUT/vault``, a purge completed in place; OUT/vault is replaced only once the new one
    is whole)."""
    return {"--base": args.base, "--vault": args.vault, "--keys": args.keys, "--policy": args.policy}


def _prepare(argv) -> _Job:
    """Parse and check the arguments: OUT apart from the base, the live vault, the keyset, a merged base."""
    from transforms.crypto.keyset import Keyset
    from transforms.scan.policy import load_policy

    args, _ = split_beam_flags(parser(), argv, pipeline=False)
    timer = Timer()
    run_id, started = new_run("retention")
    policy = load_policy(args.policy)
    out = args.out.rstrip("/")
    out_base, out_vault = FileSystems.join(out, "base"), FileSystems.join(out, "vault")
    in_place = _same(args.vault, out_vault)
    check_apart(out, _inputs(args), allow=[args.vault] if in_place else ())  # real paths
    check_owned(out, "retention")
    resumed = kept_stage(args.vault, out, "retention")  # the vault an interrupted purge left beside OUT
    if not in_place and not resumed and FileSystems.exists(out_vault):
        # An earlier run's shred retired the key of the input vault: OUT/vault is the only one that opens now.
        raise UserError(
            f"{out_vault} exists from an earlier run and is the live vault now: re-run with "
            f"--vault {out_vault} (the same --base) to complete the purge in place"
        )
    keyset = Keyset.load(args.keys)  # permissions and format checked before anything is read
    keys_before = {**keys_block(keyset), "vault_versions": keyset.versions("vault")}
    files = merged_base_files(args.base)
    check_apart(out, {"--base": files})
    return _Job(
        args=args,
        policy=policy,
        keyset=keyset,
        keys_before=keys_before,
        files=files,
        out=out,
        out_base=out_base,
        out_vault=out_vault,
        in_place=in_place,
        run_id=run_id,
        started=started,
        timer=timer,
    )


def _read_vault(job: _Job) -> tuple[pa.Table, pa.Table]:
    """The input vault's key and value tables, made under this keyset."""
    from transforms.crypto.vault import VaultError
    from pipelines.io.vault_files import read_table

    args, keyset_id = job.args, job.keyset.keyset_id
    try:
        keys_in, values_in = read_table(args.vault, "keys"), read_table(args.vault, "values")
    except VaultError as exc:
        raise UserError(str(exc)) from None
    foreign = set(pc.unique(keys_in.column("keyset_id")).to_pylist()) - {keyset_id}
    if foreign:
        raise UserError(
            f"--vault {args.vault} was made under keyset {sorted(foreign)[0]}, not {keyset_id} (--keys {args.keys})"
        )
    return keys_in, values_in


def _purge_vault(
    job: _Job,
    pub: Publication,
    keys_in: pa.Table,
    values_in: pa.Table,
    due_ids: pa.Array,
    with_identity: pa.Array,
    cutoff: dt.date,
) -> _Purge:
    """The staged vault: the input's without the due lines' values, then their data keys crypto-shredded.

    The shred log is appended to OUT/audit/shred.jsonl itself (never staged: no record is lost with a failed
    run). From the shred on, the staged vault may be the only one that opens: a failure keeps it."""
    from pipelines.keys import shred_lines
    from transforms.crypto.vault import drop_lines
    from pipelines.io.vault_files import write_table

    shred_ids = keys_in.filter(pc.is_in(keys_in.column("line_id"), value_set=due_ids)).column("line_id")
    value_rows = pc.is_in(values_in.column("line_id"), value_set=due_ids)
    valued_ids = pc.unique(values_in.column("line_id").filter(value_rows))
    touched = pc.unique(pa.chunked_array([with_identity, shred_ids.combine_chunks(), valued_ids], pa.string()))
    purged = sorted(touched.to_pylist())
    values_out = drop_lines(values_in, purged)
    vault = pub.path("vault")
    write_table(vault, "values", values_out)
    write_table(vault, "keys", keys_in)
    shred = None
    if shred_ids.length():
        years = job.policy.retention_years
        pub.keep_on_failure(
            f"its shred has begun and {vault} may be the only vault that opens: complete the purge with "
            f"--vault {vault} (the same --base and --out)"
        )
        shred = shred_lines(
            job.args.keys,
            vault,
            sorted(shred_ids.to_pylist()),
            shred_log=_shred_log(job.out_vault),  # the published folder's log, never a staged one
            published_as=job.out_vault,
            actor=job.args.actor,
            reason=f"retention (Art. 11): terminated on or before {cutoff}, "
            f"{years} years before {job.as_of}; run {job.run_id}",
        )
    return _Purge(purged, shred_ids, keys_in, values_in, values_out, shred)


def _counts(found: dict, purge: _Purge, keys_out: pa.Table, lines_out: int, blanked: dict) -> dict:
    """The line and vault counts, and whether each side balances."""
    keys_in, values_in, values_out = purge.keys_in, purge.values_in, purge.values_out
    shredded = purge.shred_ids.length()
    counts = {
        **found,
        "lines_out": lines_out,
        "balanced": found["lines_in"] == lines_out,
        "terminated_within_retention": found["terminated"] - found["terminated_without_date"] - found["due"],
        "purged": len(purge.purged),
        "nothing_to_purge": found["due"] - len(purge.purged),
        "fields_blanked": {k: v for k, v in blanked.items() if v},
        "vault": {
            "keys_in": keys_in.num_rows,
            "keys_shredded": shredded,
            "keys_out": keys_out.num_rows,
            "values_in": values_in.num_rows,
            "values_dropped": values_in.num_rows - values_out.num_rows,
            "values_out": values_out.num_rows,
            "balanced": keys_in.num_rows == keys_out.num_rows + shredded,
        },
    }
    counts["balanced"] = counts["balanced"] and counts["vault"]["balanced"]
    return counts


def _manifest(job: _Job, cutoff: dt.date, purge: _Purge, counts: dict) -> dict:
    from transforms.crypto.keyset import Keyset

    after, before, shred = Keyset.load(job.args.keys), job.keys_before, purge.shred
    return {
        "step": "retention",
        "run_id": job.run_id,
        "started": job.started,
        "as_of": job.as_of.isoformat(),
        "policy": policy_block(job.policy),
        "retention": {
            "years_after_termination": job.policy.retention_years,
            "purge_terminated_on_or_before": cutoff.isoformat(),
            "rule": "purged when as_of > terminated_on + years (29 Feb + years = 28 Feb without a 29th); "
            "TERMINATED lines without terminated_on are kept",
        },
        "keys": {
            **keys_block(after, vault=False),
            "vault_before": before["vault"],
            "vault_after": after.primary_vault_version,
            "vault_versions_before": before["vault_versions"],
            "vault_versions_after": after.versions("vault"),
            "retired": shred["retired_vault_key_versions"] if shred else [],
        },
        "inputs": {"base": list(job.args.base), "base_files": job.files, "vault": job.args.vault},
        "outputs": {
            "base": job.out_base,
            "vault": job.out_vault,
            "in_place": job.in_place,
            "shred_log": _shred_log(job.out_vault) if shred else None,
        },
        "counts": counts,
        "purged_line_ids": purge.purged,
        "runner": "pyarrow (no Beam pipeline: see pipelines/retention.py)",
        "timings": job.timer.as_dict(),
    }


def _shred_log(out_vault: str) -> str:
    """OUT/audit/shred.jsonl: beside the published vault, as ``backfill keys shred`` would keep it."""
    return os.path.join(os.path.dirname(os.path.normpath(out_vault)), "audit", "shred.jsonl")


def run(argv=None) -> dict:
    """Run a retention purge; returns its manifest.

    The new base and vault are written beside OUT and switched in at the end (pipelines/io/publish.py). A
    failure before the shred leaves OUT as it was; a failure after it keeps the staged folder, whose vault
    may be the only one that opens, and says how to complete the purge."""
    from transforms.compliance.retention import last_purged_date
    from pipelines.io.vault_files import read_table

    job = _prepare(argv)
    keys_in, values_in = _read_vault(job)
    cutoff = last_purged_date(job.as_of, job.policy.retention_years)
    due_ids, found = _find_due(job.files, cutoff)
    job.timer.mark("find_seconds")
    allow = [job.args.vault] if job.in_place else ()
    with publishing(job.out, "retention", job.run_id, inputs=_inputs(job.args), produces=OUTPUTS, allow=allow) as pub:
        purge = _purge_vault(job, pub, keys_in, values_in, due_ids, found.pop("_with_identity"), cutoff)
        job.timer.mark("vault_seconds")
        try:
            keys_out = read_table(pub.path("vault"), "keys")
            lines_out, blanked = _rewrite_base(job.files, pub.path("base"), cutoff, keys_out)
            job.timer.mark("base_seconds")
            counts = _counts(found, purge, keys_out, lines_out, blanked)
            manifest = _manifest(job, cutoff, purge, counts)
            if not counts["balanced"]:
                raise UserError(
                    f"the purge does not balance ({counts['lines_in']:,} lines in, {counts['lines_out']:,} out; "
                    f"vault keys {counts['vault']['keys_in']:,} in, {counts['vault']['keys_out']:,} out + "
                    f"{counts['vault']['keys_shredded']:,} shredded): nothing was published"
                )
            write_json(pub.path("manifest.json"), manifest)  # last: the manifest says the output is whole
        except Exception as exc:
            if not pub.keep_reason:
                raise
            what = str(exc).splitlines()[0] if isinstance(exc, UserError) else f"unexpected {type(exc).__name__}"
            raise UserError(f"retention stopped ({what}); {pub.keep_reason}") from exc
    return manifest


def format_summary(m: dict) -> str:
    c, k = m["counts"], m["keys"]
    lines = [
        f"retention as of {m['as_of']} ({m['retention']['years_after_termination']} years, policy "
        f"{m['policy']['version']}): purged {c['purged']:,} line(s) terminated on or before "
        f"{m['retention']['purge_terminated_on_or_before']}; {c['nothing_to_purge']:,} due had nothing left "
        "to purge",
        f"  lines in {c['lines_in']:,} = lines out {c['lines_out']:,}: "
        f"{'balanced' if c['balanced'] else 'NOT BALANCED'}; terminated {c['terminated']:,} "
        f"(within retention {c['terminated_within_retention']:,}, without terminated_on "
        f"{c['terminated_without_date']:,}: kept)",
        f"  vault: {c['vault']['keys_shredded']:,} data keys shredded, {c['vault']['values_dropped']:,} "
        f"values dropped; vault key {k['vault_before']} -> {k['vault_after']}"
        + (f" (retired {', '.join(k['retired'])})" if k["retired"] else " (keyset unchanged)"),
        f"  -> {m['outputs']['base']}, {m['outputs']['vault']}",
    ]
    return "\n".join(lines)


def _body(argv) -> int:
    print(format_summary(run(argv)))
    return 0


def main(argv=None) -> int:
    return run_main("backfill retention", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
