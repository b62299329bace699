"""The report page: matplotlib charts embedded as PNG data, laid out by a Jinja2 template.

One self-contained file (``OUT/report.html``): no script, no stylesheet or
font from the network, every chart a ``data:`` image, so it opens offline
and can be mailed or archived as evidence. Charts are drawn only from the
tables of ``transforms/compliance/report.py`` (small: made from the report job's facts,
never from the lines); a chart whose table is empty is replaced by a sentence
saying so, never drawn from nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import os

import pyarrow as pa

__all__ = ["write_report", "charts", "render"]

TEMPLATE = "report.html.j2"
MAX_ROWS = 200  # longer tables are cut on the page (the CSV and Parquet hold every row)


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
    fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _completion_curve(by_day: pa.Table, deadline: dt.date | None, waves) -> str:
    fig, ax = _figure()
    days = by_day["day"].to_pylist()
    rates = [None if r is None else 100 * r for r in by_day["completion_rate"].to_pylist()]
    ax.plot(days, rates, color="#1f6fb2", linewidth=2, marker="o" if len(days) < 40 else None, markersize=3)
    for number, start in waves:
        ax.axvline(start, color="#888", linestyle=":", linewidth=1)
        ax.annotate(f"wave {number}", (start, 2), fontsize=8, color="#555", rotation=90, va="bottom", ha="right")
    if deadline is not None and days and days[0] <= deadline <= days[-1]:
        ax.axvline(deadline, color="#c0392b", linestyle="--", linewidth=1)
        ax.annotate("deadline", (deadline, 2), fontsize=8, color="#c0392b", rotation=90, va="bottom", ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of needed lines complete")
    fig.autofmt_xdate()
    return _png(fig)


def _wave_funnel(by_wave: pa.Table) -> str:
    fig, ax = _figure(height=2.8)
    labels = [("before any notice" if w == 0 else f"wave {w}") for w in by_wave["wave"].to_pylist()]
    notified = by_wave["notified"].to_pylist()
    registered = by_wave["registered_after"].to_pylist()
    y = range(len(labels))
    ax.barh([i + 0.2 for i in y], notified, height=0.4, color="#9ecae1", label="lines notified")
    ax.barh([i - 0.2 for i in y], registered, height=0.4, color="#1f6fb2", label="registered after this notice")
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


def _backlog(backlog: pa.Table) -> str:
    rows = [r for r in backlog.to_pylist() if r["kind"] == "reason"][:12]
    fig, ax = _figure(height=0.3 * len(rows) + 1.0)
    ax.barh([r["code"] for r in rows], [r["lines"] for r in rows], color="#e6550d")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("lines not complete")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def charts(tables: dict[str, pa.Table], deadline, waves) -> dict[str, str | None]:
    """Chart name -> PNG data URL, or None where the table gives nothing to draw."""
    needed = tables["completion"]["needed"][0].as_py()
    out: dict[str, str | None] = {"completion_curve": None, "wave_funnel": None, "backlog": None}
    if needed:
        out["completion_curve"] = _completion_curve(tables["by_day"], deadline, waves)
    if tables["by_wave"].num_rows and sum(tables["by_wave"]["notified"].to_pylist()):
        out["wave_funnel"] = _wave_funnel(tables["by_wave"])
    if any(r == "reason" for r in tables["backlog_by_reason"]["kind"].to_pylist()):
        out["backlog"] = _backlog(tables["backlog_by_reason"])
    return out


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value) -> str:
    return "–" if value is None else (f"{value:,}" if isinstance(value, int) else f"{value:,.1f}")


def render(tables: dict[str, pa.Table], header: dict, facts, thresholds) -> str:
    from pipelines.render.pages import render as render_page

    rows = {name: table.slice(0, MAX_ROWS).to_pylist() for name, table in tables.items()}
    agents = tables["agents"]
    listed = agents.filter(agents["over_threshold"]).to_pylist()
    headline = rows["completion"][0]
    return render_page(
        TEMPLATE,
        filters={"pct": _pct, "num": _num},
        header=header,
        headline=headline,
        rows=rows,
        # the past-deadline list is files the job wrote (it grows with the lines): the page gives its count
        totals={**{n: t.num_rows for n, t in tables.items()}, "past_deadline": headline["past_deadline"]},
        charts=charts(tables, facts.deadline, facts.waves),
        listed=listed,
        thresholds=thresholds,
        facts=facts,
        max_rows=MAX_ROWS,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_report(out: str, tables: dict[str, pa.Table], header: dict, facts, thresholds) -> str:
    from pipelines.io.report_files import filesystem

    page = render(tables, header, facts, thresholds).encode("utf-8")
    fs, root = filesystem(out)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/report.html.tmp") as handle:
        handle.write(page)
    fs.move(f"{root}/report.html.tmp", f"{root}/report.html")  # whole or not at all
    return os.path.join(out, "report.html")
