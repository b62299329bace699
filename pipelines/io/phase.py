"""A phase of a multi-job step: its counts checked and written inside its job, nothing published.

Retention runs three jobs (find and purge, the crypto-shred, the base
rewrite) and a shred one job per vault; each job's balance must fail *that*
job, before the next irreversible step, not only the last one. So each job
ends with :class:`pipelines.io.finalize.Finalize` as every step does, given a
:class:`Phase` instead of the run's publication: a folder inside the run's
staged output (or a vault's staging folder) that receives the job's
``manifest.json`` and is never switched in by ``Finalize`` itself (a phase is
not an output; the launcher reads it and removes it).

    phase = Phase.inside(pub, "_purge")
    counts | "Finalize" >> Finalize(phase, {"phase": "purge"}, summarise, after=[...])
    block = read_phase(phase)["counts"]
"""

from __future__ import annotations

import dataclasses


from pipelines.io.publish import Publication
from pipelines.io.publish_guards import delete
from pipelines.manifest import read_json

__all__ = ["Phase", "read_phase", "remove_phase"]


@dataclasses.dataclass
class Phase(Publication):
    """A job's folder inside a run: ``Finalize`` writes its ``manifest.json`` there and publishes nothing."""

    @property
    def remote(self) -> bool:  # Finalize switches a remote output in when this is true: a phase never is one
        return False

    @classmethod
    def at(cls, folder: str, step: str, run_id: str) -> "Phase":
        folder = folder.rstrip("/")
        return cls(folder, folder, step, run_id)

    @classmethod
    def inside(cls, pub: Publication, name: str) -> "Phase":
        return cls.at(pub.path(name), pub.step, pub.run_id)


def read_phase(phase: Phase) -> dict:
    """The manifest the phase's job wrote (its counts checked in the job)."""
    return read_json(phase.path("manifest.json"))


def remove_phase(phase: Phase) -> None:
    """Delete the phase's folder (local or object store); missing is fine."""
    delete(phase.stage)
