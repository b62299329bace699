"""One run at a time into an output folder: an exclusive flock on the local folder itself (no file added).

    with one_run_at_a_time(out, "another notify run is writing into it; run one notify at a time per folder "
                           "(nothing was sent by this one)"):
        ...

A second run into the same folder meanwhile is refused in one line (``--out OUT: REFUSAL``) before it reads
anything. The lock dies with the process. Object stores: not locked (one run at a time is the caller's rule).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator

from pipelines.common import UserError

__all__ = ["one_run_at_a_time"]


@contextlib.contextmanager
def one_run_at_a_time(out: str, refusal: str) -> Iterator[None]:
    if "://" in out:
        yield
        return
    fd = os.open(os.path.realpath(os.path.expanduser(out)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"--out {out}: {refusal}") from None
        yield
    finally:
        os.close(fd)
