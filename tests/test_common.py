"""Launcher plumbing shared by every step."""

from __future__ import annotations

from pipelines.common import beam_options, is_local_runner, runner_name


def test_local_runner_is_chosen_explicitly():
    assert runner_name(beam_options([])) == "FnApiRunner"
    assert runner_name(beam_options(["--runner", "DirectRunner"])) == "FnApiRunner"
    assert runner_name(beam_options(["--runner=DirectRunner"])) == "FnApiRunner"
    assert is_local_runner(beam_options(["--direct_num_workers", "2"]))


def test_other_runners_pass_through():
    options = beam_options(["--runner", "DataflowRunner", "--project", "demo-project"])
    assert runner_name(options) == "DataflowRunner" and not is_local_runner(options)
