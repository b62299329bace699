"""The Pub/Sub emulator of the Google Cloud CLI, started and stopped around a block of code.

    with running_emulator() as emulator:          # PUBSUB_EMULATOR_HOST is set inside
        topic, subscription = emulator.topic_and_subscription()
        emulator.publish(topic, [b"..."], event_id="E1")

A real emulator process (``gcloud beta emulators pubsub start --project
demo-project --host-port 127.0.0.1:PORT`` on a free port; 8085 may be taken),
used by the demo's streaming step, the benchmarks and the tests
(``tests/pubsub_emulator.py`` wraps it in fixtures). On leaving the block the
emulator's whole process group is killed and the environment restored. The
emulator keeps messages while it runs, so take fresh topic names each time.

Needs the ``gcloud`` CLI with the Pub/Sub emulator component (Debian package
``google-cloud-cli-pubsub-emulator``) and Java 11+; without them
:class:`EmulatorUnavailable` says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

__all__ = ["PubSubEmulator", "running_emulator", "EmulatorUnavailable", "PROJECT"]

PROJECT = "demo-project"
START_TIMEOUT = 90.0  # seconds: the JVM is slow to start on a busy 2-core machine


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PubSubEmulator:
    """A running emulator: its host, helpers to make topics and to read messages back."""

    def __init__(self, host: str, process: subprocess.Popen, log_path: str):
        self.host, self.process, self.log_path, self.project = host, process, log_path, PROJECT

    def topic_and_subscription(self, prefix: str = "t", ack_deadline_seconds: int = 60) -> tuple[str, str]:
        """Create a fresh topic and a subscription on it; returns their paths. A short ack deadline
        brings a killed consumer's unacknowledged messages back sooner (restart tests)."""
        from google.cloud import pubsub_v1

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        topic = f"projects/{PROJECT}/topics/{name}"
        subscription = f"projects/{PROJECT}/subscriptions/{name}-sub"
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        try:
            publisher.create_topic(request={"name": topic})
            subscriber.create_subscription(
                request={"name": subscription, "topic": topic, "ack_deadline_seconds": ack_deadline_seconds}
            )
        finally:
            publisher.stop()
            subscriber.close()
        return topic, subscription

    def pull_all(self, subscription: str, idle_pulls: int = 2, timeout: float = 1.5) -> list:
        """Every message on ``subscription`` (acknowledged), until ``idle_pulls`` pulls in a row are empty."""
        from google.api_core import exceptions
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        messages, empty = [], 0
        try:
            while empty < idle_pulls:
                try:
                    response = subscriber.pull(
                        request={"subscription": subscription, "max_messages": 1000}, timeout=timeout
                    )
                    received = list(response.received_messages)
                except exceptions.DeadlineExceeded:
                    received = []
                empty = 0 if received else empty + 1
                if received:
                    messages += [r.message for r in received]
                    subscriber.acknowledge(
                        request={"subscription": subscription, "ack_ids": [r.ack_id for r in received]}
                    )
        finally:
            subscriber.close()
        return messages

    def publish(self, topic: str, payloads: list[bytes], **attributes) -> None:
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        try:
            for future in [publisher.publish(topic, data, **attributes) for data in payloads]:
                future.result(timeout=60)
        finally:
            publisher.stop()


def _wait_until_up(host: str, process: subprocess.Popen, log_path: str) -> None:
    import urllib.request

    deadline = time.time() + START_TIMEOUT
    while time.time() < deadline:
        if process.poll() is not None:
            with open(log_path, encoding="utf-8", errors="replace") as handle:
                tail = handle.read()[-800:]
            raise RuntimeError(f"the Pub/Sub emulator exited with {process.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"http://{host}/", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the Pub/Sub emulator did not answer on {host} within {START_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    """Kill the emulator's process group (gcloud starts a JVM as a child)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class EmulatorUnavailable(RuntimeError):
    """gcloud or Java is missing."""


@contextlib.contextmanager
def running_emulator(port: int | None = None):
    """Start an emulator, set PUBSUB_EMULATOR_HOST while it runs, stop it after (also for bench.run)."""
    gcloud = shutil.which("gcloud")
    if gcloud is None or shutil.which("java") is None:
        raise EmulatorUnavailable("the Pub/Sub emulator needs gcloud (with the pubsub-emulator component) and Java")
    host = f"127.0.0.1:{port or _free_port()}"
    data_dir = tempfile.mkdtemp(prefix="pubsub-emulator-")
    log_path = os.path.join(data_dir, "emulator.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                gcloud,
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port={host}",
                f"--project={PROJECT}",
                f"--data-dir={data_dir}",
                "--quiet",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    saved = {k: os.environ.get(k) for k in ("PUBSUB_EMULATOR_HOST", "PUBSUB_PROJECT_ID")}
    try:
        _wait_until_up(host, process, log_path)
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        os.environ["PUBSUB_PROJECT_ID"] = PROJECT
        yield PubSubEmulator(host, process, log_path)
    finally:
        _stop(process)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(data_dir, ignore_errors=True)
