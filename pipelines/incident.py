"""backfill incident: the scope of a suspected leak, the report to file, and the shred (Art. 13).

    backfill incident --key-version j1 --merged out/merge --out out/incident-1 \\
        [--detected-at 2026-11-30T09:15:00+08:00] [--description "join key found in a public repository"]
    backfill incident --lines leaked.csv --base out/merge/base --vault out/merge/vault --out out/incident-2 \\
        --shred --keys keys/keyset.json [--actor NAME] [--as-of 2026-11-30] [Beam flags...]
    python -m pipelines.incident ... --runner DataflowRunner --project P --region R --temp_location gs://b/tmp

``--key-version jN`` takes the lines whose tokens are under join key jN;
``vN`` the lines whose data key is wrapped by vault key vN (the vault's key
table, and the base's ``vault_key_version``); ``--lines FILE`` a list of
line_ids (one per line, or a CSV with a ``line_id`` column).

A Beam job (``pipelines/incident_scope.py``) with memory flat in the base's
size: a key version is a per-row filter; a line list and the vault's key
table are joined to the base by line bucket through the bucketed Arrow
shuffle. It writes ``OUT/affected_lines/affected_lines-SSSSS-of-NNNNN.csv``
(line_id, region, identity fields held as field *names*, key versions, sealed
vault fields, whether the vault data can be shredded and whether it was),
``OUT/incident.json`` and ``OUT/incident.html`` (what leaked or may have,
when, how many lines and subscribers, by region, what was done: counts only)
and ``OUT/manifest.json`` (counts checked in the job). Never a token, mask or
value: the report is what the operator files with the telecom administration.

``--merged OUT`` is ``--base OUT/base --vault OUT/vault``.
``--shred`` (with ``--keys`` and ``--vault``) crypto-shreds every affected
line that has a data key, in ``--vault`` itself (the live vault: a leak
response must destroy there), through ``pipelines.keys_shred.shred_lines``
once the job is done and before the output is published: one record per line
in ``VAULT/../audit/shred.jsonl``, every other data key re-wrapped under a new
vault key version; the report is then written again with what was done. The
base's tokens and masks are left as they are (``backfill retention`` blanks
them for terminated lines).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import math
import os
import sys
import time
from typing import TYPE_CHECKING

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.common import ArgumentParser, UserError, beam_options, is_local_runner, new_run, parse_as_of
from pipelines.flags import add_merged, add_progress_flag, shown_value
from pipelines.progress import progress
from pipelines.common import _user_message, refuse_document_numbers, run_main, runner_name, split_beam_flags
from pipelines.incident_report import action_block, scope_text, write_report
from pipelines.io.line_lists import LineList, inspect_line_list
from pipelines.io.publish import Publication, check_apart, check_owned, committed_remote, publishing
from pipelines.manifest import Timer, keys_block, read_json
from transforms.compliance.incident import KEY_VERSION, Scope

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset

__all__ = ["run", "main"]

OUTPUTS = ("affected_lines", "incident.json", "incident.html", "manifest.json")  # what it writes into OUT
ROWS_PER_BUCKET = 100_000  # a bucket (base lines + listed ids + vault key rows) is one worker's working set


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill incident", description=__doc__.splitlines()[0])
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--key-version", default=None, help="leaked key version: jN (join key) or vN (vault key)")
    scope.add_argument("--lines", default=None, help="file of line_ids: one per line, or a CSV with a line_id column")
    add_merged(
        p,
        base_help="merged base (a merge, compact or retention OUT/base); repeatable",
        vault_help="the vault folder (which lines have sealed data, for the shred)",
    )
    p.add_argument("--out", required=True, help="output folder: incident.json, incident.html, affected_lines/")
    p.add_argument(
        "--shred", action="store_true", help="crypto-shred the affected lines' vault data (needs --keys, --vault)"
    )
    p.add_argument("--keys", default=None, help="keyset file (mode 0600), for --shred")
    p.add_argument("--as-of", type=parse_as_of, default=None, help="date of the report (default: today)")
    p.add_argument("--detected-at", default=None, help="when the incident was detected (ISO date or time)")
    p.add_argument("--description", default=None, help="what happened, in the operator's words (no identity values)")
    p.add_argument("--actor", default=None, help="who responds (recorded in the shred log)")
    p.add_argument("--batch-size", type=int, default=65_536, help="rows per Arrow batch")
    p.add_argument(
        "--shuffle-buckets", type=int, default=None, help="buckets of the shuffles (default: from the input size)"
    )
    p.add_argument(
        "--spill", choices=["auto", "on", "off"], default="auto", help="spill shuffle payloads (auto: local runners)"
    )
    add_progress_flag(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _when(value: str | None, as_of: dt.date) -> str | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"--detected-at {shown_value(value)} is not an ISO date or time (YYYY-MM-DD[THH:MM[:SS][+08:00]])"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)  # no zone means UTC, as everywhere in the project
    try:
        when = when.astimezone(dt.timezone.utc)
    except OverflowError:  # its zone moves it before year 1 or after 9999
        raise UserError(f"--detected-at {shown_value(value)} is out of the calendar's range in UTC") from None
    _check_not_later(when, as_of)
    return when.isoformat().replace("+00:00", "Z")


def _check_not_later(when: dt.datetime, as_of: dt.date) -> None:
    """An incident detected after now, or after the day of its report, is a mistyped date: the report is a record
    filed with the regulator, so it is refused rather than written (a day's room for the time zones)."""
    room = dt.timedelta(days=1)
    now = dt.datetime.now(dt.timezone.utc)
    if when > now + room:
        raise UserError(f"--detected-at {when:%Y-%m-%d %H:%M} UTC is in the future (now {now:%Y-%m-%d %H:%M} UTC)")
    if when.date() - as_of > room:  # never as_of + room: 9999-12-31 has no next day
        raise UserError(f"--detected-at {when:%Y-%m-%d} is after the report's --as-of {as_of}")


@dataclasses.dataclass
class _Job:
    """One incident, as decided before its pipeline runs."""

    args: argparse.Namespace
    options: PipelineOptions
    run_id: str
    started: str
    as_of: dt.date
    out: str
    detected_at: str | None
    keyset: Keyset | None
    scope: Scope
    listing: LineList | None
    base_splits: list
    base_files: list[str]
    vault: list[str] | None  # the vault's key table shards (--vault)
    n_buckets: int
    spill: bool
    timer: Timer
    base_rows: int = 0  # planned: for the progress lines

    @property
    def scope_static(self) -> dict:
        """The scope as known before the run (the job adds its counts)."""
        if self.scope.kind == "lines":
            return {"kind": "lines", "file": self.args.lines}
        scope = {"kind": "key_version", "key_version": self.scope.key_version, "key_purpose": self.scope.purpose}
        if self.keyset is not None:
            scope["key_in_keyset"] = self.scope.key_version in {k.version for k in self.keyset.info()}
        return scope

    @property
    def inputs(self) -> dict:
        args = self.args
        return {"base": list(args.base), "base_files": self.base_files, "vault": args.vault, "lines": args.lines}

    @property
    def report_static(self) -> dict:
        """What the report needs that is known before the run."""
        return {
            "run_id": self.run_id,
            "started": self.started,
            "as_of": self.as_of.isoformat(),
            "detected_at": self.detected_at,
            "description": self.args.description,
            "scope": self.scope_static,
            "shred": self.args.shred,
            "affected_lines": FileSystems.join(self.out, "affected_lines"),
            "keys": keys_block(self.keyset) if self.keyset else None,
            "inputs": self.inputs,
        }

    @property
    def manifest_static(self) -> dict:
        """What the manifest says that is known before the run; the job adds the counts (Finalize)."""
        return {
            "step": "incident",
            "run_id": self.run_id,
            "started": self.started,
            "as_of": self.as_of.isoformat(),
            "detected_at": self.detected_at,
            "scope": self.scope_static,
            "keys": keys_block(self.keyset) if self.keyset else None,
            "inputs": self.inputs,
            "outputs": {
                "report": FileSystems.join(self.out, "incident.json"),
                "html": FileSystems.join(self.out, "incident.html"),
                "affected_lines": FileSystems.join(self.out, "affected_lines"),
            },
            "shred_requested": self.args.shred,
            "runner": runner_name(self.options),
            "shuffle": {"buckets": self.n_buckets, "spill": self.spill},
            "timings": {"plan_seconds": round(time.time() - self.timer.started, 3)},
        }


def _check_args(args) -> None:
    """--shred has what it needs; --key-version names a key version."""
    if args.shred and not (args.keys and args.vault):
        raise UserError("--shred needs --keys and --vault: the shred happens in the vault, under the keyset")
    if args.key_version is not None and not KEY_VERSION.match(args.key_version):
        raise UserError(
            f"--key-version {shown_value(args.key_version)} is not a key version: jN (join key) or vN (vault key)"
        )


def _check_in_keyset(keyset, args) -> None:
    """A --key-version the keyset never held (its history keeps every version) is a typo: the scope would be
    no line at all, reported as if the leak touched nothing."""
    if keyset is None or args.key_version is None:
        return
    held = [k.version for k in keyset.info()]
    if args.key_version not in held:
        raise UserError(
            f"--key-version {args.key_version} is not a version of the keyset {args.keys} "
            f"(it holds {', '.join(held)}; backfill keys show lists them)"
        )


def _check_no_kept(out: str) -> None:
    """An earlier run into OUT killed or failed once its shred began kept its staged folder, the only scope of
    the lines it shredded: a new report there would say they were never shredded here."""
    from pipelines.retention_keep import kept_stages

    kept = kept_stages(out, "incident")
    if kept:
        raise UserError(
            f"an earlier incident into {out} stopped once its shred began and kept {kept[0]}: it is that "
            "incident's scope (the shred log names its run); keep it, and write this report to a new folder"
        )


def _inputs(args) -> dict:
    """Every path the incident reads, by flag: --out may be none of them, contain none, lie inside none."""
    return {"--base": args.base, "--vault": args.vault, "--lines": args.lines, "--keys": args.keys}


def _prepare(argv) -> _Job:
    """Parse and check the arguments; plan the base, the vault's key table and the line list."""
    from pipelines.io.merged_base import base_kind, plan_merged_splits, vault_shards
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.registry import refuse_copied_keyset

    args, beam_args = split_beam_flags(parser(), argv)
    timer = Timer()
    run_id, started = new_run("incident")
    as_of, out = args.as_of or parse_as_of(None), args.out.rstrip("/") or args.out
    _check_args(args)
    refuse_document_numbers("--description", args.description)
    options = beam_options(beam_args, step="incident", run_id=run_id)
    FileSystems.set_options(options)  # object stores (s3://) are read before the pipeline sets them
    detected_at = _when(args.detected_at, as_of)
    if FileSystems.exists(FileSystems.join(out, "incident.json")):
        raise UserError(
            f"{out} already holds an incident report: it is a record that was filed; write this one to a new folder"
        )
    check_apart(out, _inputs(args))  # real paths
    check_owned(out, "incident")
    _check_no_kept(out)
    keyset = Keyset.load(args.keys) if args.keys else None  # permissions checked before anything is read
    if keyset is not None and args.shred:
        refuse_copied_keyset(args.keys, keyset)  # a copy of the keyset would shred in the original's vaults
    _check_in_keyset(keyset, args)
    listing = inspect_line_list(args.lines) if args.lines else None
    if base_kind(args.base) != "merged":
        raise UserError(f"--base {args.base[0]} is not a merged base (backfill merge OUT/base: tokens, no plaintext)")
    base_splits, base_info = plan_merged_splits(args.base)
    if args.spill == "on" and not is_local_runner(options):
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    rows = max(base_info.estimated_rows, listing.estimated_rows if listing else 0)
    return _Job(
        args=args,
        options=options,
        run_id=run_id,
        started=started,
        as_of=as_of,
        out=out,
        detected_at=detected_at,
        keyset=keyset,
        scope=Scope(args.key_version, vault=args.vault is not None),
        listing=listing,
        base_splits=base_splits,
        base_files=base_info.files,
        vault=vault_shards(args.vault)["keys"] if args.vault else None,
        n_buckets=args.shuffle_buckets or max(1, math.ceil(rows / ROWS_PER_BUCKET)),
        spill=args.spill != "off" and is_local_runner(options),
        timer=timer,
        base_rows=base_info.estimated_rows,
    )


def _written(job: _Job, pub: Publication) -> str:
    """Where the job's files are: the staged folder, or OUT when the job published them itself (object stores)."""
    return job.out if pub.remote and committed_remote(pub.out, pub.run_id) else pub.stage


def _shred(job: _Job, pub: Publication, manifest: dict) -> dict:
    """Crypto-shred the affected lines that have a data key; the job's report written again with what was done."""
    from pipelines.io.affected_lines import remove_shred_ids, shred_ids
    from pipelines.keys_shred import shred_lines
    from pipelines.retention_keep import keep_from_now
    from pipelines.reveal import audit_dir
    from transforms.crypto.keyset import Keyset

    args, report, count = job.args, read_json(pub.path("incident.json")), manifest["counts"]["shredded"]
    shred = None
    if count:
        description = (args.description or "").strip().replace("\n", " ")
        reason = f"its lines were crypto-shredded: {pub.stage} is the incident's only scope of them"
        shred = shred_lines(
            args.keys,
            args.vault,
            shred_ids(pub.stage, count),  # files the job wrote: the ids are never gathered in this process
            actor=args.actor,
            reason=f"incident {job.run_id} (Art. 13): {description or scope_text(report['scope'])}",
            options=job.options,
            before_record=lambda: keep_from_now(pub, reason),  # marked kept: a run killed from here on keeps it
        )
        shred["shred_log"] = FileSystems.join(audit_dir(args.vault, args.keys), "shred.jsonl")
        report["keys"] = keys_block(Keyset.load(args.keys))  # as the shred left it
    remove_shred_ids(pub.stage)
    report["action"] = action_block(manifest["counts"], requested=True, has_vault=True, shred=shred)
    write_report(pub.stage, report)
    return report


def run(argv=None) -> dict:
    """Scope an incident, write its report (and shred); returns the report."""
    from pipelines.incident_scope import build_pipeline
    from transforms.core.shuffle import spill_area

    job = _prepare(argv)
    with publishing(job.out, "incident", job.run_id, inputs=_inputs(job.args), produces=OUTPUTS) as pub:
        # The spill carries listed ids (a leaked list may hold anything): sealed, private, never under OUT.
        watch = progress("incident", job.run_id, {"read": job.base_rows}, job.options, job.args.progress_seconds)
        with spill_area("incident") if job.spill else contextlib.nullcontext() as spill_dir, watch as prog:
            with beam.Pipeline(options=job.options) as p:
                build_pipeline(p, job, pub, spill_dir, prog)
        manifest = read_json(FileSystems.join(_written(job, pub), "manifest.json"))  # counts checked in the job
        if job.args.shred:
            try:
                return _shred(job, pub, manifest)
            except Exception as exc:
                if not pub.keep_reason:
                    raise
                what = _user_message(exc) or f"unexpected {type(exc).__name__}"
                raise UserError(f"incident stopped ({what}); {pub.keep_reason}") from exc
        return read_json(FileSystems.join(_written(job, pub), "incident.json"))


def _body(argv) -> int:
    r = run(argv)
    h = r["how_many"]
    print(
        f"incident {r['incident_id']}: {scope_text(r['scope'])}: {h['lines']:,} line(s) affected "
        f"({h['subscribers_by_document']:,} subscriber(s) by document) in {len(r['by_region']):,} region(s); "
        f"fields {', '.join(f'{k} {v:,}' for k, v in r['what']['fields'].items()) or 'none'}"
    )
    if r["scope"]["kind"] == "key_version" and not h["lines"] and not r["scope"].get("key_in_keyset"):
        print(
            f"  warning: no line of the base is under {r['scope']['key_version']}; check the version "
            "(backfill keys show, or give --keys to have it checked)",
            file=sys.stderr,
        )
    if r["unknown_line_ids"]["count"]:
        print(f"  {r['unknown_line_ids']['count']:,} listed line_id(s) are not in the base")
    print(f"  {r['action']['summary']}")
    folder = os.path.dirname(r["affected_lines"].rstrip("/"))
    print(f"  -> {FileSystems.join(folder, 'incident.html')}, {r['affected_lines']}/")
    return 0


def main(argv=None) -> int:
    return run_main("backfill incident", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
