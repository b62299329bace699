"""Campaign checks: the validations behind :mod:`transforms.notify.campaign`.

Beam-free. The wording rules (Art. 23, :mod:`transforms.notify.wording`: no
fee or tariff wording, a statement that the notice is free; no repeated signature), the time zone and quiet-hours
checks, the SMS fit check and the one-line :class:`CampaignError` messages
(docs/notify.md, "Campaign checks").
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import TYPE_CHECKING, Any

import jsonschema

from transforms.notify.render import Template, segment_count, sms_units
from transforms.notify.wording import fee_wording, says_free

if TYPE_CHECKING:
    from transforms.notify.campaign import Campaign


# Beijing time (UTC+8, no daylight saving since 1991), the official time of all of mainland China:
# the tz database's zone for it and the names it keeps as links to it. Asia/Urumqi (Xinjiang
# time, UTC+6) is not Beijing time; Hong Kong, Macao and Taipei are outside Decree 25.
MAINLAND_TIMEZONES = ("Asia/Shanghai", "Asia/Chongqing", "Asia/Chungking", "Asia/Harbin", "PRC")
NIGHT = (dt.time(0, 0), dt.time(6, 0))  # every minute strictly between these must be quiet
MIDDAY = dt.time(12, 0)  # must be allowed


class CampaignError(ValueError):
    """A campaign file that cannot be used; ``str()`` is one line naming the key."""


def _fail(source: str, where: str, message: str) -> CampaignError:
    where = f" {where}:" if where else ""
    return CampaignError(f"campaign {source}:{where} {message}".replace("\n", " "))


def _shown(value: Any) -> str:
    """A value of the file as an error message quotes it: its repr, cut at 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _path(parts) -> str:
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text


def _schema_message(error: jsonschema.ValidationError) -> tuple[str, str]:
    where = _path(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return (_path([*error.absolute_path, extra[0]]) if extra else where), "unknown key"
    if error.validator == "required":
        return where or "(top level)", error.message.replace("is a required property", "is missing")
    if error.validator == "pattern":
        kind = (
            "a time (HH:MM)"
            if ":" in error.schema["pattern"]
            else ("a date (YYYY-MM-DD)" if "{4}" in error.schema["pattern"] else f"matching {error.schema['pattern']}")
        )
        return where, f"{_shown(error.instance)} is not {kind}"
    if error.validator in ("exclusiveMinimum", "minimum"):
        bound = error.schema[error.validator]
        return (
            where,
            f"{_shown(error.instance)} must be {'more than' if error.validator == 'exclusiveMinimum' else 'at least'} {bound}",
        )
    if error.validator == "enum":
        return where, f"{_shown(error.instance)} is not one of {', '.join(map(str, error.schema['enum']))}"
    if error.validator == "oneOf" and error.context:
        return _schema_message(jsonschema.exceptions.best_match(error.context))
    return where, error.message[:160]


def _date(source: str, where: str, text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise _fail(source, where, f"{_shown(text)} is not a date") from None


def _check_wording(source: str, where: str, text: str, channel: str) -> None:
    fee = fee_wording(text)
    if fee:
        raise _fail(source, where, f"asks for a fee or a tariff change ({fee!r}); notices are free (Art. 23)")
    if not says_free(text):
        raise _fail(source, where, "must say the notice is free (免费, 不收取任何费用, free of charge ...)")
    if channel == "sms" and ("【" in text or "】" in text):
        raise _fail(source, where, "must not repeat the signature in 【】: it is added to every SMS")


def _check_timezone(raw: dict[str, Any], source: str) -> None:
    """The campaign's zone is Beijing time, or the operator's own zone named in ``operator_timezone``."""
    for key in ("timezone", "operator_timezone"):
        if key in raw:
            try:
                zoneinfo.ZoneInfo(raw[key])
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise _fail(source, key, f"{_shown(raw[key])} is not a time zone (e.g. Asia/Shanghai)") from None
    zone, operator = raw["timezone"], raw.get("operator_timezone")
    if operator is None or operator in MAINLAND_TIMEZONES:
        if zone not in MAINLAND_TIMEZONES:
            raise _fail(
                source,
                "timezone",
                f"{zone!r} is not Beijing time, the time of the operator's subscribers (Asia/Shanghai, UTC+8); "
                f"an operator in another zone names it in operator_timezone: {zone}",
            )
    elif zone != operator:
        raise _fail(source, "timezone", f"{zone!r} is not the operator's time zone {operator!r} (operator_timezone)")


def _allowed_at(moment: dt.time, start: dt.time, end: dt.time) -> bool:
    """Whether ``moment`` is in the allowed hours of quiet hours start-end (as the schedule has it)."""
    if start > end:  # quiet across midnight
        return end <= moment <= start
    return moment >= end or moment <= start


def _check_quiet_hours(source: str, start: dt.time, end: dt.time) -> None:
    """Quiet hours are the night: 00:00-06:00 quiet, 12:00 allowed; swapped start and end are named."""
    if start == end:
        raise _fail(source, "quiet_hours", "start and end are equal: no allowed hours")
    night = [dt.time(h, m) for h in range(NIGHT[0].hour, NIGHT[1].hour) for m in range(60)][1:]
    at_night = any(_allowed_at(t, start, end) for t in night)
    by_day = _allowed_at(MIDDAY, start, end)
    if by_day and not at_night:
        return
    window = f"{end:%H:%M}-{start:%H:%M}"
    swapped = _allowed_at(MIDDAY, end, start) and not any(_allowed_at(t, end, start) for t in night)
    if swapped:
        raise _fail(
            source,
            "quiet_hours",
            f"start {start:%H:%M} and end {end:%H:%M} leave {window}, the night, for sending: quiet hours are "
            f"when nothing is sent (swapped? start {end:%H:%M}, end {start:%H:%M} sends by day)",
        )
    if not by_day:
        raise _fail(source, "quiet_hours", f"the allowed hours {window} leave out midday (12:00)")
    raise _fail(
        source,
        "quiet_hours",
        f"the allowed hours {window} reach into the night: {NIGHT[0]:%H:%M}-{NIGHT[1]:%H:%M} must be quiet",
    )


def _check_fit(campaign: Campaign, source: str, where: str, template: Template, region: str) -> None:
    """The SMS fits in ``max_sms_parts`` with the longest number and the longest region name (``region``)."""
    encoding, units = sms_units(template.worst_case(region))
    parts = segment_count(units, encoding)
    if parts > campaign.max_sms_parts:
        longest = f" and the longest region name ({len(region)} characters)" if "region" in template.variables else ""
        raise _fail(
            source,
            where,
            f"with its signature{longest} the SMS is {units} {encoding} characters = {parts} parts, "
            f"over max_sms_parts {campaign.max_sms_parts}",
        )
