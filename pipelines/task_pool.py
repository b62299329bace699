"""A pool of forked worker processes for the steps that run without Beam on this machine.

    with TaskPool(workers, start_worker, (settings,)) as pool:
        results = pool.run(task, [(args...), ...], done=lambda result: ...)

``workers`` processes are forked from the launcher (its modules already
imported: a worker starts in milliseconds, not the seconds a new Python
with Beam takes) and die with it, even when it is killed with SIGKILL
(``PR_SET_PDEATHSIG``); each runs ``start(*args)`` once (the run's settings, keys
loaded from their path as a Beam DoFn's ``setup()`` would), then tasks. With
one worker the launcher's own process runs every task. The first failure
cancels the tasks not started and is raised as the task raised it (a user
error keeps its one line). Used by the in-process scan and merge
(``pipelines/scan_local.py``, ``pipelines/merge_local.py``).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
from typing import Callable, Iterable

__all__ = ["TaskPool", "default_workers", "by_bucket"]


def default_workers() -> int:
    """One worker process per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _die_with(parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux): a launcher killed with SIGKILL must
    not leave its workers waiting for tasks forever (each holds the task queue's write end: no EOF comes)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool's own checks still end idle workers on shutdown
        return
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def _start_worker(parent: int, start: Callable, args: tuple) -> None:
    _die_with(parent)
    start(*args)


class TaskPool:
    """Tasks run by ``workers`` forked processes, or by this process when there is one worker."""

    def __init__(self, workers: int, start: Callable, args: tuple = ()):
        self._workers, self._start, self._args, self._pool = workers, start, args, None

    def __enter__(self):
        if self._workers > 1:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_start_worker,
                initargs=(os.getpid(), self._start, self._args),
            )
        else:
            self._start(*self._args)
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, fn: Callable, *args) -> cf.Future:
        """``fn(*args)`` in a worker, not waited for (its future); with one worker, run here at once."""
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # raised by .result(), as a worker's failure would be
            future.set_exception(exc)
        return future

    def run(self, fn: Callable, calls: Iterable[tuple], done: Callable[[object], None] = lambda _: None) -> list:
        """``fn(*args)`` for each of ``calls``; results in the calls' order; ``done(result)`` as each ends."""
        calls = list(calls)
        if self._pool is None:
            results = []
            for args in calls:
                results.append(fn(*args))
                done(results[-1])
            return results
        futures = [self._pool.submit(fn, *args) for args in calls]
        try:
            for future in cf.as_completed(futures):
                done(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return [future.result() for future in futures]


def by_bucket(pairs: Iterable[tuple[int, tuple]]) -> dict[int, list[tuple]]:
    """``(bucket, reference)`` pairs grouped: bucket -> references, in the pairs' order."""
    grouped: dict[int, list[tuple]] = {}
    for bucket, ref in pairs:
        grouped.setdefault(bucket, []).append(ref)
    return grouped
