"""Campaign files: load, validate and compile a notification campaign (YAML).

    from transforms.notify.campaign import load_campaign
    campaign = load_campaign("examples/campaign.yaml")
    campaign.wave(1).channels, campaign.template("sms").parts

Beam-free. The file's shape is checked against ``schemas/campaign.schema.json``
(unknown keys, types, time and date patterns); this module checks the rest:
real dates, the time zone (zoneinfo), wave numbers, templates and their A/B
variants (:mod:`transforms.notify.variants`: placeholders, no fee or tariff
wording, a statement that the notice is free, no repeated signature; weights
positive, names unique and defined), that a signed SMS fits in
``max_sms_parts`` (with the longest region name of the division table, when
given), and that no key is given twice. Every problem is a
:class:`CampaignError` whose text is one line naming the file and the key.

A plan that would hurt the people it reaches is refused too (docs/notify.md,
"Campaign checks"):

* always, when the file is loaded: quiet hours that leave the night for
  sending (swapped start and end) or midday out; a wave that starts after the
  deadline; a time zone other than Beijing time (``MAINLAND_TIMEZONES``)
  unless the file names the operator's own zone in ``operator_timezone``;
* always, when a wave is planned (:meth:`Campaign.first_send_day`): a deadline
  already past on the first send day;
* unless the person planning says ``--allow-late-sends``: a wave whose first
  send day is already on or after the next wave's start, and (checked where
  the days are assigned, ``transforms.notify.schedule.check_spill``) daily caps
  that spill sends past the deadline or into the next wave
  (:meth:`Campaign.send_limit`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from importlib import resources
from typing import Any, Mapping

import jsonschema
import yaml

import schemas
from transforms.notify.campaign_checks import (
    MAINLAND_TIMEZONES,
    CampaignError,
    _check_fit,
    _check_quiet_hours,
    _check_timezone,
    _check_wording,
    _date,
    _fail,
    _schema_message,
)
from transforms.notify.regions import longest_region_name
from transforms.notify.render import WORST_CASE, Template, TemplateError, sign
from transforms.notify.variants import Variant, compile_variants, wave_variants
from transforms.core.special_files import special_file
from transforms.core.strict_yaml import load_bounded, load_problem, unique_keys

__all__ = [
    "Campaign",
    "CampaignError",
    "SendLimit",
    "Wave",
    "Variant",
    "load_campaign",
    "parse_campaign",
    "CHANNELS",
    "MAINLAND_TIMEZONES",
]

CHANNELS = ("sms", "call", "announcement")
DEFAULT_LOCALE = "zh-CN"
DEFAULT_MAX_SMS_PARTS = 3
MAX_CAMPAIGN_BYTES = 1 << 20  # a campaign is a page of text (its texts at most 2,000 characters each)
MAX_VALUES = 100_000  # values of the file once its YAML aliases are expanded


@dataclasses.dataclass(frozen=True)
class Wave:
    wave: int
    start: dt.date
    channels: tuple[str, ...]
    variants: tuple[Variant, ...] = ()  # the A/B split of its lines (none: the campaign's templates)


@dataclasses.dataclass(frozen=True)
class SendLimit:
    """The last day a wave's notices may be sent on, and why (for the one-line refusal)."""

    last_day: dt.date
    reason: str  # "the deadline" | "the last day before wave 2 starts on 2026-12-15"
    source: str  # the campaign file


@dataclasses.dataclass(frozen=True)
class Campaign:
    """A validated campaign. Build it with :func:`load_campaign`."""

    campaign_id: str
    signatures: Mapping[str, str]  # locale -> signature ("*" for all locales)
    timezone: str
    quiet_start: dt.time
    quiet_end: dt.time
    daily_cap: Mapping[str, int]  # channel -> jobs per day
    price_per_segment: float
    deadline: dt.date
    min_days_between: int
    locale: str
    max_sms_parts: int
    waves: Mapping[int, Wave]
    templates: Mapping[str, Mapping[str, str]]  # channel -> locale -> text
    source: str
    digest: str  # sha256 of the file's bytes, recorded in manifests
    variant_templates: Mapping[str, Mapping[str, Mapping[str, str]]] = dataclasses.field(default_factory=dict)

    def wave(self, number: int) -> Wave:
        if number not in self.waves:
            known = ", ".join(str(w) for w in sorted(self.waves))
            raise CampaignError(f"campaign {self.source}: --wave {number} is not defined (waves: {known})")
        return self.waves[number]

    def signature(self, locale: str | None = None) -> str:
        locale = locale or self.locale
        return self.signatures.get(locale) or self.signatures.get("*") or next(iter(self.signatures.values()))

    def constants(self, wave: int, locale: str | None = None) -> dict[str, str]:
        return {
            "deadline": format_date(self.deadline, locale or self.locale),
            "campaign_id": self.campaign_id,
            "wave": str(wave),
        }

    def template(self, channel: str, wave: int = 1, locale: str | None = None, variant: str | None = None) -> Template:
        """The compiled text of ``channel``: the variant's, when it gives one, else the campaign's."""
        locale = locale or self.locale
        head = sign(self.signature(locale)) if channel == "sms" else ""
        own = self.variant_templates.get(variant, {}).get(channel, {}) if variant else {}
        where = f"variants.{variant}.{channel}.{locale}" if locale in own else f"templates.{channel}.{locale}"
        text = own[locale] if locale in own else self.templates[channel][locale]
        return Template.compile(text, channel, locale, self.constants(wave, locale), head, where=where)

    def cap(self, channel: str) -> int:
        return self.daily_cap[channel]

    def send_limit(self, number: int) -> SendLimit:
        """The last day wave ``number`` may send on: the deadline, or the day before the next wave
        (the first that starts later) starts, whichever comes first."""
        wave = self.wave(number)
        later = sorted((w.start, w.wave) for w in self.waves.values() if w.start > wave.start)
        if later and later[0][0] - dt.timedelta(days=1) < self.deadline:
            start, after = later[0]
            return SendLimit(
                start - dt.timedelta(days=1), f"the last day before wave {after} starts on {start}", self.source
            )
        return SendLimit(self.deadline, "the deadline", self.source)

    def first_send_day(self, number: int, as_of: dt.date, allow_late_sends: bool = False) -> dt.date:
        """The wave's first send day (its start, or ``as_of`` if later), refused in one line when the
        deadline has passed by then, or (unless ``allow_late_sends``) when it is already past the
        wave's :meth:`send_limit`."""
        wave = self.wave(number)
        first = max(wave.start, as_of)
        if first > self.deadline:
            raise _fail(
                self.source,
                "deadline",
                f"{self.deadline} has passed: wave {number} would send from {first} (--as-of {as_of}), asking "
                "users to register by a day gone; set a later deadline",
            )
        limit = self.send_limit(number)
        if first > limit.last_day and not allow_late_sends:
            raise _fail(
                self.source,
                f"--wave {number}",
                f"would send from {first} (--as-of {as_of}), past {limit.last_day} ({limit.reason}); "
                "plan the later wave instead, or pass --allow-late-sends",
            )
        return first


def format_date(day: dt.date, locale: str) -> str:
    if locale.startswith("zh"):
        return f"{day.year}年{day.month}月{day.day}日"
    if locale.startswith("en"):
        return f"{day.day} {day:%B} {day.year}"
    return day.isoformat()


class _TextDates(unique_keys(yaml.SafeLoader)):
    """YAML without implicit dates (``2027-01-31`` stays text, checked here) and without repeated keys
    (YAML would keep the last one silently: a second variant of the same name, a second ``waves``)."""


_TextDates.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_campaign(path: str, divisions: str | None = None) -> Campaign:
    """Load, validate and compile a campaign file (local or gs://); ``divisions``: the policy's GB/T 2260
    table, whose longest region name an SMS with ``{region}`` must fit with (see :func:`parse_campaign`)."""
    if kind := special_file(path):
        raise _fail(path, "", f"is {kind}, not a campaign file")
    try:
        if "://" in path:  # gs:// and the like through Beam (imported only then)
            from apache_beam.io.filesystems import FileSystems

            opened = FileSystems.open(path)
        else:
            opened = open(path, "rb")
        with opened as handle:
            data = handle.read(MAX_CAMPAIGN_BYTES + 1)  # never more: /dev/zero or a 50 MB file given by mistake
    except Exception as exc:  # any unreadable path is one line for the user
        raise _fail(path, "", f"cannot be read ({type(exc).__name__})") from None
    return parse_campaign(data, path, divisions)


def parse_campaign(data: bytes | str, source: str = "campaign.yaml", divisions: str | None = None) -> Campaign:
    """Validate and compile a campaign's text. An SMS must fit in ``max_sms_parts`` with the longest
    region name of ``divisions`` (the policy's table), or of the default policy's table when None."""
    raw_bytes = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw_bytes) > MAX_CAMPAIGN_BYTES:
        raise _fail(source, "", f"is over {MAX_CAMPAIGN_BYTES:,} bytes: not a campaign file")
    try:
        raw = _load_yaml(raw_bytes.decode("utf-8"), source)
        schema = json.loads(resources.files(schemas).joinpath("campaign.schema.json").read_text("utf-8"))
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(raw))
    except RecursionError:
        raise _fail(source, "", "nested too deeply: not a campaign file") from None
    if error is not None:
        raise _fail(source, *_schema_message(error))
    _whole_numbers(raw)
    region = longest_region_name(divisions) if divisions else WORST_CASE["region"]
    return _compile(raw, source, hashlib.sha256(raw_bytes).hexdigest(), region)


def _load_yaml(text: str, source: str) -> dict:
    """The file's mapping; refused in one line: not YAML, a repeated key, or more than ``MAX_VALUES`` values once
    its aliases are expanded (an alias bomb), or nested too deeply."""
    try:
        raw = load_bounded(text, _TextDates, MAX_VALUES)  # its reader already refuses control characters
    except (UnicodeDecodeError, yaml.YAMLError) as exc:  # too large or deep, a repeated key, not YAML
        raise _fail(source, *load_problem(exc, "campaign")) from None
    if not isinstance(raw, dict):
        raise _fail(source, "", "must be a YAML mapping")
    return raw


def _whole_numbers(raw: dict[str, Any]) -> None:
    """The schema's integers as ints: YAML's ``1.0`` is an integer to JSON Schema, but a wave 1.0 would name its
    files and job ids ``1.0`` (a re-run with ``wave: 1`` would send its announcements again)."""
    for wave in raw["waves"]:
        wave["wave"] = int(wave["wave"])
    cap = raw["daily_cap"]
    raw["daily_cap"] = int(cap) if isinstance(cap, (int, float)) else {c: int(n) for c, n in cap.items()}
    for key in ("min_days_between", "max_sms_parts"):
        if key in raw:
            raw[key] = int(raw[key])


def _waves(raw: dict[str, Any], source: str, defined: dict) -> tuple[dict[int, Wave], dt.date]:
    """The waves (numbers unique, starts in order, none after the deadline) and the deadline."""
    waves: dict[int, Wave] = {}
    for i, w in enumerate(raw["waves"]):
        if w["wave"] in waves:
            raise _fail(source, f"waves[{i}].wave", f"wave {w['wave']} is defined twice")
        start = _date(source, f"waves[{i}].start", w["start"])
        waves[w["wave"]] = Wave(w["wave"], start, tuple(w["channels"]), wave_variants(w, i, defined, source))
    starts = [waves[n].start for n in sorted(waves)]
    if starts != sorted(starts):
        raise _fail(source, "waves", "waves must start in the order of their numbers")
    deadline = _date(source, "deadline", raw["deadline"])
    for i, w in enumerate(raw["waves"]):
        if waves[w["wave"]].start > deadline:
            raise _fail(
                source,
                f"waves[{i}].start",
                f"wave {w['wave']} starts on {waves[w['wave']].start}, after the deadline {deadline}",
            )
    return waves, deadline


def _compile(raw: dict[str, Any], source: str, digest: str, region: str) -> Campaign:
    _check_timezone(raw, source)
    quiet = {k: dt.time.fromisoformat(raw["quiet_hours"][k]) for k in ("start", "end")}
    _check_quiet_hours(source, quiet["start"], quiet["end"])
    locale = raw.get("locale", DEFAULT_LOCALE)
    defined = compile_variants(raw, source, locale)
    waves, deadline = _waves(raw, source, defined)
    if not math.isfinite(float(raw["price_per_segment"])):  # YAML's .nan and .inf are numbers to the schema
        raise _fail(source, "price_per_segment", f"{raw['price_per_segment']!r} is not a finite number")
    cap = raw["daily_cap"]
    caps = {c: cap for c in CHANNELS} if isinstance(cap, int) else {c: cap.get(c) for c in CHANNELS}
    signature = raw["signature"]
    signatures = {"*": signature} if isinstance(signature, str) else dict(signature)
    campaign = Campaign(
        campaign_id=raw["campaign_id"],
        signatures=signatures,
        timezone=raw["timezone"],
        quiet_start=quiet["start"],
        quiet_end=quiet["end"],
        daily_cap=caps,
        price_per_segment=float(raw["price_per_segment"]),
        deadline=deadline,
        min_days_between=int(raw.get("min_days_between", 0)),
        locale=locale,
        max_sms_parts=int(raw.get("max_sms_parts", DEFAULT_MAX_SMS_PARTS)),
        waves=waves,
        templates={k: dict(v) for k, v in raw["templates"].items()},
        source=source,
        digest=digest,
        variant_templates=defined,
    )
    _check_templates(campaign, source, region)
    return campaign


def _check_templates(campaign: Campaign, source: str, region: str) -> None:
    """Every channel a wave sends has a cap and a template in the locale; every text, the variants'
    included, is worded and fits (with the longest region name ``region``)."""
    waves, caps, locale = campaign.waves, campaign.daily_cap, campaign.locale
    used = {c for w in waves.values() for c in w.channels}
    for channel in sorted(used):
        if channel not in campaign.templates:
            raise _fail(source, "templates", f"no {channel} template, but a wave sends {channel}")
        if caps[channel] is None:
            raise _fail(source, "daily_cap", f"no cap for {channel}, but a wave sends {channel}")
        if locale not in campaign.templates[channel]:
            raise _fail(source, f"templates.{channel}", f"no text for the campaign's locale {locale!r}")
    texts = [(None, c, loc, t) for c, by in campaign.templates.items() for loc, t in by.items()]
    texts += [
        (v, c, loc, t) for v, cs in campaign.variant_templates.items() for c, by in cs.items() for loc, t in by.items()
    ]
    for variant, channel, loc, text in texts:
        where = f"variants.{variant}.{channel}.{loc}" if variant else f"templates.{channel}.{loc}"
        _check_wording(source, where, text, channel)
        try:
            template = campaign.template(channel, max(waves), loc, variant)
        except TemplateError as exc:
            raise _fail(source, "", str(exc)) from None
        if channel == "sms":
            _check_fit(campaign, source, where, template, region)
