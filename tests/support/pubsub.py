"""Fixtures over the Pub/Sub emulator (``dev/pubsub_emulator.py``): a real emulator, never a mock.

tests/conftest.py registers them for every test module; a test just names them::

    def test_publish(pubsub_emulator, fresh_topic):
        topic, subscription = fresh_topic          # new names per test
        ...                                        # PUBSUB_EMULATOR_HOST is set
        messages = pubsub_emulator.pull_all(subscription)

``pubsub_emulator`` is session-scoped: one emulator per test process (with
pytest-xdist, one per worker), stopped at the end of the session. Without
gcloud's emulator or Java the tests that use it fail with that reason (the
machine image ships both; CI must not pass by skipping). Tests that use it
are end-to-end: mark them ``e2e``.
"""

from __future__ import annotations

import pytest

from dev.pubsub_emulator import PROJECT, EmulatorUnavailable, PubSubEmulator, running_emulator

__all__ = ["PubSubEmulator", "pubsub_emulator", "fresh_topic", "running_emulator", "EmulatorUnavailable", "PROJECT"]


@pytest.fixture(scope="session")
def pubsub_emulator():
    """Start one Pub/Sub emulator for the session; yields a :class:`PubSubEmulator`."""
    try:
        with running_emulator() as emulator:
            yield emulator
    except EmulatorUnavailable as exc:
        # Never a skip: a missing emulator is a broken set-up (.ci/run installs it).
        pytest.fail(str(exc))


@pytest.fixture
def fresh_topic(pubsub_emulator):
    """(topic, subscription) paths, new for this test."""
    return pubsub_emulator.topic_and_subscription()
