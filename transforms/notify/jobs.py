"""Notification jobs: stable ids, rendered texts and schedules, as Arrow tables (no Beam).

A job id is the first 16 bytes (32 hex characters) of
``sha256(campaign_id | wave | channel | line_id or region)`` with ``|`` the
unit separator U+001F: the same campaign, wave, channel and line give the same
id in every run and every folder, so a consumer can drop repeats. Hashing is
one ``hashlib`` call per job (unavoidable: no vectorised sha256 in Arrow); the
hex text and the 16-byte sort keys are made from the digests with numpy.

The job tables follow ``schemas/notify_{sms,call,announcement}_job.avsc``;
none has a field for a name, a document number or an address. ``{region}``
renders the region's GB/T 2260 name (:mod:`transforms.notify.regions`); a
line job of a wave with A/B variants carries its ``variant`` and is rendered
with that variant's texts (:mod:`transforms.notify.variants`).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema
from transforms.notify.regions import region_text
from transforms.notify.render import mask_numbers, render_rows, segments_of, sms_lengths_rows
from transforms.notify.schedule import EPOCH, KEY_DTYPE, Schedule, assign_days
from transforms.notify.variants import assign_variants, variant_names

__all__ = [
    "job_ids",
    "with_job_ids",
    "keys_of",
    "announcement_rows",
    "finish_jobs",
    "history_rows",
    "JOB_SCHEMAS",
    "KEY",
]

KEY = "_key"
JOB_SCHEMAS = {c: arrow_schema(f"notify_{c}_job") for c in ("sms", "call", "announcement")}
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_SEP = "\x1f"
_ENCODINGS = pa.array(["UCS2", "GSM7"], pa.string())  # by gsm7 (False, True)


def job_ids(campaign_id: str, wave: int, channel: str, keys: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(32-hex job ids, 16-byte keys) of ``keys`` (line ids or regions)."""
    prefix = f"{campaign_id}{_SEP}{wave}{_SEP}{channel}{_SEP}".encode()
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    messages = pc.binary_join_element_wise(prefix, pc.cast(keys, pa.binary()), b"").to_pylist()
    sha = hashlib.sha256
    n = len(messages)
    digests = np.frombuffer(b"".join([sha(m).digest() for m in messages]), np.uint8).reshape(n, 32)[:, :16]
    text = np.empty((n, 32), np.uint8)
    text[:, 0::2], text[:, 1::2] = _HEX[digests >> 4], _HEX[digests & 15]
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * 32).tobytes())
    ids = pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(text.tobytes())])
    key = pa.Array.from_buffers(pa.binary(16), n, [None, pa.py_buffer(np.ascontiguousarray(digests).tobytes())])
    return ids, key


def keys_of(column) -> np.ndarray:
    """A fixed-size-binary(16) column as a numpy ``S16`` array (no copy)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    raw = np.frombuffer(column.buffers()[1], KEY_DTYPE)
    return raw[column.offset : column.offset + len(column)]


def with_job_ids(jobs: pa.Table, campaign_id: str, wave: int, channel: str, key_column: str = "line_id") -> pa.Table:
    """Add ``job_id`` and ``_key`` to a table of jobs of one channel."""
    hex_ids, key = job_ids(campaign_id, wave, channel, jobs.column(key_column))
    return jobs.append_column("job_id", hex_ids).append_column(KEY, key)


def announcement_rows(regions: pa.Table, campaign_id: str, wave: int) -> pa.Table:
    """One announcement per region with lines still to register (regions summed already)."""
    regions = regions.filter(pc.and_(pc.is_valid(regions.column("region")), pc.greater(regions.column("lines"), 0)))
    regions = regions.sort_by("region")
    table = regions.append_column("channel", pa.array(["announcement"] * regions.num_rows, pa.string()))
    return with_job_ids(table, campaign_id, wave, "announcement", key_column="region")


def _render(campaign, channel: str, wave: int, values: dict, n: int, which, variants) -> tuple[pa.Array, tuple | None]:
    """(texts, (units, gsm7) for an SMS) of every job, each rendered with its variant's template."""
    if which is None:
        templates = [campaign.template(channel, wave)]
    else:
        templates = [campaign.template(channel, wave, variant=v.name) for v in variants]
    text = render_rows(templates, which, values, n)
    return text, sms_lengths_rows(templates, which, values, n) if channel == "sms" else None


def finish_jobs(
    table: pa.Table,
    channel: str,
    campaign,
    wave: int,
    schedule: Schedule,
    bounds: np.ndarray,
    first_day: dt.date,
    divisions: str | None = None,
) -> pa.Table:
    """Schedule and render jobs of one channel into that channel's job schema.

    ``{region}`` renders the region's name from ``divisions`` (the policy's GB/T 2260 table; without one,
    the code). Line jobs of a wave with variants get their variant and its texts (``variant``: null
    otherwise, and for announcements)."""
    n = table.num_rows
    days = (first_day - EPOCH).days + assign_days(keys_of(table.column(KEY)), bounds)
    not_before, not_after = schedule.windows_us(days)
    variants = campaign.wave(wave).variants if channel != "announcement" else ()
    which = assign_variants(table.column("line_id"), campaign.campaign_id, variants) if variants else None
    common = {
        "job_id": table.column("job_id"),
        "campaign_id": pa.repeat(pa.scalar(campaign.campaign_id), n),
        "wave": pa.array(np.full(n, wave, np.int32)),
        "channel": pa.repeat(pa.scalar(channel), n),
        "variant": variant_names(which, variants, n),
    }
    timing = {
        "send_day": pa.array(days.astype(np.int32), pa.date32()),
        "not_before": pa.array(not_before, pa.timestamp("us", tz="UTC")),
        "not_after": pa.array(not_after, pa.timestamp("us", tz="UTC")),
    }
    locale = {"locale": pa.repeat(pa.scalar(campaign.locale), n)}
    region = region_text(table.column("region"), divisions)
    if channel == "announcement":
        count = table.column("lines")
        text, _ = _render(campaign, channel, wave, {"region": region, "count": count}, n, None, ())
        own = {"region": table.column("region"), "count": count, "unreachable": table.column("unreachable")}
        return pa.table({**common, **own, **locale, "text": text, **timing}, schema=JOB_SCHEMAS[channel])
    masked = mask_numbers(table.column("msisdn"))
    text, lengths = _render(campaign, channel, wave, {"msisdn_masked": masked, "region": region}, n, which, variants)
    line = {
        "line_id": table.column("line_id"),
        "line_type": table.column("line_type"),
        "region": table.column("region"),
        "msisdn": table.column("msisdn"),
        "msisdn_masked": masked,
    }
    if channel == "call":
        cols = {**common, **line, "route": table.column("route"), **locale, "script": text, **timing}
        return pa.table(cols, schema=JOB_SCHEMAS[channel])
    cols = {**common, **line, **locale, "text": text, **_sms_lengths(lengths, campaign.price_per_segment), **timing}
    return pa.table(cols, schema=JOB_SCHEMAS[channel])


def _sms_lengths(lengths: tuple[np.ndarray, np.ndarray], price: float) -> dict[str, pa.Array]:
    """An SMS job's encoding, units, segments and cost, from (units, gsm7) of its text."""
    units, gsm7 = lengths
    segments = segments_of(units, gsm7)
    return {
        "encoding": _ENCODINGS.take(pa.array(gsm7.astype(np.int8))),
        "units": pa.array(units.astype(np.int32)),
        "segments": pa.array(segments),
        "cost": pa.array(segments * price),
    }


def history_rows(jobs: pa.Table, run_id: str) -> pa.Table:
    """The history records of jobs that are durable (files written, or publish acknowledged)."""
    n = jobs.num_rows
    has_line = "line_id" in jobs.column_names
    return pa.table(
        {
            "job_id": jobs.column("job_id"),
            "line_id": jobs.column("line_id") if has_line else pa.nulls(n, pa.string()),
            "region": jobs.column("region"),
            "channel": jobs.column("channel"),
            "campaign_id": jobs.column("campaign_id"),
            "wave": jobs.column("wave"),
            "send_day": jobs.column("send_day"),
            "sent_at": jobs.column("not_before"),
            "run_id": pa.repeat(pa.scalar(run_id), n),
            "variant": jobs.column("variant") if "variant" in jobs.column_names else pa.nulls(n, pa.string()),
        },
        schema=arrow_schema("notify_history"),
    )
