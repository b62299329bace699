"""Private scratch folders of one run, named by the launcher's pid, and the sweep of those that killed runs left.

    folder = pid_folder("backfill-progress-", "scan")   # TMPDIR/backfill-progress-<pid>-scan-XXXX, mode 0700

A killed run cannot remove its folder; the next run of this user removes the folders whose pid is no
longer alive (:func:`sweep_dead`), never one of another user, a link, or one whose process still runs.
Used by the progress counts (``pipelines/progress.py``) and the report's spill
(``pipelines/io/report_buckets.py``).
"""

from __future__ import annotations

import os
import shutil
import tempfile

__all__ = ["pid_folder", "sweep_dead"]


def sweep_dead(prefix: str) -> None:
    """Remove this user's folders named ``prefix<pid>-...`` in the temporary folder whose process is gone."""
    root = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(root) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :].split("-", 1)[0]
        path = os.path.join(root, name)
        try:
            if not pid.isdigit() or os.path.islink(path) or os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def pid_folder(prefix: str, step: str) -> str:
    """A new private folder (0700) ``prefix<pid>-<step>-...``, after sweeping those of dead runs."""
    sweep_dead(prefix)
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-{step}-")
