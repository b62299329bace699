"""Publishing a step's output folder safely: guards, ownership, write beside then switch, private files.

    with publishing(out, "merge", run_id, inputs={"--base": args.base, ...}, produces=MERGE_OUTPUTS) as pub:
        ...write everything under pub.stage (pub.path("base"), ...), manifest.json last...
    # OUT now holds the new output, whole; after an exception it holds the previous one, untouched

What every command that writes an output folder gets from here (Principle 8,
"Safe by default" in docs/architecture.md):

* **Guards on real paths** (:func:`check_apart`): an ``--out`` that is,
  contains or lies inside one of the run's inputs is refused in one line
  before anything is written. Local paths are compared after
  ``os.path.realpath`` (symbolic links resolved) and by device and inode
  (``os.path.samestat``: bind mounts, hard links); ``gs://`` and ``s3://``
  URIs as normalised strings. A glob input (``events/*.jsonl``) counts as
  its folder when ``--out`` is or contains it, and as the paths it can
  match when ``--out`` lies inside it.
* **Ownership** (:func:`check_owned`): a step may replace only a folder that
  a run of the same step created: one holding the marker ``.backfill.json``
  with its step (written when the folder is created), or, from before the
  marker existed, a ``manifest.json`` of that step. A new or empty folder is
  fine. Anything else is refused in one line; nothing is deleted.
* **Write beside, then switch** (:func:`publishing`): the run writes into a
  fresh sibling ``OUT.tmp-RUN_ID`` (mode 0700). On success its files are
  made private, ``_SUCCESS`` is written after the manifest, and the staged
  folder is exchanged with OUT in one ``renameat2(RENAME_EXCHANGE)`` (two
  renames where the file system lacks it). The entries of the previous
  output that the step does not produce (``audit/`` logs written beside a
  vault, anything else put there) are moved into the new OUT; the rest of the
  previous output is deleted only then. On an exception the staged folder is
  deleted and OUT is as it was: a failed or killed run never leaves a
  previous manifest beside partial output.
* **Recovery**: a run killed while staging leaves ``OUT.tmp-RUN_ID`` with its
  marker in state ``staging``; the marker is flock'ed by the live run, so the
  next run of the same step into the same OUT removes it only when no process
  holds the lock. A switch cut between its renames is completed by the next
  run. A staged folder a step asked to keep (:meth:`Publication.keep_on_failure`:
  retention after its shred, when the staged vault is the only one that
  opens) is never removed automatically.
* **Private files**: before the switch every staged folder is made 0700 and
  every file 0600 (:func:`private_tree`), whatever the umask; OUT and the
  staging folder are created 0700.

Object stores (``gs://``, ``s3://``) have no rename of a folder: there the
run writes into ``OUT.tmp-RUN_ID`` as well and the switch is
**copy-then-delete**: only once the staged output is complete, OUT's
``_SUCCESS`` is deleted, the step's previous entries are deleted, the staged
files are copied into OUT (Beam's ``FileSystems.rename``: copy, then delete),
``manifest.json``, the marker and ``_SUCCESS`` last, and the staged folder is
deleted. A reader that checks ``_SUCCESS`` never trusts a half-switched OUT;
a switch that fails leaves the complete staged copy at ``OUT.tmp-RUN_ID``.
Stale staged folders on object stores are not removed automatically (there
is no lock to tell a live run from a dead one).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import errno
import fcntl
import fnmatch
import json
import os
import re
import shutil
import socket
import stat
from typing import Iterable, Iterator, Mapping

from pipelines.common import UserError

__all__ = [
    "MARKER",
    "SUCCESS",
    "Publication",
    "publishing",
    "writing_into",
    "check_apart",
    "check_owned",
    "kept_stage",
    "owner",
    "private_tree",
    "make_private_dirs",
]

MARKER = ".backfill.json"
SUCCESS = "_SUCCESS"
_GLOB = re.compile(r"[*?\[]")
_STAGE = ".tmp-"


def _remote(path: str) -> bool:
    return "://" in path


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# -- guards -------------------------------------------------------------------------------------------------------


def _norm_uri(uri: str) -> str:
    """``GS://b//x/./y/`` -> ``gs://b/x/y``: scheme lower-case, no empty or ``.`` segments, no trailing slash."""
    scheme, rest = uri.split("://", 1)
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if parts:
        parts[0] = parts[0].lower()  # bucket names are case-insensitive (lower-case in practice)
    return f"{scheme.lower()}://" + "/".join(parts)


def _split_glob(path: str) -> tuple[str, str | None]:
    """``(root folder, pattern below it)`` of a glob; ``(path, None)`` for a plain path."""
    match = _GLOB.search(path)
    if not match:
        return path, None
    cut = path.rfind("/", 0, match.start())
    if cut < 0:
        return ".", path
    return (path[:cut] or "/"), path[cut + 1 :]


def _resolve(path: str) -> str:
    if _remote(path):
        return _norm_uri(path)
    return os.path.realpath(os.path.expanduser(path))


def _within(inner: str, outer: str) -> bool:
    """``inner`` is ``outer`` or lies under it (resolved paths or normalised URIs)."""
    if inner == outer:
        return True
    return inner.startswith(outer if outer.endswith("/") else outer + "/")


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _ancestors(path: str) -> Iterator[str]:
    while True:
        yield path
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _same_or_under(inner: str, outer: str) -> bool:
    """By device and inode: ``inner`` or one of its ancestors is ``outer`` (bind mounts, hard links)."""
    target = _stat(outer)
    if target is None:
        return False
    for each in _ancestors(inner):
        found = _stat(each)
        if found is not None and os.path.samestat(found, target):
            return True
    return False


def _relation(out: str, source: str) -> str | None:
    """How ``out`` overlaps the input ``source``: "is", "contains", "lies inside", or None."""
    if _remote(out) != _remote(source):
        return None
    root, pattern = _split_glob(source)
    o, s = _resolve(out), _resolve(root)
    local = not _remote(out)
    so, ss = (_stat(o), _stat(s)) if local else (None, None)
    if o == s or (so is not None and ss is not None and os.path.samestat(so, ss)):
        return "is"
    if _within(s, o) or (local and _same_or_under(s, o)):
        return "contains"
    inside = _within(o, s) or (local and _same_or_under(o, s))
    if inside and pattern is not None:
        # a glob reads only what it matches: OUT inside its folder matters when the pattern reaches OUT
        below = o[len(s) :].lstrip("/") if _within(o, s) else ""
        first = pattern.split("/", 1)[0]
        inside = "**" in pattern or not below or fnmatch.fnmatch(below.split("/", 1)[0], first)
    return "lies inside" if inside else None


def check_apart(
    out: str, inputs: Mapping[str, Iterable[str | None] | str | None], *, allow: Iterable[str] = ()
) -> None:
    """Refuse, in one line, an ``--out`` that is, contains or lies inside an input.

    ``inputs``: flag -> path(s) (files, folders or globs; None is skipped). ``allow``: inputs that may lie
    inside OUT (retention's ``--vault OUT/vault``: its previous output, replaced only once the new one is whole).
    """
    allowed = {_resolve(a) for a in allow if a}
    for flag, paths in inputs.items():
        for source in [paths] if isinstance(paths, str) or paths is None else paths:
            if not source or _resolve(source) in allowed:
                continue
            relation = _relation(out, source)
            if relation:
                what = "would write inside" if relation == "lies inside" else "would overwrite"
                raise UserError(
                    f"--out {out} {what} the input {flag.lstrip('-')} {source} (OUT {relation} "
                    f"{'that input' if relation == 'is' else 'it'}, symbolic links resolved): "
                    "write to another folder; nothing was written"
                )


# -- ownership ----------------------------------------------------------------------------------------------------


def _read_json(path: str) -> dict | None:
    try:
        if _remote(path):
            from apache_beam.io.filesystems import FileSystems

            if not FileSystems.exists(path):
                return None
            with FileSystems.open(path) as handle:
                data = json.loads(handle.read().decode("utf-8"))
        else:
            with open(path, "rb") as handle:
                data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    except Exception:  # an unreachable bucket: no marker
        return None
    return data if isinstance(data, dict) else None


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if _remote(folder) else os.path.join(folder, name)


def owner(folder: str) -> str | None:
    """The step that created ``folder``: its marker's, else (outputs from before the marker) its manifest's."""
    marker = _read_json(_join(folder, MARKER))
    if marker is not None:
        return marker.get("step") if marker.get("created_by") == "subscriber-backfill" else None
    manifest = _read_json(_join(folder, "manifest.json"))
    step = manifest.get("step") if manifest else None
    return step if isinstance(step, str) else None


def _entries(folder: str) -> list[str] | None:
    """The names in ``folder``; None when it does not exist."""
    if _remote(folder):
        from apache_beam.io.filesystems import FileSystems

        try:  # any object under the prefix (a "folder" holds only nested objects)
            found = FileSystems.match([folder.rstrip("/") + "/**"], limits=[1])[0].metadata_list
        except Exception:
            return None
        return [m.path[len(folder.rstrip("/")) + 1 :] for m in found] or None
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise UserError(f"--out {folder} is a file, not a folder") from None


def check_owned(out: str, step: str) -> None:
    """Refuse, in one line, an ``--out`` that is not new, not empty and not made by a run of ``step``."""
    entries = _entries(out)
    if not entries:
        return
    made_by = owner(out)
    if made_by == step:
        return
    if made_by:
        raise UserError(
            f"--out {out} is the output of backfill {made_by}, not of backfill {step}: "
            "give another folder; nothing was written"
        )
    raise UserError(
        f"--out {out} is not empty and was not made by backfill {step} (no {MARKER}): "
        "give a new or empty folder; nothing was written or deleted"
    )


def _marker(step: str, run_id: str, state: str, **more) -> bytes:
    record = {"created_by": "subscriber-backfill", "step": step, "run_id": run_id, "state": state, "at": _now()}
    return (json.dumps({**record, **more}, indent=1) + "\n").encode("utf-8")


def _write_private(path: str, payload: bytes) -> None:
    """``path`` written whole (temporary file, fsync, rename), mode 0600."""
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(3).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


# -- private files -------------------------------------------------------------------------------------------------


def private_tree(root: str) -> None:
    """Folders 0700 and files 0600 under ``root`` (``root`` included); symbolic links are left alone."""
    if _remote(root) or not os.path.isdir(root):
        return
    os.chmod(root, 0o700)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)
        for name in files:
            path = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.chmod(path, 0o600)


def make_private_dirs(path: str) -> None:
    """``os.makedirs`` with mode 0700 for every folder it creates, whatever the umask."""
    missing = []
    while path and not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)


# -- the switch ----------------------------------------------------------------------------------------------------

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


# -- publishing ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Publication:
    """The run's staged output: write under ``stage``; ``final`` maps a staged path to where it will be."""

    out: str
    stage: str
    step: str
    run_id: str
    keep_reason: str | None = None

    def path(self, *parts: str) -> str:
        return "/".join([self.stage.rstrip("/"), *parts]) if _remote(self.stage) else os.path.join(self.stage, *parts)

    def final(self, path: str) -> str:
        """``OUT.tmp-RUN/x`` -> ``OUT/x`` (as the user spelled OUT): the paths a manifest records."""
        if path == self.stage or path.startswith(self.stage.rstrip("/") + ("/" if _remote(path) else os.sep)):
            return self.out + path[len(self.stage) :]
        return path

    def keep_on_failure(self, reason: str) -> None:
        """From here on a failure keeps the staged folder (it holds something that exists nowhere else)."""
        self.keep_reason = reason


def _seed(source: str, target: str) -> None:
    """Hard-link copy of ``source`` (a folder of the previous output) to ``target``; a copy across devices."""

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, symlinks=True)


@contextlib.contextmanager
def publishing(
    out: str,
    step: str,
    run_id: str,
    *,
    inputs: Mapping | None = None,
    produces: Iterable[str] = (),
    seed: Iterable[str] = (),
    allow: Iterable[str] = (),
) -> Iterator[Publication]:
    """Stage a step's output beside OUT and switch it in at the end (see the module docstring).

    Args:
      out: the output folder, as the user gave it.
      step: the step's name (recorded in the marker; only that step's folders are replaced).
      run_id: names the staged folder ``OUT.tmp-RUN_ID``.
      inputs: flag -> paths, checked with :func:`check_apart` before anything is written.
      produces: the top-level entries the step writes (``base``, ``manifest.json``...): they replace the
        previous output's; every other entry of the previous output is kept.
      seed: entries of the previous output copied (hard links) into the staged folder first, for a step
        that adds to them (the report's ``parquet/`` partitions of other days).
      allow: inputs allowed inside OUT (see :func:`check_apart`).
    """
    out = out.rstrip("/") or out
    if inputs is not None:
        check_apart(out, inputs, allow=allow)
    produces = set(produces)
    if _remote(out):
        with _publishing_remote(out, step, run_id, produces) as pub:
            yield pub
        return
    target = os.path.realpath(os.path.expanduser(out))
    check_owned(out, step)
    _recover(target, step, produces)
    created = not os.path.exists(target)
    if created:
        make_private_dirs(os.path.dirname(target))
        os.mkdir(target, 0o700)
        _write_private(os.path.join(target, MARKER), _marker(step, run_id, "created"))
    stage = f"{target}{_STAGE}{run_id}"
    os.mkdir(stage, 0o700)
    os.chmod(stage, 0o700)
    marker = os.path.join(stage, MARKER)
    _write_private(marker, _marker(step, run_id, "staging", pid=os.getpid(), host=socket.gethostname()))
    lock = os.open(marker, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    pub = Publication(out, stage, step, run_id)
    try:
        try:
            for name in seed:
                if os.path.isdir(os.path.join(target, name)):
                    _seed(os.path.join(target, name), os.path.join(stage, name))
            yield pub
        except BaseException:
            if pub.keep_reason:
                _write_private(marker, _marker(step, run_id, "kept", reason=pub.keep_reason))
            else:
                shutil.rmtree(stage, ignore_errors=True)
            if created and os.path.isdir(target) and os.listdir(target) == [MARKER]:
                shutil.rmtree(target, ignore_errors=True)
            raise
        _commit_local(stage, target, step, run_id, produces)
    finally:
        os.close(lock)


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


@contextlib.contextmanager
def _publishing_remote(out: str, step: str, run_id: str, produces: set[str]) -> Iterator[Publication]:
    """Object stores: stage under ``OUT.tmp-RUN_ID``, then copy-then-delete (module docstring)."""
    from apache_beam.io.filesystems import FileSystems

    check_owned(out, step)
    stage = f"{out}{_STAGE}{run_id}"
    pub = Publication(out, stage, step, run_id)
    try:
        yield pub
    except BaseException:
        if not pub.keep_reason:
            _remote_delete(stage)
        raise
    prefix = stage.rstrip("/") + "/"
    staged = sorted(m.path for m in FileSystems.match([prefix + "**"])[0].metadata_list)
    rel = [p[len(prefix) :] for p in staged]
    top = {r.split("/", 1)[0] for r in rel}
    _remote_delete(_join(out, SUCCESS))
    for name in sorted((produces | top) - {MARKER, SUCCESS}):
        _remote_delete(_join(out, name))
    last = [r for r in rel if r == "manifest.json"]
    first = [r for r in rel if r != "manifest.json"]
    for r in first + last:
        FileSystems.rename([prefix + r], [_join(out, r)])
    for name, payload in (
        (MARKER, _marker(step, run_id, "published", committed=_now())),
        (SUCCESS, (run_id + "\n").encode("utf-8")),
    ):
        with FileSystems.create(_join(out, name)) as handle:
            handle.write(payload)
    _remote_delete(stage)


def _remote_delete(path: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    try:
        if FileSystems.exists(path):
            FileSystems.delete([path])
    except Exception:  # best effort: what is left is never read as the output
        pass


@contextlib.contextmanager
def writing_into(out: str, step: str, run_id: str, *, inputs: Mapping | None = None) -> Iterator[str]:
    """For a step that adds to its folder rather than replacing it (notify: jobs, history, runs).

    Checks the guards and the ownership, creates OUT (0700, with its marker) when it is new, and makes
    everything in it private at the end, also after a failure; a new OUT that holds only its marker after a
    failure is removed. Yields OUT. Object stores: the guards and the ownership only.
    """
    out = out.rstrip("/") or out
    if inputs is not None:
        check_apart(out, inputs)
    check_owned(out, step)
    if _remote(out):
        yield out
        return
    target = os.path.realpath(os.path.expanduser(out))
    created = not os.path.exists(target)
    if created:
        make_private_dirs(os.path.dirname(target))
        os.mkdir(target, 0o700)
    if not os.path.exists(os.path.join(target, MARKER)):
        _write_private(os.path.join(target, MARKER), _marker(step, run_id, "created"))
    os.chmod(target, 0o700)
    try:
        yield out
    except BaseException:
        if created and os.listdir(target) == [MARKER]:
            shutil.rmtree(target, ignore_errors=True)
        else:
            private_tree(target)
        raise
    private_tree(target)
