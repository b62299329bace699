"""Wall clock and peak memory of a command and every process it starts.

    from bench.measure import measure
    m = measure([".venv/bin/backfill", "scan", "--base", "b.parquet", "--out", "o"])
    m.seconds, m.peak_mb, m.returncode

Beam's local runner may fork workers (``--direct_running_mode
multi_processing``), so the memory of one process is not the memory of a run:
the memory of the process and all its descendants is summed every
``interval`` seconds (50 ms) and the largest sum is kept. Each process counts
its proportional set size (PSS, from ``/proc/PID/smaps_rollup``): a page
shared by forked workers counts once in all, split between them, where a sum
of resident set sizes would count it in every worker (the in-process scan
forks its workers from the launcher, which holds the interpreter and the
libraries). Where PSS cannot be read (not Linux) the RSS is summed, an
over-estimate. Processes that live less than one interval can be missed.

Reading PSS is not free: the kernel walks the process's page tables while it
holds the lock that the process's own page faults and mappings wait on, and a
process that allocates as it works is slowed by it (a two-worker 2M scan ran
about 15 % slower sampled every 50 ms than not sampled; one worker about 1 %).
So a timed run does not sample memory (``memory=False``: only the process
tree's CPU seconds, read from ``/proc/PID/stat``), and the benchmarks measure
peak memory in runs of their own (:func:`bench.compare.compare`).

The machine may be shared: besides wall clock, a measurement keeps the CPU
seconds of the process tree (user + system) and the CPU seconds every other
process on the machine used meanwhile, so a slow run can be told from a
crowded one.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import threading
import time

import psutil

__all__ = ["Measurement", "measure", "wait_for_quiet", "python_env"]


@dataclasses.dataclass
class Measurement:
    command: list[str]
    seconds: float
    peak_mb: float
    returncode: int
    output: str  # the last lines of stdout and stderr, for the report and for errors
    cpu_seconds: float = 0.0  # user + system of the process tree
    others_cpu_seconds: float = 0.0  # every other process on the machine, meanwhile

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _memory(member: psutil.Process) -> int:
    """The process's proportional set size in bytes (its RSS where PSS cannot be read)."""
    try:
        with open(f"/proc/{member.pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return member.memory_info().rss


def _tree_sample(proc: psutil.Process, cpu: dict[int, float], memory: bool = True) -> int:
    """Sum of the tree's memory (PSS; 0 unless ``memory``); records each member's CPU seconds so far in ``cpu``."""
    total = 0
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in family:
        try:
            with member.oneshot():
                if memory:
                    total += _memory(member)
                times = member.cpu_times()
                cpu[member.pid] = times.user + times.system
        except psutil.Error:  # ended between listing and reading
            pass
    return total


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    command: list[str],
    *,
    env: dict | None = None,
    cwd: str | None = None,
    interval: float = 0.05,
    log_path: str | None = None,
    memory: bool = True,
) -> Measurement:
    """Run ``command`` to its end; time it from start to exit and sample its tree's memory (unless not
    ``memory``: then ``peak_mb`` is 0 and the run is not slowed by the sampling, module docstring).

    Output goes to ``log_path`` (or a temporary file) rather than a pipe, so a
    chatty child never blocks on a full pipe while it is being measured.
    """
    import tempfile

    handle = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()
    with handle:
        busy0, reaped0 = _busy_seconds(), _children_cpu()
        start = time.perf_counter()
        proc = psutil.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        peak = 0
        sampled_cpu: dict[int, float] = {}
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_sample(proc, sampled_cpu, memory))
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = proc.wait()
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        # Reaped descendants are in RUSAGE_CHILDREN; workers that were never
        # waited for only in the samples (up to their last 50 ms).
        cpu = max(_children_cpu() - reaped0, sum(sampled_cpu.values()))
        others = max(0.0, _busy_seconds() - busy0 - cpu)
        handle.seek(0)
        tail = handle.read()[-4000:].decode("utf-8", "replace")
    return Measurement(list(command), seconds, peak / 2**20, returncode, tail, cpu, others)


def wait_for_quiet(max_wait: float = 90.0, busy_below: float = 0.25) -> float:
    """Wait (up to ``max_wait`` s) until the machine's CPUs are busy less than
    ``busy_below`` of the time over a 2-second window; returns that share.

    On a shared machine this keeps a measurement from starting in the middle
    of someone else's build; the share is reported either way.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy = psutil.cpu_percent(interval=2.0) / 100.0
        if busy < busy_below or time.monotonic() >= deadline:
            return busy


def python_env() -> dict:
    """The environment for child Pythons: unbuffered, byte-code kept, and the repo importable."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # as a user's interpreter does, the measured commands keep the byte-code of what they import (the warm-up
    # run pays for it): with this variable set, every run compiled the project's modules again (~0.1 s)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
