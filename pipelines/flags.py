"""The command line of every step: its parser (:class:`ArgumentParser`) and the one flag rule (``split_beam_flags``).

A flag the command defines is the command's; a flag of a registered Beam ``PipelineOptions`` (with dashes or
underscores) goes to Beam in a step that runs a pipeline and is accepted and ignored (logged) in one that does
not; anything else is a one-line error, exit 2, with the closest flag as a suggestion. Flags are never
abbreviated, so an old spelling kept as an alias (``--classified`` for ``--scan``) is a name of its own, never
a prefix of another. One vocabulary (docs/architecture.md "Command line"): ``--scan`` is a scan's output
folder, ``--merged DIR`` a merge, compact or retention output (its ``base/`` and ``vault/``: see
:func:`add_merged`), ``--vault`` a vault folder. Every command prints ``--version``. Re-exported by
:mod:`pipelines.common`.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import functools
import logging
import re
import sys
from typing import Callable

__all__ = [
    "LOCAL_RUNNERS",
    "PROGRESS_SECONDS",
    "ArgumentParser",
    "HelpFormatter",
    "add_merged",
    "add_progress_flag",
    "package_version",
    "split_beam_flags",
    "runs_in_process",
    "WORKER_FLAGS",
]

LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"}
# Beam's local worker processes: asking for them asks for the Beam job, not a step's in-process run.
WORKER_FLAGS = ("--direct_num_workers", "--direct_running_mode")
log = logging.getLogger("backfill")
PACKAGE = "subscriber-backfill"


def package_version() -> str:
    """The installed package's version (setup.py's), or the checkout's ``pipelines.__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # run from a checkout that was never installed
        from pipelines import __version__

        return __version__


class HelpFormatter(argparse.HelpFormatter):
    """Each flag under its current name; an old spelling kept as an alias is named after its help."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if len(_long(action)) > 1:
            action = copy.copy(action)
            action.option_strings = action.option_strings[:1]
        return super()._format_action_invocation(action)

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        names = _long(action)  # an alias keeps its old dest: the value is named after the current flag
        return names[0][2:].upper().replace("-", "_") if names else super()._get_default_metavar_for_optional(action)

    def _expand_help(self, action: argparse.Action) -> str:
        text = super()._expand_help(action)
        old = _long(action)[1:]
        return f"{text} (old name{'s' if len(old) > 1 else ''}: {', '.join(old)})" if old else text


def _long(action: argparse.Action) -> list[str]:
    """The action's names when all are long flags (``--scan``, ``--classified``), else []."""
    names = list(action.option_strings)
    return names if names and all(n.startswith("--") for n in names) else []


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line and exits 2; a flag is never abbreviated; ``--version``.

    ``checks``: functions ``(parser, args)`` that :func:`split_beam_flags` runs on the parsed arguments of
    this parser (a check between flags, one line and exit 2 through ``parser.error``)."""

    def __init__(self, *args, version: bool = True, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.checks: list[Callable[[argparse.ArgumentParser, argparse.Namespace], None]] = []
        if version:
            self.add_argument(
                "--version",
                action="version",
                version=f"%(prog)s {package_version()}",
                help="print the version and exit",
            )

    def error(self, message: str):
        message = _ALIASED.sub(r"\1", message)  # argparse's "--scan/--classified": the current name
        self.exit(2, f"{self.prog}: error: {unquote_identity(message)}\n")


_ALIASED = re.compile(r"(--[\w-]+)(?:/--[\w-]+)+")
# What looks like an identity card number (18 characters or the first generation's 15 digits) in a text a user
# typed: loose on purpose. Ids in dead letters use transforms/core/deadletter.py's stricter, date-checked pattern,
# so that long numeric ids (IMSIs, snowflake event ids) stay ids there.
ID_NUMBER = re.compile(r"(?<![0-9])(?:[0-9]{17}[0-9Xx]|[0-9]{15})(?![0-9])")
_QUOTED = re.compile(r"'([^'\n]*)'")


def looks_plain(text: str) -> bool:
    """A value an error may quote back: printable ASCII holding no identity card number."""
    return text.isascii() and text.isprintable() and not ID_NUMBER.search(text)


def shown_value(value: str) -> str:
    """A flag's value as a one-line error may quote it: ``repr`` when plain, else a note that it is not shown."""
    return repr(value) if looks_plain(value) else "(a value not shown)"


def unquote_identity(message: str) -> str:
    """argparse and the flags' own checks quote a bad value back ('...'): one that may be an identity value (a
    name, an address or a document number typed into the wrong flag) is not shown."""
    return _QUOTED.sub(lambda m: shown_value(m.group(1)), message)


PROGRESS_SECONDS = 10.0  # pipelines/progress.py


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    """``--progress-seconds S``: the progress lines' period (pipelines/progress.py)."""
    p.add_argument(
        "--progress-seconds",
        type=float,
        default=PROGRESS_SECONDS,
        metavar="S",
        help=f"a progress line on stderr every S seconds while the job runs (default {PROGRESS_SECONDS:g}; 0: none)",
    )


MERGED_HELP = "a merge, compact or retention output folder: its base/ and vault/ (instead of --base and --vault)"


def add_merged(
    p: ArgumentParser, *, base_help: str | None, vault_help: str, vault_required: bool = False, append: bool = True
) -> None:
    """``--merged DIR`` beside ``--base`` and ``--vault``: ``DIR/base`` and ``DIR/vault`` of a merge, compact or
    retention output. Exactly one of ``--base`` and ``--merged`` (one of ``--vault`` and ``--merged`` when the
    command reads no base: ``base_help`` None); ``--vault`` goes with ``--base`` (``vault_required``: must)."""
    either = p.add_mutually_exclusive_group(required=True)
    if base_help is not None:
        either.add_argument("--base", action="append" if append else "store", help=base_help)
    either.add_argument("--merged", metavar="DIR", help=MERGED_HELP)
    (p if base_help is not None else either).add_argument("--vault", default=None, help=vault_help)

    def expand(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
        if args.merged is None:
            if vault_required and args.vault is None:
                parser.error("--vault is required with --base (or give --merged DIR for DIR/base and DIR/vault)")
            return
        root = args.merged.rstrip("/") or args.merged
        if base_help is not None:
            if args.vault is not None:
                parser.error(f"--merged {args.merged} names its vault ({root}/vault): drop --vault")
            args.base = [f"{root}/base"] if append else f"{root}/base"
        args.vault = f"{root}/vault"

    p.checks.append(expand)


def split_beam_flags(parser: argparse.ArgumentParser, argv, *, pipeline=True) -> tuple[argparse.Namespace, list[str]]:
    """The one flag rule of every command: ``(the command's arguments, the Beam flags for its pipeline)``.

    A flag the command (or its subcommand) defines is the command's. A flag of a registered Beam
    ``PipelineOptions``, with dashes or underscores, is Beam's: it is returned, spelled as Beam spells it,
    with its value, when the step runs a pipeline (``pipeline``: a bool, or a function of the parsed
    arguments), and accepted and ignored (logged) when it does not. Anything else (a typo such as
    ``--asof``, an abbreviation such as ``--dry``) is a one-line error, exit 2, naming the closest flag.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parsers = _parsers(parser)
    for each in parsers:
        each.allow_abbrev = False
    _refuse_unknown_flags(parser, parsers, argv)  # first: a typo is named before argparse's own complaints
    _refuse_shadowed(parser, parsers, argv)
    args, rest = parser.parse_known_args(argv)
    active = _active_parser(parser, args)
    _refuse_repeated(active, [parser, active], argv)
    _refuse_empty(active, [parser, active], args)
    _refuse_out_of_range(active, args)
    for check in getattr(active, "checks", ()):
        check(active, args)
    beam_args = _beam_args(active, rest)
    if beam_args and not (pipeline(args) if callable(pipeline) else pipeline):
        log.info("%s runs no Beam pipeline: ignoring %s", active.prog, " ".join(beam_args))
        return args, []
    return args, beam_args


_NUMBER = re.compile(r"-\d+$|-\d*\.\d+$")  # a negative number is a value, as argparse takes it


def _flag(token: str) -> str | None:
    """The flag a token names (``--as-of`` for ``--as-of=2026-11-30``), or None for a value."""
    if len(token) < 2 or not token.startswith("-") or _NUMBER.match(token):
        return None
    name = token.split("=", 1)[0]
    return None if " " in name else name


def _norm(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parser and its subcommands' parsers."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _parsers(sub)
    return found


def _own_flags(parsers: list[argparse.ArgumentParser]) -> list[str]:
    return list(dict.fromkeys(s for p in parsers for a in p._actions for s in a.option_strings))


def _current_names(parsers: list[argparse.ArgumentParser]) -> dict[str, str]:
    """Every flag -> the name it is shown under (an alias -> its action's first name)."""
    return {s: (_long(a) or [s])[0] for p in parsers for a in p._actions for s in a.option_strings}


def _active_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the subcommand chosen (``keys init``), or ``parser`` itself."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _active_parser(action.choices[getattr(args, action.dest)], args)
    return parser


@functools.lru_cache(maxsize=1)
def _beam_flags() -> dict[str, tuple[str, object]]:
    """Beam's pipeline option flags: name with underscores -> (the flag as Beam spells it, its nargs)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    parsers: list = []
    names = PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
    flags = {
        _norm(s): (s, a.nargs)
        for s, a in parsers[0]._option_string_actions.items()
        if s.startswith("--") and s != "--help"
    }
    for name in names:
        flags.setdefault(_norm(name), (f"--{name}", "?"))
    return flags


def _beam_flag(flag: str) -> tuple[str, object] | None:
    """The Beam flag ``flag`` names, with dashes or underscores, or None."""
    return _beam_flags().get(_norm(flag))


def _unknown(flag: str, own: list[str], names: dict[str, str] | None = None) -> str:
    """``unknown flag --asof; did you mean --as-of?`` (the command's flags first, then Beam's; an old spelling
    that is closest is named by its current name: ``names``)."""
    guess, best = None, 0.0
    for group in (own, [spelled for spelled, _ in _beam_flags().values()]):
        by_name = {}
        for candidate in group:
            by_name.setdefault(_norm(candidate), candidate)
        for match in difflib.get_close_matches(_norm(flag), by_name, n=1):
            score = difflib.SequenceMatcher(None, _norm(flag), match).ratio()
            if score > best:
                guess, best = by_name[match], score
    guess = (names or {}).get(guess, guess)
    return f"unknown flag {flag}; did you mean {guess}?" if guess else f"unknown flag {flag}"


def _refuse_unknown_flags(parser: argparse.ArgumentParser, parsers: list, argv: list[str]) -> None:
    own = _own_flags(parsers)
    for token in argv:
        if token == "--":
            return
        flag = _flag(token)
        if flag is not None and flag not in own and _beam_flag(flag) is None:
            parser.error(_unknown(flag, own, _current_names(parsers)))


def _runner(argv: list[str]) -> str:
    for i, token in enumerate(argv):
        if token.startswith("--runner="):
            return token.split("=", 1)[1]
        if token == "--runner" and i + 1 < len(argv):
            return argv[i + 1]
    return "FnApiRunner"


def runs_in_process(beam_args: list[str]) -> bool:
    """No runner named, or a local one, and none of Beam's local worker options: a step that has an
    in-process engine (scan, report) runs there, without starting Beam."""
    workers = any(_flag(token) in WORKER_FLAGS for token in beam_args)
    return _runner(beam_args) in LOCAL_RUNNERS and not workers


def _refuse_shadowed(parser: argparse.ArgumentParser, parsers: list, argv: list[str]) -> None:
    """A Beam flag spelled like one of the command's (``--dry_run`` beside notify's ``--dry-run``) means
    the command's on a local runner, which ignores Beam's: a real send where a dry run was meant. Refused
    there; on a remote runner (a Dataflow dry run of the job) it is Beam's."""
    if _runner(argv) not in LOCAL_RUNNERS:
        return
    own = {_norm(flag): flag for flag in _own_flags(parsers)}
    for token in argv:
        flag = _flag(token)
        if flag is not None and _norm(flag) in own and flag != own[_norm(flag)]:
            parser.error(
                f"unknown flag {flag}; did you mean {own[_norm(flag)]}? ({flag} is Beam's option for "
                "remote runners; the local runner ignores it)"
            )


def _refuse_repeated(active: argparse.ArgumentParser, parsers: list, argv: list[str]) -> None:
    """A flag that takes one value, given twice with different values (``--out A --out B``, or under an old
    name and its current one), or a list flag given twice, is an error: argparse would keep the last one
    silently. The values are not quoted (a --purpose or a --description may hold anything)."""
    seen: dict[int, str] = {}
    i = 0
    while i < len(argv) and argv[i] != "--":
        token, flag = argv[i], _flag(argv[i])
        action = next((p._option_string_actions[flag] for p in parsers if flag in p._option_string_actions), None)
        i += 1
        if type(action) is not argparse._StoreAction or action.nargs not in (None, "*", "+"):
            continue
        if action.nargs is not None:  # a list flag (--manifests A B): a second one would replace the first
            if id(action) in seen:
                active.error(
                    f"argument {(_long(action) or action.option_strings)[0]}: given more than once; "
                    "list all its values after one"
                )
            seen[id(action)] = token
            continue
        if "=" in token:
            value = token.split("=", 1)[1]
        elif i < len(argv):
            value, i = argv[i], i + 1
        else:
            return  # argparse said so already
        if seen.setdefault(id(action), value) != value:
            name = (_long(action) or action.option_strings)[0]
            active.error(f"argument {name}: given more than once with different values; give it once")


# Free text that its command checks itself, with a message of its own (reveal: "a purpose is required").
OWN_BLANK_CHECK = ("--purpose", "--description", "--actor")


def _refuse_empty(active: argparse.ArgumentParser, parsers: list, args: argparse.Namespace) -> None:
    """An empty or blank value (``--out ""`` from an unset shell variable) is an error: as a path it would
    name the working directory."""
    for action in (a for p in parsers for a in p._actions if a.option_strings and a.nargs != 0):
        if set(action.option_strings) & set(OWN_BLANK_CHECK):
            continue
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        if value is not action.default and any(isinstance(v, str) and not v.strip() for v in values):
            name = (_long(action) or action.option_strings)[0]
            active.error(f"argument {name}: empty value")


# Counts and periods that have a floor (one home for the flags several commands share): a negative
# --shuffle-buckets used to end in "unexpected OverflowError", --samples -1 in "unexpected ArrowInvalid".
AT_LEAST = {
    "--shuffle-buckets": 1,
    "--publish-batch": 1,
    "--samples": 0,
    "--show-regions": 0,
    "--progress-seconds": 0,
    "--batch-size": 1,
    "--workers": 1,
    "--estimated-rows": 0,
}


def _refuse_out_of_range(active: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for flag, least in AT_LEAST.items():
        action = active._option_string_actions.get(flag)
        value = getattr(args, action.dest, None) if action is not None else None
        if value is not None and not least <= value < float("inf"):  # NaN fails both
            active.error(f"argument {flag}: must be at least {least}" + (" and finite" if action.type is float else ""))


def _beam_args(parser: argparse.ArgumentParser, rest: list[str]) -> list[str]:
    """What argparse left over, checked: Beam flags (in Beam's spelling) and their values, nothing else."""
    own, beam_args, i = _own_flags([parser]), [], 0
    while i < len(rest):
        token, flag = rest[i], _flag(rest[i])
        if flag is None:  # a value no flag takes
            parser.error(f"unrecognized arguments: {' '.join(rest[i:])}")
        known = _beam_flag(flag)
        if known is None:  # another subcommand's flag (keys init --vault)
            parser.error(_unknown(flag, own, _current_names([parser])))
        spelled, nargs = known
        beam_args.append(spelled + token[len(flag) :])
        i += 1
        if nargs != 0 and "=" not in token and i < len(rest) and _flag(rest[i]) is None:
            beam_args.append(rest[i])
            i += 1
        elif nargs is None and "=" not in token:
            parser.error(f"argument {flag}: expected one argument")
    return beam_args
