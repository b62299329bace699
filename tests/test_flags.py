"""One flag rule for every command (issue 11, item 1): the command's own flags, then Beam's pipeline
options; any other flag is one line on stderr naming it and the closest flag, exit 2, and nothing is
written. Flags are never abbreviated."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from tests.support.flag_cases import COMMANDS
from tests.support.notify import EXAMPLE, line, write_classified

BACKFILL = os.path.join(os.path.dirname(sys.executable), "backfill")
AS_OF = "2026-11-30"


def _main(name: str):
    """The ``main`` of a command's module, imported when the test runs."""
    import importlib

    return importlib.import_module(name).main


def call(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """``module.main(argv)`` in-process: (exit code, stdout, stderr)."""
    try:
        code = _main(module)(argv)
    except SystemExit as exc:  # argparse exits 2 itself
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def backfill(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([BACKFILL, *args], capture_output=True, text=True, timeout=timeout)


def assert_refused(code: int, err: str, prog: str, flag: str, guess: str | None, out_dir: str | None) -> None:
    expected = f"{prog}: error: unknown flag {flag}" + (f"; did you mean {guess}?" if guess else "")
    assert code == 2, err
    assert err.strip().splitlines() == [expected], err
    if out_dir is not None:
        assert not os.path.exists(out_dir), f"{out_dir} was written"


@pytest.mark.parametrize("case", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_typo_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    _, module, prog, argv, flag, guess = case
    out = str(tmp_path / "out")
    argv = [a.format(tmp=tmp_path, out=out) for a in argv]
    code, stdout, err = call(module, argv, capsys)
    assert_refused(code, err, prog, flag, guess, out)
    assert stdout == ""


@pytest.mark.parametrize(
    "argv, flag, guess",
    [
        (["--as-of=" + AS_OF, "--dry"], "--dry", "--dry-run"),  # no prefix abbreviation
        (["--asof=" + AS_OF], "--asof", "--as-of"),  # --flag=value
        (["--xyzzy"], "--xyzzy", None),  # nothing close: no suggestion
    ],
)
def test_notify_refuses_near_misses(argv, flag, guess, tmp_path, capsys):
    out = str(tmp_path / "out")
    code, _, err = call(
        "pipelines.notify",
        ["--scan", str(tmp_path), "--campaign", EXAMPLE, "--wave", "1", "--out", out, *argv],
        capsys,
    )
    assert_refused(code, err, "backfill notify", flag, guess, out)


def test_a_typo_is_named_before_a_missing_flag(tmp_path, capsys):
    code, _, err = call("pipelines.retention", ["--base", str(tmp_path), "--as_of", "2026-12-01"], capsys)
    assert_refused(code, err, "backfill retention", "--as_of", "--as-of", None)


def test_another_subcommands_flag_is_refused(tmp_path, capsys):
    keys = str(tmp_path / "keys.json")
    code, _, err = call("pipelines.keys", ["init", "--keys", keys, "--vault-dir", str(tmp_path)], capsys)
    assert_refused(code, err, "backfill keys init", "--vault-dir", None, keys)


def test_a_stray_value_is_refused(tmp_path, capsys):
    out = str(tmp_path / "out")
    code, _, err = call("pipelines.scan", ["--base", str(tmp_path), "--out", out, "extra"], capsys)
    assert code == 2 and err.strip().splitlines() == ["backfill scan: error: unrecognized arguments: extra"]
    assert not os.path.exists(out)


def test_beam_flags_pass_through_in_beams_spelling():
    from pipelines.common import split_beam_flags
    from pipelines.scan import parser

    args, beam_args = split_beam_flags(
        parser(),
        [
            "--base",
            "b",
            "--out",
            "o",
            "--runner",
            "DirectRunner",
            "--direct-num-workers",
            "2",
            "--direct_running_mode=in_memory",
            "--no_auth",
            "--as-of",
            AS_OF,
            "--experiments",
            "x",
        ],
    )
    assert args.base == ["b"] and str(args.as_of) == AS_OF
    assert beam_args == [
        "--runner",
        "DirectRunner",
        "--direct_num_workers",
        "2",
        "--direct_running_mode=in_memory",
        "--no_auth",
        "--experiments",
        "x",
    ]


def test_a_step_without_a_pipeline_ignores_beam_flags(tmp_path, capsys, caplog):
    keys = str(tmp_path / "keys" / "keys.json")
    with caplog.at_level(logging.INFO, logger="backfill"):
        code, stdout, _ = call(
            "pipelines.keys",
            ["init", "--keys", keys, "--runner", "DataflowRunner", "--project", "demo-project"],
            capsys,
        )
    assert code == 0 and os.path.exists(keys) and "created keyset" in stdout
    assert (
        "backfill keys init runs no Beam pipeline: ignoring --runner DataflowRunner --project demo-project"
        in caplog.text
    )


# ---- through the console script, as a user types it --------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from dev.generate import write_base

    path = str(tmp_path_factory.mktemp("flags") / "base.parquet")
    write_base(path, 200, seed=5)
    return path


@pytest.mark.e2e
@pytest.mark.parametrize(
    "extra, flag, guess",
    [
        (["--asof", AS_OF], "--asof", "--as-of"),
        (["--as-of", AS_OF, "--shufle-buckets", "4"], "--shufle-buckets", "--shuffle-buckets"),
    ],
)
def test_backfill_scan_typos(base, tmp_path, extra, flag, guess):
    out = str(tmp_path / "scan")
    proc = backfill("scan", "--base", base, "--out", out, *extra)
    assert_refused(proc.returncode, proc.stderr, "backfill scan", flag, guess, out)
    assert proc.stdout == ""


@pytest.mark.e2e
def test_backfill_notify_dryrun_typo_sends_nothing(tmp_path):
    scan = write_classified(tmp_path / "scan", [line(f"L{i}") for i in range(5)])
    out = str(tmp_path / "notify")
    proc = backfill(
        "notify", "--scan", scan, "--campaign", EXAMPLE, "--wave", "1", "--out", out, "--as-of", AS_OF, "--dryrun"
    )
    assert_refused(proc.returncode, proc.stderr, "backfill notify", "--dryrun", "--dry-run", out)
    assert proc.stdout == ""


@pytest.mark.e2e
def test_backfill_scan_with_a_beam_flag_runs(base, tmp_path):
    out = str(tmp_path / "scan")
    proc = backfill(
        "scan", "--base", base, "--out", out, "--as-of", AS_OF, "--direct_num_workers", "1", "--runner=DirectRunner"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.load(open(os.path.join(out, "summary.json")))
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert summary["rows_in"] == 200 and summary["balanced"] and manifest["runner"] == "FnApiRunner"
    assert "balanced" in proc.stdout


def test_beams_dry_run_beside_notifys_own_is_refused_on_the_local_runner(tmp_path, capsys):
    """``--dry_run`` is Beam's Dataflow option; on the local runner it would be ignored and the wave sent."""
    out = str(tmp_path / "out")
    code, _, err = call(
        "pipelines.notify",
        ["--scan", str(tmp_path), "--campaign", EXAMPLE, "--wave", "1", "--out", out, "--dry_run"],
        capsys,
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("backfill notify: error: unknown flag --dry_run; did you mean --dry-run?")
    assert not os.path.exists(out)


def test_version_is_the_installed_package_version(capsys):
    from importlib.metadata import version

    from pipelines import cli

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"backfill {version('subscriber-backfill')}"
