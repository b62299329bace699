"""The wave ``backfill notify`` plans: the campaign, the policy and every input, checked before anything is
recorded or sent.

Used by :mod:`pipelines.notify`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import TYPE_CHECKING

from pipelines.common import UserError, beam_options, is_local_runner, parse_as_of
from pipelines.flags import runs_in_process
from pipelines.io.lineage import check_same_base
from pipelines.io.notify_files import classified_splits, read_suppress, registered_splits
from transforms.notify.campaign import Campaign, Wave, load_campaign
from transforms.scan.policy import Policy, load_policy

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["WavePlan", "prepare_wave", "plan_buckets"]

ROWS_PER_BUCKET = 500_000


@dataclasses.dataclass
class WavePlan:
    """A wave to plan, every input checked before anything is recorded or sent."""

    campaign: Campaign
    wave: Wave
    as_of: dt.date
    first_day: dt.date
    options: PipelineOptions | None  # None: the wave runs in this process (pipelines/notify_local.py), no Beam
    splits: list
    rows: int
    registered: list
    registered_rows: int
    suppressed: object
    policy: Policy  # its code_tables.divisions names {region}
    workers: int = 0  # worker processes of the in-process engine; 0: the Beam job runs


def prepare_wave(args, beam_args: list[str], run_id: str) -> WavePlan:
    """Load the policy, the campaign (its SMS must fit with the policy's longest region name) and the wave,
    plan the inputs, check the topic."""
    policy = load_policy(args.policy)  # its GB/T 2260 table names {region}
    campaign = load_campaign(args.campaign, policy.code_tables.divisions)
    wave = campaign.wave(args.wave)
    as_of = args.as_of or parse_as_of(None)
    first_day = campaign.first_send_day(wave.wave, as_of, args.allow_late_sends)
    workers = _workers(args, beam_args)
    options = None if workers else beam_options(beam_args, step="notify", run_id=run_id)
    if args.spill == "on" and options is not None and not is_local_runner(options):
        raise UserError("--spill on needs a local runner: the spill is a private local folder")
    splits, rows = classified_splits(args.classified)
    registered, registered_rows = registered_splits(args.registered) if args.registered else ([], 0)
    if args.registered:  # a merge of another base would count that base's lines as registered, by line id
        check_same_base(
            "notify", args.classified, args.registered, ids_ok=not _merged_base(registered), changed=args.base_changed
        )
    suppressed = read_suppress(args.suppress) if args.suppress else None
    workers = min(workers, len(splits) + len(registered)) if workers else 0  # no more workers than splits
    if args.topic:
        from pipelines.io.pubsub import check_topic

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
        workers=workers,
    )


def _merged_base(registered: list) -> bool:
    """``--merged`` is a merged base (its files have ``identity_status``), not a list of line ids."""
    return any("identity_status" in (columns or ()) for _, _, columns in registered)


def _workers(args, beam_args: list[str]) -> int:
    """The in-process engine's worker processes, or 0 when the Beam job runs: a remote runner, Beam's local
    worker options, ``--spill off``, ``--topic`` or a dry run."""
    beam_job = not runs_in_process(beam_args) or args.spill == "off" or args.topic or args.dry_run
    if beam_job:
        if args.workers is not None:
            raise UserError(
                "--workers sizes notify on this machine; with --spill off, --topic, --dry-run, "
                "Beam's worker options or a remote runner the Beam job runs: size it with the runner's options"
            )
        return 0
    from pipelines.task_pool import default_workers

    return args.workers or default_workers()


def plan_buckets(args, plan: WavePlan) -> int:
    """Buckets of the line shuffle (used when anything is joined to the lines): ``--shuffle-buckets``, or
    one per ROWS_PER_BUCKET lines read."""
    return args.shuffle_buckets or max(1, math.ceil((plan.rows + plan.registered_rows) / ROWS_PER_BUCKET))
