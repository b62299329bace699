"""The one flag rule of every command (``split_beam_flags``).

A flag the command defines is the command's; a flag of a registered Beam ``PipelineOptions`` (with dashes or
underscores) goes to Beam in a step that runs a pipeline and is accepted and ignored (logged) in one that does
not; anything else is a one-line error, exit 2, with the closest flag as a suggestion. Flags are never
abbreviated. Re-exported by :mod:`pipelines.common`.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import logging
import re
import sys

__all__ = ["LOCAL_RUNNERS", "split_beam_flags"]

LOCAL_RUNNERS = {"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"}
log = logging.getLogger("backfill")


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


def _unknown(flag: str, own: list[str]) -> str:
    """``unknown flag --asof; did you mean --as-of?`` (the command's flags first, then Beam's)."""
    guess, best = None, 0.0
    for group in (own, [spelled for spelled, _ in _beam_flags().values()]):
        by_name = {}
        for candidate in group:
            by_name.setdefault(_norm(candidate), candidate)
        for match in difflib.get_close_matches(_norm(flag), by_name, n=1):
            score = difflib.SequenceMatcher(None, _norm(flag), match).ratio()
            if score > best:
                guess, best = by_name[match], score
    return f"unknown flag {flag}; did you mean {guess}?" if guess else f"unknown flag {flag}"


def _refuse_unknown_flags(parser: argparse.ArgumentParser, parsers: list, argv: list[str]) -> None:
    own = _own_flags(parsers)
    for token in argv:
        if token == "--":
            return
        flag = _flag(token)
        if flag is not None and flag not in own and _beam_flag(flag) is None:
            parser.error(_unknown(flag, own))


def _runner(argv: list[str]) -> str:
    for i, token in enumerate(argv):
        if token.startswith("--runner="):
            return token.split("=", 1)[1]
        if token == "--runner" and i + 1 < len(argv):
            return argv[i + 1]
    return "FnApiRunner"


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


def _beam_args(parser: argparse.ArgumentParser, rest: list[str]) -> list[str]:
    """What argparse left over, checked: Beam flags (in Beam's spelling) and their values, nothing else."""
    own, beam_args, i = _own_flags([parser]), [], 0
    while i < len(rest):
        token, flag = rest[i], _flag(rest[i])
        if flag is None:  # a value no flag takes
            parser.error(f"unrecognized arguments: {' '.join(rest[i:])}")
        known = _beam_flag(flag)
        if known is None:  # another subcommand's flag (keys init --vault)
            parser.error(_unknown(flag, own))
        spelled, nargs = known
        beam_args.append(spelled + token[len(flag) :])
        i += 1
        if nargs != 0 and "=" not in token and i < len(rest) and _flag(rest[i]) is None:
            beam_args.append(rest[i])
            i += 1
        elif nargs is None and "=" not in token:
            parser.error(f"argument {flag}: expected one argument")
    return beam_args
