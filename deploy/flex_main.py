"""The program of every Flex Template (``FLEX_TEMPLATE_PYTHON_PY_FILE`` in the Dockerfile's ``launcher`` stage).

Dataflow's template launcher runs ``python /template/flex_main.py`` with the template's parameters as
``--NAME=VALUE`` and Beam's options (``--runner``, ``--project``, ``--region``, ``--dataflow_kms_key``...).
``BACKFILL_TEMPLATE``, fixed when the launcher image is built (``--build-arg TEMPLATE=scan``), names the
template; :data:`TEMPLATES` maps it to its launcher. Each parameter is one of the launcher's own flags
(``deploy/templates/NAME/metadata.json``, made by ``python -m dev.flex_templates``); this program turns
the parameters into the launcher's command line and runs it:

* a parameter named like a flag of the launcher, with dashes or underscores (``as-of``, ``as_of``),
  becomes that flag, spelled as the launcher spells it;
* an on/off flag takes ``true`` or ``false`` (``false`` leaves it out);
* a repeatable flag (``--base``) and a list flag (``--earlier-merges``) take a comma-separated list;
* anything else passes through untouched: Beam's options, and mistakes, which the launcher refuses
  in one line like any unknown flag.

Template launches return once the job is written, before it runs: the launchers accept that only for
the streaming merge (pipelines/dataflow_options.py); the batch steps refuse it in one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys

__all__ = [
    "NOT_PARAMETERS",
    "TEMPLATES",
    "Template",
    "flag_name",
    "launcher_argv",
    "launcher_parser",
    "parameter_actions",
    "main",
]


@dataclasses.dataclass(frozen=True)
class Template:
    module: str  # the launcher, run as python -m MODULE
    description: str
    fixed: tuple[str, ...] = ()  # arguments every launch of the template gives (a subcommand, --streaming)
    excluded: tuple[str, ...] = ()  # flags of the launcher that are not parameters (besides NOT_PARAMETERS)
    streaming: bool = False


# Never parameters: help and the version; tracebacks in the launcher's logs; spilling, which needs a local
# runner; the progress lines, which a launcher prints only for a local runner (Dataflow's job page has them).
NOT_PARAMETERS = ("-h", "--help", "--version", "--debug", "--spill", "--progress-seconds", "--workers")  # local-only

TEMPLATES = {
    "scan": Template("pipelines.scan", "Decree 25 backfill: classify every line's identity under the policy"),
    "notify": Template(
        "pipelines.notify", "Decree 25 backfill: plan a campaign wave's SMS, call and announcement jobs"
    ),
    "merge": Template(
        "pipelines.merge", "Decree 25 backfill: merge a day's completed registrations into the base (tokens, vault)"
    ),
    "merge-streaming": Template(
        "pipelines.merge_streaming",
        "Decree 25 backfill: merge registrations from Pub/Sub as they arrive (streaming)",
        fixed=("--streaming",),
        excluded=("--streaming", "--stop-after-idle", "--max-windows", "--max-messages", "--max-window-messages"),
        streaming=True,
    ),
    "compact": Template("pipelines.compact", "Decree 25 backfill: fold the streaming merge's deltas into a new base"),
    "retention": Template(
        "pipelines.retention", "Decree 25 backfill: purge the identity of lines terminated past the retention period"
    ),
    "incident": Template(
        "pipelines.incident", "Decree 25 backfill: scope a suspected leak by key version or line list; shred"
    ),
    "report": Template(
        "pipelines.report",
        "Decree 25 backfill: completion analytics and agent compliance (report.html, CSV, Parquet)",
        excluded=("--self-inspection", "--year", "--manifests", "--keys"),  # the self-inspection runs no job
    ),
    "retokenize": Template(
        "pipelines.keys",
        "Decree 25 backfill: re-token the merged base under the keyset's new join key",
        fixed=("retokenize",),
    ),
}


def flag_name(action: argparse.Action) -> str:
    """The flag's current name: its first long option (an old spelling kept as an alias comes after it)."""
    return next(s for s in action.option_strings if s.startswith("--"))


def _norm(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def launcher_parser(template: Template) -> argparse.ArgumentParser:
    """The launcher's parser, or its subcommand's (``keys retokenize``)."""
    parser = importlib.import_module(template.module).parser()
    for token in template.fixed:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and token in subs[0].choices:
            parser = subs[0].choices[token]
    return parser


def parameter_actions(template: Template) -> list[argparse.Action]:
    """The launcher's flags that are the template's parameters, in the parser's order."""
    skip = set(NOT_PARAMETERS) | set(template.excluded)
    return [
        a
        for a in launcher_parser(template)._actions
        if a.option_strings and not skip & set(a.option_strings) and not isinstance(a, argparse._SubParsersAction)
    ]


def _flag_args(action: argparse.Action, name: str, value: str) -> list[str]:
    flag = flag_name(action)
    if action.nargs == 0:  # on/off
        if value.lower() not in ("true", "false"):
            raise ValueError(f"parameter {name}: {value!r} is neither true nor false")
        return [flag] if value.lower() == "true" else []
    if isinstance(action, argparse._AppendAction):
        return [part for item in value.split(",") if item for part in (flag, item)]
    if action.nargs in ("*", "+"):
        return [flag, *(item for item in value.split(",") if item)]
    return [f"{flag}={value}"]


def launcher_argv(name: str, params: list[str]) -> list[str]:
    """The launcher's command line for template ``name`` launched with ``params``."""
    template = TEMPLATES[name]
    actions = {_norm(s): a for a in parameter_actions(template) for s in a.option_strings}
    out, i = list(template.fixed), 0
    while i < len(params):
        token = params[i]
        key, eq, value = token.partition("=")
        action = actions.get(_norm(key)) if token.startswith("--") else None
        if action is None:  # Beam's, or a mistake the launcher names
            out.append(token)
        elif eq:
            out += _flag_args(action, key.lstrip("-"), value)
        elif action.nargs == 0:
            out.append(flag_name(action))
        elif i + 1 < len(params):
            i += 1
            out += _flag_args(action, key.lstrip("-"), params[i])
        else:
            out.append(token)  # a value is missing: the launcher says so
        i += 1
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = os.environ.get("BACKFILL_TEMPLATE", "")
    if name not in TEMPLATES:
        print(f"flex_main: error: BACKFILL_TEMPLATE {name!r} is not one of {', '.join(TEMPLATES)}", file=sys.stderr)
        return 2
    try:
        command = launcher_argv(name, argv)
    except ValueError as err:
        print(f"flex_main: error: {err}", file=sys.stderr)
        return 2
    if argv == ["--check"]:  # at image build: the template exists and its launcher imports
        return 0
    return importlib.import_module(TEMPLATES[name].module).main(command)


if __name__ == "__main__":
    sys.exit(main())
