"""The report page: matplotlib charts embedded as PNG data, laid out by a Jinja2 template.

One self-contained file (``OUT/report.html``): no script, no stylesheet or
font from the network, every chart a ``data:`` image, so it opens offline
and can be mailed or archived as evidence. Charts (``report_charts.py``) are
drawn only from the tables of ``transforms/compliance/report.py`` (small:
made from the report job's facts, never from the lines); a chart whose table
is empty is replaced by a sentence saying so, never drawn from nothing.

Long tables are cut on the page, and the page says so (the CSV and Parquet
hold every row): the regions with the largest backlog and those with the
lowest completion rate, the agents that need attention.
"""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.render.report_charts import Aside, charts

__all__ = ["write_report", "render", "page_rows", "TOP_REGIONS", "WORST_REGIONS", "MAX_AGENTS", "RECENT_DAYS"]

TEMPLATE = "report.html.j2"
MAX_ROWS = 200  # other long tables are cut here on the page
TOP_REGIONS = 20  # regions with the largest backlog
WORST_REGIONS = 10  # regions with the lowest completion rate
MAX_AGENTS = 50  # agents that need attention
RECENT_DAYS = 14  # days of the daily table


def _worst(regions: pa.Table) -> pa.Table:
    """The regions with the lowest completion rate (those with lines to complete), then the largest backlog."""
    rated = regions.filter(pc.greater(regions["needed"], 0))
    order = [("completion_rate", "ascending"), ("remaining", "descending"), ("region", "ascending")]
    return rated.sort_by(order).slice(0, WORST_REGIONS)


def _attention(agents: pa.Table) -> pa.Table:
    """The agents over a threshold, or with a dead letter or a flagged line (the table is sorted already)."""
    issues = pc.greater(pc.add(agents["dead_letters"], agents["opened_flagged"]), 0)
    return agents.filter(pc.or_(agents["over_threshold"], issues))


def page_rows(tables: dict[str, pa.Table]) -> dict[str, list[dict]]:
    """The rows the page shows of each table."""
    rows = {name: table.slice(0, MAX_ROWS).to_pylist() for name, table in tables.items()}
    attention = _attention(tables["agents"])
    by_day = tables["by_day"]
    rows.update(
        by_region=tables["by_region"].slice(0, TOP_REGIONS).to_pylist(),
        worst_regions=_worst(tables["by_region"]).to_pylist(),
        agents=attention.slice(0, MAX_AGENTS).to_pylist(),
        listed=tables["agents"].filter(tables["agents"]["over_threshold"]).to_pylist(),
        recent_days=by_day.slice(max(0, by_day.num_rows - RECENT_DAYS)).to_pylist(),
    )
    rows["attention_total"] = attention.num_rows
    return rows


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value) -> str:
    return "–" if value is None else (f"{value:,}" if isinstance(value, int) else f"{value:,.1f}")


def _signed(value, pct: bool = False) -> str:
    """A change: +1,234 or −12 (percentage points with ``pct``)."""
    if value is None:
        return "–"
    text = f"{100 * value:+.1f} pt" if pct else f"{value:+,}"
    return text.replace("-", "−")


def _money(value) -> str:
    return "–" if value is None else f"¥{value:,.2f}"


def _p(value) -> str:
    return "–" if value is None else ("< 0.0001" if value < 0.0001 else f"{value:.4f}")


def render(tables: dict[str, pa.Table], header: dict, facts, thresholds, aside: Aside | None = None) -> str:
    """The page; ``aside``: charts another process draws meanwhile (:func:`report_charts.draw_aside`)."""
    from pipelines.render.pages import render as render_page

    drawn = charts(tables, facts.deadline, facts.waves, skip=aside.names if aside is not None else ())
    if aside is not None:
        drawn.update(aside.result())

    rows = page_rows(tables)
    headline = rows["completion"][0]
    return render_page(
        TEMPLATE,
        filters={"pct": _pct, "num": _num, "signed": _signed, "money": _money, "p": _p},
        header=header,
        headline=headline,
        rows=rows,
        # the past-deadline list is files the job wrote (it grows with the lines): the page gives its count
        totals={**{n: t.num_rows for n, t in tables.items()}, "past_deadline": headline["past_deadline"]},
        charts=drawn,
        listed=rows["listed"],
        thresholds=thresholds,
        facts=facts,
        limits={"rows": MAX_ROWS, "top": TOP_REGIONS, "worst": WORST_REGIONS, "agents": MAX_AGENTS},
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_report(
    out: str, tables: dict[str, pa.Table], header: dict, facts, thresholds, aside: Aside | None = None
) -> str:
    from pipelines.io.report_files import filesystem

    page = render(tables, header, facts, thresholds, aside).encode("utf-8")
    fs, root = filesystem(out)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/report.html.tmp") as handle:
        handle.write(page)
    fs.move(f"{root}/report.html.tmp", f"{root}/report.html")  # whole or not at all
    return os.path.join(out, "report.html")
