"""Pub/Sub for ``backfill notify``: publish jobs, check the topic first, pull receipts.

Publishing is a DoFn, not Beam's ``WriteToPubSub`` (batch support for it came
with Beam PR #36027; we do not rely on it in batch on the local runner). Its
``PublisherClient`` is made once per worker in ``setup()`` (clients and their
settings objects do not pickle), batches messages (``BatchSettings``), bounds
what is in flight table by table, and resolves each bundle's futures by
``finish_bundle`` at the latest. Only jobs whose publish was acknowledged go into
the history, written whole right then: a run that fails part way records
exactly what was sent, and a re-run sends only the rest. A message whose
acknowledgement was lost may be sent again by that re-run: consumers drop
repeats by ``job_id`` (the same job always has the same id).

Each message is the job as one JSON object (UTF-8), with attributes
``job_id``, ``channel`` and ``campaign_id``. The emulator works unchanged: the
client honours ``PUBSUB_EMULATOR_HOST``.
"""

from __future__ import annotations

import json
import re
import time

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from pipelines.common import UserError
from pipelines.io.notify_files import write_history
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.metrics import counter
from transforms.notify.encode import json_messages
from transforms.notify.jobs import history_rows

__all__ = ["TOPIC_RE", "SUBSCRIPTION_RE", "check_topic", "reach_problem", "PublishJobs", "pull_receipts", "ack"]

TOPIC_RE = re.compile(r"^projects/[^/]+/topics/[^/]+$")
SUBSCRIPTION_RE = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")


def _reason(exc: Exception) -> str:
    return type(exc).__name__ + (f": {str(exc).splitlines()[0][:120]}" if str(exc) else "")


def reach_problem(exc: Exception) -> str:
    """Why Pub/Sub could not be reached, in words that say what to do: no credentials and no emulator, or an
    emulator that does not answer; else the exception's name and first line."""
    import os

    name, host = type(exc).__name__, os.environ.get("PUBSUB_EMULATOR_HOST")
    if name in ("DefaultCredentialsError", "RefreshError") and not host:
        return (
            f"no Google Cloud credentials ({name}): for the local emulator run `backfill emulator start` and "
            "export the PUBSUB_EMULATOR_HOST it prints; for Pub/Sub itself set GOOGLE_APPLICATION_CREDENTIALS"
        )
    if host and name in ("ServiceUnavailable", "DeadlineExceeded", "RetryError"):
        return f"nothing answers at PUBSUB_EMULATOR_HOST={host} ({name}): is the emulator running? (backfill emulator status)"
    return _reason(exc)


def check_topic(topic: str, timeout: float = 15.0, flag: str = "--topic") -> None:
    """Refuse a topic that does not exist (or cannot be reached) before anything is sent."""
    from google.api_core import exceptions
    from google.api_core.retry import Retry
    from google.cloud import pubsub_v1

    client = None
    try:
        client = pubsub_v1.PublisherClient()
        # the client's own retry would go on for 10 minutes against an emulator that is not running
        client.get_topic(
            request={"topic": topic}, timeout=timeout, retry=Retry(initial=0.25, maximum=2.0, timeout=timeout)
        )
    except exceptions.NotFound:
        raise UserError(f"{flag} {topic} does not exist; create it first (nothing was sent)") from None
    except Exception as exc:  # credentials, permission, network, emulator down: still one line
        raise UserError(f"{flag} {topic}: cannot reach Pub/Sub ({reach_problem(exc)}); nothing was sent") from None
    finally:
        if client is not None:
            client.stop()


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(dict)
class PublishFn(beam.DoFn):
    """Publish job tables; record each table in the history once Pub/Sub has acknowledged it.

    Back-pressure is per table, not per message: when more than ``in_flight``
    messages await acknowledgement, the oldest table is settled first (the
    client's own flow control costs a lock and a size computation per message,
    about 13 % of the publish rate).
    """

    def __init__(self, topic: str, out: str, run_id: str, max_messages: int, max_latency: float, in_flight: int):
        # Only plain values here: the client is built in setup() on the worker.
        self._topic, self._out, self._run = topic, out, run_id
        self._max_messages, self._max_latency, self._in_flight = max_messages, max_latency, in_flight
        self._published = counter("published")
        self._failed = counter("publish_failed")

    def setup(self):
        from google.cloud import pubsub_v1
        from google.cloud.pubsub_v1.types import BatchSettings

        self._client = pubsub_v1.PublisherClient(
            batch_settings=BatchSettings(
                max_messages=self._max_messages, max_bytes=9_000_000, max_latency=self._max_latency
            )
        )

    def start_bundle(self):
        self._pending: list[tuple[pa.Table, list]] = []
        self._sent: dict[str, int] = {}
        self._failures: list[tuple[int, Exception]] = []
        self._started = None

    def process(self, table: pa.Table):
        self._started = self._started or time.time()
        payloads = json_messages(table).to_pylist()
        ids = table.column("job_id").to_pylist()
        channel = table.column("channel")[0].as_py()
        campaign = table.column("campaign_id")[0].as_py()
        publish, topic = self._client.publish, self._topic
        futures = [
            publish(topic, data, job_id=job_id, channel=channel, campaign_id=campaign)
            for data, job_id in zip(payloads, ids)
        ]
        self._pending.append((table, futures))
        while sum(len(f) for _, f in self._pending) > self._in_flight and len(self._pending) > 1:
            self._settle(*self._pending.pop(0))

    def _settle(self, table: pa.Table, futures: list) -> None:
        """Wait for one table's acknowledgements; put the acknowledged jobs in the history."""
        errors = [future.exception(timeout=300) for future in futures]
        acked = [e is None for e in errors]
        done = table.filter(pa.array(acked)) if not all(acked) else table
        write_history(history_rows(done, self._run), self._out, self._run)
        channel = table.column("channel")[0].as_py()
        self._sent[channel] = self._sent.get(channel, 0) + done.num_rows
        if done.num_rows < table.num_rows:
            self._failures.append((table.num_rows - done.num_rows, next(e for e in errors if e is not None)))

    def finish_bundle(self):
        if not self._pending and not self._sent:
            return
        while self._pending:
            self._settle(*self._pending.pop(0))
        messages = sum(self._sent.values())
        failed = sum(n for n, _ in self._failures)
        self._published.inc(messages)
        self._failed.inc(failed)
        if failed:
            raise UserError(
                f"{failed} message(s) were not accepted by Pub/Sub ({_reason(self._failures[0][1])}); "
                "the jobs that were are in the history, re-run to send the rest"
            )
        stats = {
            "handed_over": dict(self._sent),
            "publish": {"messages": messages, "first": self._started, "last": time.time()},
        }
        self._sent = {}
        yield WindowedValue(stats, 0, [GlobalWindow()])

    def teardown(self):
        client = getattr(self, "_client", None)
        if client is not None:
            client.stop()


class PublishJobs(beam.PTransform):
    """Publish each channel's job tables to one topic; yields tallies (messages, first/last time)."""

    def __init__(
        self,
        topic: str,
        out: str,
        run_id: str,
        *,
        max_messages: int = 1000,
        max_latency: float = 0.05,
        in_flight: int = 50_000,
    ):
        super().__init__()
        self._args = (topic, out, run_id, max_messages, max_latency, in_flight)

    def expand(self, jobs: dict):
        parts = [pcoll for _, pcoll in sorted(jobs.items())]
        return (
            tuple(parts)
            | "FlattenJobs" >> beam.Flatten().with_output_types(pa.Table)
            | "PublishToPubSub" >> beam.ParDo(PublishFn(*self._args))
        )


def pull_receipts(subscription: str, max_messages: int = 1000, timeout: float = 2.0) -> tuple[list[dict], list[str]]:
    """Pull receipts until the subscription is drained: (records, ack ids). Ack after recording."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    records, acks, empty = [], [], 0
    try:
        while empty < 2:
            try:
                response = client.pull(
                    request={"subscription": subscription, "max_messages": max_messages}, timeout=timeout
                )
            except exceptions.NotFound:
                raise UserError(f"--receipts-subscription {subscription} does not exist") from None
            except exceptions.DeadlineExceeded:
                response = None
            except Exception as exc:
                raise UserError(
                    f"--receipts-subscription {subscription}: cannot reach Pub/Sub ({_reason(exc)})"
                ) from None
            received = response.received_messages if response is not None else []
            empty = 0 if received else empty + 1
            for message in received:
                records.append(_receipt(message.message, len(records) + 1))
                acks.append(message.ack_id)
    finally:
        client.close()
    return records, acks


def _receipt(message, row: int) -> dict:
    """A receipt from a message: JSON {job_id, status, at} in the body, or the same as attributes."""
    fields = dict(message.attributes)
    try:
        body = json.loads(message.data.decode("utf-8")) if message.data else {}
        if isinstance(body, dict):
            fields.update({k: v for k, v in body.items() if k in ("job_id", "status", "at")})
    except (UnicodeDecodeError, ValueError):
        pass
    return {"job_id": fields.get("job_id"), "status": fields.get("status"), "at": fields.get("at"), "_src_row": row}


def ack(subscription: str, ack_ids: list[str]) -> None:
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    try:
        for start in range(0, len(ack_ids), 1000):
            client.acknowledge(request={"subscription": subscription, "ack_ids": ack_ids[start : start + 1000]})
    finally:
        client.close()
