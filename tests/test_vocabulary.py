"""One vocabulary on the command line (issue 17, item 6): the same flag for the same input in every command,
the old spellings kept as aliases of the same argument, ``--version`` everywhere, progress lines on the long
steps, thousands separators, and an install without a setuptools warning."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from pipelines.common import split_beam_flags
from tests.support.notify import EXAMPLE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
NUMBER = r"\d{1,3}(?:,\d{3})*"  # a count as the lines print it: thousands separated
PROGRESS = re.compile(
    rf"^(?P<step>[a-z]+) (?P=step)-\d{{8}}T\d{{6}}Z-[0-9a-f]{{8}}: "
    rf"(?P<phases>[a-z_]+ {NUMBER}(?: of ~{NUMBER})?(?: rows)?(?:, [a-z_]+ {NUMBER}(?: of ~{NUMBER})?)*); "
    rf"{NUMBER} rows/s; (?:estimating the time left|\d{{1,3}}% done, ~\d+:\d\d:\d\d left|finishing)$"
)


def parse(module: str, argv: list[str], factory: str = "parser"):
    """The command's arguments as its launcher parses them (the one flag rule, checks included)."""
    return split_beam_flags(getattr(importlib.import_module(module), factory)(), argv)[0]


# (module, parser factory, the other flags it needs, new spelling, old spelling, dest, value)
ALIASES = [
    ("pipelines.notify", "parser", ["--out", "o"], "--scan", "--classified", "classified", "out/scan"),
    ("pipelines.notify", "parser", ["--out", "o"], "--merged", "--registered", "registered", "out/merge"),
    ("pipelines.report", "parser", ["--out", "o"], "--merged", "--merge", "merge", "out/merge"),
    ("dev.simulate", "_parser", [], "--scan", "--classified", "scan", "out/scan"),
    ("pipelines.keys", "parser", ["restore", "--keys", "k"], "--key-version", "--version", "version", "v2"),
    ("pipelines.keys", "parser", ["rotate", "--keys", "k"], "--vault", "--vault-dir", "vault_dir", "out/m/vault"),
]


@pytest.mark.parametrize("case", ALIASES, ids=[f"{c[0]}{c[3]}" for c in ALIASES])
def test_the_old_spelling_is_an_alias_of_the_same_argument(case):
    module, factory, needed, new, old, dest, value = case
    by_new, by_old = (parse(module, [*needed, flag, value], factory) for flag in (new, old))
    assert getattr(by_new, dest) == getattr(by_old, dest) == value
    assert vars(by_new) == vars(by_old)


def test_keys_rotate_names_its_key_and_its_vault_folder():
    def rotate(*argv):
        args = parse("pipelines.keys", ["rotate", "--keys", "k", *argv])
        return args.join, args.vault_key, args.vault_dir

    assert rotate("--join-key") == rotate("--join") == (True, False, None)
    assert rotate("--vault-key") == rotate("--vault") == (False, True, None)  # bare --vault: the old switch
    assert rotate("--vault", "v") == rotate("--vault", "--vault-dir", "v") == rotate("--vault-key", "--vault", "v")
    assert rotate("--vault", "v") == (False, True, "v")


# (module, parser factory, the other flags it needs, whether it reads a base beside the vault)
MERGED = [
    ("pipelines.merge", "parser", ["--registrations", "e", "--keys", "k", "--out", "o"], True),
    ("pipelines.compact", "parser", ["--deltas", "d", "--keys", "k", "--out", "o"], True),
    ("pipelines.retention", "parser", ["--keys", "k", "--out", "o", "--as-of", "2026-12-01"], True),
    ("pipelines.incident", "parser", ["--key-version", "j1", "--out", "o"], True),
    ("pipelines.keys", "parser", ["retokenize", "--keys", "k", "--out", "o"], True),
    ("pipelines.reveal", "parser", ["--keys", "k", "--line-id", "L1", "--purpose", "p"], False),
]


@pytest.mark.parametrize("case", MERGED, ids=[c[0] + (c[2][0] if c[2][0].isalpha() else "") for c in MERGED])
def test_merged_is_the_base_and_the_vault_of_an_output(case):
    module, factory, needed, with_base = case
    by_merged = parse(module, [*needed, "--merged", "gs://b/out/merge-1201/"], factory)
    parts = ["--base", "gs://b/out/merge-1201/base"] if with_base else []
    by_parts = parse(module, [*needed, *parts, "--vault", "gs://b/out/merge-1201/vault"], factory)
    assert by_merged.vault == by_parts.vault == "gs://b/out/merge-1201/vault"
    if with_base:
        assert by_merged.base == by_parts.base and "gs://b/out/merge-1201/base" in str(by_merged.base)
    assert {k: v for k, v in vars(by_merged).items() if k != "merged"} == {
        k: v for k, v in vars(by_parts).items() if k != "merged"
    }


def _refused(module: str, argv: list[str], capsys, factory: str = "parser") -> str:
    with pytest.raises(SystemExit) as done:
        parse(module, argv, factory)
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == 2 and len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    "module, argv, message",
    [
        ("pipelines.notify", ["--out", "o", "--classifed", "s"], "backfill notify: error: unknown flag --classifed; did you mean --scan?"),
        ("pipelines.notify", ["--out", "o", "--regist", "m"], "backfill notify: error: unknown flag --regist; did you mean --merged?"),
        ("pipelines.report", ["--out", "o", "--merg", "m"], "backfill report: error: unknown flag --merg; did you mean --merged?"),
        ("pipelines.retention", ["--keys", "k", "--out", "o", "--as-of", "2026-12-01", "--merged", "m", "--vault", "v"], "backfill retention: error: --merged m names its vault (m/vault): drop --vault"),
        ("pipelines.merge", ["--registrations", "e", "--keys", "k", "--out", "o", "--merged", "m", "--base", "b"], "backfill merge: error: argument --base: not allowed with argument --merged"),
        ("pipelines.merge", ["--registrations", "e", "--keys", "k", "--out", "o"], "backfill merge: error: one of the arguments --base --merged is required"),
        ("pipelines.retention", ["--keys", "k", "--out", "o", "--as-of", "2026-12-01", "--base", "b"], "backfill retention: error: --vault is required with --base (or give --merged DIR for DIR/base and DIR/vault)"),
        ("pipelines.keys", ["rotate", "--keys", "k"], "backfill keys rotate: error: say which key: --join-key or --vault-key (or --vault DIR)"),
        ("pipelines.keys", ["rotate", "--keys", "k", "--join", "--vault-key"], "backfill keys rotate: error: argument --vault-key: not allowed with argument --join-key"),
    ],
)  # fmt: skip
def test_a_mistyped_or_conflicting_flag_is_one_line_exit_2(module, argv, message, capsys):
    assert _refused(module, argv, capsys) == message


def test_no_flag_is_abbreviated_so_no_alias_is_a_prefix(capsys):
    from pipelines.flags import _parsers

    for module in ("pipelines.notify", "pipelines.report", "pipelines.merge", "pipelines.keys", "pipelines.reveal"):
        assert all(p.allow_abbrev is False for p in _parsers(importlib.import_module(module).parser()))
    # "--merge" is the old spelling of --merged, not a prefix of it; "--scan" is not a prefix of anything
    assert parse("pipelines.report", ["--out", "o", "--merge", "m"]).merge == "m"
    assert _refused("pipelines.notify", ["--out", "o", "--sca", "s"], capsys).endswith("did you mean --scan?")


def test_the_help_names_each_flag_by_its_current_name(capsys):
    with pytest.raises(SystemExit):
        parse("pipelines.notify", ["--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "--scan DIR the scan's output folder" in text and "(old name: --classified)" in text
    assert "--merged DIR lines registered since" in text and "(old name: --registered)" in text
    usage = text.split("options:")[0]
    assert "--scan DIR" in usage and "--classified" not in usage and "--registered" not in usage


# ---- --version --------------------------------------------------------------------------------------------

VERSIONED = [
    ("pipelines.scan", "backfill scan"),
    ("pipelines.notify", "backfill notify"),
    ("pipelines.merge", "backfill merge"),
    ("pipelines.compact", "backfill compact"),
    ("pipelines.report", "backfill report"),
    ("pipelines.retention", "backfill retention"),
    ("pipelines.incident", "backfill incident"),
    ("pipelines.keys", "backfill keys"),
    ("pipelines.reveal", "backfill reveal"),
    ("pipelines.emulator", "backfill emulator"),
    ("pipelines.self_inspection", "backfill self-inspection"),
    ("dev.generate", "backfill generate"),
    ("dev.simulate", "backfill simulate"),
    ("dev.demo", "backfill demo"),
]


@pytest.mark.parametrize("module, prog", VERSIONED, ids=[v[0] for v in VERSIONED])
def test_every_command_prints_its_version(module, prog, capsys):
    from importlib.metadata import version

    try:
        code = importlib.import_module(module).main(["--version"])
    except SystemExit as exc:  # argparse's version action exits itself
        code = exc.code
    assert code in (0, None)
    assert capsys.readouterr().out.strip() == f"{prog} {version('subscriber-backfill')}"


def test_the_version_is_setup_pys_and_the_checkout_falls_back_to_the_constant(monkeypatch):
    import importlib.metadata

    import pipelines
    from pipelines.flags import package_version

    setup = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert setup.stdout.strip().splitlines()[-1] == pipelines.__version__ == package_version()

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert package_version() == pipelines.__version__


@pytest.mark.e2e
def test_the_console_script_prints_the_version_of_a_step_and_its_own():
    for argv in (["--version"], ["merge", "--streaming", "--version"], ["keys", "--version"]):
        proc = subprocess.run([BACKFILL, *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert re.fullmatch(r"backfill( merge| keys)? \d+\.\d+\.\d+\n", proc.stdout), proc.stdout


# ---- a clean install ----------------------------------------------------------------------------------------


def test_the_package_builds_without_a_setuptools_warning_and_carries_its_data(tmp_path):
    """setup.py's own build (what ``pip install .`` and Dataflow's ``--setup_file`` run) of a copy of the
    shipped packages: no "would be ignored" warning, the pages' templates and the schemas' data inside."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "README.md", "schemas", "transforms", "pipelines"):
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(os.path.join(ROOT, name), src)
    proc = subprocess.run(
        [sys.executable, "-W", "always", "setup.py", "build", "--build-base", str(tmp_path / "build")],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "would be ignored" not in output and "SetuptoolsDeprecationWarning" not in output, output[-3000:]
    lib = tmp_path / "build" / "lib"
    assert sorted(p.name for p in (lib / "pipelines" / "render" / "templates").iterdir()) == sorted(
        os.listdir(os.path.join(ROOT, "pipelines", "render", "templates"))
    )
    shipped = {p.name for p in (lib / "schemas").iterdir()}
    assert {"decree25_policy.yaml", "gbt2260_supplement.csv", "merged_line.avsc", "policy.schema.json"} <= shipped
    assert (lib / "pipelines" / "progress.py").exists() and not (lib / "dev").exists()


# ---- progress lines ---------------------------------------------------------------------------------------


def test_a_progress_line_says_rows_rate_share_and_time_left():
    from pipelines.progress import Progress, rows_of

    prog = Progress("merge merge-20261205T101010Z-ab12cd34", {"read": 2_000_000, "merged": 2_000_000}, 10, None)
    start = prog.started
    assert prog.line({"read": 0, "merged": 0}, start + 1).endswith("; 0 rows/s; estimating the time left")
    prog.line({"read": 1_000_000, "merged": 0}, start + 10)
    line = prog.line({"read": 2_000_000, "merged": 0}, start + 20)  # read at 100,000 rows/s since the start
    assert line == (
        "merge merge-20261205T101010Z-ab12cd34: read 2,000,000 of ~2,000,000 rows, merged 0 of ~2,000,000; "
        "100,000 rows/s; 50% done, ~0:00:20 left"
    )
    prog.line({"read": 2_000_000, "merged": 500_000}, start + 30)  # merged first seen: its rate starts here
    line = prog.line({"read": 2_000_000, "merged": 1_500_000}, start + 40)
    assert line.endswith("merged 1,500,000 of ~2,000,000; 100,000 rows/s; 87% done, ~0:00:05 left"), line
    assert PROGRESS.match(line)
    done = {"read": 2_000_000, "merged": 2_000_000}
    assert prog.line(done, start + 45).endswith("; 100,000 rows/s; finishing")  # counted: the job still writes
    assert prog.line(done, start + 90).endswith("; 100,000 rows/s; finishing")  # the rate does not fade meanwhile
    import pyarrow as pa

    table = pa.table({"a": [1, 2, 3]})
    assert [rows_of(table), rows_of(("key", table)), rows_of([1, 2]), rows_of({"x": 1})] == [3, 3, 2, 1]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A small base, its scan, a keyset and simulated registrations: the inputs of the long steps."""
    import datetime as dt

    from dev.generate import write_base
    from dev.simulate import simulate_registrations
    from tests.support.compact import keys_file

    root = str(tmp_path_factory.mktemp("vocabulary"))
    base = os.path.join(root, "base.parquet")
    write_base(base, 3_000, seed=17)
    scan = os.path.join(root, "scan")
    proc = _step("scan", "--base", base, "--out", scan, "--as-of", "2026-11-30")
    events = os.path.join(root, "events.jsonl")
    simulate_registrations(scan, events, share=0.5, seed=3, as_of=dt.date(2026, 11, 30))
    return {"root": root, "base": base, "scan": scan, "keys": keys_file(root), "events": events, "scan_err": proc}


def _step(module: str, *argv: str) -> str:
    """Run ``python -m pipelines.MODULE`` with a progress line every 50 ms; its stderr."""
    command = [sys.executable, "-m", f"pipelines.{module}", *argv, "--progress-seconds", "0.05"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _progress(stderr: str, step: str, *jobs: tuple[str, ...], rows: int = 3_000) -> list[re.Match]:
    """The step's progress lines: at least one, each in the documented format, with the phases of one of its
    ``jobs`` in order; no count above the base's rows, and no count going down from one line to the next."""
    found = [PROGRESS.match(line) for line in stderr.splitlines() if " rows/s; " in line]
    assert found and all(found), stderr[-3000:]
    assert {m["step"] for m in found} == {step}
    before: dict[str, int] = {}
    for m in found:
        parts = [part.split(" ") for part in m["phases"].split(", ")]
        assert tuple(p[0] for p in parts) in jobs, m.group(0)
        for phase, done, *rest in parts:
            counts = [int(n.replace(",", "").lstrip("~")) for n in (done, *rest[1:2])]  # done, and of ~expected
            assert max(counts) <= rows and counts[0] >= before.get(phase, 0), m.group(0)
            before[phase] = counts[0]
    return found


@pytest.mark.e2e
def test_progress_lines_of_the_scan_and_the_merge(chain):
    _progress(chain["scan_err"], "scan", ("read", "classified"))
    out = os.path.join(chain["root"], "merge")
    err = _step("merge", "--base", chain["base"], "--registrations", chain["events"], "--keys", chain["keys"], "--out", out, "--as-of", "2026-11-30")  # fmt: skip
    _progress(err, "merge", ("read", "merged"))


@pytest.mark.e2e
def test_progress_lines_of_notify_compact_and_retention(chain):
    from tests.support.compact import commit_windows

    root = chain["root"]
    err = _step("notify", "--scan", chain["scan"], "--campaign", EXAMPLE, "--wave", "1", "--out", os.path.join(root, "notify"), "--as-of", "2026-11-30", "--dry-run")  # fmt: skip
    _progress(err, "notify", ("read", "jobs"))
    with open(chain["events"], encoding="utf-8") as f:
        events = [json.loads(line) for line in f if line.strip()]
    deltas = os.path.join(root, "stream", "deltas")
    commit_windows([chain["base"]], [events[: len(events) // 2], events[len(events) // 2 :]], deltas, chain["keys"])
    compacted = os.path.join(root, "compacted")
    err = _step("compact", "--base", chain["base"], "--deltas", deltas, "--keys", chain["keys"], "--out", compacted, "--as-of", "2026-11-30")  # fmt: skip
    _progress(err, "compact", ("read", "compacted"))
    err = _step("retention", "--merged", compacted, "--keys", chain["keys"], "--out", os.path.join(root, "retention"), "--as-of", "2029-12-01", "--future-as-of")  # fmt: skip
    _progress(err, "retention", ("read",), ("rewritten",))  # its two jobs: the purge, then the base rewritten
    err = _step("report", "--scan", chain["scan"], "--merged", compacted, "--out", os.path.join(root, "report"))
    _progress(err, "report", ("read",))
