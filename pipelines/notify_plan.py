"""The wave ``backfill notify`` plans: the campaign, the policy and every input, checked before anything is
recorded or sent.

Used by :mod:`pipelines.notify`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.common import UserError, beam_options, is_local_runner, parse_as_of
from pipelines.io.notify_files import classified_splits, read_suppress, registered_splits
from pipelines.io.pubsub import check_topic
from transforms.notify.campaign import Campaign, Wave, load_campaign
from transforms.scan.policy import Policy, load_policy

__all__ = ["WavePlan", "prepare_wave"]


@dataclasses.dataclass
class WavePlan:
    """A wave to plan, every input checked before anything is recorded or sent."""

    campaign: Campaign
    wave: Wave
    as_of: dt.date
    first_day: dt.date
    options: PipelineOptions
    splits: list
    rows: int
    registered: list
    registered_rows: int
    suppressed: object
    policy: Policy  # its code_tables.divisions names {region}


def prepare_wave(args, beam_args: list[str], run_id: str) -> WavePlan:
    """Load the policy, the campaign (its SMS must fit with the policy's longest region name) and the wave,
    plan the inputs, check the topic."""
    policy = load_policy(args.policy)  # its GB/T 2260 table names {region}
    campaign = load_campaign(args.campaign, policy.code_tables.divisions)
    wave = campaign.wave(args.wave)
    as_of = args.as_of or parse_as_of(None)
    first_day = campaign.first_send_day(wave.wave, as_of, args.allow_late_sends)
    options = beam_options(beam_args, step="notify", run_id=run_id)
    if args.spill == "on" and not is_local_runner(options):
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    splits, rows = classified_splits(args.classified)
    registered, registered_rows = registered_splits(args.registered) if args.registered else ([], 0)
    suppressed = read_suppress(args.suppress) if args.suppress else None
    if args.topic:
        check_topic(args.topic)
    return WavePlan(
        campaign=campaign,
        wave=wave,
        as_of=as_of,
        first_day=first_day,
        options=options,
        splits=splits,
        rows=rows,
        registered=registered,
        registered_rows=registered_rows,
        suppressed=suppressed,
        policy=policy,
    )
