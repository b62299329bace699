"""backfill merge: bring completed registrations back into the base, tokenized, with a vault.

    backfill merge --base base.parquet --registrations 'events/*.jsonl' --keys secure/keys.json \\
        --out out/merge [--as-of 2026-12-01] [--policy my_policy.yaml] [--encoding gb18030] [Beam flags...]
    backfill merge --base out/merge-1130/base --vault out/merge-1130/vault \\
        --registrations events/2026-12-01/ --keys secure/keys.json --out out/merge-1201     # the daily merge
    python -m pipelines.merge ... --runner DataflowRunner --project P --region R \\
        --temp_location gs://bucket/tmp --setup_file ./setup.py

``--base`` is a raw base (Avro, Parquet, CSV with plaintext identity columns)
or a previous merge's ``OUT/base/`` (told apart by its columns); with a
previous merge's base, pass its vault too (``--vault``): the lines without a
new registration keep their row and their vault records, and re-registered
lines keep their data key. Writes ``OUT/base/`` (Parquet, schemas/merged_line.avsc:
tokens and masks, never plaintext), ``OUT/vault/`` (what ``backfill reveal``
opens), ``OUT/dead_letter/`` (JSON Lines), ``OUT/summary.json`` and
``OUT/manifest.json``, whose counts prove that nothing was lost:
base rows in = lines out + base dead letters, and events in = applied +
superseded + duplicates + dead letters.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.common import add_batch_flags, ArgumentParser, UserError, beam_options, is_local_runner, new_run, parse_as_of
from pipelines.common import remove_tree, run_main, runner_name, write_dead_letters
from pipelines.io.events import ReadRegistrationEvents, plan_event_splits
from pipelines.manifest import Timer, read_json, write_json
from pipelines.io.merged_base import (ReadMergedBase, ReadVaultTable, base_kind, column_values, inside,
                                plan_merged_splits, vault_shards, write_merged_base, write_vault_table)
from pipelines.io.base_files import ReadSubscriberBase, plan_splits
from transforms.core.deadletter import DeadLetterContext
from transforms.merge.composite import MergeCompletedRegistrations
from transforms.scan.policy import load_policy

log = logging.getLogger("backfill.merge")
ROWS_PER_BUCKET = 100_000  # a bucket (base lines + events + vault rows) is one worker's working set


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill merge", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, action="append", help="base file, glob or folder: a raw base "
                   "(Avro, Parquet, CSV) or a previous merge's OUT/base; repeatable")
    p.add_argument("--registrations", required=True, action="append",
                   help="registration events: file, glob or folder (Avro, Parquet, CSV, JSON Lines); repeatable")
    p.add_argument("--keys", required=True, help="keyset file (mode 0600; backfill keys init)")
    p.add_argument("--out", required=True, help="output folder (local or gs://)")
    p.add_argument("--vault", default=None, help="the previous merge's vault (with a merged --base)")
    add_batch_flags(p)
    return p


def build_pipeline(p: beam.Pipeline, *, base_splits, kind, event_splits, vault, policy, as_of, ctx, keys_path,
                   n_buckets, spill_dir, encoding, batch_size):
    """Wire the merge; returns the MergeOutputs (exposed for tests)."""
    inputs = {}
    if kind == "raw":
        base = p | "ReadBase" >> ReadSubscriberBase(base_splits, ctx, encoding=encoding, batch_size=batch_size)
        inputs.update(base=base.raw, base_dead_letter=base.dead_letter)
    else:
        inputs["base"] = p | "ReadMergedBase" >> ReadMergedBase(base_splits, batch_size)
    events = p | "ReadEvents" >> ReadRegistrationEvents(event_splits, ctx, encoding=encoding, batch_size=batch_size)
    inputs.update(events=events.raw, events_dead_letter=events.dead_letter)
    if vault:
        inputs["vault_keys"] = p | "ReadVaultKeys" >> ReadVaultTable(vault["keys"], "keys")
        inputs["vault_values"] = p | "ReadVaultValues" >> ReadVaultTable(vault["values"], "values")
    return inputs | "MergeCompletedRegistrations" >> MergeCompletedRegistrations(
        policy, as_of, ctx, keys_path, n_buckets, base_kind=kind, spill_dir=spill_dir)


def summarise(counts: dict, header: dict) -> dict:
    """The run's summary from the pipeline's counts: both balances checked."""
    base, events = counts.get("base", {}), counts.get("events", {})
    base_dead, event_dead = base.get("dead_letters", {}), events.get("dead_letters", {})
    base_in = base.get("rows_in", 0) + base_dead.get("ROW_MALFORMED", 0)
    events_in = events.get("rows_in", 0) + event_dead.get("ROW_MALFORMED", 0)
    out = {k: events.get(k, 0) for k in ("applied", "superseded", "duplicates")}
    return {
        **header,
        "base": {"rows_in": base_in, "lines_out": base.get("rows_out", 0), "dead_letters": sum(base_dead.values()),
                 "dead_letter_reasons": dict(sorted(base_dead.items())),
                 "balanced": base_in == base.get("rows_out", 0) + sum(base_dead.values())},
        "events": {"rows_in": events_in, **out, "dead_letters": sum(event_dead.values()),
                   "dead_letter_reasons": dict(sorted(event_dead.items())),
                   "balanced": events_in == sum(out.values()) + sum(event_dead.values())},
        "lines": counts.get("lines", {}),
        "vault": counts.get("vault", {}),
    }


def _located(paths: list[str]) -> list[str]:
    return [p if "://" in p else os.path.abspath(p) for p in paths]


def _check_paths(args, out: str) -> None:
    """Refuse an --out that would overwrite an input (the daily merge reads yesterday's OUT)."""
    for name in ("base", "vault", "dead_letter"):
        target = FileSystems.join(out, name)
        for source in [*args.base, *args.registrations, *([args.vault] if args.vault else [])]:
            if inside(source, target):
                raise UserError(f"--out {args.out} would overwrite the input {source}: write to another folder")


def run(argv=None) -> dict:
    """Run a merge; returns its manifest."""
    from transforms.crypto.keyset import Keyset

    args, beam_args = parser().parse_known_args(argv)
    timer = Timer()
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    as_of = args.as_of or parse_as_of(None)
    policy = load_policy(args.policy)
    keyset = Keyset.load(args.keys)  # permissions and format checked before anything runs
    out = args.out.rstrip("/")
    _check_paths(args, out)
    kind = base_kind(args.base)
    if kind == "raw":
        base_splits, base_info = plan_splits(args.base, encoding=args.encoding)
    else:
        base_splits, base_info = plan_merged_splits(args.base)
        versions = column_values(base_info.files, "join_key_version") - {None}
        if versions - {keyset.primary_join_version}:
            raise UserError(f"the base's tokens are under join key {', '.join(sorted(versions))} but the primary "
                            f"join key is {keyset.primary_join_version}: run backfill keys retokenize first")
    event_splits, event_info = plan_event_splits(args.registrations, encoding=args.encoding)
    vault = vault_shards(args.vault) if args.vault else None
    if vault:
        foreign = column_values(vault["keys"], "keyset_id") - {keyset.keyset_id}
        if foreign:
            raise UserError(f"--vault {args.vault} was made under keyset {sorted(foreign)[0]}, "
                            f"not {keyset.keyset_id} (--keys {args.keys})")
    elif kind == "merged":
        log.warning("merge: a merged base without --vault: lines without a new registration keep their tokens "
                    "but OUT/vault holds only this run's registrations")
    options = beam_options(beam_args)
    run_id, started = new_run("merge")
    ctx = DeadLetterContext("merge", run_id, started)
    rows = max(base_info.estimated_rows, event_info.estimated_rows)
    n_buckets = args.shuffle_buckets or max(1, math.ceil(rows / ROWS_PER_BUCKET))
    if args.spill == "on" and not is_local_runner(options):
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    spill = args.spill != "off" and is_local_runner(options)
    # The spill holds plaintext (raw rows, events): a private local folder (0700), never under OUT.
    spill_dir = tempfile.mkdtemp(prefix=f"backfill-{run_id}-") if spill else None
    for folder in ("base", "vault", "dead_letter"):
        remove_tree(FileSystems.join(out, folder))
    header = {"step": "merge", "run_id": run_id, "as_of": as_of.isoformat(), "policy_version": policy.version,
              "base_kind": kind, "keys": {"keyset_id": keyset.keyset_id, "join": keyset.primary_join_version,
                                          "vault": keyset.primary_vault_version}}
    log.info("merge %s: %s base (%d file(s), ~%s rows), %d event file(s) (~%s events), %d bucket(s), runner %s, "
             "join key %s, vault key %s, policy %s, as of %s", run_id, kind, len(base_info.files),
             f"{base_info.estimated_rows:,}", len(event_info.files), f"{event_info.estimated_rows:,}", n_buckets,
             runner_name(options), keyset.primary_join_version, keyset.primary_vault_version, policy.version, as_of)
    summary_path = FileSystems.join(out, "summary.json")
    try:
        with beam.Pipeline(options=options) as p:
            outputs = build_pipeline(p, base_splits=base_splits, kind=kind, event_splits=event_splits, vault=vault,
                                     policy=policy, as_of=as_of, ctx=ctx, keys_path=args.keys, n_buckets=n_buckets,
                                     spill_dir=spill_dir, encoding=args.encoding, batch_size=args.batch_size)
            write_merged_base(outputs.base, FileSystems.join(out, "base"))
            vault_dir = FileSystems.join(out, "vault")
            write_vault_table(outputs.vault_keys, vault_dir, "keys", "WriteVaultKeys")
            write_vault_table(outputs.vault_values, vault_dir, "values", "WriteVaultValues")
            write_dead_letters(outputs.dead_letter, FileSystems.join(out, "dead_letter", "part"))
            outputs.counts | "WriteSummary" >> beam.Map(lambda c: write_json(summary_path, summarise(c, header)))
    finally:
        if spill_dir:
            shutil.rmtree(spill_dir, ignore_errors=True)
    timer.mark("pipeline_seconds")
    summary = read_json(summary_path)
    manifest = {
        "step": "merge", "run_id": run_id, "started": started, "as_of": as_of.isoformat(),
        "policy": {"version": policy.version, "sha256": policy.digest, "source": policy.source},
        "keys": header["keys"],
        # absolute local paths: the report reads the events back from here, from any working directory
        "inputs": {"base": _located(base_info.files), "base_kind": kind, "registrations": _located(event_info.files),
                   "vault": args.vault, "encoding": args.encoding},
        "outputs": {name: FileSystems.join(out, name) for name in ("base", "vault", "dead_letter")},
        "counts": {k: summary[k] for k in ("base", "events", "lines", "vault")},
        "runner": runner_name(options),
        "shuffle": {"buckets": n_buckets, "spill": bool(spill_dir)},
        "timings": timer.as_dict(),
    }
    write_json(FileSystems.join(out, "manifest.json"), manifest)
    for side in ("base", "events"):
        if not summary[side]["balanced"]:
            raise UserError(f"merge counts do not balance for the {side}; see {summary_path}")
    return manifest


def format_summary(manifest: dict) -> str:
    b, e, v = manifest["counts"]["base"], manifest["counts"]["events"], manifest["counts"]["vault"]
    ok = lambda side: "balanced" if side["balanced"] else "NOT BALANCED"
    lines = [
        f"merge {manifest['run_id']}: base {b['rows_in']:,} rows in -> {b['lines_out']:,} lines + "
        f"{b['dead_letters']:,} dead letters ({ok(b)})",
        f"  events {e['rows_in']:,} in -> {e['applied']:,} applied + {e['superseded']:,} superseded + "
        f"{e['duplicates']:,} duplicates + {e['dead_letters']:,} dead letters ({ok(e)})",
        f"  vault: {v.get('lines_sealed', 0):,} lines sealed ({v.get('values_sealed', 0):,} values), "
        f"{v.get('keys_copied', 0):,} carried; join key {manifest['keys']['join']}, vault key {manifest['keys']['vault']}",
    ]
    if e["dead_letter_reasons"]:
        lines.append("  event dead letters: " + ", ".join(f"{k} {n:,}" for k, n in e["dead_letter_reasons"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--streaming" in argv:  # registrations from Pub/Sub: pipelines/merge_streaming.py
        from pipelines import merge_streaming

        return merge_streaming.main(argv)

    def body(argv):
        print(format_summary(run(argv)))
        return 0

    return run_main("backfill merge", body, argv)


if __name__ == "__main__":
    sys.exit(main())
