"""The streaming merge's landing zone: Pub/Sub messages made durable, encrypted, before they are acknowledged.

    zone = LandingZone("out/stream/landing", keyset)
    name = zone.land(messages_table)          # fsync'd, renamed into place: now safe to acknowledge
    table = zone.read(name)                   # decrypted back (MESSAGE_SCHEMA)

    lander = LanderProcess(subscription, "out/stream/landing", "keys.json")   # pull -> land -> acknowledge
    lander.start(); ...; lander.stop(); lander.join()

Why: Beam's local streaming runner acknowledges a message when it pulls it (a crash loses what was pulled and
not written). The lander pulls synchronously (unary pull: no messages routed to a dead subscriber's stream),
lands the batch durably (temporary name, fsync, rename, folder fsync) and only then acknowledges it; a copy
Pub/Sub sends again after a crash is a redelivery (its message id and publish time): a counted duplicate.

A landed file holds identity values: it is sealed with the project's envelope (``transforms/crypto/envelope.py``;
AES-256-GCM, a fresh data key wrapped by the keyset's primary vault key, associated data binding the purpose,
keyset, file name and key version: a file renamed or moved fails to open). Bodies over the size cap are never
kept (only their size).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pyarrow as pa
from pipelines.common import UserError
from transforms.crypto.envelope import Envelope, EnvelopeError
from transforms.merge.messages import MAX_MESSAGE_BYTES, MESSAGE_SCHEMA

__all__ = ["LandingZone", "LandingError", "LanderProcess", "land_loop", "check_subscription", "fsync_dir"]

log = logging.getLogger("backfill.merge")
SUFFIX = ".land"


class LandingError(UserError):
    """A landed file that cannot be opened; one line, no values."""


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str, payload: bytes) -> None:
    """Write ``payload`` to ``path`` whole or not at all: temp file, fsync, rename, fsync the folder."""
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".tmp-{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(folder)


class LandingZone:
    """A local folder of encrypted landed files, named so that they sort in landing order."""

    def __init__(self, folder: str, keyset):
        self.folder = folder
        os.makedirs(folder, mode=0o700, exist_ok=True)
        self._envelope = Envelope.under_keyset(keyset, "landing")
        self._seq = 0
        self._lock = threading.Lock()

    def pending(self) -> list[str]:
        """Landed files, oldest first."""
        return sorted(name for name in os.listdir(self.folder) if name.endswith(SUFFIX))

    def clean(self) -> None:
        """Remove the temporary files of writes that crashed (at start-up, before the lander runs)."""
        for name in os.listdir(self.folder):
            if name.startswith(".tmp-"):
                try:
                    os.remove(os.path.join(self.folder, name))
                except FileNotFoundError:
                    pass

    @staticmethod
    def count(name: str) -> int:
        """Messages in a landed file (its name says so)."""
        return int(name[: -len(SUFFIX)].rsplit("-n", 1)[1])

    def land(self, table: pa.Table) -> str:
        """Seal and write one batch of messages; returns the file name once it is durable."""
        with self._lock:  # several landers share a zone
            self._seq += 1
            seq = self._seq
        name = f"{time.time_ns():020d}-{os.getpid()}-{seq:06d}-n{table.num_rows}{SUFFIX}"
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, MESSAGE_SCHEMA) as writer:
            writer.write_table(table)
        payload = self._envelope.seal(sink.getvalue().to_pybytes(), name)
        write_durably(os.path.join(self.folder, name), payload)
        return name

    def read(self, name: str) -> pa.Table:
        with open(os.path.join(self.folder, name), "rb") as handle:
            blob = handle.read()
        try:
            plain = self._envelope.open(blob, name)
        except EnvelopeError as exc:
            raise LandingError(f"landed file {name} {exc}") from None
        return pa.ipc.open_stream(plain).read_all()

    def remove(self, names: list[str]) -> None:
        for name in names:
            try:
                os.remove(os.path.join(self.folder, name))
            except FileNotFoundError:
                pass
        if names:
            fsync_dir(self.folder)


def check_subscription(subscription: str) -> None:
    """Fail fast on a subscription that does not exist (a one-line error)."""
    from google.api_core import exceptions
    from google.api_core.retry import Retry
    from google.cloud import pubsub_v1

    client = None
    try:
        client = pubsub_v1.SubscriberClient()
        # bounded: the client's own retry would go on for minutes against an emulator that is not running
        retry = Retry(initial=0.25, maximum=2.0, timeout=30)
        client.get_subscription(request={"subscription": subscription}, timeout=30, retry=retry)
    except exceptions.NotFound:
        raise LandingError(f"subscription {subscription} does not exist") from None
    except Exception as exc:  # no credentials, no emulator, permission, network: one line with what to do
        from pipelines.io.pubsub import reach_problem

        raise LandingError(f"subscription {subscription}: cannot reach Pub/Sub ({reach_problem(exc)})") from None
    finally:
        if client is not None:
            client.close()


def land_loop(
    subscription: str,
    zone: LandingZone,
    *,
    max_messages: int,
    max_bytes: int,
    should_stop,
    on_landed,
    pull_timeout: float = 5.0,
    gather_seconds: float = 0.0,
) -> None:
    """Pull -> land -> acknowledge until ``should_stop()``. Nothing is acknowledged before the file holding
    it is durable.

    By default each pull's answer is one landed file, acknowledged before the next pull: gathering pulls
    (``gather_seconds`` > 0) saves fsyncs, but the emulator answers a pull 5-10x slower while messages are
    outstanding, so one file per pull carries 1.6x the messages/s (docs/streaming.md, bench/bench_stream.py).
    """
    from google.api_core import exceptions
    from google.api_core.retry import Retry, if_exception_type

    client = _subscriber()
    quiet = (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable, exceptions.RetryError)
    # the library's own retry goes on 60 s with Pub/Sub unreachable, deaf to a stop: bounded, then this loop retries
    transient = if_exception_type(*quiet[:2], exceptions.Aborted, exceptions.InternalServerError, exceptions.Unknown)
    retry = Retry(initial=0.1, maximum=1.0, multiplier=1.3, predicate=transient, timeout=pull_timeout)
    try:
        while not should_stop():
            batch: list = []
            until = None
            while len(batch) < max_messages and not should_stop():
                request = {"subscription": subscription, "max_messages": max_messages - len(batch)}
                if batch:  # a follow-up pull answers at once: a client-side timeout would strand messages the
                    request["return_immediately"] = True  # server already handed out (until their ack deadline)
                try:
                    response = client.pull(request=request, timeout=pull_timeout, retry=retry)
                except quiet:
                    if batch:
                        break
                    continue
                received = response._pb.received_messages  # the raw protobufs: proto-plus wrappers cost 3x
                if not received:
                    break
                batch.extend(received)
                until = until or time.monotonic() + gather_seconds
                if time.monotonic() >= until:
                    break
            if not batch:
                continue
            table = _table(batch, max_bytes)
            zone.land(table)  # durable first ...
            _acknowledge(client, subscription, [r.ack_id for r in batch], retry)  # ... then acknowledged
            on_landed(len(batch))
    finally:
        client.close()


def _acknowledge(client, subscription: str, ack_ids: list, retry) -> None:
    """Acknowledge landed (durable) messages; Pub/Sub gone meanwhile is no reason to stop (a resend: a duplicate)."""
    from google.api_core import exceptions

    try:
        for i in range(0, len(ack_ids), 2000):
            client.acknowledge(
                request={"subscription": subscription, "ack_ids": ack_ids[i : i + 2000]}, retry=retry, timeout=30
            )
    except (exceptions.GoogleAPICallError, exceptions.RetryError) as exc:
        log.warning("landed messages not acknowledged (%s): Pub/Sub will send them again", type(exc).__name__)


def _subscriber():
    """A client that takes any message Pub/Sub allows (10 MB): on the emulator the library's bare channel kept
    gRPC's 4 MiB limit, and a larger message failed every pull (ResourceExhausted), at each restart again."""
    from google.cloud import pubsub_v1

    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not host:
        return pubsub_v1.SubscriberClient()  # Pub/Sub itself: the library's channel has no such limit
    import grpc
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    channel = grpc.insecure_channel(host, options=[("grpc.max_receive_message_length", -1)])
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


def _table(received, max_bytes: int) -> pa.Table:
    """Raw ReceivedMessage protobufs -> a MESSAGE_SCHEMA table (column by column; bodies over the cap dropped)."""
    messages = [r.message for r in received]
    stamps = [m.publish_time for m in messages]
    attrs = [m.attributes for m in messages]
    data = [m.data for m in messages]
    sizes = [len(d) for d in data]
    return pa.table(
        [
            pa.array([m.message_id for m in messages], pa.string()),
            pa.array([t.seconds * 1_000_000 + t.nanos // 1_000 for t in stamps], pa.int64()).cast(
                MESSAGE_SCHEMA.field("publish_time").type
            ),
            pa.array([a.get("event_id") for a in attrs], pa.string()),
            pa.array([a.get("line_id") for a in attrs], pa.string()),
            pa.array(sizes, pa.int64()),
            pa.array([d if n <= max_bytes else None for d, n in zip(data, sizes)], pa.binary()),
        ],
        schema=MESSAGE_SCHEMA,
    )


def _die_with_parent() -> None:
    """Linux: the lander is killed when the merge process dies (a SIGKILLed merge leaves no orphan pulling)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _lander_main(subscription, folder, keys_path, max_messages, max_bytes, halt, stats, errors, parent) -> None:
    """The lander process. It ends with os._exit: gRPC's C++ teardown at interpreter exit can abort a process
    (``terminate called without an active exception``), which must not turn a clean stop into a failure."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the merge process handles signals and tells us to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from transforms.crypto.keyset import Keyset

    def landed(n: int) -> None:
        with stats.get_lock():
            stats[0] += n
            stats[1] += 1
            stats[2] = time.time()

    code = 0
    try:
        zone = LandingZone(folder, Keyset.load(keys_path))
        check_subscription(subscription)
        stats[3] = time.time()  # pulling starts now (imports and the check are start-up)
        land_loop(
            subscription,
            zone,
            max_messages=max_messages,
            max_bytes=max_bytes,
            on_landed=landed,
            should_stop=lambda: halt.is_set() or os.getppid() != parent,
        )
    except BaseException as exc:
        message = (
            str(exc).splitlines()[0]
            if isinstance(exc, UserError) and str(exc)
            else f"the lander failed ({type(exc).__name__})"
        )
        errors.put(message)
        errors.close()
        errors.join_thread()
        code = 1
    finally:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class LanderProcess:
    """The lander in its own process (the window work and the pulls then use both cores).

    ``pulled``, ``landed_files`` and ``last_message_at`` (wall clock) are
    shared counters; ``error`` is a LandingError once the process failed.
    """

    def __init__(
        self,
        subscription: str,
        folder: str,
        keys_path: str,
        *,
        max_messages: int = 1000,
        max_bytes: int = MAX_MESSAGE_BYTES,
    ):
        import multiprocessing

        mp = multiprocessing.get_context("spawn")  # never fork a process holding gRPC threads
        self._halt, self._stats, self._errors = mp.Event(), mp.Array("d", [0.0, 0.0, time.time(), 0.0]), mp.Queue()
        self._process = mp.Process(
            target=_lander_main,
            name="lander",
            daemon=True,
            args=(
                subscription,
                folder,
                keys_path,
                max_messages,
                max_bytes,
                self._halt,
                self._stats,
                self._errors,
                os.getpid(),
            ),
        )
        self.pull_timeout = 5.0
        self._error: LandingError | None = None

    def start(self, ready_timeout: float = 120.0) -> None:
        """Start the lander and wait until it pulls (its subscription checked); LandingError if it fails."""
        self._process.start()
        deadline = time.monotonic() + ready_timeout
        while not self._stats[3]:
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                self.stop()
                self.join(5)
                raise LandingError(f"the lander did not start within {ready_timeout:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        self._halt.set()

    def join(self, timeout: float | None = None) -> None:
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)

    @property
    def error(self) -> LandingError | None:
        code = self._process.exitcode
        if code in (None, 0):
            return None
        if self._error is None:
            try:
                self._error = LandingError(self._errors.get(timeout=1))
            except Exception:
                self._error = LandingError(f"the lander process exited with {code}")
        return self._error

    @property
    def pulled(self) -> int:
        return int(self._stats[0])

    @property
    def landed_files(self) -> int:
        return int(self._stats[1])

    @property
    def last_message_at(self) -> float:
        return self._stats[2]

    @property
    def pulling_since(self) -> float | None:
        return self._stats[3] or None
