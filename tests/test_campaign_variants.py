"""Campaign A/B variants: the YAML is checked in one line, lines split by weight, stably, and the jobs carry it.

The split is checked against the weights within a binomial bound computed here (five standard deviations
of each variant's count), and its stability across processes, batch splits and waves.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that

from tests.support.notify import campaign_dict, campaign_text, classified_table, line, make_campaign
from tests.support.rows import RUNNER
from transforms.notify.campaign import CampaignError, parse_campaign
from transforms.notify.composite import BuildNotificationJobs
from transforms.notify.variants import Variant, assign_variants, variant_key
from transforms.scan.keyed_hash import keyed_hash

FIRST = dt.date(2026, 12, 1)
SHORT_SMS = "请于{deadline}前到营业厅为{msisdn_masked}办理补登记（{region}），免费。"
SHORT_CALL = "您好，号码{msisdn_masked}请于{deadline}前免费办理补登记。"
VARIANTS = {"control": {}, "short": {"sms": {"zh-CN": SHORT_SMS}, "call": {"zh-CN": SHORT_CALL}}}
SPLIT = [{"name": "control", "weight": 1}, {"name": "short", "weight": 3}]
DIVISIONS = "110000\t北京市\n110105\t朝阳区\n310000\t上海市\n310115\t浦东新区\n"


def with_variants(split=None, variants=None, **overrides):
    waves = [
        {"wave": 1, "start": "2026-12-01", "channels": ["sms", "call", "announcement"], "variants": split or SPLIT},
        {"wave": 2, "start": "2026-12-15", "channels": ["sms", "call"]},
    ]
    return {"variants": variants if variants is not None else VARIANTS, "waves": waves, **overrides}


def refused(overrides: dict, *expected) -> str:
    with pytest.raises(CampaignError) as info:
        parse_campaign(campaign_text(**overrides), "c.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("campaign c.yaml: "), message
    for part in expected:
        assert part in message, message
    return message


def test_a_wave_names_its_variants_and_weights():
    c = make_campaign(**with_variants(), daily_cap=1000)
    assert c.wave(1).variants == (Variant("control", 1), Variant("short", 3)) and c.wave(2).variants == ()
    mask = {"msisdn_masked": "138****8000", "region": "北京市朝阳区"}
    assert c.template("sms", 1, variant="short").render_one(mask).startswith("【某某通信】请于2027年1月31日前")
    assert c.template("sms", 1, variant="control").render_one(mask) == c.template("sms", 1).render_one(mask)
    assert c.template("announcement", 1, variant="short").render_one({"region": "x", "count": "1"}).startswith("本地区")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (with_variants([{"name": "control", "weight": 0}, {"name": "short", "weight": 1}]), ("variants[0].weight",)),
        (with_variants([{"name": "control", "weight": -2}]), ("waves[0].variants[0].weight", "more than 0")),
        (with_variants([{"name": "control", "weight": float("inf")}]), ("waves[0].variants[0].weight", "positive")),
        (with_variants([{"name": "control", "weight": "1"}]), ("waves[0].variants[0].weight",)),
        (
            with_variants([{"name": "short", "weight": 1}, {"name": "short", "weight": 2}]),
            ("variants[1].name", "twice"),
        ),
        (
            with_variants([{"name": "long", "weight": 1}]),
            ("variants[0].name", "'long' is not defined", "control, short"),
        ),
        (with_variants([{"name": "control"}]), ("waves[0].variants[0]", "weight", "missing")),
        (with_variants([{"name": "control", "weight": 1, "colour": "red"}]), ("variants[0].colour", "unknown key")),
        (with_variants([{"name": "no spaces", "weight": 1}], {"no spaces": {}}), ("no spaces",)),
        (
            with_variants(variants={"control": {}, "x": {"announcement": {"zh-CN": "免费"}}}),
            ("variants.x.announcement",),
        ),
        (with_variants(variants={"control": {}, "short": {"sms": {"en": "Free."}}}), ("variants.short.sms", "zh-CN")),
        (
            with_variants(variants={"control": {}, "short": {"sms": {"zh-CN": "免费，请缴纳10元。"}}}),
            ("variants.short.sms.zh-CN", "Art. 23"),
        ),
        (
            with_variants(variants={"control": {}, "short": {"call": {"zh-CN": "请办理{name}，免费"}}}),
            ("variants.short.call.zh-CN", "{name}"),
        ),
        (
            with_variants(variants={"control": {}, "short": {"sms": {"zh-CN": "免费" + "办" * 300}}}),
            ("variants.short.sms.zh-CN", "max_sms_parts 3"),
        ),
    ],
)
def test_bad_variants_are_refused_in_one_line(overrides, expected):
    refused(overrides, *expected)


def test_variants_need_a_line_channel_and_unique_definitions():
    waves = [{"wave": 1, "start": "2026-12-01", "channels": ["announcement"], "variants": SPLIT}]
    refused({"variants": VARIANTS, "waves": waves}, "waves[0].variants", "no sms or call")
    text = campaign_text(**with_variants()) + "variants: {short: {}}\n"  # a second `variants:` block
    with pytest.raises(CampaignError, match=r"'variants' is given twice"):
        parse_campaign(text, "c.yaml")


def expected_share(weights, i):
    return weights[i] / sum(weights)


@pytest.mark.parametrize("weights", [(1, 1), (1, 3), (1, 2, 1), (0.7, 0.2, 0.1)])
def test_the_split_follows_the_weights_within_a_binomial_bound(weights):
    n = 40_000
    ids = pa.array([f"L{i:08d}" for i in range(n)])
    variants = tuple(Variant(f"v{i}", w) for i, w in enumerate(weights))
    counts = np.bincount(assign_variants(ids, "rn-test", variants), minlength=len(weights))
    for i, got in enumerate(counts):
        p = expected_share(weights, i)
        bound = 5 * math.sqrt(n * p * (1 - p))  # five standard deviations of a binomial count
        assert abs(got - n * p) <= bound, (weights, i, got, n * p, bound)


def test_the_rule_is_the_keyed_hash_against_cumulative_weights():
    """Recomputed here from the rule: the tag's first 53 bits as a fraction of 2**53, in the cumulative shares."""
    ids = pa.array([f"M{i:05d}" for i in range(5_000)] + [None])
    weights = (2, 1, 1)
    tags = keyed_hash(pa.array([v or "" for v in ids.to_pylist()]), variant_key("rn-test")).to_pylist()
    shares = np.cumsum(weights) / sum(weights)
    expected = [int(np.searchsorted(shares, (int.from_bytes(t[:8], "big") >> 11) / 2**53, side="right")) for t in tags]
    got = assign_variants(ids, "rn-test", tuple(Variant(str(i), w) for i, w in enumerate(weights)))
    assert got.tolist() == expected


def test_the_split_is_stable_across_processes_batches_and_campaigns():
    ids = [f"L{i:06d}" for i in range(20_000)]
    variants = (Variant("a", 1), Variant("b", 1))
    here = assign_variants(pa.array(ids), "rn-2026-q4", variants)
    chunked = assign_variants(pa.chunked_array([ids[:7_777], ids[7_777:]]), "rn-2026-q4", variants)
    sliced = np.concatenate(
        [assign_variants(pa.array(ids[i : i + 999]), "rn-2026-q4", variants) for i in range(0, 20_000, 999)]
    )
    assert here.tolist() == chunked.tolist() == sliced.tolist()
    code = (
        "import pyarrow as pa, sys\n"
        "from transforms.notify.variants import Variant, assign_variants\n"
        "ids = [f'L{i:06d}' for i in range(20_000)]\n"
        "print(''.join(map(str, assign_variants(pa.array(ids), 'rn-2026-q4', (Variant('a', 1), Variant('b', 1))))))\n"
    )
    for seed in ("0", "12345"):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "".join(map(str, here.tolist()))
    # another campaign draws afresh: agreement with this one is chance (1/2), not identity
    other = assign_variants(pa.array(ids), "rn-2027-q1", variants)
    agree = int((other == here).sum())
    assert abs(agree - 10_000) <= 5 * math.sqrt(20_000 * 0.25)


def rows_of(tables):
    return [r for t in tables for r in t.to_pylist()]


def test_jobs_carry_their_variant_and_its_texts():
    """Every line job: its variant (recomputed from the rule) and that variant's text, the region named;
    announcements: no variant; the counts by variant add up to the jobs."""
    campaign = make_campaign(**with_variants(), daily_cap={"sms": 500, "call": 500, "announcement": 5})
    rows = [line(f"M{i:03d}", f"1380013{i:04d}", region="110105" if i % 2 else "310115") for i in range(300)]
    rows += [line(f"F{i:02d}", f"0106552{i:04d}", "FIXED", region="310115") for i in range(40)]
    ids = pa.array([r["line_id"] for r in rows])
    split = dict(zip(ids.to_pylist(), assign_variants(ids, "rn-test", campaign.wave(1).variants).tolist()))
    names = {"110105": "北京市朝阳区", "310115": "上海市浦东新区"}

    def texts(channel):
        def check(tables):
            got = rows_of(tables)
            assert len(got) == (300 if channel == "sms" else 40)
            for r in got:
                variant = ("control", "short")[split[r["line_id"]]]
                values = {"msisdn_masked": r["msisdn_masked"], "region": names[r["region"]]}
                assert r["variant"] == variant
                body = r["text"] if channel == "sms" else r["script"]
                assert body == campaign.template(channel, 1, variant=variant).render_one(values)
                if channel == "sms":
                    assert r["units"] == len(body) and r["segments"] == (
                        1 if len(body) <= 70 else math.ceil(len(body) / 67)
                    )
            shares = {v: sum(r["variant"] == v for r in got) for v in ("control", "short")}
            assert shares["short"] > shares["control"] > 0  # weights 1:3

        return check

    def announced(tables):
        got = rows_of(tables)
        assert {r["region"]: r["variant"] for r in got} == {"110105": None, "310115": None}
        assert all(names[r["region"]] in r["text"] and r["region"] not in r["text"] for r in got)

    def counted(items):
        (counts,) = items
        expected = {}
        for line_id, i in split.items():
            channel = "sms" if line_id.startswith("M") else "call"
            by = expected.setdefault(("control", "short")[i], {})
            by[channel] = by.get(channel, 0) + 1
        assert counts["variants"] == expected, counts["variants"]

    with BeamTestPipeline(runner=RUNNER) as p:
        lines = p | beam.Create([classified_table(rows[:170]), classified_table(rows[170:])]).with_output_types(
            pa.Table
        )
        out = {"lines": lines} | "Build" >> BuildNotificationJobs(campaign, 1, FIRST, divisions=DIVISIONS)
        assert_that(out.sms, texts("sms"), label="assert:sms")
        assert_that(out.call, texts("call"), label="assert:call")
        assert_that(out.announcement, announced, label="assert:announcement")
        assert_that(out.counts, counted, label="assert:counts")


def test_a_wave_without_variants_gives_null_variants():
    campaign = make_campaign(templates=campaign_dict()["templates"])
    with BeamTestPipeline(runner=RUNNER) as p:
        lines = p | beam.Create([classified_table([line("M1"), line("F1", "01065529988", "FIXED")])]).with_output_types(
            pa.Table
        )
        out = {"lines": lines} | "Build" >> BuildNotificationJobs(campaign, 1, FIRST)

        def null_variants(tables):
            got = rows_of(tables)
            assert got and all(r["variant"] is None for r in got)

        for name in ("sms", "call", "announcement"):
            assert_that(getattr(out, name), null_variants, label=f"assert:{name}")
