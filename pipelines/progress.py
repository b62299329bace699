"""Progress lines of a long step on stderr: rows done, rows/s, the share done and the time left.

    merge merge-20261205T101010Z-ab12cd34: read 2,000,000 of ~2,000,000 rows, merged 412,345 of ~2,000,000;
        61,234 rows/s; 60% done, ~0:00:21 left

A step names its phases in order (``read``, then what it makes: ``classified``, ``merged``...) with the rows
each is expected to pass (the launcher's plan of its inputs: an estimate, hence ``~``; None when it cannot
know, such as the jobs of a wave), and counts them with :meth:`Progress.count`: a branch beside the real
path that adds up the rows of each Arrow batch, so what the step writes is unchanged.

* On a local runner (in-process, or worker processes on this machine with ``--direct_num_workers``) each
  counting DoFn writes its running total into a file of a private folder the launcher made (0700; a number,
  never a row) at most every half second and at the end of each bundle; a thread of the launcher adds them
  up every ``--progress-seconds`` and logs the line. The local runner runs a step's stages one after the
  other (the read, then what consumes the shuffle), so the phases fill up in turn.
* On a remote runner (Dataflow, Flink, Spark) workers share no folder: each logs its own count every
  ``--progress-seconds`` in the runner's worker logs, and the Beam counters ``subreg/progress_<phase>``
  add them up on the runner's job page.

The share done is the mean over the phases with an expected count of done / expected (at most 1); the
time left is the time since the pipeline started times (1 - share) / share; rows/s is the rate of the
latest phase under way since it was first seen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time

import apache_beam as beam

from pipelines.common import is_local_runner
from pipelines.flags import PROGRESS_SECONDS
from pipelines.io.run_folders import pid_folder
from pipelines.progress_text import time_left
from transforms.core.metrics import counter

__all__ = ["NO_PROGRESS", "Progress", "progress", "rows_of"]

_FLUSH_SECONDS = 0.5
log = logging.getLogger("backfill.progress")


def rows_of(element) -> int:
    """Rows of an element: an Arrow table or batch, a (key, table) pair, a list, or one row."""
    n = getattr(element, "num_rows", None)
    if n is not None:
        return int(n)
    if isinstance(element, tuple) and len(element) == 2:
        return rows_of(element[1])
    return len(element) if isinstance(element, list) else 1


class _CountRows(beam.DoFn):
    """Counts the rows that pass (see the module docstring); outputs nothing."""

    def __init__(self, folder: str | None, phase: str, label: str, every: float):
        self._folder, self._phase, self._label, self._every = folder, phase, label, every

    def setup(self) -> None:
        self._file = os.path.join(self._folder, f"{self._phase}.{os.getpid()}.{id(self):x}") if self._folder else None
        self._rows, self._flushed, self._logged = 0, 0.0, time.monotonic()
        self._counter = counter(f"progress_{self._phase}")

    def process(self, element):
        n = rows_of(element)
        self._rows += n
        self._counter.inc(n)
        now = time.monotonic()
        if self._file is not None and now - self._flushed >= _FLUSH_SECONDS:
            self._flush(now)
        elif self._file is None and self._every > 0 and now - self._logged >= self._every:
            log.info("%s: this worker: %s %s rows", self._label, self._phase, f"{self._rows:,}")
            self._logged = now

    def finish_bundle(self) -> None:
        if self._file is not None:
            self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        try:
            with open(self._file + ".tmp", "w", encoding="ascii") as f:
                f.write(str(self._rows))
            os.replace(self._file + ".tmp", self._file)
        except OSError:  # the launcher is gone, or its folder: progress is not worth failing a job for
            self._file = None
        self._flushed = now


class Progress:
    """One step's progress: its phases, the counting branches, the line (see the module docstring)."""

    def __init__(self, label: str, phases: dict[str, int | None], every: float, folder: str | None):
        self.label, self.phases, self.every, self.folder = label, dict(phases), every, folder
        self.started = time.monotonic()
        self._seen: dict[str, tuple[float, int]] = {}  # phase -> (when first seen, its count then)
        self._moved: dict[str, tuple[float, int]] = {}  # phase -> (when its count last changed, the count)
        self._labels: dict[str, int] = {}

    def count(self, pcoll, phase: str) -> None:
        """Count the rows of ``pcoll`` as ``phase`` (a branch beside it; the step's path is unchanged)."""
        if phase not in self.phases:
            raise ValueError(f"unknown progress phase {phase!r}")
        n = self._labels[phase] = self._labels.get(phase, 0) + 1
        name = f"Progress{phase.title().replace('_', '')}" + (str(n) if n > 1 else "")
        pcoll | name >> beam.ParDo(_CountRows(self.folder, phase, self.label, self.every))

    def done(self) -> dict[str, int]:
        """Rows counted so far, by phase (the workers' files added up)."""
        done = dict.fromkeys(self.phases, 0)
        for name in os.listdir(self.folder) if self.folder else ():
            phase = name.split(".", 1)[0]
            if phase in done and not name.endswith(".tmp"):
                with contextlib.suppress(OSError, ValueError), open(os.path.join(self.folder, name)) as f:
                    done[phase] += int(f.read() or 0)
        return done

    def line(self, done: dict[str, int], now: float) -> str:
        """The progress line for ``done`` at ``now`` (time.monotonic())."""
        first = next(iter(self.phases))
        for phase, n in done.items():
            if phase not in self._seen and (n > 0 or phase == first):
                self._seen[phase] = (self.started, 0) if phase == first else (now, n)
        parts = []
        for i, (phase, total) in enumerate(self.phases.items()):
            expected = f" of ~{total:,}" if total is not None else ""
            parts.append(f"{phase} {done[phase]:,}{expected}" + (" rows" if i == 0 else ""))
        for phase, n in done.items():
            if n != self._moved.get(phase, (0.0, 0))[1]:
                self._moved[phase] = (now, n)
        rate = next((r for r in reversed([self._rate(p) for p in self._seen]) if r > 0), 0.0)  # the latest phase's
        shares = [min(1.0, done[p] / t) if t else 1.0 for p, t in self.phases.items() if t is not None]
        share = sum(shares) / len(shares) if shares else 0.0
        when = time_left(share, self.started, now)
        return f"{self.label}: {', '.join(parts)}; {rate:,.0f} rows/s; {when}"

    def _rate(self, phase: str) -> float:
        """Rows/s of ``phase`` from when it was first seen to when its count last changed (0: not known yet)."""
        (since, base), (moved, n) = self._seen[phase], self._moved.get(phase, (0.0, 0))
        return (n - base) / (moved - since) if moved > since else 0.0

    def watch(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            log.info("%s", self.line(self.done(), time.monotonic()))


class _NoProgress(Progress):
    def count(self, pcoll, phase: str) -> None:
        """Counts nothing (a pipeline built without progress: tests, other callers)."""


NO_PROGRESS = _NoProgress("", {"rows": None}, 0, None)


_PREFIX = "backfill-progress-"


@contextlib.contextmanager
def progress(step: str, run_id: str, phases: dict[str, int | None], options, every: float | None):
    """A step's :class:`Progress` while its pipeline runs: ``with progress(...) as prog: ... prog.count(pcoll,
    "read")``. On a local runner with ``every`` > 0 a thread logs the line every ``every`` seconds."""
    every = PROGRESS_SECONDS if every is None else every
    local = is_local_runner(options)
    folder = None
    if local and every > 0:
        folder = pid_folder(_PREFIX, step)
    prog = Progress(f"{step} {run_id}", phases, every, folder)
    stop = threading.Event()
    thread = threading.Thread(target=prog.watch, args=(stop,), name=f"{step}-progress", daemon=True)
    if folder:
        thread.start()
    try:
        yield prog
    finally:
        stop.set()
        if folder:
            thread.join()
            shutil.rmtree(folder, ignore_errors=True)
