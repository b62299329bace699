"""The guards of a step's output folder: inputs kept apart, ownership markers, private files.

Used by :mod:`pipelines.io.publish` (see its docstring for what every command that writes an output folder gets);
the names are re-exported there.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import re
import stat
from typing import Iterable, Iterator, Mapping

from pipelines.common import UserError

MARKER = ".backfill.json"
SUCCESS = "_SUCCESS"
# a Beam job's per-attempt files in its staged folder (pipelines/io/bucket_sink.py): never published
ATTEMPTS = "_attempts"
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


def exists(path: str) -> bool:
    """A file or folder exists. On an object store a "folder" is only a prefix that keys share, which Beam's
    ``FileSystems.exists`` does not see: there, an object at ``path`` or any object under ``path/``."""
    if not _remote(path):
        return os.path.exists(path)
    from apache_beam.io.filesystems import FileSystems

    try:
        if FileSystems.exists(path):
            return True
        return bool(FileSystems.match([path.rstrip("/") + "/**"], limits=[1])[0].metadata_list)
    except Exception:  # nothing there (some file systems raise for an empty match), or unreachable
        return False


def delete(path: str) -> None:
    """Delete a file or a folder with everything under it (local, or every object under an object-store
    prefix); missing is fine. Only ever called on paths a run made (staged folders, replaced outputs)."""
    if not _remote(path):
        if os.path.isdir(path) and not os.path.islink(path):
            import shutil

            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        return
    from apache_beam.io.filesystems import FileSystems

    prefix = path.rstrip("/") + "/"
    try:
        under = [m.path for m in FileSystems.match([prefix + "**"])[0].metadata_list]
    except Exception:  # nothing under it
        under = []
    if under:
        FileSystems.delete(under)
    if FileSystems.exists(path.rstrip("/")):
        FileSystems.delete([path.rstrip("/")])


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


def require_folder(out: str) -> None:
    """Refuse an empty ``--out`` (an unset shell variable): it would name the current folder."""
    if not str(out).strip():
        raise UserError("--out is empty: give the output folder; nothing was written")


def check_owned(out: str, step: str) -> None:
    """Refuse, in one line, an ``--out`` that is empty, or not new, not empty and not made by a run of
    ``step``."""
    require_folder(out)
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
