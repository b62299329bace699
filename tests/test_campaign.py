"""Campaign files: the shipped example loads; every bad key is refused in one line naming it."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from tests.support.notify import EXAMPLE, SMS_ZH, campaign_dict, campaign_text, make_campaign, write_campaign
from transforms.notify.campaign import CampaignError, load_campaign, parse_campaign


def refused(text_or_overrides, *expected) -> str:
    text = text_or_overrides if isinstance(text_or_overrides, str) else campaign_text(**text_or_overrides)
    with pytest.raises(CampaignError) as info:
        parse_campaign(text, "c.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("campaign c.yaml:")
    for part in expected:
        assert part in message, message
    return message


def test_example_loads_in_chinese_with_english_beside():
    c = load_campaign(EXAMPLE)
    assert c.campaign_id == "rn-2026-q4" and c.locale == "zh-CN" and c.timezone == "Asia/Shanghai"
    assert c.wave(1).channels == ("sms", "call", "announcement") and c.wave(2).start == dt.date(2026, 12, 15)
    assert set(c.templates["sms"]) == {"zh-CN", "en"} and c.min_days_between == 7
    sms = c.template("sms", 1).render_one({"msisdn_masked": "138****8000"})
    assert sms.startswith("【某某通信】") and "免费" in sms and "2027年1月31日" in sms and "138****8000" in sms
    english = c.template("sms", 1, "en").render_one({"msisdn_masked": "138****8000"})
    assert english.startswith("【Moumou Telecom】") and "free of charge" in english and "31 January 2027" in english
    assert c.daily_cap == {"sms": 200000, "call": 20000, "announcement": 1000}


def test_defaults_and_caps():
    c = make_campaign(min_days_between=None, daily_cap={"sms": 5, "call": 2, "announcement": 1})
    assert c.min_days_between == 0 and c.max_sms_parts == 3 and c.locale == "zh-CN"
    assert c.cap("sms") == 5 and c.cap("call") == 2


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"colour": "blue"}, "colour"),
        ({"quiet_hours": {"start": "21:00", "end": "08:00", "lunch": "12:00"}}, "quiet_hours.lunch"),
        ({"waves": [{"wave": 1, "start": "2026-12-01", "channels": ["sms"], "repeat": True}]}, "waves[0].repeat"),
    ],
)
def test_unknown_keys(overrides, key):
    refused(overrides, key, "unknown key")


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"quiet_hours": {"start": "25:00", "end": "08:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "21:00", "end": "8am"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "21:00", "end": "21:00"}}, "quiet_hours"),
    ],
)
def test_bad_times(overrides, key):
    refused(overrides, key)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"deadline": "2027-02-30"}, "deadline"),
        ({"deadline": "31/01/2027"}, "deadline"),
        ({"waves": [{"wave": 1, "start": "2026-13-01", "channels": ["sms"]}]}, "waves[0].start"),
    ],
)
def test_bad_dates(overrides, key):
    refused(overrides, key, "date")


def test_unquoted_yaml_dates_are_checked_too():
    text = campaign_text().replace("deadline: '2027-01-31'", "deadline: 2027-02-30")
    refused(text, "deadline", "not a date")


def test_waves():
    refused({"waves": [{"wave": 1, "start": "2026-12-01", "channels": ["sms", "fax"]}]}, "waves[0].channels[1]", "fax")
    refused({"waves": [{"wave": 1, "start": "2026-12-01", "channels": []}]}, "waves[0].channels")
    twice = [{"wave": 1, "start": "2026-12-01", "channels": ["sms"]}] * 2
    refused({"waves": twice}, "waves[1].wave", "twice")
    with pytest.raises(CampaignError, match=r"--wave 3 is not defined \(waves: 1, 2\)"):
        make_campaign().wave(3)


def test_timezone():
    refused({"timezone": "Asia/Beijing"}, "timezone", "not a time zone")
    refused({"operator_timezone": "Mars/Olympus"}, "operator_timezone", "not a time zone")
    # An operator off Beijing time names its zone explicitly; the campaign must then be on it.
    c = make_campaign(timezone="America/New_York", operator_timezone="America/New_York")
    assert c.timezone == "America/New_York"
    refused({"timezone": "Europe/Paris", "operator_timezone": "America/New_York"}, "timezone", "operator_timezone")


def test_unknown_placeholder_and_bad_braces():
    sms = {"zh-CN": "您好{name}，请免费办理。"}
    refused({"templates": {**campaign_dict()["templates"], "sms": sms}}, "templates.sms.zh-CN", "{name}")
    sms = {"zh-CN": "您好{msisdn_masked，请免费办理。"}
    refused({"templates": {**campaign_dict()["templates"], "sms": sms}}, "templates.sms.zh-CN")
    ann = {"zh-CN": "号码{msisdn_masked}免费办理"}  # a per-line value has no place in an announcement
    refused({"templates": {**campaign_dict()["templates"], "announcement": ann}}, "templates.announcement.zh-CN")


@pytest.mark.parametrize(
    "text",
    [
        "请于{deadline}前办理，免费；逾期将收取费用。",
        "办理需缴纳工本费用，免费咨询。",
        "免费办理，赠送流量，套餐变更请回复1。",
        "免费补登记，月租10元/月。",
        "免费办理，请先充值。",
        "Registration is free. A fee of 5 yuan applies to SIM swaps.",
        "Free of charge; tariff changes apply from January.",
        "Free. Please pay at the hall.",
    ],
)
def test_fee_or_tariff_wording_is_refused(text):
    refused({"templates": {**campaign_dict()["templates"], "sms": {"zh-CN": text}}}, "templates.sms.zh-CN", "Art. 23")


@pytest.mark.parametrize(
    "text",
    [
        "请于{deadline}前办理，免费。请缴纳10元工本费。",
        "补登记免费，办理时需支付证件费。",
        "补登记免费，营业厅将收取20元手续费。",
        "免费补登记，请先转账至指定账户。",
        "免费补登记，请汇款后办理。",
        "免收资费，但需缴纳押金。",
        "免费办理，若不缴费将停机。",  # a payment the user is told to make, in the negative
        "免费办理，补卡费二十元。",
        "Free of charge. Please transfer money to our account first.",
        "Free registration; a deposit of 50 yuan is refunded later.",
    ],
)
def test_real_requests_for_money_are_refused(text):
    refused({"templates": {**campaign_dict()["templates"], "sms": {"zh-CN": text}}}, "templates.sms.zh-CN", "Art. 23")


@pytest.mark.parametrize(
    "text",
    [
        "补登记免费，不收取任何费用。",
        "请于{deadline}前办理补登记，不收取任何费用。",  # says it is free without 免费
        "请于{deadline}前办理补登记，免费。",
        "请于{deadline}前办理补登记，免收资费。",  # charges waived: 资费 is not asked for
        "请于{deadline}前办理补登记，免收。",
        "请于{deadline}前办理补登记，无需付费。",
        "请于{deadline}前办理补登记，无需支付任何费用。",
        "请于{deadline}前办理补登记，不收费。",
        "请于{deadline}前办理补登记，免收工本费，无任何费用。",
        "补登记免费，如有疑问请拨打消费者服务热线。",
        "This is free of charge, with no charge at all.",
        "Free: no fees.",
        "Registration will not cost you anything.",
        "You will not be charged for registering.",
    ],
)
def test_free_statements_are_allowed(text):
    c = make_campaign(templates={**campaign_dict()["templates"], "sms": {"zh-CN": text}})
    assert c.templates["sms"]["zh-CN"] == text


def test_a_notice_must_say_it_is_free():
    refused(
        {"templates": {**campaign_dict()["templates"], "sms": {"zh-CN": "请于{deadline}前办理。"}}},
        "templates.sms.zh-CN",
        "free",
    )
    refused(  # a negated payment by the user is not a statement that the notice is free
        {"templates": {**campaign_dict()["templates"], "sms": {"zh-CN": "请于{deadline}前办理，不用交身份证复印件。"}}},
        "templates.sms.zh-CN",
        "free",
    )
    refused(
        {"templates": {**campaign_dict()["templates"], "call": {"zh-CN": "请于{deadline}前办理。"}}},
        "templates.call.zh-CN",
        "free",
    )


def test_signature_is_not_repeated_in_the_sms():
    sms = {"zh-CN": "【某某通信】" + SMS_ZH}
    refused({"templates": {**campaign_dict()["templates"], "sms": sms}}, "templates.sms.zh-CN", "signature")


def test_sms_that_cannot_fit():
    long = "免费" + "请办理" * 70  # 212 characters of text alone
    refused(
        {"templates": {**campaign_dict()["templates"], "sms": {"zh-CN": long}}},
        "templates.sms.zh-CN",
        "max_sms_parts 3",
    )
    assert make_campaign(max_sms_parts=4, templates={**campaign_dict()["templates"], "sms": {"zh-CN": long}})


def test_an_sms_with_the_region_fits_with_the_longest_region_name():
    """{region} renders the region's name: the SMS must fit with the longest name of the division table."""
    from transforms.notify.render import LONGEST_REGION, segment_count, sms_units
    from transforms.scan.divisions import full_names
    from transforms.scan.policy import load_policy

    divisions = load_policy(None).code_tables.divisions
    assert max(sms_units(name)[1] for name in full_names(divisions).values()) == sms_units(LONGEST_REGION)[1]
    # signature (6) + the text + the longest name must reach 71 UCS-2 units: 2 parts, over max_sms_parts 1
    body = "免费" + "办" * (70 - 6 - 2 - len(LONGEST_REGION) + 1) + "{region}"
    assert segment_count(sms_units("【某某通信】" + body.replace("{region}", LONGEST_REGION))[1], "UCS2") == 2
    assert segment_count(sms_units("【某某通信】" + body.replace("{region}", "110105"))[1], "UCS2") == 1
    templates = {**campaign_dict()["templates"], "sms": {"zh-CN": body}}
    refused(
        {"templates": templates, "max_sms_parts": 1}, "templates.sms.zh-CN", "longest region name", "max_sms_parts 1"
    )
    # a policy whose table has only short names lets the same text through
    short = "110105\t朝阳区\n110000\t北京市\n"
    assert parse_campaign(campaign_text(templates=templates, max_sms_parts=1), "c.yaml", short).max_sms_parts == 1


def test_a_key_given_twice_is_refused():
    text = campaign_text() + "deadline: '2027-03-01'\n"
    refused(text, "'deadline' is given twice", "line ")


def test_missing_templates_and_locales():
    refused({"templates": {"sms": {"zh-CN": SMS_ZH}}}, "templates", "no announcement template")
    refused({"locale": "en"}, "templates.announcement", "'en'")
    refused({"campaign_id": None}, "campaign_id", "missing")
    refused("- just\n- a list\n", "mapping")
    refused("campaign_id: [unclosed\n", "not valid YAML")


@pytest.mark.e2e
def test_cli_reports_campaign_errors_in_one_line(tmp_path):
    path = write_campaign(tmp_path / "bad.yaml", timezone="Mars/Olympus")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.notify",
            "--classified",
            str(tmp_path / "scan"),  # apart from --out: notify refuses an --out inside its inputs
            "--campaign",
            path,
            "--wave",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "timezone" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
