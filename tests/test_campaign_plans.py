"""Campaign plans that would hurt the people they reach are refused in one line (issue 11, item 12).

Always: quiet hours that leave the night for sending (swapped start and end), a wave that starts after the
deadline (a deadline before a wave), a time zone other than Beijing time unless the file names the operator's
own zone, a deadline already past on the first send day. Unless ``--allow-late-sends``: a wave planned on or
after the next wave's start, and daily caps that spill sends past the deadline or into the next wave.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import numpy as np
import pytest

from pipelines import notify
from tests.support.notify import EXAMPLE, campaign_text, line, make_campaign, write_campaign, write_classified
from transforms.notify.campaign import CampaignError, load_campaign, parse_campaign
from transforms.notify.schedule import check_spill, day_bounds

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF = "2026-11-30"
SMS_ONLY = [
    {"wave": 1, "start": "2026-12-01", "channels": ["sms"]},
    {"wave": 2, "start": "2026-12-03", "channels": ["sms"]},
]


def refused(overrides: dict, *expected) -> str:
    with pytest.raises(CampaignError) as info:
        parse_campaign(campaign_text(**overrides), "c.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("campaign c.yaml: "), message
    for part in expected:
        assert part in message, message
    return message


def test_the_shipped_example_passes_every_check():
    campaign = load_campaign(EXAMPLE)
    assert campaign.first_send_day(1, dt.date(2026, 11, 30)) == dt.date(2026, 12, 1)
    assert campaign.first_send_day(2, dt.date(2026, 12, 15)) == dt.date(2026, 12, 15)
    assert campaign.send_limit(1).last_day == dt.date(2026, 12, 14)
    assert campaign.send_limit(2).last_day == dt.date(2027, 1, 31)


# always refused, when the file is loaded ------------------------------------------------------------


def test_swapped_quiet_hours_are_refused():
    # 08:00-21:00 quiet leaves 21:00-08:00, the night, for sending: the old loader took it.
    message = refused({"quiet_hours": {"start": "08:00", "end": "21:00"}}, "quiet_hours", "the night", "swapped")
    assert "start 21:00, end 08:00" in message


@pytest.mark.parametrize(
    "quiet, expected",
    [
        ({"start": "23:30", "end": "05:00"}, "reach into the night"),  # 05:00-06:00 is night
        ({"start": "02:00", "end": "06:00"}, "reach into the night"),  # 00:00-02:00 allowed
        ({"start": "11:00", "end": "13:00"}, "the night"),  # quiet by day: sends at night
    ],
)
def test_quiet_hours_must_cover_the_night_and_leave_midday(quiet, expected):
    refused({"quiet_hours": quiet}, "quiet_hours", expected)


@pytest.mark.parametrize("quiet", [{"start": "21:00", "end": "08:00"}, {"start": "00:00", "end": "06:00"}])
def test_quiet_hours_over_the_night_are_fine(quiet):
    assert make_campaign(quiet_hours=quiet).quiet_end == dt.time.fromisoformat(quiet["end"])


def test_a_wave_after_the_deadline_is_refused():
    waves = [
        {"wave": 1, "start": "2026-12-01", "channels": ["sms"]},
        {"wave": 2, "start": "2027-02-15", "channels": ["sms"]},
    ]
    refused({"waves": waves}, "waves[1].start", "wave 2 starts on 2027-02-15, after the deadline 2027-01-31")


def test_a_deadline_before_a_wave_is_refused():
    refused({"deadline": "2026-12-10"}, "waves[1].start", "wave 2 starts on 2026-12-15, after the deadline 2026-12-10")


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Urumqi", "Asia/Hong_Kong", "UTC", "Etc/GMT-8"])
def test_a_time_zone_other_than_beijing_time_is_refused(zone):
    refused({"timezone": zone}, "timezone", "not Beijing time", f"operator_timezone: {zone}")


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "Asia/Chongqing", "PRC"])
def test_beijing_time_names_are_accepted(zone):
    assert make_campaign(timezone=zone).timezone == zone


def test_an_operator_zone_is_explicit_in_the_file():
    assert make_campaign(timezone="Europe/Berlin", operator_timezone="Europe/Berlin").timezone == "Europe/Berlin"
    refused({"timezone": "Europe/Paris", "operator_timezone": "Europe/Berlin"}, "timezone", "'Europe/Berlin'")


# when a wave is planned -------------------------------------------------------------------------------


def test_a_deadline_already_past_is_refused_even_with_late_sends_allowed():
    campaign = make_campaign()
    for allow in (False, True):
        with pytest.raises(CampaignError, match=r"deadline: 2027-01-31 has passed: wave 2 would send from 2027-02-01"):
            campaign.first_send_day(2, dt.date(2027, 2, 1), allow)
    assert campaign.first_send_day(2, dt.date(2027, 1, 31)) == dt.date(2027, 1, 31)  # the deadline day itself


def test_a_wave_planned_after_the_next_one_started_needs_the_override():
    campaign = make_campaign()
    with pytest.raises(CampaignError, match=r"--wave 1: would send from 2026-12-15 .*--allow-late-sends"):
        campaign.first_send_day(1, dt.date(2026, 12, 15))
    assert campaign.first_send_day(1, dt.date(2026, 12, 15), allow_late_sends=True) == dt.date(2026, 12, 15)
    assert campaign.first_send_day(1, dt.date(2026, 12, 14)) == dt.date(2026, 12, 14)


def _keys(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.array([rng.bytes(16) for _ in range(n)], "S16")


def test_caps_that_spill_past_the_next_wave_or_the_deadline_are_refused():
    campaign = make_campaign(daily_cap=10, waves=SMS_ONLY, deadline="2026-12-05")
    first = dt.date(2026, 12, 1)
    keys = _keys(25)  # 3 days at 10 a day: 12-01 to 12-03, and wave 2 starts on 12-03
    bounds = day_bounds(keys, 10, {}, first)
    with pytest.raises(CampaignError) as info:
        check_spill("sms", 25, 10, first, bounds, campaign.send_limit(1))
    message = str(info.value)
    assert message == (
        "campaign test.yaml: daily_cap.sms: 25 sms jobs at 10 a day need 3 send days, 2026-12-01 to 2026-12-03, "
        "past 2026-12-02 (the last day before wave 2 starts on 2026-12-03); raise daily_cap.sms, "
        "or pass --allow-late-sends"
    )
    check_spill("sms", 20, 10, first, day_bounds(keys[:20], 10, {}, first), campaign.send_limit(1))  # fits
    check_spill("sms", 25, 10, first, bounds, None)  # late sends allowed
    # Wave 2 (from 12-03) has the deadline 12-05: 3 days fit, a fourth does not; days already used count.
    second = dt.date(2026, 12, 3)
    check_spill("sms", 25, 10, second, day_bounds(keys, 10, {}, second), campaign.send_limit(2))
    used = {second: 8}
    with pytest.raises(CampaignError, match=r"past 2026-12-05 \(the deadline\)"):
        check_spill("sms", 25, 10, second, day_bounds(keys, 10, used, second), campaign.send_limit(2))


# through `backfill notify` -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    rows = [line(f"L{i:03d}", msisdn=f"138{i:08d}") for i in range(25)]
    return write_classified(tmp_path_factory.mktemp("scan"), rows)


def run_notify(capsys, classified, campaign, out, *extra) -> tuple[int, str, str]:
    args = ["--classified", classified, "--campaign", campaign, "--wave", "1", "--out", out, "--as-of", AS_OF]
    code = notify.main([*args, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"quiet_hours": {"start": "08:00", "end": "21:00"}}, "swapped"),
        ({"deadline": "2026-12-10"}, "after the deadline 2026-12-10"),
        ({"timezone": "America/New_York"}, "not Beijing time"),
        ({"deadline": "2026-11-20", "waves": [{"wave": 1, "start": "2026-11-01", "channels": ["sms"]}]}, "has passed"),
    ],
)
def test_the_dry_run_and_the_send_refuse_each_mistake_in_one_line(capsys, tmp_path, classified, overrides, expected):
    campaign = write_campaign(tmp_path / "c.yaml", **overrides)
    for extra in (("--dry-run",), ()):
        out = str(tmp_path / ("dry" if extra else "send"))
        code, _, err = run_notify(capsys, classified, campaign, out, *extra)
        assert code == 1 and err.count("\n") == 1 and err.startswith("backfill notify: error: campaign "), err
        assert expected in err and "Traceback" not in err
        assert not os.path.exists(out)  # nothing written


def test_cap_spill_is_refused_in_the_dry_run_and_the_send_unless_allowed(capsys, tmp_path, classified):
    campaign = write_campaign(tmp_path / "c.yaml", daily_cap=10, waves=SMS_ONLY)
    for extra in (("--dry-run",), ()):
        out = str(tmp_path / ("dry" if extra else "send"))
        code, _, err = run_notify(capsys, classified, campaign, out, *extra)
        assert code == 1 and err.count("\n") == 1, err
        assert "daily_cap.sms: 25 sms jobs at 10 a day need 3 send days" in err and "--allow-late-sends" in err
        assert "[while running" not in err and not os.path.exists(os.path.join(out, "jobs"))
    code, stdout, err = run_notify(capsys, classified, campaign, str(tmp_path / "late"), "--allow-late-sends")
    assert code == 0, err
    manifest = notify.read_json(os.path.join(tmp_path, "late", "manifest.json"))
    assert manifest["by_day"]["sms"] == {"2026-12-01": 10, "2026-12-02": 10, "2026-12-03": 5}


def test_the_shipped_example_plans_its_first_wave(capsys, tmp_path, classified):
    code, stdout, err = run_notify(capsys, classified, EXAMPLE, str(tmp_path / "out"), "--dry-run")
    assert code == 0, err


@pytest.mark.e2e
def test_the_real_command_prints_one_line_for_a_cap_spill(tmp_path, classified):
    campaign = write_campaign(tmp_path / "c.yaml", daily_cap=10, waves=SMS_ONLY)
    args = ["--classified", classified, "--campaign", campaign, "--wave", "1", "--out", str(tmp_path / "o")]
    proc = subprocess.run(
        [BACKFILL, "notify", *args, "--as-of", AS_OF, "--dry-run"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if not x.startswith("notify notify-")]  # the progress line
    assert len(lines) == 1 and lines[0].startswith("backfill notify: error: campaign "), proc.stderr
    assert "daily_cap.sms" in lines[0] and "[while running" not in lines[0]
