"""Fixtures for every test. Shared helpers (builders, constants, harnesses) live in tests/support/."""

from __future__ import annotations

import pytest

# tests/support's plain `assert`s report their operands as a test module's would
pytest.register_assert_rewrite("tests.support")

from tests.support.dataflow import site  # noqa: E402,F401  (fixture: a keyset and a bucket for the dry runs)
from tests.support.pubsub import fresh_topic, pubsub_emulator  # noqa: E402,F401  (fixtures: one emulator per session)
from tests.support.moto_server import moto_server  # noqa: E402,F401  (fixture: moto's S3 + KMS server per session)


@pytest.fixture
def policy():
    from transforms.scan.policy import load_policy

    return load_policy()
