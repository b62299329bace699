"""The README's streaming quick start, run as written; `backfill emulator` and `backfill simulate --publish`.

* the fenced block under "## Streaming quick start" is taken from README.md and
  each command runs in bash, one after the other, in a temporary folder, with
  what a command exports (the ``eval`` of ``backfill emulator start``) carried
  to the next, as one shell session would; then the outputs are checked
  against the events the simulator wrote: the streaming merge's balance, its
  committed windows, compact's base equal to the batch merge of the same
  events, no identity value of the events in any output or on any screen,
  the emulator stopped and its record gone;
* bad input is one line: an unknown subcommand, a port in use, a stop with no
  emulator, a record whose pid is now another program's (that program is
  left running), a topic that does not exist, no credentials and no emulator.
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import subprocess
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.emulator_process import start_ticks
from tests.support.pubsub import PROJECT
from tests.support.rows import person, raw_table
from tests.support.stream_cli import assert_same_base, keys_file

pytestmark = pytest.mark.e2e  # the Pub/Sub emulator and the backfill CLI in subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
CLEARED = ("PUBSUB_EMULATOR_HOST", "PUBSUB_PROJECT_ID", "GOOGLE_APPLICATION_CREDENTIALS")
SHELL_OWN = ("PWD", "OLDPWD", "SHLVL", "_")


def quickstart_commands() -> list[str]:
    """The shell commands of the README's streaming quick start (continuation lines joined, comments dropped)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    section = text.split("\n## Streaming quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands, current = [], ""
    for line in block.splitlines():
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1].rstrip() + " "
            continue
        if current.strip() and not current.lstrip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


def user_env(tmp: str, **extra: str) -> dict[str, str]:
    """A user's environment: the project's .venv/bin first on PATH, no emulator, no credentials, state in tmp."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env["XDG_STATE_HOME"] = os.path.join(tmp, "state")
    env["CLOUDSDK_CONFIG"] = os.path.join(tmp, "gcloud-config")  # no application-default credentials
    env["NO_GCE_CHECK"] = "true"  # not on GCE: no metadata server to ask
    env.update(extra)
    return env


def run_in_shell(command: str, cwd: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """One command in bash; returns its result and the environment it leaves (what it exported)."""
    env_file = os.path.join(cwd, ".env-after")
    script = f"set -e\n{command}\nenv -0 > {env_file}\n"
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    after = dict(env)
    if os.path.exists(env_file):
        with open(env_file, encoding="utf-8") as handle:
            pairs = [item.split("=", 1) for item in handle.read().split("\0") if "=" in item]
        os.remove(env_file)
        after = {k: v for k, v in pairs if k not in SHELL_OWN}
    return proc, after


def backfill(args: list[str], env: dict[str, str], cwd: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(BIN, "backfill"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(proc: subprocess.CompletedProcess, prog: str, code: int, *needles: str, alone=True) -> str:
    """The error is one line, the last on stderr (the only one unless the command printed progress first)."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"{prog}: error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 or not alone, proc.stderr
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])
    return lines[-1]


def record_path(env: dict[str, str]) -> str:
    return os.path.join(env["XDG_STATE_HOME"], "backfill", "pubsub-emulator", "emulator.json")


def read_events(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def flag(commands: list[str], name: str, word: str) -> str:
    """The value of ``--name`` in the command that contains ``word``."""
    command = next(c for c in commands if word in c)
    return re.search(rf"--{name} (\S+)", command).group(1)


def run_quickstart(commands: list[str], work: str, env: dict[str, str]) -> tuple[list, dict | None]:
    """Every command in order; returns the results and the emulator's record as it was while it ran."""
    results, record = [], None
    for command in commands:
        proc, env = run_in_shell(command, work, env)
        results.append((command, proc))
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-3000:])
        assert "error" not in proc.stderr.lower() and "Traceback" not in proc.stderr, (command, proc.stderr)
        if "emulator start" in command:
            with open(record_path(env), encoding="utf-8") as handle:
                record = json.load(handle)
            assert env.get("PUBSUB_EMULATOR_HOST") == record["host"] and start_ticks(record["pid"]) is not None
    return results, record


def check_stream(commands: list[str], work: str, events: list[dict]) -> dict:
    """The streaming merge's balance and committed windows, from the events the simulator wrote."""
    out = os.path.join(work, flag(commands, "out", "merge --streaming"))
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as handle:
        counts = json.load(handle)["counts"]
    ids = [e["event_id"] for e in events]
    base_lines = set(
        pq.read_table(os.path.join(work, flag(commands, "base", "merge --streaming")))["line_id"].to_pylist()
    )
    assert counts["messages_in"] == len(events) > 0
    assert counts["duplicates"] == len(ids) - len(set(ids))  # the simulator repeats whole events
    assert counts["dead_letters"].get("UNKNOWN_LINE", 0) == sum(e["line_id"] not in base_lines for e in events)
    taken = counts["applied"] + counts["superseded"]
    assert len(events) == taken + counts["duplicates"] + sum(counts["dead_letters"].values())
    assert counts["applied"] > 0
    windows = []
    for path in sorted(glob.glob(os.path.join(out, "deltas", "w-*", "window.json"))):
        with open(path, encoding="utf-8") as handle:
            windows.append(json.load(handle))
    assert windows and all(w["balanced"] for w in windows)
    assert sum(w["counts"]["messages_in"] for w in windows) == len(events)
    assert sum(w["counts"]["applied"] for w in windows) == counts["applied"]
    assert not glob.glob(os.path.join(out, "deltas", ".tmp-*"))
    return counts


def check_compact(commands: list[str], work: str, events: list[dict], counts: dict, env: dict[str, str]) -> None:
    """Compact's base registers what the stream applied, and equals the batch merge of the same events."""
    compacted = os.path.join(work, flag(commands, "out", "backfill compact"))
    base = pq.read_table(os.path.join(compacted, "base"), columns=["line_id", "registration_event_id"])
    registered = base.filter(pc.is_valid(base["registration_event_id"]))
    assert registered.num_rows == counts["applied"]
    assert set(registered["registration_event_id"].to_pylist()) <= {e["event_id"] for e in events}
    batch = os.path.join(work, "batch")
    merge = ["merge", "--base", flag(commands, "base", "merge --streaming"), "--keys"]
    merge += [flag(commands, "keys", "merge --streaming"), "--registrations", flag(commands, "out", "simulate")]
    merge += ["--out", batch, "--as-of", flag(commands, "as-of", "merge --streaming")]
    proc = backfill(merge, env, work, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_base(batch, compacted)


def assert_no_identity(events: list[dict], folders: list[str], texts: list[str]) -> None:
    """The simulated identities (document numbers, addresses) appear in no output and on no screen."""
    values = {e[k] for e in events for k in ("doc_number", "address") if e.get(k) and len(e[k]) >= 8}
    assert values
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as handle:
                    blob = handle.read()
                leaked = [v for v in values if v.encode("utf-8") in blob]
                assert not leaked, os.path.join(dirpath, name)
    for text in texts:
        assert not [v for v in values if v in text]


def test_the_readme_streaming_quick_start_runs_as_written(tmp_path):
    commands = quickstart_commands()
    assert any(c.startswith("eval ") and "backfill emulator start" in c for c in commands)
    assert any("--publish" in c for c in commands) and commands[-1] == "backfill emulator stop"
    work = str(tmp_path / "work")
    os.makedirs(work)
    env = user_env(str(tmp_path))
    try:
        results, record = run_quickstart(commands, work, env)
    finally:
        if os.path.exists(record_path(env)):
            backfill(["emulator", "stop"], env, work)
    assert record is not None and not os.path.exists(record_path(env)) and start_ticks(record["pid"]) is None
    events = read_events(os.path.join(work, flag(commands, "out", "simulate")))
    published = next(p.stdout for c, p in results if "--publish" in c)
    assert f"published {len(events):,} messages to projects/{record['project']}/topics/" in published
    counts = check_stream(commands, work, events)
    check_compact(commands, work, events, counts, env)
    outputs = [os.path.join(work, flag(commands, "out", w)) for w in ("merge --streaming", "backfill compact")]
    assert_no_identity(events, outputs, [p.stdout + p.stderr for _, p in results])


def test_emulator_bad_input_is_one_line(tmp_path):
    env = user_env(str(tmp_path))
    cwd = str(tmp_path)
    one_line_error(backfill(["emulator", "restart"], env, cwd), "backfill emulator", 2, "invalid choice: 'restart'")
    for action in ("stop", "status"):
        one_line_error(backfill(["emulator", action], env, cwd), "backfill emulator", 1, "no Pub/Sub emulator")
    one_line_error(
        backfill(["emulator", "start", "--subscription", "s-1"], env, cwd), "backfill emulator", 1, "needs --topic"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = backfill(["emulator", "start", "--port", str(port), "--topic", "t-1"], env, cwd)
        one_line_error(proc, "backfill emulator", 1, f"port {port} is in use")
    assert not os.path.exists(os.path.dirname(record_path(env)))  # nothing started, nothing recorded


def test_stop_never_signals_a_process_it_did_not_start(tmp_path):
    """A record whose pid now belongs to another program (another start time): stop leaves it running."""
    env = user_env(str(tmp_path))
    other = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        folder = os.path.dirname(record_path(env))
        os.makedirs(folder)
        record = {"pid": other.pid, "start_ticks": start_ticks(other.pid) - 1, "host": "127.0.0.1:1"}
        record |= {"project": PROJECT, "topic": None, "subscription": None, "started": "2026-12-01T00:00:00+00:00"}
        record |= {"log": os.path.join(folder, "emulator.log"), "data_dir": os.path.join(folder, "data")}
        with open(record_path(env), "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        proc = backfill(["emulator", "stop"], env, str(tmp_path))
        one_line_error(proc, "backfill emulator", 1, f"(pid {other.pid}) is not running any more")
        assert other.poll() is None and not os.path.exists(record_path(env))
    finally:
        other.kill()
        other.wait()


def test_simulate_publish_to_a_missing_topic_is_one_line(pubsub_emulator, tmp_path):
    env = user_env(str(tmp_path), PUBSUB_EMULATOR_HOST=pubsub_emulator.host)
    cwd, missing = str(tmp_path), f"projects/{PROJECT}/topics/no-such-topic"
    proc = backfill(["simulate", "--scan", cwd, "--publish", missing], env, cwd)
    one_line_error(proc, "backfill simulate", 1, f"--publish {missing} does not exist")
    proc = backfill(["simulate", "--scan", cwd, "--publish", "registrations"], env, cwd)
    one_line_error(proc, "backfill simulate", 1, "is not a topic path")
    one_line_error(backfill(["simulate", "--scan", cwd], env, cwd), "backfill simulate", 1, "--out FILE, --publish")
    proc = backfill(["simulate", "--scan", cwd, "--out", "e.jsonl"], env, cwd)
    one_line_error(proc, "backfill simulate", 1, "holds no classified/ folder")


def test_no_emulator_and_no_credentials_is_a_hint(tmp_path):
    """The lander's `DefaultCredentialsError` of old: now one line naming both ways out."""
    env = user_env(str(tmp_path))
    cwd = str(tmp_path)
    hint = ("no Google Cloud credentials", "backfill emulator start", "GOOGLE_APPLICATION_CREDENTIALS")
    topic = f"projects/{PROJECT}/topics/registrations"
    one_line_error(backfill(["simulate", "--scan", cwd, "--publish", topic], env, cwd), "backfill simulate", 1, *hint)
    base = os.path.join(cwd, "base.parquet")
    pq.write_table(raw_table([person()]).drop_columns(["_src_file", "_src_row"]), base)
    merge = ["merge", "--streaming", "--subscription", f"projects/{PROJECT}/subscriptions/registrations-merge"]
    merge += ["--base", base, "--keys", keys_file(cwd), "--out", os.path.join(cwd, "stream"), "--stop-after-idle", "3"]
    one_line_error(backfill(merge, env, cwd), "backfill merge", 1, *hint, alone=False)  # after its start-up line
