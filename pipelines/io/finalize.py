"""The last step of every batch job: the balance checked and the manifest written by the job itself.

    counts = tallies | "SumCounts" >> beam.CombineGlobally(SumCounts())
    counts | "Finalize" >> Finalize(pub, manifest, summarise, after=[written_base, written_dead_letters])
    ...
    manifest = read_json(pub.path("manifest.json"))   # the launcher only reads and prints it

A launcher that checked the counts after ``pipeline.run()`` returned would not
check them at all where it does not wait for the job (Airflow's Beam operator
stops waiting once it has the Dataflow job id), and a job that lost rows would
succeed. So the check is the job's own last step, on any runner:

* it waits for every write (``after``: the write transforms' results, reduced
  to a count each and taken as side inputs, so it runs only once the files are
  there);
* it turns the run's counts into the manifest's ``counts`` block with the
  step's ``summarise(counts) -> (block, problems)`` (a module-level function);
* when a balance fails it raises :class:`~pipelines.common.UserError`
  (``"<problem>; nothing was published"``): the job fails, the staged output
  is never switched in, and the user reads one line;
* otherwise it writes ``STAGE/manifest.json`` (the static part the launcher
  knew, the counts, when the job finished and where) and, for an output on an
  object store, switches the staged output in itself
  (:func:`pipelines.io.publish.commit_remote`: manifest, marker and
  ``_SUCCESS`` last). A local output is switched in by the launcher's
  ``publishing`` block, which a local runner always returns to.

Nothing here reads or writes an identity value: counts, paths and versions only.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import apache_beam as beam

from pipelines.io.finish import Summarise, finish  # the step itself, Beam-free (the in-process report calls it)
from pipelines.io.publish import Publication

__all__ = ["Finalize", "finish"]


def _finish_fn(counts, pub, manifest, summarise, started, *done):  # no hints: Beam would type-check the side inputs
    del done  # side inputs only make this step wait for the writes
    return finish(counts, pub, manifest, summarise, started)


class Finalize(beam.PTransform):
    """Applied to the run's counts (a PCollection of exactly one dict): see the module docstring.

    Args:
      pub: the run's :class:`~pipelines.io.publish.Publication` (its staged folder, OUT, step, run id).
      manifest: the JSON-able part known before the run (step, run id, inputs, outputs, versions...).
      summarise: ``counts -> (counts block, one-line problems)``; a module-level function.
      after: the PCollections of the writes that must be complete first.
      started: the launcher's start (``time.time()``), for ``timings.seconds_total``.
    """

    def __init__(
        self,
        pub: Publication,
        manifest: dict[str, Any],
        summarise: Summarise,
        after: Sequence[beam.PCollection] = (),
        started: float | None = None,
    ):
        super().__init__()
        self._pub, self._manifest, self._summarise = pub, manifest, summarise
        self._after, self._started = list(after), time.time() if started is None else started

    def expand(self, counts):
        waits = [
            beam.pvalue.AsSingleton(done | f"Written{i}" >> beam.combiners.Count.Globally())
            for i, done in enumerate(self._after)
        ]
        return counts | "CheckAndWriteManifest" >> beam.Map(
            _finish_fn, self._pub, self._manifest, self._summarise, self._started, *waits
        )
