"""backfill demo: the whole loop on the embedded default, end to end.

    backfill demo [--lines N] [--out DIR] [--seed S] [--force]

DIR must be new, empty, or a previous demo's (marked ``.backfill.json``),
which is moved aside and deleted only once this run is done (put back if
it fails); ``--force`` does the same with any other folder.

Local files and the local Beam runner only; nothing is downloaded. Each
capability of the product adds its step here, so the demo always runs
everything that exists: generate a base, scan it, create a keyset, plan
and "send" wave 1 to files, simulate registrations from a share of the
notified lines, merge them back (tokens, masks, vault), plan the wave-2
reminders (registered lines drop out), a second round of registrations
merged on the merged base, the report (after the deadline: the escalation
list too), a reveal on record, live registrations through the Pub/Sub emulator into
the streaming merge and their compaction, retention, an incident with its shred, the
self-inspection, and finally the completion rate and the report's path.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from dev.demo_steps import STEPS, _completion
from pipelines.common import ArgumentParser, UserError, run_main, split_beam_flags

DEFAULT_LINES = 50_000
CAMPAIGN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "campaign.yaml")


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill demo", description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=DEFAULT_LINES, help="lines in the synthetic base")
    p.add_argument("--seed", type=int, default=2013, help="generator seed")
    p.add_argument(
        "--out",
        default="demo-out",
        help="output folder: new, empty, or a previous demo's (replaced once this run is done)",
    )
    p.add_argument("--force", action="store_true", help="replace --out even if the demo did not make it")
    p.add_argument("--campaign", default=CAMPAIGN, help="campaign file")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


class _Steps:
    def __init__(self) -> None:
        self.number = 0

    def __call__(self, title: str) -> float:
        self.number += 1
        print(f"\n== {self.number}. {title}", flush=True)
        return time.time()


class _Demo:
    """The run's arguments, its output folder, the step counter and what later steps need from earlier ones."""

    def __init__(self, args) -> None:
        self.args, self.out, self.step = args, args.out, _Steps()
        self.figures: dict = {}  # the report's figures (the completion rate at the end)
        self.purge: dict = {}  # retention's manifest
        self.live_base = self.live_vault = ""  # the compacted base and vault after the streaming merge

    def path(self, *parts: str) -> str:
        return os.path.join(self.out, *parts)


def _refuse_dangerous(out: str) -> None:
    """Even with --force, never a folder that holds the working directory, the checkout, the home folder."""
    real = os.path.realpath(out)
    for name, path in (
        ("the working directory", os.getcwd()),
        ("the checkout", os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        ("the home folder", os.path.expanduser("~")),
    ):
        path = os.path.realpath(path)
        if path == real or path.startswith(real.rstrip(os.sep) + os.sep):
            raise UserError(f"--out {out} holds {name}: the demo replaces its --out; give another folder")


def _prepare_out(demo: _Demo) -> str | None:
    """Make OUT (0700, with the demo's marker). A previous demo's OUT (or, with --force, any folder) is moved
    aside to ``OUT.old-RUN`` and deleted only once this run is done (:func:`_finish_out`); a non-empty folder
    the demo did not make is refused, nothing touched. Returns the folder moved aside, or None."""
    from pipelines.common import new_run
    from pipelines.io.publish import MARKER, make_private_dirs, owner

    out, run_id = demo.out.rstrip(os.sep) or demo.out, new_run("demo")[0]
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder")
    _remove_previous_asides(out)
    aside = None
    if os.path.isdir(out) and os.listdir(out):
        if owner(out) != "demo" and not demo.args.force:
            raise UserError(
                f"--out {out} is not empty and was not made by backfill demo: give a new or empty folder, "
                "or --force to replace it; nothing was touched"
            )
        _refuse_dangerous(out)
        aside = f"{os.path.realpath(out)}.old-{run_id}"
        os.rename(os.path.realpath(out), aside)
    real = os.path.realpath(out)  # a symbolic link to the folder stays one
    make_private_dirs(real)
    os.chmod(real, 0o700)
    marker = {"created_by": "subscriber-backfill", "step": "demo", "run_id": run_id}
    fd = os.open(os.path.join(real, MARKER), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(marker, handle)
    return aside


def _remove_previous_asides(out: str) -> None:
    """``OUT.old-*`` left by a demo that was killed: previous demos' outputs (marked), no longer needed."""
    from pipelines.io.publish import owner

    real = os.path.realpath(out)
    parent, name = os.path.split(real)
    for entry in os.listdir(parent) if os.path.isdir(parent) else []:
        path = os.path.join(parent, entry)
        if entry.startswith(name + ".old-") and os.path.isdir(path) and owner(path) == "demo":
            shutil.rmtree(path)


def _finish_out(demo: _Demo, aside: str | None, ok: bool) -> None:
    """After the run: the previous output moved aside is deleted (success) or put back (failure)."""
    if aside is None:
        return
    if ok:
        shutil.rmtree(aside, ignore_errors=True)
        return
    real = os.path.realpath(demo.out)
    shutil.rmtree(real, ignore_errors=True)  # this run's partial output (the demo made it)
    os.rename(aside, real)


def run(argv=None) -> int:
    args, _ = split_beam_flags(parser(), argv, pipeline=False)
    if args.lines < 1:
        raise UserError("--lines must be at least 1")
    demo = _Demo(args)
    aside = _prepare_out(demo)
    ok = False
    try:
        for step in STEPS:
            step(demo)
        _completion(demo)
        ok = True
    finally:
        _finish_out(demo, aside, ok)
    return 0


def main(argv=None) -> int:
    return run_main("backfill demo", run, argv)


if __name__ == "__main__":
    sys.exit(main())
