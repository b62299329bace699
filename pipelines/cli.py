"""``backfill``: one console script, a subcommand per step.

    backfill --version                      (and BACKFILL COMMAND --version)
    backfill generate --lines N --seed S --out PATH
    backfill scan --base PATH --out DIR [--as-of YYYY-MM-DD]
    backfill notify --scan DIR --campaign FILE --wave N --out DIR [--merged DIR] [--dry-run]
    backfill merge --base PATH --registrations PATH --keys FILE --out DIR
    backfill merge --merged DIR --registrations PATH --keys FILE --out DIR        (the daily merge)
    backfill merge --streaming --subscription projects/P/subscriptions/S --base PATH --keys FILE --out DIR
    backfill compact (--base PATH | --merged DIR) --deltas DIR --keys FILE --out DIR
    backfill demo [--lines N] [--out DIR]
    backfill simulate --scan DIR [--out FILE] [--publish projects/P/topics/T]
    backfill emulator start [--project P --topic T --subscription S --port N] | stop | status
    backfill keys init|show|rotate|shred|retokenize --keys FILE ...
    backfill reveal --keys FILE (--merged DIR | --vault DIR) --line-id ID --purpose TEXT
    backfill report --scan DIR --merged DIR [--notify DIR] --out DIR
    backfill retention --merged DIR --keys FILE --out DIR --as-of YYYY-MM-DD
    backfill incident (--key-version V | --lines FILE) --merged DIR --out DIR [--shred --keys FILE]

``--scan DIR`` is always a scan's output folder, ``--merged DIR`` a merge,
compact or retention output (its ``base/`` and ``vault/``; ``--base DIR/base
--vault DIR/vault`` says the same). Old spellings (``--classified``,
``--registered``, ``--merge``, ``--vault-dir``) still work.
Each step also runs as ``python -m pipelines.<step>``. Every step parses its
flags by one rule (``pipelines.common.split_beam_flags``): its own flags, then
Beam's pipeline options (passed to Beam, or ignored by a step that runs no
pipeline); any other flag is a one-line error naming the closest one.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generate": ("dev.generate", "make a realistic synthetic subscriber base"),
    "scan": ("pipelines.scan", "classify every line's identity under the policy"),
    "notify": ("pipelines.notify", "plan a campaign wave's SMS, call and announcement jobs; record receipts"),
    "demo": ("dev.demo", "run the whole loop on the embedded default"),
    "simulate": ("dev.simulate", "simulated registration events to a file (--out) or a Pub/Sub topic (--publish)"),
    "emulator": (
        "pipelines.emulator",
        "start | stop | status the local Pub/Sub emulator with a topic and subscription",
    ),
    "merge": (
        "pipelines.merge",
        "merge registration events into the base: tokens, masks, vault (--streaming: Pub/Sub)",
    ),
    "compact": ("pipelines.compact", "fold the streaming merge's deltas into a new base snapshot"),
    "keys": ("pipelines.keys", "keyset init / show / rotate / shred / retokenize"),
    "reveal": ("pipelines.reveal", "decrypt one line from the vault for a stated purpose, on record"),
    "report": (
        "pipelines.report",
        "completion analytics, agent compliance, self-inspection: Parquet, CSV, report.html",
    ),
    "retention": ("pipelines.retention", "purge the identity of lines terminated more than two years ago (Art. 11)"),
    "incident": (
        "pipelines.incident",
        "scope a suspected leak by key version or line list; report it, shred (Art. 13)",
    ),
}


def _usage() -> str:
    lines = ["usage: backfill COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        from pipelines.flags import package_version

        print(f"backfill {package_version()}")
        return 0
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"backfill: error: unknown command {command!r} (one of {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command][0])
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("dev"):
            raise
        # generate, simulate and demo are developer tools (dev/), not part of the installed package
        print(f"backfill: error: {command} is a developer tool: run it from a checkout (make demo)", file=sys.stderr)
        return 2
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
