"""The end of every progress line: how far along a step is and the time left, from its share done.

Shared by the Beam jobs' progress (``pipelines/progress.py``) and the runs without Beam (the report's
and the scan's in-process runs: :class:`InProcessProgress`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

__all__ = ["time_left", "InProcessProgress"]

log = logging.getLogger("backfill")


def time_left(share: float, started: float, now: float) -> str:
    """``"42% done, ~0:01:23 left"`` from the share done (0..1) and the monotonic start and current times."""
    if share <= 0:
        return "estimating the time left"
    if share >= 1:
        return "finishing"
    left = int((now - started) * (1 - share) / share)
    return f"{int(100 * share)}% done, ~{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} left"


class InProcessProgress:
    """A step's progress line every ``every`` seconds, from a thread, for a run without Beam: rows done in
    each of its ``phases`` (the first: rows read, as ``done``; others through :meth:`add`) of ~``total``,
    in the Beam jobs' format (pipelines/progress.py)."""

    def __init__(self, label: str, total: int, every: float, phases: tuple[str, ...] = ("read",)):
        self.label, self.total, self.every, self.logged = label, total, every, False
        self.counts = dict.fromkeys(phases, 0)
        self._first = phases[0]
        self.started = time.monotonic()
        self._stop = threading.Event()

    @property
    def done(self) -> int:
        return self.counts[self._first]

    @done.setter
    def done(self, rows: int) -> None:
        self.counts[self._first] = rows

    def add(self, phase: str, rows: int) -> None:
        self.counts[phase] += rows

    def line(self, now: float) -> str:
        shares = [min(1.0, n / self.total) if self.total else 1.0 for n in self.counts.values()]
        share = sum(shares) / len(shares)
        rate = self.done / (now - self.started) if now > self.started else 0.0
        when = time_left(share, self.started, now)
        phases = [f"{name} {n:,} of ~{self.total:,}" for name, n in self.counts.items()]
        phases[0] += " rows"
        return f"{self.label}: {', '.join(phases)}; {rate:,.0f} rows/s; {when}"

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            log.info("%s", self.line(time.monotonic()))
            self.logged = True

    @contextlib.contextmanager
    def running(self):
        thread = threading.Thread(target=self._watch, name=f"{self.label}-progress", daemon=True)
        if self.every > 0:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            if self.every > 0:
                thread.join()
                if not self.logged:  # a run shorter than one period still says how far it got
                    log.info("%s", self.line(time.monotonic()))
