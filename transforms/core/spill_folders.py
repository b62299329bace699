"""A run's private local spill folder and its spill key (Beam-free).

:func:`spill_area` gives a run its private spill folder
``$TMPDIR/backfill-spill-STEP-*`` (mode 0700) holding a ``.lock`` file the run
keeps flock'ed, and draws the run's spill key into the environment
(``BACKFILL_SPILL_KEY``: the launcher and the worker processes it starts share
it; :mod:`transforms.core.spill_files` seals every spill under it). At its
start it removes the spill folders of dead runs (lock free, or no lock file and
older than ten minutes) and never a live run's; at its end it removes its own
folder and drops the key. Used by the Beam shuffle's launchers
(``transforms.core.shuffle`` re-exports it) and the in-process scan.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from typing import Iterator

from transforms.core.spill_files import SPILL_KEY_ENV, forget_envelope

__all__ = ["SPILL_PREFIX", "spill_area", "remove_dead_spills"]

SPILL_PREFIX = "backfill-spill-"
_LOCK = ".lock"
_UNLOCKED_GRACE_SECONDS = 600  # a folder without its lock file yet: a run between mkdtemp and its lock


def _is_dead(folder: str) -> bool:
    """A spill folder no live run holds: its lock is free, or it has none and is older than the grace period."""
    lock = os.path.join(folder, _LOCK)
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        try:
            return time.time() - os.stat(folder).st_mtime > _UNLOCKED_GRACE_SECONDS
        except OSError:
            return False
    except OSError:
        return False  # another user's, or unreadable: not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: a live run
    finally:
        os.close(fd)
    return True


def remove_dead_spills(root: str | None = None) -> list[str]:
    """Remove the spill folders of dead runs under ``root`` (default: the temp folder); returns them."""
    root = root or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in sorted(names):
        folder = os.path.join(root, name)
        if not name.startswith(SPILL_PREFIX) or os.path.islink(folder) or not os.path.isdir(folder):
            continue
        try:
            if os.stat(folder).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if _is_dead(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def spill_area(step: str) -> Iterator[str]:
    """A private local spill folder for one run, its lock and its spill key (see the module docstring).

    Yields the folder (``$TMPDIR/backfill-spill-STEP-XXXX``, mode 0700); removes the spill folders of dead
    runs first, and its own folder and key at the end, whatever happens.
    """
    remove_dead_spills()
    folder = tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{step}-")  # 0700
    lock = os.open(os.path.join(folder, _LOCK), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.write(lock, f"{os.getpid()}\n".encode("ascii"))
    previous = os.environ.get(SPILL_KEY_ENV)
    os.environ[SPILL_KEY_ENV] = base64.b64encode(os.urandom(32)).decode("ascii")
    try:
        yield folder
    finally:
        forget_envelope(os.environ.get(SPILL_KEY_ENV, ""))
        if previous is None:
            os.environ.pop(SPILL_KEY_ENV, None)
        else:
            os.environ[SPILL_KEY_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)
        os.close(lock)
