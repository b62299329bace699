"""Launcher plumbing shared by every step."""

from __future__ import annotations

from pipelines.common import beam_options, is_local_runner, runner_name


def test_local_runner_is_chosen_explicitly():
    assert runner_name(beam_options([])) == "FnApiRunner"
    assert runner_name(beam_options(["--runner", "DirectRunner"])) == "FnApiRunner"
    assert runner_name(beam_options(["--runner=DirectRunner"])) == "FnApiRunner"
    assert is_local_runner(beam_options(["--direct_num_workers", "2"]))


def test_other_runners_pass_through():
    options = beam_options(
        ["--runner", "DataflowRunner", "--project", "demo-project", "--region", "europe-west1", "--no_dataflow_kms_key"]
    )
    assert runner_name(options) == "DataflowRunner" and not is_local_runner(options)


def test_every_parser_refuses_abbreviations_prints_its_version_and_names_aliases_by_their_current_name(capsys):
    import pytest

    from pipelines.common import ArgumentParser, split_beam_flags
    from pipelines.flags import package_version

    p = ArgumentParser(prog="backfill x")
    p.add_argument("--scan", "--classified", dest="classified", help="a scan's output")
    sub = p.add_subparsers(dest="action")
    sub.add_parser("go", help="go")  # a subcommand's parser is ours too
    assert p.allow_abbrev is False and all(
        parser.allow_abbrev is False and "--version" in parser._option_string_actions
        for parser in (p, sub.choices["go"])
    )
    assert split_beam_flags(p, ["--classified", "d"])[0].classified == "d"
    for argv, code, out, err in (
        (["--version"], 0, f"backfill x {package_version()}", ""),
        (["--scan"], 2, "", "backfill x: error: argument --scan: expected one argument"),  # the current name only
        (["--classifid", "d"], 2, "", "backfill x: error: unknown flag --classifid; did you mean --scan?"),
    ):
        with pytest.raises(SystemExit) as done:
            split_beam_flags(p, argv)
        captured = capsys.readouterr()
        assert (done.value.code, captured.out.strip(), captured.err.strip()) == (code, out, err)
    p.print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--scan SCAN a scan's output (old name: --classified)" in text
        and "--classified" not in text.split("options:")[0]
    )
