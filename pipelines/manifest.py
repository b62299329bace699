"""Run manifests: every step writes ``manifest.json`` beside its outputs.

A manifest proves what a run did: counts in and out, dead letters, the
policy and key versions, inputs, runner, options and timings. It never holds
identity values. Self-inspection (Art. 15) gathers them later.
"""

from __future__ import annotations

import json
import platform
import time
from typing import TYPE_CHECKING, Any

import os

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset
    from transforms.scan.policy import Policy

__all__ = ["write_json", "read_json", "Timer", "policy_block", "keys_block"]


def policy_block(policy: "Policy", *, source: bool = True) -> dict[str, Any]:
    """A manifest's ``policy``: the version, the digest of its text and where it came from."""
    block = {"version": policy.version, "sha256": policy.digest}
    if source:
        block["source"] = policy.source
    return block


def keys_block(keyset: "Keyset", *, vault: bool = True) -> dict[str, Any]:
    """A manifest's ``keys``: the keyset and its primary join (and vault) key versions; never material."""
    block = {"keyset_id": keyset.keyset_id, "join": keyset.primary_join_version}
    if vault:
        block["vault"] = keyset.primary_vault_version
    return block


def _remote(path: str) -> bool:
    return "://" in path


def write_json(path: str, data: dict[str, Any]) -> None:
    """Local paths directly (no Beam import), others (gs://) through Beam's FileSystems."""
    payload = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False, default=str).encode("utf-8")
    if not _remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(payload + b"\n")
        return
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.create(path) as handle:
        handle.write(payload + b"\n")


def read_json(path: str) -> dict[str, Any]:
    if not _remote(path):
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


class Timer:
    def __init__(self) -> None:
        self.started = time.time()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.time() - self.started, 3)

    def as_dict(self) -> dict[str, Any]:
        return {"seconds_total": round(time.time() - self.started, 3), **self.marks, "host": platform.node()}
