"""backfill emulator: start, stop or check the local Pub/Sub emulator, with a topic and a subscription.

    eval "$(backfill emulator start --project demo-project --topic registrations \\
        --subscription registrations-merge [--port N])"
    backfill emulator status
    backfill emulator stop

``start`` runs the Google Cloud CLI's emulator on 127.0.0.1 (on ``--port``, or
a free port), waits until it answers, creates the topic and the subscription
on it, records what it started in ``STATE/emulator.json`` and prints the
lines to ``eval``: ``export PUBSUB_EMULATOR_HOST=127.0.0.1:PORT`` and
``export PUBSUB_PROJECT_ID=PROJECT`` (what it did goes to stderr). The
emulator runs on after the command returns. ``stop`` stops the process group
recorded there, and only when its leader is still the process ``start``
started (same pid, same start time: a reused pid is never signalled), then
removes what ``start`` wrote (the record, the log, the emulator's data
folder). ``STATE`` is ``$XDG_STATE_HOME/backfill/pubsub-emulator`` (by default
``~/.local/state/backfill/pubsub-emulator``): one emulator per user.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import sys

from pipelines.common import ArgumentParser, UserError, run_main, split_beam_flags
from pipelines.flags import shown_value
from pipelines.emulator_process import (
    EmulatorError,
    create_topic_and_subscription,
    free_port,
    port_taken,
    spawn,
    start_ticks,
    stop_group,
    wait_until_up,
)

__all__ = ["parser", "state_dir", "start", "stop", "status", "main"]

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._~+%-]{2,254}$")  # a Pub/Sub topic or subscription id
PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")


def state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "backfill", "pubsub-emulator")


def _record_path() -> str:
    return os.path.join(state_dir(), "emulator.json")


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="backfill emulator", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True, metavar="{start,stop,status}")
    s = sub.add_parser("start", help="start the emulator, create the topic and subscription, print the exports")
    s.add_argument("--project", default="demo-project", help="the emulator's project id (default demo-project)")
    s.add_argument("--topic", default=None, help="a topic id to create (or projects/P/topics/T)")
    s.add_argument("--subscription", default=None, help="a subscription id on --topic (or projects/P/subscriptions/S)")
    s.add_argument("--ack-deadline", type=int, default=60, help="the subscription's ack deadline in seconds")
    s.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    for name, help_ in (("stop", "stop the emulator that start started"), ("status", "is it running, and where")):
        sub.add_parser(name, help=help_, description=help_)
    for each in sub.choices.values():
        each.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _path(value: str | None, project: str, kind: str) -> str | None:
    """``projects/P/KIND/NAME`` from an id or a full path (the project must be the emulator's)."""
    if value is None:
        return None
    name = value
    if value.startswith("projects/"):
        parts = value.split("/")
        if len(parts) != 4 or parts[2] != kind or parts[1] != project:
            raise UserError(f"--{kind[:-1]} {value}: expected an id or projects/{project}/{kind}/NAME")
        name = parts[3]
    if not NAME.match(name) or name.startswith("goog"):
        raise UserError(
            f"--{kind[:-1]} {shown_value(value)} is not a Pub/Sub id (3-255 letters, digits, -_.~+%, a letter first)"
        )
    return f"projects/{project}/{kind}/{name}"


def _read_record() -> dict | None:
    try:
        with open(_record_path(), encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {_record_path()} ({type(exc).__name__}); remove it if no emulator runs") from None


def _alive(record: dict) -> bool:
    """The recorded leader still runs and is the process start started (same start time)."""
    return start_ticks(int(record["pid"])) == record["start_ticks"]


def _forget(record: dict) -> None:
    """Remove what start wrote: the emulator's data folder, its log, the record (and the folder if empty)."""
    shutil.rmtree(record["data_dir"], ignore_errors=True)
    for path in (record["log"], _record_path()):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    with contextlib.suppress(OSError):
        os.rmdir(state_dir())


def _check_start(args) -> tuple[str, str | None, str | None]:
    if not PROJECT_ID.match(args.project):
        raise UserError(
            f"--project {shown_value(args.project)} is not a project id (6-30 lowercase letters, digits, -)"
        )
    topic = _path(args.topic, args.project, "topics")
    subscription = _path(args.subscription, args.project, "subscriptions")
    if subscription and not topic:
        raise UserError("--subscription needs --topic (the topic it subscribes to)")
    if args.port is not None and not 1024 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a port from 1024 to 65535")
    if args.port is not None and port_taken(args.port):
        raise UserError(
            f"port {args.port} is in use on 127.0.0.1: choose another --port, or leave it out for a free one"
        )
    record = _read_record()
    if record is not None and _alive(record):
        raise UserError(
            f"an emulator started by `backfill emulator start` already runs at {record['host']} "
            f"(pid {record['pid']}): `backfill emulator stop` first"
        )
    if record is not None:
        _forget(record)  # it ended without stop: its leftovers are start's own files
    return args.project, topic, subscription


def start(args) -> int:
    project, topic, subscription = _check_start(args)
    host = f"127.0.0.1:{args.port or free_port()}"
    folder = state_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    data_dir = os.path.join(folder, "data")
    os.makedirs(data_dir, exist_ok=True)
    log = os.path.join(folder, "emulator.log")
    process = spawn(host, project, data_dir, log)
    record = {"pid": process.pid, "start_ticks": start_ticks(process.pid), "host": host, "project": project}
    record |= {"topic": topic, "subscription": subscription, "log": log, "data_dir": data_dir}
    record["started"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with open(_record_path(), "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    try:
        wait_until_up(host, process, log)
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        if topic:
            create_topic_and_subscription(topic, subscription, args.ack_deadline)
    except BaseException:
        stop_group(process.pid, process)
        _forget(record)
        raise
    made = ", ".join(x for x in (topic, subscription) if x) or "no topic"
    print(f"Pub/Sub emulator at {host} (pid {process.pid}, project {project}): {made}", file=sys.stderr)
    print("stop it with: backfill emulator stop", file=sys.stderr)
    print(f"export PUBSUB_EMULATOR_HOST={host}")
    print(f"export PUBSUB_PROJECT_ID={project}")
    return 0


def _running() -> dict:
    record = _read_record()
    if record is None:
        raise UserError("no Pub/Sub emulator started by `backfill emulator start` is running (nothing recorded)")
    if not _alive(record):
        _forget(record)
        raise EmulatorError(
            f"the emulator recorded at {record['host']} (pid {record['pid']}) is not running any more; "
            "its record is removed"
        )
    return record


def stop(args) -> int:
    record = _running()
    stop_group(int(record["pid"]))
    _forget(record)
    print(f"stopped the Pub/Sub emulator at {record['host']} (pid {record['pid']})")
    return 0


def status(args) -> int:
    record = _running()
    made = ", ".join(x for x in (record["topic"], record["subscription"]) if x) or "no topic"
    print(
        f"running at {record['host']} (pid {record['pid']}, since {record['started']}, project {record['project']}): {made}"
    )
    return 0


def _body(argv) -> int:
    args, _ = split_beam_flags(parser(), argv, pipeline=False)
    return {"start": start, "stop": stop, "status": status}[args.action](args)


def main(argv=None) -> int:
    return run_main("backfill emulator", _body, argv)


if __name__ == "__main__":
    sys.exit(main())
