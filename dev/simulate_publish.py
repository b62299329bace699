"""Registration events published to Pub/Sub as the streaming merge reads them.

    check_topic_path("projects/demo-project/topics/registrations")   # exists and is reachable, else one line
    publish_events("projects/demo-project/topics/registrations", events)

Each event is one message: the JSON object in UTF-8 (as a line of the batch
merge's JSON Lines file), attributes ``event_id`` and ``line_id``. Messages
go in the events' order; a publish that Pub/Sub does not accept fails the
command in one line saying how many were accepted. The client honours
``PUBSUB_EMULATOR_HOST`` (``backfill emulator start`` prints it).
"""

from __future__ import annotations

import json

from pipelines.common import UserError
from pipelines.io.pubsub import TOPIC_RE, check_topic, reach_problem

__all__ = ["check_topic_path", "publish_events", "publish_file"]

FLAG = "--publish"


def check_topic_path(topic: str) -> None:
    """Refuse a malformed or missing topic before anything is simulated or sent."""
    if not TOPIC_RE.match(topic):
        raise UserError(f"{FLAG} {topic!r} is not a topic path (projects/PROJECT/topics/TOPIC)")
    check_topic(topic, flag=FLAG)


def publish_events(topic: str, events: list[dict]) -> int:
    """Publish every event and wait until Pub/Sub accepted each; returns how many were published."""
    from google.cloud import pubsub_v1
    from google.cloud.pubsub_v1.types import BatchSettings

    publisher = pubsub_v1.PublisherClient(batch_settings=BatchSettings(max_messages=500, max_latency=0.05))
    try:
        futures = [
            publisher.publish(
                topic,
                json.dumps(event, ensure_ascii=False).encode("utf-8"),
                event_id=str(event["event_id"]),
                line_id=str(event["line_id"]),
            )
            for event in events
        ]
        errors = [future.exception(timeout=120) for future in futures]
    except Exception as exc:  # the client itself failed: credentials, emulator gone
        raise UserError(f"{FLAG} {topic}: cannot publish ({reach_problem(exc)})") from None
    finally:
        publisher.stop()
    failed = [e for e in errors if e is not None]
    if failed:
        raise UserError(
            f"{FLAG} {topic}: {len(failed):,} of {len(events):,} messages were not accepted "
            f"({reach_problem(failed[0])})"
        )
    return len(events)


def publish_file(topic: str, events_path: str) -> int:
    """Publish the events of a JSON Lines file (the simulator's ``--out``)."""
    with open(events_path, encoding="utf-8") as handle:
        return publish_events(topic, [json.loads(line) for line in handle if line.strip()])
