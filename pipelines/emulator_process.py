"""The Google Cloud CLI's Pub/Sub emulator as a process: start it, wait for it, stop its whole process group.

    process = spawn("127.0.0.1:8086", "demo-project", data_dir, log_path)
    wait_until_up("127.0.0.1:8086", process, log_path)
    create_topic_and_subscription("projects/demo-project/topics/t", "projects/demo-project/subscriptions/s")
    stop_group(process.pid, process)

One implementation for ``backfill emulator`` (``pipelines/emulator.py``, which
runs the emulator beyond its own process) and for the tests, the demo and the
benchmarks (``dev/pubsub_emulator.py``, around a block of code). The emulator
is ``gcloud beta emulators pubsub start --host-port=127.0.0.1:PORT`` (Debian
package ``google-cloud-cli-pubsub-emulator``, Java 11+); nothing is
downloaded. It runs in a session of its own, so its process group (gcloud and
the JVM it starts) can be stopped whole, and a group is only ever signalled
when its leader is the process that was started (:func:`start_ticks`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

from pipelines.common import UserError

__all__ = [
    "PROJECT",
    "EmulatorUnavailable",
    "EmulatorError",
    "free_port",
    "port_taken",
    "spawn",
    "wait_until_up",
    "start_ticks",
    "group_members",
    "stop_group",
    "create_topic_and_subscription",
]

PROJECT = "demo-project"
START_TIMEOUT = 90.0  # seconds: the JVM is slow to start on a busy 2-core machine
INSTALL = "apt-get install google-cloud-cli-pubsub-emulator openjdk-17-jre-headless"


class EmulatorUnavailable(UserError):
    """gcloud or Java is missing."""


class EmulatorError(UserError):
    """The emulator did not start, or answers wrongly; one line."""


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick; 8085, gcloud's default, may be taken)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_taken(port: int) -> bool:
    """True when 127.0.0.1:``port`` cannot be bound (something listens there)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _gcloud() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None or shutil.which("java") is None:
        raise EmulatorUnavailable(f"the Pub/Sub emulator needs gcloud and Java: {INSTALL}")
    return gcloud


def spawn(host: str, project: str, data_dir: str, log_path: str) -> subprocess.Popen:
    """Start ``gcloud beta emulators pubsub start`` in a new session, its output to ``log_path``."""
    command = [_gcloud(), "beta", "emulators", "pubsub", "start", f"--host-port={host}", f"--project={project}"]
    command += [f"--data-dir={data_dir}", "--quiet"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def wait_until_up(host: str, process: subprocess.Popen, log_path: str, timeout: float = START_TIMEOUT) -> None:
    """Return once the emulator answers on ``host``; one-line EmulatorError if it exits or stays silent."""
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise EmulatorError(
                f"the Pub/Sub emulator exited with code {process.returncode} before answering on {host} "
                f"(its log: {log_path})"
            )
        try:
            with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise EmulatorError(f"the Pub/Sub emulator did not answer on {host} within {timeout:.0f} s (its log: {log_path})")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rpartition(")")[2].split()


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None when it is gone or a zombie: with the pid it
    names one process for ever, so a recorded pid reused by another program is never taken for the emulator."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) of process group ``pgid``."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(int(name))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop_group(pgid: int, process: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    """SIGTERM the group the emulator leads (gcloud and its JVM), SIGKILL what is left after ``timeout``.
    ``process``: the leader when it is this process's child (reaped here)."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None:
            process.poll()
        if not group_members(pgid):
            break
        time.sleep(0.2)
    else:
        _signal_group(pgid, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def create_topic_and_subscription(
    topic: str, subscription: str | None = None, ack_deadline_seconds: int = 60, timeout: float = 30.0
) -> None:
    """Create ``topic`` (``projects/P/topics/T``) and, when given, ``subscription`` on it, on the Pub/Sub that
    PUBSUB_EMULATOR_HOST names. A short ack deadline brings a killed consumer's messages back sooner."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        publisher.create_topic(request={"name": topic}, timeout=timeout)
        if subscription:
            subscriber.create_subscription(
                request={"name": subscription, "topic": topic, "ack_deadline_seconds": ack_deadline_seconds},
                timeout=timeout,
            )
    except exceptions.GoogleAPICallError as exc:
        raise EmulatorError(f"cannot create {topic} / {subscription}: {type(exc).__name__}") from None
    finally:
        publisher.stop()
        subscriber.close()
