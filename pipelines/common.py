"""What every step's launcher shares: argument parsing with one-line errors,
the explicit local runner, run ids, and turning failures into one line.

One flag rule for every command (``split_beam_flags``): a flag the command
defines is the command's; a flag of a registered Beam ``PipelineOptions``
(with dashes or underscores) goes to Beam in a step that runs a pipeline and
is accepted and ignored (logged) in one that does not; anything else is a
one-line error, exit 2, with the closest flag as a suggestion. Flags are never
abbreviated. Without ``--runner`` the local FnApiRunner is chosen explicitly:
Beam's DirectRunner would otherwise try to download the Prism runner, and
there is no network at run time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import logging
import os
import re
import sys
import unicodedata
import uuid

from typing import TYPE_CHECKING

from pipelines.flags import ID_NUMBER, LOCAL_RUNNERS, ArgumentParser
from pipelines.flags import split_beam_flags as _split_beam_flags

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
    "refuse_document_numbers",
    "split_beam_flags",
    "run_main",
    "remove_tree",
    "write_dead_letters",
]

log = logging.getLogger("backfill")


class UserError(Exception):
    """An error the user can fix; ``str()`` is one line, shown as is."""


def add_batch_flags(
    p: argparse.ArgumentParser, buckets_help: str = "buckets of the shuffles (default: from the input size)"
) -> None:
    """The flags every batch step over the base shares (scan, merge, compact)."""
    p.add_argument("--as-of", type=parse_as_of, default=None, help="date the checks are made against (default: today)")
    p.add_argument("--policy", default=None, help="policy YAML replacing the default Decree 25 policy")
    p.add_argument("--encoding", default="utf-8", help="CSV encoding: utf-8 (default) or gb18030")
    p.add_argument("--batch-size", type=int, default=65_536, help="rows per Arrow batch")
    p.add_argument("--shuffle-buckets", type=int, default=None, help=buckets_help)
    p.add_argument(
        "--spill",
        choices=["auto", "on", "off"],
        default="auto",
        help="spill shuffle payloads to files (auto: on for local runners)",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def split_beam_flags(parser: argparse.ArgumentParser, argv, *, pipeline=True) -> tuple[argparse.Namespace, list[str]]:
    """The one flag rule of every command (:func:`pipelines.flags.split_beam_flags`); then, when an argument
    names an ``s3://`` path, Beam's file systems get the run's options at once: the launcher plans its inputs
    and checks its outputs through them before any pipeline exists, and Beam's S3 file system cannot work
    without options (its endpoint: ``--s3_endpoint_url``, else ``AWS_ENDPOINT_URL``)."""
    given = sys.argv[1:] if argv is None else argv
    _register_project_options(parser, given)
    args, beam_args = _split_beam_flags(parser, argv, pipeline=pipeline)
    if any("s3://" in str(a) for a in given):
        from apache_beam.io.filesystems import FileSystems

        FileSystems.set_options(beam_options(beam_args))
    return args, beam_args


def _register_project_options(parser: argparse.ArgumentParser, argv) -> None:
    """Beam learns this project's own option (``--no_dataflow_kms_key``, pipelines/dataflow_options.py) before
    the flag rule lists Beam's flags, when a flag that is not the command's is given (Beam is loaded then)."""
    from pipelines import flags

    own = set(flags._own_flags(flags._parsers(parser)))
    if all(flags._flag(str(token)) in own or flags._flag(str(token)) is None for token in argv):
        return
    from pipelines import dataflow_options  # noqa: F401  (defines DeployOptions: Beam lists it from now on)

    if "no_dataflow_kms_key" not in flags._beam_flags():
        flags._beam_flags.cache_clear()  # listed before the option was registered


def parse_as_of(value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--as-of {value!r} is not a date (YYYY-MM-DD)") from None


def refuse_document_numbers(flag: str, text: str | None) -> None:
    """Free text a command records (a reveal's ``--purpose``, an incident's ``--description``) must hold no
    identity value: one that holds what looks like an identity card number (15 or 18 characters; full-width
    digits too) is refused, unquoted, before anything is read or written. Names and addresses cannot be told
    from other words; the help says to leave them out."""
    if text and ID_NUMBER.search(unicodedata.normalize("NFKC", text)):
        raise UserError(
            f"{flag} holds what looks like a document number; say it without identity values "
            "(they belong in the vault only); nothing was done"
        )


def beam_options(
    beam_args: list[str], *, step: str | None = None, run_id: str | None = None, **overrides
) -> "PipelineOptions":
    """Beam options from the pass-through flags, with the local runner as default.

    ``--runner DirectRunner`` means "run it here": Beam 2.77's DirectRunner may
    hand batch jobs to Prism, which it downloads, so it becomes the FnApiRunner.
    On Dataflow the launch is checked (region, CMEK, labels, network; one-line
    errors) and labelled with the ``step`` and ``run_id``: pipelines/dataflow_options.py.
    """
    args = list(beam_args)
    for i, arg in enumerate(args):
        if arg == "--runner=DirectRunner" or (arg == "DirectRunner" and i and args[i - 1] == "--runner"):
            log.info("runner DirectRunner: using the local FnApiRunner (no Prism download)")
            args[i] = "--runner=FnApiRunner" if arg.startswith("--runner=") else "FnApiRunner"
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args = ["--runner", "FnApiRunner", *args]
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and not any(a == "--s3_endpoint_url" or a.startswith("--s3_endpoint_url=") for a in args):
        args.append(f"--s3_endpoint_url={endpoint}")  # workers outside this environment reach the same store
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.dataflow_options import dataflow_args

    return PipelineOptions(dataflow_args(args, step=step, run_id=run_id), **overrides)


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
    """Delete a folder this run made (local or gs://) if it exists: a temporary folder, never an output.

    Outputs are replaced through ``pipelines.io.publish`` (marked, guarded, written beside, switched)."""
    try:
        from pipelines.io.publish_guards import delete

        delete(path)  # on an object store: every object under the prefix
    except Exception:  # cleanup is best effort; the run's outcome stands
        log.debug("could not remove %s", path)


def write_dead_letters(dead, path_prefix: str):
    """Dead-letter tables -> one JSON Lines file (``PREFIX-00000-of-00001.jsonl``), a row per line."""
    import apache_beam as beam

    from transforms.core.deadletter import json_lines

    return (
        dead
        | "DeadLettersToJson" >> beam.FlatMap(json_lines)
        | "WriteDeadLetters" >> beam.io.WriteToText(path_prefix, file_name_suffix=".jsonl", num_shards=1)
    )


def _user_message(exc: BaseException) -> str | None:
    """The one-line message of a user-facing error anywhere in the chain."""
    from pipelines.io.planning import InputError
    from transforms.core.rows import ColumnTypeError
    from transforms.notify.campaign import CampaignError
    from transforms.crypto.keyset import KeysetError
    from transforms.scan.policy import PolicyError
    from transforms.crypto.vault import VaultError

    user = (UserError, InputError, PolicyError, KeysetError, VaultError, CampaignError, ColumnTypeError)
    seen, chain = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        if isinstance(exc, user):
            return _one_line(str(exc)) if str(exc) else type(exc).__name__
        exc = exc.__cause__ or exc.__context__
    for each in chain:  # a file system refusal (a file where a folder must be, no permission, disk full)
        if isinstance(each, OSError) and each.errno and each.filename:
            return _os_line(each.errno, each.strerror or "", str(each.filename))
    return None


# The exception types whose text is a user message (designed to hold no identity value), as Beam
# quotes them in the text of the exception it re-raises for a worker failure.
_WRAPPED = (
    "InputError",
    "PolicyError",
    "UserError",
    "KeysetError",
    "VaultError",
    "CampaignError",
    "AuthenticationFailed",
    "UnknownLine",
    "ColumnTypeError",
)
_WRAPPED_RE = re.compile(r"(?:^|[\s.'\"(])(?:" + "|".join(_WRAPPED) + r"): (.+)", re.MULTILINE)
# An operating-system error as its text reads: "[Errno 20] Not a directory: '/out/classified'".
_OS_RE = re.compile(r"\b(?:OSError|IOError|[A-Za-z]+Error): \[Errno (\d+)\] ([^:\n]+): '([^'\n]+)'")
_STEP_NOTE = re.compile(r"\s*\[while running '[^\n]*'\]\s*$")
_OS_HINTS = {
    errno.ENOTDIR: "a file is in the way: give a folder, or a path that does not exist yet",
    errno.EEXIST: "it already exists",
    errno.EISDIR: "it is a folder, not a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "read-only file system",
}


def _one_line(text: str) -> str:
    """The first line of a message, without Beam's ``[while running 'Step']`` note."""
    return _STEP_NOTE.sub("", text.splitlines()[0] if text else text)


def _os_line(code: int, strerror: str, path: str) -> str:
    hint = _OS_HINTS.get(code)
    return f"{path}: {strerror}" + (f" ({hint})" if hint and hint.lower() != strerror.lower() else "")


def _beam_wrapped(exc: BaseException) -> str | None:
    """Beam re-raises worker errors as new exceptions whose text holds the original."""
    text = str(exc)
    match = _WRAPPED_RE.search(text)
    if match:
        return _one_line(match.group(1))
    # An operating-system error that names a path ("[Errno 20] Not a directory: '/out/classified'"):
    # its text is the OS's, never row data.
    match = _OS_RE.search(text)
    if match:
        return _os_line(int(match.group(1)), match.group(2), match.group(3))
    return None


class _Quiet(logging.Filter):
    """Without --debug: no traceback and no other library's error text reaches stderr.

    Beam logs a worker's exception (``logging.error`` with ``exc_info``) before it re-raises it,
    and the runner logs it again; its text may quote the data a reader choked on. The failure
    itself is reported once, as one line, by :func:`run_main`. Records of the ``backfill``
    loggers pass (their message, without a traceback); other libraries' warnings pass too;
    their errors, and anything of theirs carrying a traceback, are dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.debug = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.debug:
            return True
        ours = record.name == "backfill" or record.name.startswith("backfill.")
        if not ours and (record.levelno >= logging.ERROR or record.exc_info or record.stack_info):
            return False
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: nothing worth printing
            return False
        return ours or "Traceback (most recent call last)" not in text


class _Formatter(logging.Formatter):
    """The message; without --debug never a traceback or a stack."""

    def __init__(self, quiet: _Quiet) -> None:
        super().__init__("%(message)s")
        self._quiet = quiet

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record) if self._quiet.debug else record.getMessage()


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is emitted."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


# Beam's Dataflow client logs, at INFO, the line Airflow's Beam operator reads the job id from ("Created job with
# id: [ID]") among the job's whole options and graph; only that line and the console link pass (WARNING and above
# as before). Matched on the format string: its arguments are the job id, region and project.
_DATAFLOW_CLIENT = "apache_beam.runners.dataflow.internal.apiclient"
_JOB_LINES = ("Created job with id: [", "To access the Dataflow monitoring console")


class _JobLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or str(record.msg).startswith(_JOB_LINES)


_depth = 0  # run_main calls in progress: a step run by another (the demo) keeps the outer mode


def _set_up_logging(debug: bool) -> None:
    """One stderr handler on the root logger (added once per process), quiet unless ``debug``.
    When the root logger already has handlers of someone else (pytest, an embedding program),
    they are left as they are, as ``logging.basicConfig`` would."""
    if _depth:
        return
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _Stderr)]
    if not ours and root.handlers:
        logging.getLogger("backfill").setLevel(logging.INFO)
        return
    if not ours:
        quiet = _Quiet()
        handler = _Stderr()
        handler.addFilter(quiet)
        handler.setFormatter(_Formatter(quiet))
        root.addHandler(handler)
        if root.level == logging.NOTSET or root.level > logging.WARNING:
            root.setLevel(logging.WARNING)
        client = logging.getLogger(_DATAFLOW_CLIENT)
        client.addFilter(_JobLines())
        client.setLevel(logging.INFO)
        ours = [handler]
    for handler in ours:
        for each in handler.filters:
            if isinstance(each, _Quiet):
                each.debug = debug
    logging.getLogger("backfill").setLevel(logging.INFO)


def run_main(prog: str, body, argv) -> int:
    """Run a step's body; user errors become one line on stderr and exit 1.

    Without ``--debug`` nothing else of a failure reaches stderr: no traceback, not even one
    Beam logs for a worker (see :class:`_Quiet`)."""
    global _depth
    debug = "--debug" in (sys.argv if argv is None else argv)
    _set_up_logging(debug)
    _depth += 1
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
            if debug:
                raise
        elif debug:  # a user error: its one line below, and with --debug where it came from
            import traceback

            traceback.print_exc(file=sys.stderr)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
    finally:
        _depth -= 1
