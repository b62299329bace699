"""A run's manifest written once its counts balance (Beam-free): the body of ``finalize.Finalize``'s last step.

    manifest = finish(counts, pub, manifest_static, summarise, started)

``pipelines/io/finalize.py`` runs it as the last step of a Beam job; a step
that does its work in its own process (the in-process report,
``pipelines/report_local.py``) calls it directly, without importing Beam.
When a balance fails it raises :class:`~pipelines.common.UserError`
(``"<problem>; nothing was published"``); otherwise it writes
``STAGE/manifest.json`` and, for an output on an object store, switches the
staged output in (:func:`pipelines.io.publish.commit_remote`).
"""

from __future__ import annotations

import datetime as dt
import platform
import time
from typing import Callable

from pipelines.io.publish import Publication, commit_remote
from pipelines.manifest import write_json

__all__ = ["finish", "Summarise"]

Summarise = Callable[[dict], "tuple[dict, list[str]]"]


def _utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def finish(counts: dict, pub: Publication, manifest: dict, summarise: Summarise, started: float) -> dict:
    """Check the balance and write the manifest (and, on an object store, publish); returns the manifest."""
    from pipelines.common import UserError

    block, problems = summarise(counts or {})
    if problems:
        raise UserError("; ".join(problems) + "; nothing was published")
    timings = dict(manifest.get("timings") or {})
    timings.update(seconds_total=round(time.time() - started, 3), host=platform.node())
    written = {**manifest, "counts": block, "finished": _utc_now(), "timings": timings}
    write_json(pub.path("manifest.json"), written)
    if pub.remote:
        commit_remote(pub.out, pub.stage, pub.step, pub.run_id, pub.produces)
    return written
