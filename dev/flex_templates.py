"""Write the Flex Templates' metadata from the launchers' own parsers: ``python -m dev.flex_templates``.

Every template of ``deploy/flex_main.py`` gets ``deploy/templates/NAME/metadata.json``: its name,
description and one parameter per flag of its launcher (``deploy.flex_main.parameter_actions``), named
as the flag is spelled (``as-of``), with a label, the flag's help, whether it is optional, and regexes
the value must match (Dataflow checks them before it starts the launcher). A flag with no rule for its
value below is an error here: a new flag is given a rule before a template carries it.
``tests/test_deploy.py`` regenerates the files and compares, so they cannot drift from the launchers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from deploy.flex_main import TEMPLATES, Template, flag_name, launcher_parser, parameter_actions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "deploy", "templates")

_GS = r"gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^,\s]*)?"
_DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_PUBSUB = r"projects/[^/\s]+/{kind}/[A-Za-z][A-Za-z0-9._~+%-]{{2,254}}"
_TEXT = r"[^\r\n]{1,500}"

# The values each flag takes, by flag (without its dashes): an unanchored regex of ONE value.
VALUES = {
    **dict.fromkeys(
        (
            "base",
            "out",
            "vault",
            "registrations",
            "deltas",
            "suppress",
            "receipts",
            "scan",
            "merged",
            "previous",
            "notify",
            "lines",
            "earlier-merges",
            "keys",
            "policy",
            "campaign",
            "audit-log",
        ),
        _GS,
    ),
    "as-of": _DATE,
    "detected-at": _DATE + r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?",
    "subscription": _PUBSUB.format(kind="subscriptions"),
    "receipts-subscription": _PUBSUB.format(kind="subscriptions"),
    "topic": _PUBSUB.format(kind="topics"),
    "encoding": r"utf-8|gb18030",
    "key-version": r"[jv][0-9]+",
    "kek": r"gcp-kms://projects/[^/\s]+/locations/[^/\s]+/keyRings/[^/\s]+/cryptoKeys/[^/\s]+",
    "actor": _TEXT,
    "description": _TEXT,
}
_BY_TYPE = {int: r"[0-9]+", float: r"[0-9]+(\.[0-9]+)?"}


def _one_value(action: argparse.Action, name: str) -> str:
    if action.choices:
        return "|".join(sorted(str(c) for c in action.choices))
    if name in VALUES:
        return VALUES[name]
    if action.type in _BY_TYPE:
        return _BY_TYPE[action.type]
    raise SystemExit(f"dev.flex_templates: no rule for the values of --{name}: add one to VALUES")


def _regex(action: argparse.Action, name: str) -> str:
    if action.nargs == 0:
        return "^(true|false)$"
    one = f"({_one_value(action, name)})"
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        return f"^{one}(,{one})*$"
    return f"^{one}$"


def _help(action: argparse.Action) -> str:
    text = (action.help or "").rstrip(".")
    if action.nargs == 0:
        text += "; true or false"
    elif isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        text += "; several: comma-separated"
    if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in text:
        text += f" (default {action.default})"
    return text[:1].upper() + text[1:] + "."


def parameter(action: argparse.Action, others: list[str]) -> dict:
    """``others``: the flags of a required either-or group it belongs to (incident's --key-version | --lines)."""
    name = flag_name(action).lstrip("-")
    either = f" Give exactly one of {', '.join([name, *others])}." if others else ""
    return {
        "name": name,
        "label": name.replace("-", " ").capitalize(),
        "helpText": _help(action) + either,
        "isOptional": not action.required,
        "regexes": [_regex(action, name)],
    }


def _either(template: Template, action: argparse.Action) -> list[str]:
    for group in launcher_parser(template)._mutually_exclusive_groups:
        flags = [flag_name(a) for a in group._group_actions]
        if group.required and flag_name(action) in flags:
            return [flag.lstrip("-") for flag in flags if flag != flag_name(action)]
    return []


def metadata(name: str, template: Template) -> dict:
    return {
        "name": f"backfill-{name}",
        "description": template.description,
        "streaming": template.streaming,
        "parameters": [parameter(a, _either(template, a)) for a in parameter_actions(template)],
    }


def rendered(name: str) -> str:
    """The metadata file's text, as it is checked in."""
    return json.dumps(metadata(name, TEMPLATES[name]), ensure_ascii=False, indent=2) + "\n"


def path(name: str) -> str:
    return os.path.join(OUT, name, "metadata.json")


def main(argv=None) -> int:
    del argv
    for name in TEMPLATES:
        os.makedirs(os.path.dirname(path(name)), exist_ok=True)
        with open(path(name), "w", encoding="utf-8") as f:
            f.write(rendered(name))
        print(os.path.relpath(path(name), ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
