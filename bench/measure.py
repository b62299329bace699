"""Wall clock and peak memory of a command and every process it starts.

    from bench.measure import measure
    m = measure([".venv/bin/backfill", "scan", "--base", "b.parquet", "--out", "o"])
    m.seconds, m.peak_mb, m.returncode

Beam's local runner may fork workers (``--direct_running_mode
multi_processing``), so the memory of one process is not the memory of a run:
the resident set sizes of the process and all its descendants are summed
every ``interval`` seconds (50 ms) and the largest sum is kept. Processes that
live less than one interval can be missed; a sum is a slight over-estimate
where processes share pages (forked workers share the interpreter's).
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time

import psutil

__all__ = ["Measurement", "measure"]


@dataclasses.dataclass
class Measurement:
    command: list[str]
    seconds: float
    peak_mb: float
    returncode: int
    output: str  # the last lines of stdout and stderr, for the report and for errors

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in family:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            pass
    return total


def measure(command: list[str], *, env: dict | None = None, cwd: str | None = None,
            interval: float = 0.05, log_path: str | None = None) -> Measurement:
    """Run ``command`` to its end; time it from start to exit and sample its tree's memory.

    Output goes to ``log_path`` (or a temporary file) rather than a pipe, so a
    chatty child never blocks on a full pipe while it is being measured.
    """
    import tempfile

    handle = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()
    with handle:
        start = time.perf_counter()
        proc = psutil.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss(proc))
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = proc.wait()
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        handle.seek(0)
        tail = handle.read()[-4000:].decode("utf-8", "replace")
    return Measurement(list(command), seconds, peak / 2**20, returncode, tail)


def python_env() -> dict:
    """The environment for child Pythons: unbuffered, and the repo importable."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
