"""The report's charts: matplotlib figures on the Agg canvas, as PNG ``data:`` URLs, Chinese text included.

    urls = charts(tables, deadline, waves)    # chart name -> data URL, or None when its table is empty
    aside = draw_aside(tables, deadline, waves, ("funnel",))   # some drawn meanwhile by a forked process
    urls = {**charts(tables, deadline, waves, skip=aside.names), **aside.result()}

Text is drawn with DejaVu Sans and, for the characters it lacks (province
names, the Chinese of a label), Noto Sans CJK (Debian's ``fonts-noto-cjk``,
which ``dev/system-packages.sh`` installs): matplotlib falls back glyph by
glyph along the family list. Without a CJK font the province chart is
labelled by code rather than drawn with empty boxes (:func:`cjk_font`).
Nothing here sees a line: every chart is drawn from a table of the report.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import io
import os
import pickle
import select
import signal
import time
from typing import Callable

import pyarrow as pa

__all__ = ["charts", "cjk_font", "CJK_FAMILY", "CHARTS", "draw_aside", "Aside"]

CHARTS = ("completion_curve", "funnel", "variants", "provinces", "backlog")
ASIDE_SECONDS = 120  # a forked chart process that has not finished by then is killed, its charts drawn here

CJK_FAMILY = "Noto Sans CJK SC"
_BLUE, _LIGHT, _RED, _ORANGE, _GREEN = "#1f6fb2", "#9ecae1", "#c0392b", "#e6550d", "#31a354"


@functools.lru_cache(maxsize=1)
def cjk_font() -> bool:
    """A CJK font matplotlib can use is installed."""
    from matplotlib import font_manager

    try:
        font_manager.findfont(font_manager.FontProperties(family=CJK_FAMILY), fallback_to_default=False)
    except ValueError:
        return False
    return True


def _families() -> list[str]:
    return ["DejaVu Sans", CJK_FAMILY] if cjk_font() else ["DejaVu Sans"]


def _plain(label: str) -> str:
    """A label drawn as it is written: matplotlib reads text between two ``$`` as mathtext, so a name from the
    policy's division table such as ``$\\frac{a}$`` failed the whole report (a ValueError) and ``$x$`` drew math."""
    return label.replace("$", r"\$")


def _figure(width: float = 7.5, height: float = 3.2):
    """A figure on the Agg canvas, without pyplot (no global state, no GUI backend, a faster import)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    return fig, ax


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    # Laid out once: no layout engine left, so savefig draws the figure once, not a dry run first (same pixels).
    fig.set_layout_engine(None)
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _completion(by_day: pa.Table, deadline: dt.date | None, waves) -> str:
    """Registrations per day as bars (left axis) beside the cumulative completion curve (right axis)."""
    fig, bars = _figure(height=3.4)
    days = by_day["day"].to_pylist()
    bars.bar(days, by_day["registrations"].to_pylist(), color=_LIGHT, width=0.8, label="registrations per day")
    bars.set_ylabel("registrations per day")
    curve = bars.twinx()
    rates = [None if r is None else 100 * r for r in by_day["completion_rate"].to_pylist()]
    curve.plot(days, rates, color=_BLUE, linewidth=2, label="% of needed lines complete (cumulative)")
    curve.set_ylim(0, 100)
    curve.set_ylabel("% complete")
    curve.spines[["top"]].set_visible(False)
    for number, start in waves:
        bars.axvline(start, color="#888", linestyle=":", linewidth=1)
        bars.annotate(f"wave {number}", (start, 0), fontsize=8, color="#555", rotation=90, va="bottom", ha="right")
    if deadline is not None and days and days[0] <= deadline <= days[-1]:
        bars.axvline(deadline, color=_RED, linestyle="--", linewidth=1)
        bars.annotate("deadline", (deadline, 0), fontsize=8, color=_RED, rotation=90, va="bottom", ha="right")
    handles = [h for ax in (bars, curve) for h in ax.get_legend_handles_labels()[0]]
    bars.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8, frameon=False)
    fig.autofmt_xdate()
    return _png(fig)


def _funnel(funnel: pa.Table) -> str:
    """Per wave and line channel: sent, delivered, failed, registered after it."""
    rows = [r for r in funnel.to_pylist() if r["channel"] != "announcement"]
    fig, ax = _figure(height=0.55 * len(rows) + 1.2)
    labels = [f"wave {r['wave']} {r['channel']}" for r in rows]
    stages = (("sent", _LIGHT), ("delivered", _GREEN), ("failed", _RED), ("registered_after", _BLUE))
    height = 0.8 / len(stages)
    for i, (stage, colour) in enumerate(stages):
        ys = [k + (i - 1.5) * height for k in range(len(rows))]
        ax.barh(ys, [r[stage] or 0 for r in rows], height=height, color=colour, label=stage.replace("_", " "))
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


def _variants(by_variant: pa.Table) -> str:
    """Conversion per variant with its 95 % interval."""
    rows = [r for r in by_variant.to_pylist() if r["conversion"] is not None]
    fig, ax = _figure(height=0.45 * len(rows) + 1.2)
    labels = [_plain(f"wave {r['wave']} {r['variant']}") for r in rows]
    x = [100 * r["conversion"] for r in rows]
    low = [100 * (r["conversion"] - r["ci_low"]) for r in rows]
    high = [100 * (r["ci_high"] - r["conversion"]) for r in rows]
    colours = [_ORANGE if r["significant"] else _BLUE for r in rows]
    ax.errorbar(x, range(len(rows)), xerr=[low, high], fmt="none", ecolor="#555", capsize=4)
    ax.scatter(x, range(len(rows)), color=colours, zorder=3)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("registered after the notice, % (95 % interval)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def _provinces(by_province: pa.Table, limit: int = 15) -> str:
    """The provinces with the largest backlog: complete and remaining lines, by name."""
    rows = by_province.slice(0, limit).to_pylist()
    fig, ax = _figure(height=0.3 * len(rows) + 1.2)
    names = [_plain((r["province_name"] if cjk_font() else None) or r["province"] or "(no province)") for r in rows]
    ax.barh(names, [r["remaining"] for r in rows], color=_ORANGE, label="remaining")
    ax.barh(names, [r["complete"] for r in rows], left=[r["remaining"] for r in rows], color=_LIGHT, label="complete")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("lines that needed registration")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


def _backlog(backlog: pa.Table) -> str:
    rows = [r for r in backlog.to_pylist() if r["kind"] == "reason"][:12]
    fig, ax = _figure(height=0.3 * len(rows) + 1.0)
    ax.barh([_plain(r["code"]) for r in rows], [r["lines"] for r in rows], color=_ORANGE)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("lines not complete")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def charts(tables: dict[str, pa.Table], deadline, waves, skip=()) -> dict[str, str | None]:
    """Chart name -> PNG data URL, or None where the table gives nothing to draw; ``skip``: names left out."""
    import matplotlib

    names = [name for name in CHARTS if name not in skip]
    if not names:
        return {}
    needed = bool(tables["completion"]["needed"][0].as_py())
    line_jobs = [r for r in tables["funnel"].to_pylist() if r["channel"] != "announcement"]
    wanted = {
        "completion_curve": lambda: needed,
        "funnel": lambda: any(r["sent"] for r in line_jobs),
        "variants": lambda: any(c is not None for c in tables["by_variant"]["conversion"].to_pylist()),
        "provinces": lambda: needed,
        "backlog": lambda: "reason" in tables["backlog_by_reason"]["kind"].to_pylist(),
    }
    draw = {
        "completion_curve": lambda: _completion(tables["by_day"], deadline, waves),
        "funnel": lambda: _funnel(tables["funnel"]),
        "variants": lambda: _variants(tables["by_variant"]),
        "provinces": lambda: _provinces(tables["by_province"]),
        "backlog": lambda: _backlog(tables["backlog_by_reason"]),
    }
    with matplotlib.rc_context({"font.family": _families()}):
        return {name: draw[name]() if wanted[name]() else None for name in names}


class Aside:
    """Charts drawn by another process meanwhile: :meth:`result` waits for their URLs (or draws them here)."""

    def __init__(self, names: tuple[str, ...], pid: int | None, pipe: int | None, here: Callable[[], dict]):
        self.names, self._pid, self._pipe, self._here = names, pid, pipe, here

    def result(self) -> dict[str, str | None]:
        data, status = self._wait()
        if status != 0 or not data:  # not forked, or it failed: drawn here (where an error is said)
            return self._here()
        return pickle.loads(data)

    def close(self) -> None:
        """Wait for the forked process if :meth:`result` was not asked for (a step failed meanwhile)."""
        self._wait()

    def _wait(self) -> tuple[bytes, int]:
        """The forked process's bytes and exit status; one that has not finished within ``ASIDE_SECONDS``
        (forked beside threads, it could be stuck on a lock one of them held) is killed: drawn here then."""
        if self._pid is None:
            return b"", -1
        pid, self._pid = self._pid, None
        chunks, deadline = [], time.monotonic() + ASIDE_SECONDS
        with os.fdopen(self._pipe, "rb", buffering=0) as pipe:
            while True:
                ready, _, _ = select.select([pipe], [], [], max(deadline - time.monotonic(), 0))
                chunk = pipe.read(1 << 20) if ready else None
                if not chunk:
                    break
                chunks.append(chunk)
        if chunk is None:  # timed out
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return b"", -1
        return b"".join(chunks), os.waitpid(pid, 0)[1]


def draw_aside(tables: dict[str, pa.Table], deadline, waves, names: tuple[str, ...]) -> Aside:
    """Start drawing the charts ``names`` in a forked process (this one's modules and fonts already loaded),
    while this one draws the others: the same pixels, the same PNG bytes, in less time on a machine of two
    cores or more. Where a process cannot be forked, they are drawn here when asked for."""
    skip = tuple(name for name in CHARTS if name not in names)

    def here() -> dict:
        return charts(tables, deadline, waves, skip=skip)

    if not hasattr(os, "fork"):
        return Aside(tuple(names), None, None, here)
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read)
        os.close(write)
        return Aside(tuple(names), None, None, here)
    if pid == 0:  # the forked process: draw, hand the URLs over, leave without running this process's exit code
        status = 1
        try:
            os.close(read)
            with os.fdopen(write, "wb") as pipe:
                pipe.write(pickle.dumps(here()))
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    return Aside(tuple(names), pid, read, here)
