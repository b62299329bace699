"""The local streaming merge: a lander process pulls and lands, this loop merges landed files window by window.

    manifest = LocalStreamingMerge(args, keyset, policy, as_of, run_id, started, timer).run()

A restart first finishes what an earlier run landed, then pulls; a window
closes after ``--window-seconds`` or ``--max-window-messages``; SIGTERM or
SIGINT finishes the current window and stops; whatever landed while stopping
is merged before the manifest is written. One process per output folder (a
lock held for the life of the object). Windows are committed by
``pipelines.io.windows.write_window``; the per-window work is
``transforms.merge.stream.process_window`` (Beam-free); the lines, the ids
held and the message ids seen are in the line store ``OUT/state/`` (on disk,
``pipelines.io.line_store``), updated once each window is committed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import signal
import threading
import time

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.common import UserError
from pipelines.io.landing import LanderProcess, LandingZone, write_durably
from pipelines.io.line_store import open_store
from pipelines.io.publish_guards import MARKER, check_apart, make_private_dirs, owner, require_folder
from pipelines.io.windows import committed_windows, recover, replay, write_window
from pipelines.io.lineage import base_lineage
from pipelines.manifest import keys_block, policy_block
from transforms.core.deadletter import DeadLetterContext
from transforms.crypto.tokenize import Tokenizer
from transforms.crypto.vault import Vault
from transforms.merge.stream import add_counts, balanced, process_window

__all__ = ["LocalStreamingMerge"]

log = logging.getLogger("backfill.merge")


class _Stop:
    """SIGTERM / SIGINT: finish the current window, then stop."""

    def __init__(self):
        self.event = threading.Event()
        self.signal = None

    def __call__(self, signum, frame):
        self.signal = signal.Signals(signum).name
        self.event.set()


STEP = "merge-streaming"  # the owner its marker names (a batch merge's OUT says "merge")
# what a streaming merge keeps in OUT: a folder holding only these is one it made before it wrote its marker
_OWN = {".lock", MARKER, "landing", "state", "deltas", "runs", "manifest.json"}


def _check_out(out: str, bases: list[str]) -> None:
    """Refuse, in one line, an --out that is, holds or lies inside the base (its windows would become base
    files), or a folder another step made (a batch merge's OUT: its manifest would be overwritten)."""
    check_apart(out, {"--base": bases})
    require_folder(out)
    try:
        entries = set(os.listdir(out))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise UserError(f"--out {out} is a file, not a folder") from None
    if not entries or owner(out) == STEP:
        return
    if MARKER not in entries and entries <= _OWN:
        try:
            with open(os.path.join(out, "manifest.json"), "rb") as handle:
                mode = json.loads(handle.read().decode("utf-8")).get("mode")
        except FileNotFoundError:
            mode = "streaming"  # a first run killed before its manifest
        except (OSError, ValueError, AttributeError):
            mode = None
        if mode == "streaming":
            return
    made_by = owner(out)
    raise UserError(
        f"--out {out} is "
        + (f"the output of backfill {made_by}" if made_by else "not empty and not a streaming merge's folder")
        + ": give a new or empty folder, or the streaming merge's own; nothing was written"
    )


def _claim(out: str, run_id: str) -> None:
    """Mark OUT as a streaming merge's (once; under the lock)."""
    if owner(out) != STEP:
        record = {"created_by": "subscriber-backfill", "step": STEP, "run_id": run_id, "state": "streaming"}
        write_durably(os.path.join(out, MARKER), (json.dumps(record, indent=1) + "\n").encode("utf-8"))


def _write_json(path: str, data: dict) -> None:
    """A manifest written whole or not at all (temporary file, fsync, rename), 0600: a reader never sees half."""
    make_private_dirs(os.path.dirname(path))
    payload = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False, default=str) + "\n"
    write_durably(path, payload.encode("utf-8"))


def _lock(out: str) -> int:
    """One streaming merge per OUT: two would process the same landed files into two windows."""
    fd = os.open(os.path.join(out, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"another streaming merge is running on {out}: one process per output folder") from None
    return fd


class LocalStreamingMerge:
    """One run of the local streaming merge on one output folder."""

    def __init__(self, args, keyset, policy, as_of, run_id: str, started: str, timer):
        out = args.out.rstrip("/")
        if "://" in out:
            raise UserError(
                f"--out {args.out}: the local streaming merge writes to a local folder (the landing "
                "zone must be fsync'd); use gs:// with --runner DataflowRunner"
            )
        self.args, self.keyset, self.policy, self.as_of = args, keyset, policy, as_of
        self.run_id, self.started, self.timer, self.out = run_id, started, timer, out
        self.ctx = DeadLetterContext("merge", run_id, started)
        self.salt = secrets.token_hex(16)
        self.run_counts = {"messages_in": 0, "applied": 0, "superseded": 0, "duplicates": 0, "dead_letters": {}}
        self.windows, self.window_log, self.stopped_by = 0, [], None

    def run(self) -> dict:
        _check_out(self.out, self.args.base)
        make_private_dirs(self.out)
        lock = _lock(self.out)
        try:
            _claim(self.out, self.run_id)
            self._start()
            try:
                self._drain()  # a restart finishes what an earlier run landed, before it pulls anything new
                self._pull_and_merge()
                self._drain()  # landed while we stopped: merged now, never left for later
                self.timer.mark("run_seconds")
                return self._finish()
            finally:
                self.store.close()
        finally:
            os.close(lock)

    # -- start -------------------------------------------------------------------------------------------------
    def _start(self) -> None:
        args = self.args
        self.zone = LandingZone(os.path.join(self.out, "landing"), self.keyset)
        state = recover(self.out, self.zone)
        started = time.time()
        self.store, built = open_store(
            os.path.join(self.out, "state"),
            args.base,
            args.encoding,
            self.policy,
            self.as_of,
            self.ctx,
            self.salt,
            newest_seq=state["next_seq"] - 1,
        )
        replayed = replay(self.store, state["windows"])  # committed, then stopped before the store took them
        self.state_info = {"built": built, "seconds": round(time.time() - started, 3), "replayed_windows": replayed}
        self.base = self.store.summary
        self.lineage = base_lineage(self.base["files"])  # which base: compact compares it (pipelines/io/lineage.py)
        self.timer.mark("startup_seconds")
        self.tokenizer, self.vault = Tokenizer(self.keyset), Vault(self.keyset)
        self.lander = LanderProcess(
            args.subscription,
            self.zone.folder,
            args.keys,
            max_messages=args.max_messages,
            max_bytes=args.max_message_bytes,
        )
        self.recovered = len(self.zone.pending())
        self.seq = state["next_seq"]
        log.info(
            "merge --streaming %s: %s base (%s lines; line store %s in %.1f s), %d committed window(s), "
            "%d landed file(s) to finish, window %d s, subscription %s",
            self.run_id,
            self.base["kind"],
            f"{self.base['lines']:,}",
            "built" if built else "reused",
            self.state_info["seconds"],
            len(state["windows"]),
            self.recovered,
            args.window_seconds,
            args.subscription,
        )

    # -- windows -----------------------------------------------------------------------------------------------
    def _take(self) -> list[str]:
        """The oldest landed files up to --max-window-messages (at least one)."""
        picked, n = [], 0
        for name in self.zone.pending():
            count = self.zone.count(name)
            if picked and n + count > self.args.max_window_messages:
                break
            picked.append(name)
            n += count
        return picked

    def _drain(self) -> None:
        files = self._take()
        while files:
            self._window(files)
            files = self._take()

    def _window(self, files: list[str]) -> None:
        opened = time.time()
        tables = [self.zone.read(name) for name in files]
        # one chunk per column: a window is a couple of hundred landed files (one per pull)
        messages = pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]
        result = process_window(
            messages,
            self.store,
            self.store,
            tokenizer=self.tokenizer,
            vault=self.vault,
            policy=self.policy,
            as_of=self.as_of,
            ctx=self.ctx,
            salt=self.salt,
            source=self.args.subscription,
            max_bytes=self.args.max_message_bytes,
        )
        info = {
            "seq": self.seq,
            "run_id": self.run_id,
            "landed_files": files,
            "counts": result.counts,
            "balanced": balanced(result.counts),
            "counters": result.counters,
            "opened": opened,
            "publish_time_max": pc.max(messages.column("publish_time")).as_py(),
            "committed_at": time.time(),
        }
        write_window(os.path.join(self.out, "deltas"), f"w-{self.seq:06d}", result, None, info)
        # committed: the store follows (a crash before this line is replayed from the window at the next start)
        self.store.apply(result.delta, self.seq, taken=result.taken, seen=result.seen)
        self.zone.remove(files)
        add_counts(self.run_counts, result.counts)
        c = result.counts
        self.window_log.append(
            {
                "seq": self.seq,
                "messages": c["messages_in"],
                "applied": c["applied"],
                "seconds": round(time.time() - opened, 3),
            }
        )
        log.info(
            "window %d: %d message(s): %d applied, %d superseded, %d duplicate(s), %d dead letter(s)",
            self.seq,
            c["messages_in"],
            c["applied"],
            c["superseded"],
            c["duplicates"],
            sum(c["dead_letters"].values()),
        )
        self.seq += 1
        self.windows += 1

    # -- pulling -----------------------------------------------------------------------------------------------
    def _pull_and_merge(self) -> None:
        stop = _Stop()
        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        self.lander_started_at = time.time()
        try:
            self.lander.start()  # the subscription is checked there: no gRPC client in this process
            try:
                self.stopped_by = self._loop(stop)
            finally:
                self.lander.stop()
                self.lander.join(timeout=self.lander.pull_timeout + 30)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self.lander.error is not None:
            raise self.lander.error

    def _landed_messages(self) -> int:
        return sum(self.zone.count(name) for name in self.zone.pending())

    def _loop(self, stop: _Stop) -> str:
        """Merge a window each time one closes; the reason the loop stopped."""
        args = self.args
        deadline = time.monotonic() + args.window_seconds
        while True:
            while (
                not stop.event.is_set()
                and time.monotonic() < deadline
                and self.lander.error is None
                and self._landed_messages() < args.max_window_messages
                and not self._idle()  # idle long enough: what has landed is merged now, then the loop stops
            ):
                stop.event.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            if self.lander.error is not None:
                raise self.lander.error
            if stop.event.is_set():
                return f"signal {stop.signal}"
            files = self._take()
            if files:
                self._window(files)
            deadline = time.monotonic() + args.window_seconds  # the next window closes one length after this one
            if args.max_windows and self.windows >= args.max_windows:
                return f"--max-windows {args.max_windows}"
            if not files and not self.zone.pending() and self._idle():
                return f"--stop-after-idle {args.stop_after_idle:g}"

    def _idle(self) -> bool:
        """--stop-after-idle S: nothing has arrived for S seconds (whatever --window-seconds is)."""
        idle = self.args.stop_after_idle
        return bool(idle) and time.time() - self.lander.last_message_at >= idle

    # -- manifest ----------------------------------------------------------------------------------------------
    def _finish(self) -> dict:
        manifest = self._manifest()
        _write_json(os.path.join(self.out, "runs", f"{self.run_id}.json"), manifest)
        _write_json(os.path.join(self.out, "manifest.json"), manifest)
        if not manifest["counts"]["balanced"] or not manifest["all_windows"]["balanced"]:
            raise UserError(f"streaming merge counts do not balance; see {os.path.join(self.out, 'manifest.json')}")
        return manifest

    def _manifest(self) -> dict:
        totals = recover(self.out, self.zone)["totals"]
        totals.setdefault("dead_letters", {})
        for key in ("messages_in", "applied", "superseded", "duplicates"):
            totals.setdefault(key, 0)
        lander = self.lander
        return {
            "step": "merge",
            "mode": "streaming",
            "run_id": self.run_id,
            "started": self.started,
            "as_of": self.as_of.isoformat(),
            "stopped_by": self.stopped_by,
            "policy": policy_block(self.policy),
            "keys": keys_block(self.keyset),
            "inputs": {
                "subscription": self.args.subscription,
                "base": self.base["files"],
                "base_kind": self.base["kind"],
            },
            **({"lineage": self.lineage} if self.lineage else {}),
            "base": {"lines": self.base["lines"], "dead_letters": self.base["dead_letters"]},
            "state": {"folder": os.path.join(self.out, "state"), **self.state_info},
            "window_seconds": self.args.window_seconds,
            "landing": {
                "started_at": self.lander_started_at,
                "pulling_since": lander.pulling_since,
                "pulled_and_acknowledged": lander.pulled,
                "landed_files": lander.landed_files,
                "recovered_landed_files": self.recovered,
                "pending_after": len(self.zone.pending()),
            },
            "counts": {**self.run_counts, "balanced": balanced(self.run_counts)},
            "all_windows": {
                **totals,
                "windows": len(committed_windows(os.path.join(self.out, "deltas"))),
                "balanced": balanced(totals),
            },
            "windows": self.window_log,
            "outputs": {"deltas": os.path.join(self.out, "deltas"), "landing": self.zone.folder},
            "runner": "local lander + window loop (Beam-free core)",
            "timings": self.timer.as_dict(),
        }
