"""What every step's launcher shares: argument parsing with one-line errors,
the explicit local runner, run ids, and turning failures into one line.

Unknown ``--flags`` pass through to Beam. Without ``--runner`` the local
FnApiRunner is chosen explicitly: Beam's DirectRunner would otherwise try to
download the Prism runner, and there is no network at run time.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import uuid

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Beam is imported where it is used: steps that run no pipeline (report) start faster
    from apache_beam.options.pipeline_options import PipelineOptions

__all__ = [
    "ArgumentParser",
    "add_batch_flags",
    "UserError",
    "beam_options",
    "is_local_runner",
    "new_run",
    "parse_as_of",
    "parse_ignoring_beam_flags",
    "split_beam_flags",
    "run_main",
    "remove_tree",
    "write_dead_letters",
]

LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"}
log = logging.getLogger("backfill")


class UserError(Exception):
    """An error the user can fix; ``str()`` is one line, shown as is."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line and exits 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_batch_flags(p: argparse.ArgumentParser) -> None:
    """The flags every batch step over the base shares (scan, merge)."""
    p.add_argument("--as-of", type=parse_as_of, default=None, help="date the checks are made against (default: today)")
    p.add_argument("--policy", default=None, help="policy YAML replacing the default Decree 25 policy")
    p.add_argument("--encoding", default="utf-8", help="CSV encoding: utf-8 (default) or gb18030")
    p.add_argument("--batch-size", type=int, default=65_536, help="rows per Arrow batch")
    p.add_argument("--shuffle-buckets", type=int, default=None, help="buckets of the shuffles (default: from the input size)")
    p.add_argument("--spill", choices=["auto", "on", "off"], default="auto",
                   help="spill shuffle payloads to files (auto: on for local runners)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def parse_as_of(value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--as-of {value!r} is not a date (YYYY-MM-DD)") from None


def beam_options(beam_args: list[str], **overrides) -> "PipelineOptions":
    """Beam options from the pass-through flags, with the local runner as default.

    ``--runner DirectRunner`` means "run it here": Beam 2.77's DirectRunner may
    hand batch jobs to Prism, which it downloads, so it becomes the FnApiRunner.
    """
    args = list(beam_args)
    for i, arg in enumerate(args):
        if arg == "--runner=DirectRunner" or (arg == "DirectRunner" and i and args[i - 1] == "--runner"):
            log.info("runner DirectRunner: using the local FnApiRunner (no Prism download)")
            args[i] = "--runner=FnApiRunner" if arg.startswith("--runner=") else "FnApiRunner"
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args = ["--runner", "FnApiRunner", *args]
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(args, **overrides)


def split_beam_flags(parser: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace, list[str]]:
    """The step's own arguments and Beam's options; an unknown flag that is not a Beam option (a typo
    such as ``--stop-after-idel``) is the usual one-line error, never silently handed to Beam."""
    args, unknown = parser.parse_known_args(argv)
    if not unknown:
        return args, []
    from apache_beam.options.pipeline_options import PipelineOptions

    beam = set(PipelineOptions([]).get_all_options())
    stray = [a for a in unknown if not (a.startswith("--") and a[2:].split("=", 1)[0].replace("-", "_") in beam)]
    flags = [a for a in stray if a.startswith("-")]
    if flags:
        parser.error(f"unrecognized arguments: {' '.join(flags)}")
    if stray:  # a value: keep it only if it follows a Beam flag
        values = {unknown[i + 1] for i, a in enumerate(unknown[:-1]) if a.startswith("--") and "=" not in a}
        if any(v not in values for v in stray):
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
    return args, unknown


def parse_ignoring_beam_flags(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """Parse a step that runs no Beam pipeline but is launched like one (the DAGs' Beam operator
    adds ``--runner`` and the like): Beam's own options are accepted and ignored."""
    args, beam_args = split_beam_flags(parser, argv)
    if beam_args:
        log.info("%s runs no Beam pipeline: ignoring %s", parser.prog, " ".join(beam_args))
    return args


def runner_name(options: "PipelineOptions") -> str:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner or "FnApiRunner"
    return runner if isinstance(runner, str) else type(runner).__name__


def is_local_runner(options: "PipelineOptions") -> bool:
    return runner_name(options) in LOCAL_RUNNERS


def new_run(step: str) -> tuple[str, str]:
    """(run_id, start time as UTC ISO-8601)."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return f"{step}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}", now.isoformat().replace("+00:00", "Z")


def remove_tree(path: str) -> None:
    """Delete a folder (local or gs://) if it exists."""
    try:
        from apache_beam.io.filesystems import FileSystems

        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception:  # cleanup is best effort; the run's outcome stands
        log.debug("could not remove %s", path)


def write_dead_letters(dead, path_prefix: str):
    """Dead-letter tables -> one JSON Lines file (``PREFIX-00000-of-00001.jsonl``), a row per line."""
    import json

    import apache_beam as beam

    def rows(table):
        for row in table.to_pylist():
            yield json.dumps(row, ensure_ascii=False, sort_keys=False)

    return (
        dead
        | "DeadLettersToJson" >> beam.FlatMap(rows)
        | "WriteDeadLetters" >> beam.io.WriteToText(path_prefix, file_name_suffix=".jsonl", num_shards=1)
    )


def _user_message(exc: BaseException) -> str | None:
    """The one-line message of a user-facing error anywhere in the chain."""
    from pipelines.io.base_files import InputError
    from transforms.notify.campaign import CampaignError
    from transforms.crypto.keyset import KeysetError
    from transforms.scan.policy import PolicyError
    from transforms.crypto.vault import VaultError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (UserError, InputError, PolicyError, KeysetError, VaultError, CampaignError)):
            return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        exc = exc.__cause__ or exc.__context__
    return None


def _beam_wrapped(exc: BaseException) -> str | None:
    """Beam re-raises worker errors as new exceptions whose text holds the original."""
    text = str(exc)
    for marker in ("InputError: ", "PolicyError: ", "UserError: ", "KeysetError: ", "VaultError: ", "CampaignError: ",
                   "AuthenticationFailed: ", "UnknownLine: "):
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0]
    return None


def run_main(prog: str, body, argv) -> int:
    """Run a step's body; user errors become one line on stderr and exit 1."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("backfill").setLevel(logging.INFO)
    try:
        return body(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback for the user
        message = _user_message(exc) or _beam_wrapped(exc)
        if message is None:
            log.debug("unexpected failure", exc_info=True)
            message = f"unexpected {type(exc).__name__}; re-run with --debug for details"
            if "--debug" in (argv or sys.argv):
                raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
