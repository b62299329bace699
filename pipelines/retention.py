"""backfill retention: purge the identity of lines terminated more than N years ago (Art. 11).

    backfill retention --merged out/merge --keys keys/keyset.json \\
        --out out/retention --as-of 2026-12-01 [--policy FILE] [--actor NAME] [Beam flags...]
    backfill retention --base out/merge/base --vault out/merge/vault ...     # the same, by its parts

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
* ``OUT/purged/``: the line ids purged (Parquet), ``OUT/manifest.json`` (step
  ``retention``): as-of, policy, cut-off date, the first 1,000 purged line ids,
  counts that balance, key versions before and after.

Three Beam jobs, memory flat in the base's size (``pipelines/retention_jobs.py``):
the due lines found batch by batch and joined with the vault by line bucket
(the staged vault's values written, the lines to shred listed in files);
the crypto-shred, one job per vault the keyset knows, reading the lines to
shred from those files; the base rewritten batch by batch. Each job checks
its own counts, and the last one writes the manifest (``Finalize``).

Why a new vault under OUT rather than purging in place: the base and the
vault under OUT are one consistent pair and the inputs are not rewritten
while the run works. The shred retires the vault key versions that wrapped
the input vault's key table, so after the run the input vault opens no line
at all unless the keyset knows it: OUT/vault is the live vault from then on,
and the input merge output should be deleted (its base still holds the purged
lines' tokens and masks). ``--vault`` may be ``OUT/vault`` itself (a purge run
again on its own output; the one input allowed inside OUT).

OUT is written beside itself (``OUT.tmp-RUN_ID``) and switched in at the end
(``pipelines/io/publish.py``); the shred log is appended to
``OUT/audit/shred.jsonl`` directly. A run that fails or is killed before its
shred leaves OUT as it was; from the shred on, the staged folder is marked
*kept* (also when the process is killed): its vault may be the only one that
opens. The same command with ``--vault OUT.tmp-RUN_ID/vault`` completes the
purge (delete that folder afterwards); until then a purge into OUT with
another vault is refused.

Re-running on its own output purges nothing more and changes nothing: a due
line that has no token, mask, data key or value left (purged before, or it
never had an identity) is counted as ``nothing_to_purge``, and without lines
to shred the keyset is not touched.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import math
import os
import sys
from pipelines.io.publish_guards import exists
from typing import TYPE_CHECKING

from apache_beam.io.filesystems import FileSystems

from pipelines.common import ArgumentParser, UserError, beam_options, is_local_runner, new_run, parse_as_of, run_main
from pipelines.flags import add_merged, add_progress_flag
from pipelines.common import split_beam_flags
from pipelines.io.publish import Publication, check_apart, check_owned, kept_stage, publishing
from pipelines.manifest import Timer, keys_block
from pipelines.retention_base import plan_base, vault_tables
from pipelines.retention_guard import check_opens, one_purge_at_a_time
from pipelines.retention_keep import keep_from_now, kept_stages, moved_versions
from pipelines.retention_manifest import manifest_static, shred_log

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset
    from transforms.scan.policy import Policy

__all__ = ["run", "main", "format_summary"]

OUTPUTS = ("base", "vault", "purged", "manifest.json")  # what a purge writes into OUT (audit/ is appended to)
ROWS_PER_BUCKET = 200_000  # vault value rows per bucket of the join by line


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill retention", description=__doc__.splitlines()[0])
    add_merged(
        p,
        base_help="merged base (a merge, compact or retention OUT/base); repeatable",
        vault_help="the base's vault folder (OUT/vault)",
        vault_required=True,
    )
    p.add_argument("--keys", required=True, help="keyset file (mode 0600): the shred re-wraps the data keys")
    p.add_argument("--out", required=True, help="output folder: OUT/base, OUT/vault, OUT/audit, OUT/manifest.json")
    p.add_argument("--as-of", required=True, type=parse_as_of, help="date the retention periods are judged on")
    p.add_argument(
        "--future-as-of",
        action="store_true",
        help="allow an --as-of after today (a rehearsal on copies, a simulated timeline such as the demo's); "
        "without it such a date is refused: a purge cannot be undone",
    )
    p.add_argument("--policy", default=None, help="policy YAML (retention.years_after_termination)")
    p.add_argument("--actor", default=None, help="who runs the purge (recorded in the shred log)")
    p.add_argument("--batch-size", type=int, default=65_536, help="rows per Arrow batch")
    p.add_argument("--shuffle-buckets", type=int, default=None, help="buckets of the join by line (default: by size)")
    p.add_argument(
        "--spill", choices=["auto", "on", "off"], default="auto", help="spill the join (auto: local runners)"
    )
    add_progress_flag(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _same(a: str, b: str) -> bool:
    """The same folder, symbolic links resolved."""
    return os.path.realpath(a.rstrip("/")) == os.path.realpath(b.rstrip("/"))


@dataclasses.dataclass
class _Job:
    """One purge, its inputs checked before anything is read."""

    args: argparse.Namespace
    options: object
    policy: Policy
    keyset: Keyset
    keys_before: dict
    splits: list
    files: list[str]
    base_rows: int
    vault: dict[str, list[str]]
    out: str
    out_vault: str
    in_place: bool
    run_id: str
    started: str
    timer: Timer

    @property
    def as_of(self) -> dt.date:
        return self.args.as_of

    @property
    def spill(self) -> bool:
        return self.args.spill != "off" and is_local_runner(self.options)


def _inputs(args) -> dict:
    """Every path the purge reads, by flag: --out may be none of them, contain none, lie inside none (the one
    exception: ``--vault OUT/vault``, a purge completed in place; OUT/vault is replaced only once the new one
    is whole)."""
    return {"--base": args.base, "--vault": args.vault, "--keys": args.keys, "--policy": args.policy}


def _check_out(args, out: str, out_vault: str, in_place: bool) -> None:
    """OUT apart from the inputs, made by a purge; the live vault and a kept purge never passed over."""
    check_apart(out, _inputs(args), allow=[args.vault] if in_place else ())  # real paths
    check_owned(out, "retention")
    resumed = kept_stage(args.vault, out, "retention")  # the vault an interrupted purge left beside OUT
    kept = [] if resumed else kept_stages(out)
    if kept:
        raise UserError(
            f"an earlier purge into {out} stopped after its shred began and kept {kept[0]}: complete it with "
            f"--vault {os.path.join(kept[0], 'vault')} (the same --base), or delete that folder if it was completed"
        )
    if not in_place and not resumed and exists(out_vault):
        # An earlier run's shred retired the key of the input vault: OUT/vault is the only one that opens now.
        raise UserError(
            f"{out_vault} exists from an earlier run and is the live vault now: re-run with "
            f"--vault {out_vault} (the same --base) to complete the purge in place"
        )


def _check_as_of(as_of: dt.date, future: bool) -> None:
    """A purge judged on a day that has not come yet would shred lines whose retention is not over (a mistyped
    year): refused unless ``--future-as-of`` says it is meant. Today is UTC's, with a day's room for the
    time zones east of it."""
    today = dt.datetime.now(dt.timezone.utc).date()
    if as_of > today + dt.timedelta(days=1) and not future:
        raise UserError(
            f"--as-of {as_of} is after today ({today}): the purge would shred lines whose retention is not over, "
            "and a shred cannot be undone; give today's date, or add --future-as-of for a rehearsal on copies; "
            "nothing was read"
        )


def _prepare(argv) -> _Job:
    """Parse and check the arguments: OUT apart from the base, the live vault, the keyset, a merged base."""
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.registry import refuse_copied_keyset
    from transforms.scan.policy import load_policy

    args, beam_args = split_beam_flags(parser(), argv)
    timer = Timer()
    _check_as_of(args.as_of, args.future_as_of)
    run_id, started = new_run("retention")
    options = beam_options(beam_args, step="retention", run_id=run_id)
    if args.spill == "on" and not is_local_runner(options):
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    policy = load_policy(args.policy)
    out = args.out.rstrip("/") or args.out  # "/" stays "/"
    out_vault = FileSystems.join(out, "vault")
    in_place = _same(args.vault, out_vault)
    _check_out(args, out, out_vault, in_place)
    keyset = Keyset.load(args.keys)  # permissions and format checked before anything is read
    refuse_copied_keyset(args.keys, keyset)  # a rehearsal's copy of the keyset would re-wrap the original's vaults
    keys_before = {**keys_block(keyset), "vault_versions": keyset.versions("vault")}
    splits, info = plan_base(args.base)
    check_apart(out, {"--base": info.files})
    return _Job(
        args=args,
        options=options,
        policy=policy,
        keyset=keyset,
        keys_before=keys_before,
        splits=splits,
        files=info.files,
        base_rows=info.estimated_rows,
        vault=vault_tables(args.vault),
        out=out,
        out_vault=out_vault,
        in_place=in_place,
        run_id=run_id,
        started=started,
        timer=timer,
    )


def _find_and_purge(job: _Job, pub: Publication, cutoff: dt.date) -> dict:
    """The first job: the staged vault (its key table copied, its values purged), the lines to shred."""
    from pipelines.io.phase import Phase
    from pipelines.io.vault_files import copy_table, table_rows
    from pipelines.retention_jobs import PurgeJob, run_purge

    rows = max(job.base_rows, table_rows(job.vault["values"]))
    found = run_purge(
        PurgeJob(
            splits=job.splits,
            vault=job.vault,
            stage=pub.stage,
            phase=Phase.inside(pub, "_purge"),
            cutoff=cutoff,
            keyset_id=job.keyset.keyset_id,
            vault_arg=job.args.vault,
            keys_arg=job.args.keys,
            n_buckets=job.args.shuffle_buckets or max(1, math.ceil(rows / ROWS_PER_BUCKET)),
            spill=job.spill,
            options=job.options,
            batch_size=job.args.batch_size,
            base_rows=job.base_rows,
            progress_seconds=job.args.progress_seconds,
        )
    )
    copied = copy_table(job.args.vault, pub.path("vault"), "keys")  # the shred rewrites the copy
    found["vault"]["keys_copied"] = table_rows(copied)
    job.timer.mark("purge_seconds")
    return found


def _shred(job: _Job, pub: Publication, found: dict, cutoff: dt.date) -> dict | None:
    """Crypto-shred the due lines that have a data key (their ids in the first job's files), in the staged
    vault and in every vault the keyset knows. From here on the staged folder is kept whatever happens."""
    from pipelines.keys import shred_lines
    from pipelines.shred_job import LineFiles

    count = found["vault"]["keys_to_shred"]
    if not count:
        return None
    vault = pub.path("vault")
    keep_from_now(
        pub,
        f"its shred has begun and {vault} may be the only vault that opens: complete the purge with "
        f"--vault {vault} (the same --base and --out)",
    )
    years = job.policy.retention_years
    shred = shred_lines(
        job.args.keys,
        vault,
        LineFiles(FileSystems.join(pub.path("_purge"), "shred", "*.parquet"), count),
        shred_log=shred_log(job.out_vault, job.args.keys),  # the published folder's log, never a staged one
        published_as=job.out_vault,
        actor=job.args.actor,
        reason=f"retention (Art. 11): terminated on or before {cutoff}, {years} years before {job.as_of}; "
        f"run {job.run_id}",
        options=job.options,
    )
    job.timer.mark("shred_seconds")
    return shred


def _rewrite_base(job: _Job, pub: Publication, cutoff: dt.date, found: dict, shred: dict | None) -> dict:
    """The last job: the base rewritten, every count checked, the manifest written; returns the manifest."""
    from pipelines.io.phase import Phase, remove_phase
    from pipelines.retention_jobs import run_rewrite
    from transforms.crypto.keyset import Keyset

    remove_phase(Phase.inside(pub, "_purge"))  # the lines to shred: not an output
    named = shred["vaults"][0] if shred else None
    moved = moved_versions(Keyset.load(job.args.keys), found["vault"]["keys_by_version"], job.keys_before, shred)
    earlier = {k: found[k] for k in ("base", "purge", "vault")}
    earlier["vault"] = {k: v for k, v in earlier["vault"].items() if k != "keys_by_version"}
    if named:
        earlier["shred"] = {"keys_in": named["keys_in"], "keys_out": named["keys_out"]}
        earlier["shred"]["dropped_lines"] = named["lines_unreadable_count"]
    manifest = manifest_static(job, cutoff, found, shred)
    return run_rewrite(
        pub,
        job.splits,
        cutoff,
        moved,
        earlier,
        manifest,
        options=job.options,
        batch_size=job.args.batch_size,
        started=job.timer.started,
        base_rows=job.base_rows,
        progress_seconds=job.args.progress_seconds,
    )


def _cutoff(as_of: dt.date, years: int) -> dt.date:
    """The latest ``terminated_on`` that is due; an --as-of fewer than ``years`` years after year 1 has none."""
    from transforms.compliance.retention import last_purged_date

    try:
        return last_purged_date(as_of, years)
    except (ValueError, OverflowError):  # the calendar starts at year 1
        raise UserError(f"--as-of {as_of} is too early: the calendar has no day {years} years before it") from None


def _dead_before(job: _Job) -> set[str]:
    """The vault key versions that opened nothing already when the purge began."""
    every = job.keyset.versions("vault", states=("primary", "enabled", "destroy_scheduled", "retired"))
    return set(every) - set(job.keys_before["vault_versions"])


def run(argv=None) -> dict:
    """Run a retention purge; returns its manifest (written by the last job, every balance checked there).

    The new base and vault are written beside OUT and switched in at the end (pipelines/io/publish.py). A
    failure before the shred leaves OUT as it was; a failure after it keeps the staged folder, whose vault
    may be the only one that opens, and says how to complete the purge."""
    from pipelines.keys_session import register_vault
    from transforms.crypto.keyset import keyset_lock

    job = _prepare(argv)
    cutoff = _cutoff(job.as_of, job.policy.retention_years)
    allow = [job.args.vault] if job.in_place else ()
    # Known before anything is written, shred or not: a later shred re-wraps it instead of making it unreadable.
    register_vault(job.args.keys, job.out_vault, by="retention", run_id=job.run_id)
    with contextlib.ExitStack() as until_switched:  # released once OUT is switched in (or the run failed)
        inputs = _inputs(job.args)
        with publishing(job.out, "retention", job.run_id, inputs=inputs, produces=OUTPUTS, allow=allow) as pub:
            until_switched.enter_context(one_purge_at_a_time(job.out))
            found = _find_and_purge(job, pub, cutoff)
            try:
                shred = _shred(job, pub, found, cutoff)
                manifest = _rewrite_base(job, pub, cutoff, found, shred)
                until_switched.enter_context(keyset_lock(job.args.keys))  # no key change until OUT/vault is known
                check_opens(job.args.keys, pub.path("vault"), _dead_before(job))
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
        f"  -> {m['outputs']['base']}, {m['outputs']['vault']} (purged line ids: {m['outputs']['purged']})",
    ]
    return "\n".join(lines)


def _body(argv) -> int:
    print(format_summary(run(argv)))
    return 0


def main(argv=None) -> int:
    return run_main("backfill retention", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
