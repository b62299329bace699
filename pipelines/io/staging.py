"""The switch of a staged output folder with OUT, and the recovery of staged folders left by killed runs.

Used by :mod:`pipelines.io.publish` (see its docstring: "Write beside, then switch" and "Recovery").
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil

from pipelines.io.publish_guards import (
    _STAGE,
    MARKER,
    SUCCESS,
    _ancestors,
    _marker,
    _now,
    _read_json,
    _remote,
    _write_private,
    private_tree,
)

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
    """Swap two folders in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), a)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _carry(old: str, new: str, replaced: set[str]) -> None:
    """Move the entries of the previous output that the step does not produce (audit logs...) into the new one."""
    for name in sorted(os.listdir(old)):
        if name in replaced or name in (MARKER, SUCCESS) or os.path.lexists(os.path.join(new, name)):
            continue
        os.rename(os.path.join(old, name), os.path.join(new, name))


def _locked_by_someone(path: str) -> bool:
    """True while a live process holds the flock on ``path`` (a staging marker)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True  # cannot tell: treat as live
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def _recover(target: str, step: str, produces: set[str]) -> None:
    """Siblings ``OUT.tmp-*`` of this step left by killed runs: remove dead staging, complete cut switches."""
    parent, name = os.path.split(target)
    try:
        siblings = os.listdir(parent)
    except OSError:
        return
    published = []
    for entry in sorted(siblings):
        if not entry.startswith(name + _STAGE):
            continue
        path = os.path.join(parent, entry)
        marker = _read_json(os.path.join(path, MARKER))
        if not marker or marker.get("created_by") != "subscriber-backfill" or marker.get("step") != step:
            continue  # not ours: never touched
        state = marker.get("state")
        if state == "staging" and not _locked_by_someone(os.path.join(path, MARKER)):
            shutil.rmtree(path, ignore_errors=True)  # a dead run's partial output
        elif state in ("published", "created"):  # a previous output, displaced by a switch
            published.append((marker.get("committed") or marker.get("at") or "", path))
    published.sort(reverse=True)
    if published and not os.path.exists(target):
        os.rename(published.pop(0)[1], target)  # a switch cut between its two renames: the newest output back
    for _, path in published:  # a previous output displaced by a switch that was cut before its clean-up
        if os.path.isdir(target):
            _carry(path, target, produces)
        shutil.rmtree(path, ignore_errors=True)


def kept_stage(path: str | None, out: str, step: str) -> bool:
    """True when ``path`` lies in a staged folder of ``out`` that a failed run of ``step`` kept (retention after
    its shred: that staged vault is the one to complete the purge with)."""
    if not path or _remote(path) or _remote(out):
        return False
    parent, name = os.path.split(os.path.realpath(os.path.expanduser(out.rstrip("/") or out)))
    for each in _ancestors(os.path.realpath(path)):
        if os.path.dirname(each) == parent and os.path.basename(each).startswith(name + _STAGE):
            marker = _read_json(os.path.join(each, MARKER))
            return bool(marker and marker.get("step") == step and marker.get("state") == "kept")
    return False


def _seed(source: str, target: str) -> None:
    """Hard-link copy of ``source`` (a folder of the previous output) to ``target``; a copy across devices."""

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, symlinks=True)


def _commit_local(stage: str, target: str, step: str, run_id: str, produces: set[str]) -> None:
    """Make the staged output private, mark it complete, and switch it with OUT."""
    replaced = produces | set(os.listdir(stage))
    private_tree(stage)
    _write_private(os.path.join(stage, SUCCESS), (run_id + "\n").encode("utf-8"))
    _write_private(os.path.join(stage, MARKER), _marker(step, run_id, "published", committed=_now()))
    _fsync_dir(stage)
    if not os.path.isdir(target):
        os.rename(stage, target)
    elif _exchange(stage, target):
        _carry(stage, target, replaced)  # the previous output is at the staged path now
        shutil.rmtree(stage)
    else:  # no atomic exchange here: two renames (a kill between them is completed by the next run)
        old = f"{stage}-previous"
        os.rename(target, old)
        os.rename(stage, target)
        _carry(old, target, replaced)
        shutil.rmtree(old)
    _fsync_dir(os.path.dirname(target))
