"""The Pub/Sub emulator of the Google Cloud CLI, started and stopped around a block of code.

    with running_emulator() as emulator:          # PUBSUB_EMULATOR_HOST is set inside
        topic, subscription = emulator.topic_and_subscription()
        emulator.publish(topic, [b"..."], event_id="E1")

A real emulator process on a free port (8085 may be taken), used by the
demo's streaming step, the benchmarks and the tests (``tests/support/pubsub.py``
wraps it in fixtures). Starting, waiting and stopping are
``pipelines/emulator_process.py``'s, the one implementation that ``backfill
emulator start|stop`` uses too. On leaving the block the emulator's whole
process group is stopped and the environment restored. The emulator keeps
messages while it runs, so take fresh topic names each time.

Needs the ``gcloud`` CLI with the Pub/Sub emulator component (Debian package
``google-cloud-cli-pubsub-emulator``) and Java 11+; without them
:class:`EmulatorUnavailable` says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid

from pipelines.emulator_process import (
    PROJECT,
    EmulatorUnavailable,
    create_topic_and_subscription,
    free_port,
    spawn,
    stop_group,
    wait_until_up,
)

__all__ = ["PubSubEmulator", "running_emulator", "EmulatorUnavailable", "PROJECT"]


class PubSubEmulator:
    """A running emulator: its host, helpers to make topics and to read messages back."""

    def __init__(self, host: str, process: subprocess.Popen, log_path: str):
        self.host, self.process, self.log_path, self.project = host, process, log_path, PROJECT

    def topic_and_subscription(self, prefix: str = "t", ack_deadline_seconds: int = 60) -> tuple[str, str]:
        """Create a fresh topic and a subscription on it; returns their paths. A short ack deadline
        brings a killed consumer's unacknowledged messages back sooner (restart tests)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        topic = f"projects/{PROJECT}/topics/{name}"
        subscription = f"projects/{PROJECT}/subscriptions/{name}-sub"
        create_topic_and_subscription(topic, subscription, ack_deadline_seconds)
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


@contextlib.contextmanager
def running_emulator(port: int | None = None):
    """Start an emulator, set PUBSUB_EMULATOR_HOST while it runs, stop it after (also for bench.run)."""
    host = f"127.0.0.1:{port or free_port()}"
    data_dir = tempfile.mkdtemp(prefix="pubsub-emulator-")
    log_path = os.path.join(data_dir, "emulator.log")
    try:
        process = spawn(host, PROJECT, data_dir, log_path)
    except EmulatorUnavailable:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    saved = {k: os.environ.get(k) for k in ("PUBSUB_EMULATOR_HOST", "PUBSUB_PROJECT_ID")}
    try:
        wait_until_up(host, process, log_path)
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        os.environ["PUBSUB_PROJECT_ID"] = PROJECT
        yield PubSubEmulator(host, process, log_path)
    finally:
        stop_group(process.pid, process)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(data_dir, ignore_errors=True)
