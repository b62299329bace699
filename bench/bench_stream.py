"""The streaming merge benchmark (``python -m bench.run stream``).

Starts the Pub/Sub emulator (``pipelines/pubsub_emulator.running_emulator``),
takes 100,000 registration events (``bench.bench_merge.make_events`` over the
200,000-line base ``bench-data/base_200k.parquet``: lines of the base,
COMPLETE identities, 2 % repeats and a few percent of faults; made once,
seed 7) and measures, each as a child process:

1. **Throughput, from a backlog.** The events are published to a topic with
   two subscriptions. The bare loop (``python -m bench.bench_stream --bare``:
   unary pull of 1,000 + acknowledge, nothing else) drains one; ``backfill
   merge --streaming`` drains the other. Sustained events/s = messages of
   the windows that closed full / (their last commit - the lander's first
   pull): the base's loading is start-up, not throughput, and the last,
   partial window waits out its length (both reported apart).
2. **Publish -> visible delta, live.** A fresh subscription, the streaming
   merge running and idle, then the 100,000 events published as fast as one
   publisher goes. For each message: the commit time of the window that made
   it visible (``window.json`` ``committed_at``: the rename of the window
   folder) minus its Pub/Sub publish time (``seen.parquet``, set by the
   emulator when it accepted the message). Median and 95th percentile.

3. **Memory flat in the base's size.** The same backlog drained by the
   streaming merge over ``bench-data/base_2m.parquet`` (2,000,000 lines; the
   events name lines it has too): its peak memory (the process tree: merge
   and lander) against the 200,000-line run of part 1, and the time it took
   to build its line store (``OUT/state/``, on disk).

Targets (issue 5 "Speed", issue 13): streaming events/s >= 0.5x the bare
loop's; p95 publish -> delta <= 2 windows + 5 s; peak memory at 2,000,000
lines <= 1.25x the peak at 200,000. ``BENCH_STREAM_EVENTS=N`` (or ``python
-m bench.bench_stream --events N``) runs a smaller trial; the default is
100,000.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq

from bench.core import AS_OF, ROOT, BenchError, Check, Context, Row, Section, checked, ensure_base, register, say
from bench.measure import Measurement, measure, python_env
from bench.stream_pubsub import bare_loop, publish as _publish, topic as _topic

__all__ = ["bench_stream", "EVENTS", "WINDOW_SECONDS"]

EVENTS = 100_000
WINDOW_SECONDS = 5
TARGET_VS_BARE = 0.5
FLAT = 1.25  # peak memory at 2,000,000 base lines / at 200,000


def _events(ctx: Context, base: str, n: int) -> str:
    from bench.bench_merge import make_events

    path = os.path.join(ctx.data_dir, f"stream_events_{n}.parquet")
    if not os.path.exists(path):
        say(f"making {n:,} events into {path} (once; kept for re-runs) ...")
        make_events(base, path + ".partial", n=n, seed=7)
        os.replace(path + ".partial", path)
    return path


def _messages(path: str) -> list[tuple[bytes, dict]]:
    table = pq.read_table(path)
    return [
        (
            json.dumps(row, ensure_ascii=False).encode("utf-8"),
            {"event_id": str(row["event_id"]), "line_id": str(row["line_id"])},
        )
        for row in table.to_pylist()
    ]


def _stream_cmd(ctx: Context, sub: str, base: str, keys: str, out: str, idle: int) -> list[str]:
    cmd = [ctx.backfill, "merge", "--streaming", "--subscription", sub, "--base", base, "--keys", keys]
    return cmd + [
        "--out",
        out,
        "--as-of",
        AS_OF,
        "--window-seconds",
        str(WINDOW_SECONDS),
        "--stop-after-idle",
        str(idle),
    ]


def _windows(out: str) -> list[tuple[dict, str]]:
    found = []
    for path in sorted(glob.glob(os.path.join(out, "deltas", "w-*", "window.json"))):
        with open(path, encoding="utf-8") as handle:
            found.append((json.load(handle), os.path.dirname(path)))
    return found


def _manifest(out: str) -> dict:
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        return json.load(handle)


@dataclasses.dataclass
class _Drain:
    """The streaming merge draining a backlog: its run, manifest, windows and rates."""

    run: Measurement
    manifest: dict
    windows: list[tuple[dict, str]]
    began: float  # the lander's first pull
    drain: float  # seconds from the first pull to the last window's commit
    full: list[tuple[dict, str]]  # the windows that closed full
    rate: float  # sustained messages/s over the full windows
    startup: float  # start-up seconds (the line store built or reused, the lander started)


@dataclasses.dataclass
class _Backlog:
    """Part 1: the bare loop and the streaming merge, each draining the same backlog."""

    publish_seconds: float  # publishing the backlog
    bare: dict  # the bare loop's {"messages", "seconds"}
    bare_run: Measurement
    stream: _Drain


@dataclasses.dataclass
class _Live:
    """Part 2: publish -> visible delta, with the streaming merge running."""

    manifest: dict
    out: str
    publish_seconds: float
    latencies: np.ndarray  # seconds, one per message
    p50: float
    p95: float


def _bare_drain(ctx: Context, sub: str, messages: list) -> tuple[dict, Measurement]:
    say("bare subscriber loop (unary pull + ack)")
    m = checked(
        measure(
            [ctx.python, "-m", "bench.bench_stream", "--bare", sub, str(len(messages))], env=python_env(), cwd=ROOT
        ),
        "bare loop",
    )
    bare = json.loads(m.output.strip().splitlines()[-1])
    if bare["messages"] < len(messages):
        raise BenchError(f"the bare loop got {bare['messages']:,} of {len(messages):,} messages")
    say(f"  {bare['seconds']:.1f} s ({bare['messages'] / bare['seconds']:,.0f} messages/s)")
    return bare, m


def _drain(ctx: Context, sub: str, base: str, keys: str, name: str) -> _Drain:
    """The streaming merge over ``base`` draining what ``sub`` holds, measured."""
    out = ctx.work(name)
    say(f"streaming merge draining the backlog over {os.path.basename(base)}")
    ms = checked(measure(_stream_cmd(ctx, sub, base, keys, out, 8), env=python_env(), cwd=ROOT), name)
    man, wins = _manifest(out), _windows(out)
    began = man["landing"].get("pulling_since") or man["landing"]["started_at"]
    drain = max(w["committed_at"] for w, _ in wins) - began
    # sustained: the windows that closed full (the last, partial one waits out its window length)
    full = sorted(wins, key=lambda x: x[0]["seq"])[:-1] or wins
    rate = sum(w["counts"]["messages_in"] for w, _ in full) / (max(w["committed_at"] for w, _ in full) - began)
    startup = man["timings"].get("startup_seconds", 0.0)
    say(
        f"  {man['counts']['messages_in']:,} messages in {drain:.1f} s after a {startup:.1f} s start-up (line "
        f"store built in {man['state']['seconds']:.1f} s; {rate:,.0f} messages/s sustained), peak {ms.peak_mb:,.0f} MB"
    )
    return _Drain(ms, man, wins, began, drain, full, rate, startup)


def _backlog(ctx: Context, messages: list, base: str, keys: str) -> _Backlog:
    """Publish the events to two subscriptions; the bare loop drains one, the streaming merge the other."""
    topic, (sub_bare, sub_stream) = _topic(2)
    say(f"publishing {len(messages):,} events (backlog for both subscriptions) ...")
    publish_seconds = _publish(topic, messages)
    say(f"  {publish_seconds:.1f} s ({len(messages) / publish_seconds:,.0f} messages/s)")
    bare, m = _bare_drain(ctx, sub_bare, messages)
    return _Backlog(publish_seconds, bare, m, _drain(ctx, sub_stream, base, keys, "stream_backlog"))


def _scaled(ctx: Context, messages: list, big: str, keys: str) -> _Drain:
    """Part 3: the same backlog, drained over the 2,000,000-line base."""
    topic, (sub,) = _topic(1)
    say(f"publishing {len(messages):,} events again (backlog for the {os.path.basename(big)} run) ...")
    _publish(topic, messages)
    return _drain(ctx, sub, big, keys, "stream_2m")


def _publish_to_running_merge(ctx: Context, cmd: list[str], topic: str, messages: list) -> float:
    """Start the streaming merge, wait until it pulls, publish every message, wait for it to stop."""
    with open(os.path.join(ctx.out_dir, "stream-live.log"), "wb") as log:
        proc = subprocess.Popen(cmd, env=python_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log_path = os.path.join(ctx.out_dir, "stream-live.log")
        ready = time.time() + 300
        while time.time() < ready and b"committed window(s)" not in open(log_path, "rb").read():
            if proc.poll() is not None:
                raise BenchError("the live streaming merge exited early; see bench-out/stream-live.log")
            time.sleep(0.2)  # the start-up line is logged once the base is loaded, as the lander starts
        say(f"live: publishing {len(messages):,} events to a running streaming merge ...")
        live_publish = _publish(topic, messages)
        say(f"  published in {live_publish:.1f} s ({len(messages) / live_publish:,.0f} messages/s)")
        if proc.wait(timeout=1800) != 0:
            raise BenchError("the live streaming merge failed; see bench-out/stream-live.log")
    return live_publish


def _latencies(out: str) -> np.ndarray:
    """Per message: its window's commit time minus its Pub/Sub publish time, in seconds."""
    latencies = []
    for info, folder in _windows(out):
        times = pq.read_table(os.path.join(folder, "seen.parquet")).column("publish_time")
        micros = times.cast("int64").to_numpy(zero_copy_only=False)
        latencies.append(info["committed_at"] - micros / 1e6)
    return np.concatenate(latencies)


def _live(ctx: Context, messages: list, base: str, keys: str) -> _Live:
    """A fresh subscription, the streaming merge running, the events published while it runs."""
    topic2, (sub_live,) = _topic(1)
    out2 = ctx.work("stream_live")
    cmd = _stream_cmd(ctx, sub_live, base, keys, out2, 8)
    live_publish = _publish_to_running_merge(ctx, cmd, topic2, messages)
    man2 = _manifest(out2)
    lat = _latencies(out2)
    p50, p95 = float(np.percentile(lat, 50)), float(np.percentile(lat, 95))
    say(f"  publish -> visible delta: median {p50:.1f} s, p95 {p95:.1f} s over {len(lat):,} messages")
    return _Live(man2, out2, live_publish, lat, p50, p95)


def _rows(backlog: _Backlog, live: _Live, big: _Drain, messages: list) -> list[Row]:
    bare, m, st, man2 = backlog.bare, backlog.bare_run, backlog.stream, live.manifest

    def drained(what: str, d: _Drain, lines: str) -> Row:
        note = f"backlog over {lines} lines, all windows; after {d.startup:.1f} s start-up"
        return Row(what, d.manifest["counts"]["messages_in"], d.drain, d.run.peak_mb, note, d.run.cpu_seconds)

    live_seconds = max(w["committed_at"] for w, _ in _windows(live.out)) - (
        man2["landing"].get("pulling_since") or man2["landing"]["started_at"]
    )
    return [
        Row("bare subscriber loop: unary pull 1,000 + ack", bare["messages"], bare["seconds"], m.peak_mb, "backlog"),
        drained("merge --streaming: land + window + tokenize + seal + commit", st, "200,000"),
        Row(
            "merge --streaming, sustained (the windows that closed full)",
            sum(w["counts"]["messages_in"] for w, _ in st.full),
            max(w["committed_at"] for w, _ in st.full) - st.began,
            None,
            "backlog",
        ),
        Row(
            "merge --streaming, live (publish while it runs)",
            man2["counts"]["messages_in"],
            live_seconds,
            None,
            f"publisher {len(messages) / live.publish_seconds:,.0f} msg/s",
        ),
        drained("merge --streaming over a 2,000,000-line base", big, "2,000,000"),
    ]


def _checks(backlog: _Backlog, live: _Live, big: _Drain) -> list[Check]:
    target_latency = 2 * WINDOW_SECONDS + 5
    bare_rate = backlog.bare["messages"] / backlog.bare["seconds"]
    stream_rate, p50, p95 = backlog.stream.rate, live.p50, live.p95
    small_mb, big_mb = backlog.stream.run.peak_mb, big.run.peak_mb
    balanced = all(x["counts"]["balanced"] for x in (backlog.stream.manifest, live.manifest, big.manifest))
    return [
        Check(
            "streaming events/s (sustained) vs bare loop (backlog)",
            f"{stream_rate:,.0f} vs {bare_rate:,.0f} ({stream_rate / bare_rate:.2f}x)",
            f">= {TARGET_VS_BARE}x",
            stream_rate / bare_rate >= TARGET_VS_BARE,
        ),
        Check(
            f"publish -> visible delta, p95 ({WINDOW_SECONDS} s windows)",
            f"p95 {p95:.1f} s (median {p50:.1f} s)",
            f"<= {target_latency} s",
            p95 <= target_latency,
        ),
        Check(
            "peak memory, 2,000,000 vs 200,000 base lines (same messages)",
            f"{big_mb:,.0f} MB vs {small_mb:,.0f} MB ({big_mb / small_mb:.2f}x)",
            f"<= {FLAT}x",
            big_mb <= FLAT * small_mb,
        ),
        Check("counts balance (every run)", "yes" if balanced else "NO", "yes", balanced),
    ]


def _notes(n: int, backlog: _Backlog, live: _Live, big: _Drain, messages: list) -> list[str]:
    man = backlog.stream.manifest
    built = {d: x.manifest["state"]["seconds"] for d, x in (("200,000", backlog.stream), ("2,000,000", big))}
    return [
        f"events: {n:,} from bench.bench_merge.make_events over base_200k (2 % repeats, ~3 % faults); "
        f"backlog run: {json.dumps({k: man['counts'][k] for k in ('applied', 'superseded', 'duplicates')})}, "
        f"dead letters {sum(man['counts']['dead_letters'].values()):,}.",
        f"publisher (one client, batches of 1,000): {len(messages) / backlog.publish_seconds:,.0f} messages/s into "
        "the emulator; in the live run the emulator, the publisher and the merge share the machine's CPUs.",
        "rows/s = messages/s; seconds = first message pulled to last acknowledged (bare) or the lander's first "
        "pull to the last window's commit (streaming; 'sustained' stops at the last window that closed full, "
        "since the last, partial window waits out its length); peak MB: the merge and its lander together.",
        "line store (OUT/state, on disk) built from the base at start-up: "
        + ", ".join(f"{s:.1f} s at {d} lines" for d, s in built.items())
        + f"; windows: {len(backlog.stream.windows)} (backlog), {len(_windows(live.out))} (live), "
        f"{len(big.windows)} (2,000,000 lines); window length {WINDOW_SECONDS} s.",
    ]


def run_stream_bench(ctx: Context, n: int) -> Section:
    from dev.pubsub_emulator import running_emulator

    base = ensure_base(ctx, "base_200k", 200_000)
    big = ensure_base(ctx, "base_2m", 2_000_000)  # its line ids include base_200k's: the same events fit it
    events = _events(ctx, base, n)
    messages = _messages(events)
    keys = os.path.join(ctx.work("stream_keys"), "keys.json")
    checked(measure([ctx.backfill, "keys", "init", "--keys", keys], env=python_env()), "keys init")
    with running_emulator() as emulator:
        say(f"emulator on {emulator.host}")
        backlog = _backlog(ctx, messages, base, keys)  # 1. throughput from a backlog
        live = _live(ctx, messages, base, keys)  # 2. publish -> visible delta, live
        scaled = _scaled(ctx, messages, big, keys)  # 3. memory flat in the base's size
    rows, checks = _rows(backlog, live, scaled, messages), _checks(backlog, live, scaled)
    notes = _notes(n, backlog, live, scaled, messages)
    details = {
        "backlog": backlog.stream.manifest,
        "base_2m": scaled.manifest,
        "live": live.manifest,
        "bare": backlog.bare,
        "latency": {"median": live.p50, "p95": live.p95, "n": len(live.latencies)},
    }
    title = "Streaming merge: throughput, publish -> delta latency, memory against the base's size"
    return Section("stream", title, rows, checks, notes, details)


@register("stream")
def bench_stream(ctx: Context) -> Section:
    return run_stream_bench(ctx, int(os.environ.get("BENCH_STREAM_EVENTS", EVENTS)))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--bare":
        print(json.dumps(bare_loop(sys.argv[2], int(sys.argv[3]))))
        raise SystemExit(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--events":
        os.environ["BENCH_STREAM_EVENTS"] = sys.argv[2]
        from bench.run import main

        raise SystemExit(main(["stream"]))
    raise SystemExit("run it through the registry: python -m bench.run stream  (or --events N for a trial)")
