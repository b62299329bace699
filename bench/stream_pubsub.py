"""The streaming benchmark's Pub/Sub side: topics with subscriptions, a batched publisher, the bare subscriber loop
(unary pull + acknowledge, nothing else) the streaming merge is compared with. Emulator only (PUBSUB_EMULATOR_HOST)."""

from __future__ import annotations

import time
import uuid

__all__ = ["topic", "publish", "bare_loop"]


def topic(subs: int) -> tuple[str, list[str]]:
    from google.cloud import pubsub_v1

    from dev.pubsub_emulator import PROJECT

    name = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"projects/{PROJECT}/topics/{name}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    names = [f"projects/{PROJECT}/subscriptions/{name}-{i}" for i in range(subs)]
    try:
        publisher.create_topic(request={"name": topic})
        for sub in names:
            subscriber.create_subscription(request={"name": sub, "topic": topic, "ack_deadline_seconds": 10})
    finally:
        publisher.stop()
        subscriber.close()
    return topic, names


def publish(topic: str, messages: list[tuple[bytes, dict]]) -> float:
    """Publish every message (batched, one client); returns seconds from first publish to last ack."""
    from google.cloud import pubsub_v1
    from google.cloud.pubsub_v1.types import BatchSettings

    client = pubsub_v1.PublisherClient(
        batch_settings=BatchSettings(max_messages=1000, max_bytes=9_000_000, max_latency=0.05)
    )
    started = time.time()
    futures = [client.publish(topic, data, **attrs) for data, attrs in messages]
    for future in futures:
        future.result(timeout=600)
    seconds = time.time() - started
    client.stop()
    return seconds


def bare_loop(subscription: str, expected: int) -> dict:
    """Unary pull + acknowledge until ``expected`` messages came; prints seconds from the first message."""
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    got, first = 0, None
    deadline = time.time() + 900
    while got < expected and time.time() < deadline:
        try:
            response = client.pull(request={"subscription": subscription, "max_messages": 1000}, timeout=5)
        except exceptions.DeadlineExceeded:
            continue
        received = list(response.received_messages)
        if not received:
            continue
        first = first or time.time()
        client.acknowledge(request={"subscription": subscription, "ack_ids": [r.ack_id for r in received]})
        got += len(received)
    seconds = time.time() - (first or time.time())
    client.close()
    return {"messages": got, "seconds": round(seconds, 3)}
