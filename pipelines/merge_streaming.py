"""backfill merge --streaming: registrations from Pub/Sub, merged window by window, once, without loss.

    backfill merge --streaming --subscription projects/P/subscriptions/S --base base.parquet \\
        --keys secure/keys.json --out out/stream [--window-seconds 10] [--as-of 2026-12-01] \\
        [--stop-after-idle 30] [--max-windows N]
    python -m pipelines.merge --streaming ... --runner DataflowRunner --project P --region R \\
        --temp_location gs://bucket/tmp --setup_file ./setup.py        # the same core as a Dataflow job

Locally (the default) a lander process pulls with unary pull, writes each
batch of messages to an encrypted landing file under ``OUT/landing/`` (fsync,
rename) and only then acknowledges it; every ``--window-seconds`` the
processor takes the landed files, runs the Beam-free window core
(``transforms.merge.stream.process_window``) and commits the window as one
folder ``OUT/deltas/w-NNNNNN/`` (delta, vault rows, dead letters, counters,
dedup keys; see ``pipelines/io/windows.py``) by one rename, then deletes
the landed files. A restart first finishes the landed files. SIGTERM or
SIGINT stops pulling, processes what has landed and exits 0. Every run
writes ``OUT/manifest.json`` and ``OUT/runs/RUN.json``: messages in = applied
+ superseded + duplicates + dead letters, for the run and for all windows.

With ``--runner DataflowRunner`` it builds a streaming job
(``transforms.merge.stream_composite.MergeStreamWindows``): ReadFromPubSub
(no ``id_label``: every copy of an event is judged by its body) beside a
bounded read of the base, the lines and the held event ids in Beam's keyed
state (no worker loads the base), fixed windows on publish time, and one
folder per (window, pane, shard) under ``OUT/deltas/`` (``window.json``
last, as the commit marker; the same name on a retry). ``backfill compact``
folds the deltas into a new base.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys

from pipelines.common import ArgumentParser, UserError, beam_options, is_local_runner, new_run, parse_as_of
from pipelines.common import run_main, runner_name, split_beam_flags
from pipelines.flags import looks_plain, shown_value
from pipelines.manifest import Timer

log = logging.getLogger("backfill.merge")


MAX_WINDOW_SECONDS = 3600  # a window commits what it landed; longer hides registrations for hours


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill merge", description=__doc__.splitlines()[0])
    p.add_argument("--streaming", action="store_true", help="read registration events from Pub/Sub")
    p.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    p.add_argument(
        "--base",
        required=True,
        action="append",
        help="base file, glob or folder: a raw base or a previous merge's OUT/base; repeatable",
    )
    p.add_argument("--keys", required=True, help="keyset file (mode 0600; backfill keys init)")
    p.add_argument("--out", required=True, help="output folder (local; gs:// on Dataflow)")
    p.add_argument(
        "--window-seconds",
        type=int,
        default=10,
        help=f"window length in seconds, 1 to {MAX_WINDOW_SECONDS} (default 10)",
    )
    p.add_argument("--as-of", type=parse_as_of, default=None, help="date the checks are made against (default: today)")
    p.add_argument("--policy", default=None, help="policy YAML replacing the default Decree 25 policy")
    p.add_argument("--encoding", default="utf-8", help="CSV encoding of the base: utf-8 (default) or gb18030")
    p.add_argument(
        "--stop-after-idle",
        type=float,
        default=None,
        help="exit once no message has arrived for this many seconds (and all landed are processed)",
    )
    p.add_argument("--max-windows", type=int, default=None, help="exit after this many windows with messages")
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=256 * 1024,
        help="larger message bodies are dead letters, never kept (default 262144)",
    )
    p.add_argument("--max-messages", type=int, default=1000, help="messages per pull (default 1000)")
    p.add_argument(
        "--max-window-messages",
        type=int,
        default=20_000,
        help="a window closes early once this many messages have landed (bounds its memory; default 20000)",
    )
    p.add_argument(
        "--shards",
        type=int,
        default=4,
        help="Dataflow: folders per window, each with one share of the lines (default 4)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


# Pub/Sub's names: a project id (or domain:project), a subscription of letters, digits and - . _ ~ + %
_SUBSCRIPTION = re.compile(r"projects/[A-Za-z0-9.:_-]+/subscriptions/[A-Za-z0-9._~+%-]+")


def _check(args) -> None:
    parts = args.subscription.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "subscriptions" or not parts[1] or not parts[3]:
        raise UserError(f"--subscription {shown_value(args.subscription)} is not projects/PROJECT/subscriptions/NAME")
    if not _SUBSCRIPTION.fullmatch(args.subscription) or not looks_plain(args.subscription):
        # quoted nowhere (errors, log lines, the manifest) unless it is a plain name: an identity value typed here
        raise UserError(
            f"--subscription {shown_value(args.subscription)}: a project or subscription name holds a character "
            "Pub/Sub does not allow (letters, digits and - . _ ~ + % only)"
        )
    if not 1 <= args.window_seconds <= MAX_WINDOW_SECONDS:  # a longer window hides registrations for hours
        raise UserError(f"--window-seconds must be between 1 and {MAX_WINDOW_SECONDS} (an hour)")
    if args.max_windows is not None and args.max_windows < 1:
        raise UserError("--max-windows must be at least 1")
    if args.stop_after_idle is not None and not 0 < args.stop_after_idle < math.inf:  # nan, inf: never idle
        raise UserError("--stop-after-idle must be a positive number of seconds")
    if not 1024 <= args.max_message_bytes <= 8 * 1024 * 1024:
        raise UserError("--max-message-bytes must be between 1024 and 8388608")
    if not 1 <= args.max_messages <= 10_000:
        raise UserError("--max-messages must be between 1 and 10000")
    if not 1 <= args.shards <= 1000:
        raise UserError("--shards must be between 1 and 1000")
    if args.max_window_messages < args.max_messages:
        raise UserError("--max-window-messages must be at least --max-messages")


def build_streaming_pipeline(
    p,
    *,
    subscription: str,
    base_kind: str,
    base_splits,
    encoding,
    keys_path,
    policy,
    as_of,
    ctx,
    out: str,
    window_seconds: int,
    shards: int,
    max_bytes: int,
    messages=None,
    batch_size: int = 65_536,
):
    """ReadFromPubSub + the base read in splits -> MergeStreamWindows -> window folders and the base's dead
    letters under OUT (exposed for tests and Dataflow). ``messages``: message records already in the pipeline
    (tests on the local runner), in place of the Pub/Sub read. Returns the written folders' paths."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    from pipelines.io.base_files import ReadSubscriberBase
    from pipelines.io.merged_beam import ReadMergedBase
    from pipelines.io.stream_writes import WriteDeadLettersFn, WriteWindowFn
    from transforms.merge.stream_composite import MergeStreamWindows

    if messages is None:  # no id_label: a copy of an event is judged by its body (transforms/merge/event_ids.py)
        messages = (
            p
            | "ReadFromPubSub" >> beam.io.ReadFromPubSub(subscription=subscription, with_attributes=True)
            | "ToRecord" >> beam.Map(_record, max_bytes)
        )
    inputs = {"messages": messages}
    if base_kind == "raw":
        base = p | "ReadBase" >> ReadSubscriberBase(base_splits, ctx, encoding=encoding, batch_size=batch_size)
        inputs.update(base=base.raw, base_dead_letter=base.dead_letter)
    else:
        inputs["base"] = p | "ReadMergedBase" >> ReadMergedBase(base_splits, batch_size)
    outputs = inputs | "MergeStreamWindows" >> MergeStreamWindows(
        keys_path,
        policy,
        as_of,
        ctx,
        window_seconds,
        base_kind=base_kind,
        shards=shards,
        max_bytes=max_bytes,
        source=subscription,
    )
    outputs.base_dead_letter | "WriteBaseDeadLetters" >> beam.ParDo(
        WriteDeadLettersFn(FileSystems.join(out, "base_dead_letter"))
    )
    return outputs.folders | "WriteWindows" >> beam.ParDo(WriteWindowFn(FileSystems.join(out, "deltas")))


def _record(message, max_bytes: int) -> dict:
    """A PubsubMessage -> a message record (a body over the cap is dropped here, its size kept)."""
    data = message.data or b""
    when = message.publish_time
    micros = None
    if when is not None:
        micros = int(when.micros) if hasattr(when, "micros") else int(when.timestamp() * 1_000_000)
    return {
        "message_id": message.message_id,
        "publish_time": micros,
        "attributes": dict(message.attributes or {}),
        "data": data if len(data) <= max_bytes else None,
        "size": len(data),
    }


def run_dataflow(args, options, keyset, policy, as_of, run_id, started, timer) -> dict:
    """Plan the base (its files' footers, as the batch merge does), submit the streaming job, and write
    OUT/manifest.json (what compact reads the stream's as-of date from)."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import StandardOptions

    from pipelines.io.lineage import base_lineage
    from pipelines.manifest import keys_block, policy_block, write_json
    from pipelines.merge_plan import _plan_base
    from transforms.core.deadletter import DeadLetterContext

    options.view_as(StandardOptions).streaming = True
    kind, splits, info = _plan_base(args, keyset)
    out = args.out.rstrip("/")
    p = beam.Pipeline(options=options)
    build_streaming_pipeline(
        p,
        subscription=args.subscription,
        base_kind=kind,
        base_splits=splits,
        encoding=args.encoding,
        keys_path=args.keys,
        policy=policy,
        as_of=as_of,
        ctx=DeadLetterContext("merge", run_id, started),
        out=out,
        window_seconds=args.window_seconds,
        shards=args.shards,
        max_bytes=args.max_message_bytes,
    )
    lineage = base_lineage(info.files)
    result = p.run()
    timer.mark("submit_seconds")
    manifest = {
        "step": "merge",
        "mode": "streaming",
        "run_id": run_id,
        "started": started,
        "as_of": as_of.isoformat(),
        "policy": policy_block(policy),
        "keys": keys_block(keyset),
        "inputs": {"subscription": args.subscription, "base": info.files, "base_kind": kind},
        **({"lineage": lineage} if lineage else {}),  # which base: compact compares it (pipelines/io/lineage.py)
        "window_seconds": args.window_seconds,
        "shards": args.shards,
        "outputs": {
            "deltas": FileSystems.join(out, "deltas"),
            "base_dead_letter": FileSystems.join(out, "base_dead_letter"),
        },
        "runner": runner_name(options),
        "job": str(result.job_id() if getattr(result, "has_job", False) else None),  # none for a template launch
        "timings": timer.as_dict(),
    }
    write_json(FileSystems.join(out, "manifest.json"), manifest)
    return manifest


def run(argv=None) -> dict:
    from transforms.crypto.keyset import Keyset
    from transforms.scan.policy import load_policy

    args, beam_args = split_beam_flags(parser(), argv)
    _check(args)
    timer = Timer()
    as_of = args.as_of or parse_as_of(None)
    policy = load_policy(args.policy)
    keyset = Keyset.load(args.keys)
    run_id, started = new_run("merge")
    options = beam_options(beam_args, step="merge-streaming", run_id=run_id)
    if is_local_runner(options):
        from pipelines.io.window_loop import LocalStreamingMerge

        return LocalStreamingMerge(args, keyset, policy, as_of, run_id, started, timer).run()
    return run_dataflow(args, options, keyset, policy, as_of, run_id, started, timer)


def format_summary(manifest: dict) -> str:
    if "counts" not in manifest:
        return f"merge --streaming {manifest['run_id']}: submitted to {manifest['runner']}"
    c, a = manifest["counts"], manifest["all_windows"]
    ok = lambda side: "balanced" if side["balanced"] else "NOT BALANCED"  # noqa: E731
    lines = [
        f"merge --streaming {manifest['run_id']}: {len(manifest['windows'])} window(s), stopped by "
        f"{manifest['stopped_by']}",
        f"  messages {c['messages_in']:,} in -> {c['applied']:,} applied + {c['superseded']:,} superseded + "
        f"{c['duplicates']:,} duplicates + {sum(c['dead_letters'].values()):,} dead letters ({ok(c)})",
        f"  all windows so far: {a['windows']:,} window(s), {a['messages_in']:,} messages, {a['applied']:,} applied "
        f"({ok(a)})",
    ]
    if c["dead_letters"]:
        lines.append("  dead letters: " + ", ".join(f"{k} {n:,}" for k, n in sorted(c["dead_letters"].items())))
    return "\n".join(lines)


def main(argv=None) -> int:
    def body(argv):
        print(format_summary(run(argv)), flush=True)
        return 0

    code = run_main("backfill merge", body, argv)
    if "pipelines.io.window_loop" in sys.modules:  # the local loop ran (its lander is a child process)
        # Everything is durable by now (windows fsync'd and renamed, manifest written). Leave without the
        # interpreter's teardown: a native thread pool torn down at exit after a spawned child process can
        # abort the process ("terminate called without an active exception", exit -6) about one run in ten.
        import multiprocessing.util

        multiprocessing.util._exit_function()  # the lander's semaphores are released as at a normal exit
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
