"""The end of every progress line: how far along a step is and the time left, from its share done.

Shared by the Beam jobs' progress (``pipelines/progress.py``) and the report's in-process run
(``pipelines/report_local.py``), which imports no Beam.
"""

from __future__ import annotations

__all__ = ["time_left"]


def time_left(share: float, started: float, now: float) -> str:
    """``"42% done, ~0:01:23 left"`` from the share done (0..1) and the monotonic start and current times."""
    if share <= 0:
        return "estimating the time left"
    if share >= 1:
        return "finishing"
    left = int((now - started) * (1 - share) / share)
    return f"{int(100 * share)}% done, ~{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} left"
