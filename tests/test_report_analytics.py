"""`backfill report` for analysts: funnel, cost, A/B variants, daily bars, provinces, data quality, the change since
the previous report, a stale merge, the live state after compact and retention; the page in a real browser.

The campaign is made by the real steps (tests/support/report.py: two waves with delivery receipts, the second
calling the lines whose SMS failed, wave 1 with three template variants). Every figure is computed again with plain
Python loops over the step outputs (tests/support/report_oracle.py), not with the code under test. Run:
.venv/bin/python -m pytest tests/test_report_analytics.py -q
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import glob
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines import report
from tests.support.report import AFTER_DEADLINE, MERGE2, VARIANTS, build_campaign, report_args
from tests.support.report_oracle import Oracle, wilson

EARLY, DAY = "2026-12-04", "2026-12-23"  # the previous report (merge-1), this one (merge-2, a day old)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    built = build_campaign(str(tmp_path_factory.mktemp("analytics")))
    path = built["path"]
    earlier = report.run(report_args(path, path("report"), EARLY, merge="merge-1"))
    manifest = report.run(report_args(path, path("report"), DAY))
    return {**built, "earlier": earlier, "manifest": manifest, "oracle": Oracle(path)}


def _csv(campaign, name: str, folder: str = "report") -> list[dict]:
    with open(campaign["path"](folder, "csv", f"{name}.csv"), encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _int(value: str) -> int | None:
    return None if value == "" else int(value)


def test_funnel_per_wave_and_channel_with_sms_segments_and_cost(campaign):
    oracle = campaign["oracle"]
    want, sends, spend = oracle.funnel(), oracle.sends(), oracle.sms_spend()
    rows = {(int(r["wave"]), r["channel"]): r for r in _csv(campaign, "funnel")}
    planned = {(w, c) for w, s in sends.items() for c, n in s["targeted"].items() if n}  # a row even if none sent
    assert set(rows) == set(want) | planned and (2, "announcement") in planned - set(want)
    for (wave, channel), got in rows.items():
        w = want.get((wave, channel), collections.Counter())
        assert _int(got["sent"]) == w["sent"], (wave, channel)
        assert _int(got["targeted"]) == sends[wave]["targeted"][channel]
        if channel == "announcement":
            assert got["delivered"] == got["registered_after"] == got["conversion"] == ""
            continue
        for column in ("delivered", "failed", "registered_after"):
            assert _int(got[column]) == w[column], (wave, channel, column)
        assert _int(got["no_receipt"]) == w["sent"] - w["delivered"] - w["failed"]
        assert float(got["conversion"]) == pytest.approx(w["registered_after"] / w["sent"], abs=1e-6)
        if channel == "sms":
            assert _int(got["fell_back_to_call"]) == w["fell_back_to_call"]
            assert _int(got["segments"]) == spend[wave][0]
            assert float(got["cost"]) == pytest.approx(spend[wave][1], abs=1e-3)
            assert float(got["cost_per_registration"]) == pytest.approx(
                spend[wave][1] / w["registered_after"], abs=1e-3
            )
        else:
            assert got["segments"] == got["cost"] == got["fell_back_to_call"] == ""
    # the data exercises every step of the funnel
    sms1 = want[(1, "sms")]
    assert sms1["delivered"] and sms1["failed"] and sms1["fell_back_to_call"] and want[(2, "call")]["sent"]
    head = campaign["manifest"]["completion"]
    assert head["sms_segments"] == sum(s for s, _ in spend.values())
    assert head["sms_cost"] == pytest.approx(sum(c for _, c in spend.values()), abs=1e-3)


def test_variants_with_their_95_percent_intervals_and_the_test_of_their_difference(campaign):
    want = campaign["oracle"].variants()
    rows = _csv(campaign, "by_variant")
    assert [(int(r["wave"]), r["variant"]) for r in rows] == [(1, name) for name, _ in VARIANTS]  # wave 2 has none
    for r in rows:
        w = want[(1, r["variant"])]
        assert float(r["weight"]) == dict(VARIANTS)[r["variant"]]
        assert (_int(r["sent"]), _int(r["registered_after"])) == (w["sent"], w["registered_after"])
        assert w["sent"] > 100 and w["registered_after"] > 10
        assert float(r["conversion"]) == pytest.approx(w["registered_after"] / w["sent"], abs=1e-6)
        assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx(w["ci"], abs=1e-6)
        assert float(r["ci_low"]) < float(r["conversion"]) < float(r["ci_high"])
        if r["variant"] == VARIANTS[0][0]:
            assert r["control"] == "true" and r["p_value"] == r["significant"] == ""
        else:
            assert float(r["p_value"]) == pytest.approx(w["p"], rel=1e-9)
            assert r["significant"] == ("true" if w["significant"] else "false")
    assert not any("variant" in f for f in campaign["manifest"]["findings"])


def test_daily_bars_and_the_change_since_the_previous_report(campaign):
    per_day = campaign["oracle"].days()
    days = _csv(campaign, "by_day")
    assert {dt.date.fromisoformat(r["day"]): int(r["registrations"]) for r in days if r["registrations"] != "0"} == (
        dict(per_day)
    )
    assert len([d for d in per_day if per_day[d]]) >= 6  # bars on several days of both rounds
    now, then = campaign["manifest"]["completion"], campaign["earlier"]["completion"]
    assert now["previous_report_date"] == EARLY and then["previous_report_date"] is None
    for figure in ("complete", "registered", "remaining", "past_deadline"):
        assert now[f"{figure}_change"] == now[figure] - then[figure]
    assert now["completion_rate_change"] == pytest.approx(now["completion_rate"] - then["completion_rate"], abs=1e-6)
    assert now["complete_change"] > 0
    history = pq.read_table(campaign["path"]("report", "parquet", "completion"))
    assert sorted(str(d) for d in history["as_of"].to_pylist()) == [EARLY, DAY]


def _divisions() -> dict[str, str]:
    from transforms.scan.policy import load_policy

    return dict(line.split("\t", 1) for line in load_policy().code_tables.divisions.splitlines())


def test_regions_have_names_and_roll_up_to_provinces_sorted_by_backlog(campaign):
    oracle, names = campaign["oracle"], _divisions()
    regions = _csv(campaign, "by_region")
    want = oracle.regions()
    assert {r["region"] or None for r in regions} == set(want) and len(regions) > 100  # every row, not a page's
    assert len(pq.read_table(campaign["path"]("report", "parquet", "by_region", f"as_of={DAY}"))) == len(regions)
    for r in regions:
        w = want[r["region"] or None]
        assert (int(r["needed"]), int(r["complete"]), int(r["remaining"])) == (
            w["needed"],
            w["complete"],
            w["remaining"],
        )
        province = r["region"][:2] + "0000"
        assert r["province"] == province and r["province_name"] == names[province]
        assert r["region_name"].startswith(names[province]) and r["region_name"].endswith(names[r["region"]])
    order = [(-int(r["remaining"]), -int(r["needed"]), r["region"]) for r in regions]
    assert order == sorted(order)
    provinces = _csv(campaign, "by_province")
    wanted = oracle.provinces()
    assert {p["province"]: (int(p["regions"]), int(p["needed"]), int(p["remaining"])) for p in provinces} == {
        k: (c["regions"], c["needed"], c["remaining"]) for k, c in wanted.items()
    }
    assert [int(p["remaining"]) for p in provinces] == sorted((int(p["remaining"]) for p in provinces), reverse=True)
    assert all(p["province_name"] == names[p["province"]] for p in provinces)


def _wilson_low(k: int, n: int) -> float:
    return wilson(k, n)[0] if n else 0.0


def test_agents_are_sorted_by_what_needs_attention(campaign):
    from transforms.scan.policy import load_policy

    agents, limits = _csv(campaign, "agents"), load_policy().agents
    for a in agents:
        failed = _wilson_low(int(a["dead_letters"]), int(a["registrations"])) / limits["max_failed_share"]
        flagged = _wilson_low(int(a["opened_flagged"]), int(a["lines_opened"])) / limits["max_flagged_share"]
        assert float(a["attention"]) == pytest.approx(max(failed, flagged), abs=1e-5), a["agent_id"]
    keys = [
        (a["over_threshold"] != "true", -float(a["attention"]), -int(a["dead_letters"]) - int(a["opened_flagged"]))
        for a in agents
    ]
    assert keys == sorted(keys) and float(agents[0]["attention"]) > 1 > float(agents[-1]["attention"])


def test_the_scans_data_quality(campaign):
    want = campaign["oracle"].quality()
    rows = {(r["kind"], r["code"]): r for r in _csv(campaign, "scan_quality")}
    assert {k: int(r["lines"]) for k, r in rows.items() if int(r["lines"])} == {k: n for k, n in want.items() if n}
    kinds = {k for k, _ in rows}
    assert {"identity_status", "reason", "flag", "needs", "dead_letter_reason"} <= kinds
    classified = sum(n for (kind, _), n in want.items() if kind == "identity_status")
    for (kind, _), r in rows.items():
        if kind != "dead_letter_reason":
            assert float(r["share"]) == pytest.approx(int(r["lines"]) / classified, abs=1e-6)


def test_a_stale_merge_is_said_on_the_page_and_in_the_exit_line(campaign, tmp_path, capfd):
    assert campaign["manifest"]["warnings"] == []  # a day old: fine
    path = campaign["path"]
    assert report.main(report_args(path, str(tmp_path / "late"), AFTER_DEADLINE)) == 0
    out = capfd.readouterr().out.strip().splitlines()
    days = (dt.date.fromisoformat(AFTER_DEADLINE) - dt.date.fromisoformat(MERGE2)).days
    assert out[-1].startswith("warning: ") and f"{days:,} days before the report date" in out[-1]
    with open(tmp_path / "late" / "report.html", encoding="utf-8") as handle:
        page = handle.read()
    assert "data-warning" in page and f"{days:,} days before the report date" in page


def test_the_live_state_after_compact_and_retention(campaign, tmp_path):
    from bench.bench_compact import write_windows
    from tests.support.compact import backfill

    path, keys = campaign["path"], campaign["keys"]
    with open(path("events", "r2.jsonl"), encoding="utf-8") as handle:
        events = [json.loads(line) for line in handle if line.strip()]
    deltas = str(tmp_path / "deltas")
    write_windows([path("merge-1", "base")], [events], deltas, keys, dt.date.fromisoformat(MERGE2))
    base = ["--base", path("merge-1", "base"), "--vault", path("merge-1", "vault"), "--keys", keys]
    proc = backfill("compact", *base, "--deltas", deltas, "--out", str(tmp_path / "compact"), "--as-of", MERGE2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    args = report_args(path, str(tmp_path / "r-compact"), DAY)
    args[args.index("--merge") + 1] = str(tmp_path / "compact")
    compacted = report.run(args)
    figures = ("needed", "complete", "registered", "remaining", "merge_as_of")
    assert {k: compacted["completion"][k] for k in figures} == {
        k: campaign["manifest"]["completion"][k] for k in figures
    }
    assert compacted["inputs"]["merge_step"] == "compact"
    retention = ["--base", path("merge-2", "base"), "--vault", path("merge-2", "vault"), "--keys", keys]
    proc = backfill("retention", *retention, "--out", str(tmp_path / "retention"), "--as-of", MERGE2, "--future-as-of")
    assert proc.returncode == 0, proc.stderr[-2000:]
    args[args.index("--merge") + 1], args[args.index("--out") + 1] = str(tmp_path / "retention"), str(tmp_path / "r")
    purged = report.run(args)
    assert purged["inputs"]["merge_step"] == "retention" and purged["completion"]["needed"] > 0
    assert purged["completion"]["merge_as_of"] == MERGE2 and purged["warnings"] == []


def test_notices_whose_campaign_cannot_be_found_fail_in_one_line(campaign, tmp_path, capfd):
    path = campaign["path"]
    folder = str(tmp_path / "notify")
    shutil.copytree(path("notify"), folder)
    for f in glob.glob(os.path.join(folder, "runs", "*.json")):
        with open(f, encoding="utf-8") as handle:
            if json.load(handle).get("mode") != "receipts":
                os.remove(f)  # the wave runs' manifests are gone; receipt runs remain
    args = ["--scan", path("scan"), "--merge", path("merge-2"), "--notify", folder, "--out", str(tmp_path / "r")]
    assert report.main(args) == 1
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "give --campaign" in err, err
    assert not os.path.exists(tmp_path / "r" / "report.html")
    # a campaign file does not stand in for the runs: the notices are still not shown to be of that campaign
    code = report.main([*args[:-1], str(tmp_path / "r2"), "--campaign", campaign["campaign"]])
    assert code == 1 and "holds no run of campaign rn-2026-q4" in capfd.readouterr().err


def test_the_charts_draw_chinese_text_with_a_cjk_font(campaign):
    import warnings

    from pipelines.render.report_charts import charts, cjk_font
    from transforms.compliance.report import TABLES

    assert cjk_font()  # fonts-noto-cjk (dev/system-packages.sh)
    tables = {
        n: pq.read_table(campaign["path"]("report", "parquet", n, f"as_of={DAY}"))
        for n in TABLES
        if n != "past_deadline"
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drawn = charts(tables, None, [])
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert all(drawn.values()), [k for k, v in drawn.items() if not v]
    assert np.any([n for n in tables["by_province"]["province_name"].to_pylist() if n])


# -- the page in a real browser ----------------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's chromium, chromium-driver


def _pixels(element, where) -> np.ndarray:
    from PIL import Image

    element.parent.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    where.write_bytes(element.screenshot_as_png)
    return np.asarray(Image.open(where).convert("RGB"))


def _inked(pixels: np.ndarray) -> float:
    return float(np.mean(np.any(pixels.reshape(-1, 3) < 200, axis=1)))  # share of pixels that are not white-ish


def _driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1200,1600",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _check_charts(driver, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    charts = driver.find_elements(By.CSS_SELECTOR, "img.chart")
    ids = ["chart-completion", "chart-funnel", "chart-variants", "chart-provinces", "chart-backlog"]
    assert [c.get_attribute("id") for c in charts] == ids
    for chart in charts:
        assert driver.execute_script("return arguments[0].complete ? arguments[0].naturalWidth : 0", chart) >= 300
        pixels = _pixels(chart, tmp_path / f"{chart.get_attribute('id')}.png")
        assert 0.01 < _inked(pixels) < 0.9, chart.get_attribute("id")
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # bars, lines, text: not a blank box


def _check_chinese(driver, tmp_path) -> None:
    """Province names are drawn as glyphs, not boxes: two different names of the same length differ in pixels
    (missing glyphs would all be the same box), and the CJK font is the one used."""
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, "#table-provinces td.zh")
    by_length: dict[int, list] = {}
    for cell in cells:
        by_length.setdefault(len(cell.text), []).append(cell)
    a, b = next(group[:2] for n, group in sorted(by_length.items()) if n >= 2 and len(group) >= 2)
    first, second = (_pixels(c, tmp_path / f"zh-{i}.png") for i, c in enumerate((a, b)))
    h, w = min(first.shape[0], second.shape[0]), min(first.shape[1], second.shape[1])
    assert a.text != b.text and all("\u4e00" <= ch <= "\u9fff" for ch in a.text + b.text)
    assert _inked(first) > 0.01 and _inked(second) > 0.01
    assert np.mean(np.any(first[:h, :w] != second[:h, :w], axis=2)) > 0.02, (a.text, b.text)
    assert driver.execute_script("return document.fonts.check('16px \"Noto Sans CJK SC\"', arguments[0])", a.text)


def _check_figures(driver, campaign) -> None:
    from selenium.webdriver.common.by import By

    head = campaign["manifest"]["completion"]
    assert driver.find_element(By.ID, "completion-rate").text == f"{100 * head['completion_rate']:.1f}%"
    assert driver.find_element(By.ID, "since-complete").text == f"+{head['complete_change']:,}"
    assert driver.find_element(By.ID, "sms-cost").text == f"¥{head['sms_cost']:,.2f}"
    for r in _csv(campaign, "funnel"):
        cells = driver.find_elements(
            By.CSS_SELECTOR, f"#table-funnel tr[data-wave='{r['wave']}'][data-channel='{r['channel']}'] td"
        )
        shown = [c.text for c in cells]
        assert shown[3] == f"{int(r['sent']):,}" and (
            r["channel"] == "announcement" or shown[8] == f"{int(r['registered_after']):,}"
        )
        assert r["channel"] != "sms" or (
            shown[5] == f"{int(r['failed']):,}" and shown[11] == f"¥{float(r['cost']):,.2f}"
        )
    for r in _csv(campaign, "by_variant"):
        row = driver.find_element(By.CSS_SELECTOR, f"#table-variants tr[data-variant='{r['variant']}']").text
        low, high = (f"{100 * float(r[k]):.1f}%" for k in ("ci_low", "ci_high"))
        assert f"{low} – {high}" in row and f"{int(r['registered_after']):,}" in row
    days = driver.find_elements(By.CSS_SELECTOR, "#table-days tr")
    assert len(days) == 15 and days[-1].text.startswith(DAY)  # the last two weeks, today last
    names = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#table-provinces td.zh")]
    assert names == [r["province_name"] for r in _csv(campaign, "by_province")]


@pytest.mark.e2e
def test_the_page_shows_the_new_figures_and_chinese_text_in_headless_chromium(campaign, tmp_path):
    driver = _driver(tmp_path)
    try:
        driver.get("file://" + os.path.abspath(campaign["path"]("report", "report.html")))
        _check_charts(driver, tmp_path)
        _check_chinese(driver, tmp_path)
        _check_figures(driver, campaign)
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [name for name in loaded if not name.startswith("data:")] == []  # nothing fetched: self-contained
    finally:
        driver.quit()
