"""What a folder given as an input holds: its files matched by Beam's rules, and the files a read of it would
leave out (compressed files, files in subfolders), which ``pipelines.io.planning.expand_paths`` refuses rather
than lose their rows. Each check returns the one-line problem, or None."""

from __future__ import annotations

import logging
import os

from pipelines.io.paths import join_path, match_path

__all__ = ["input_format", "left_out_problem", "match_files", "subfolder_problem"]

log = logging.getLogger("backfill")


def input_format(path: str, formats: tuple[tuple[str, str], ...]) -> str | None:
    """The format an input file's extension names, or None."""
    return dict(formats).get(os.path.splitext(path)[1].lower())


def match_files(pattern: str) -> list[tuple[str, int]]:
    """(path, size) of each match; nothing for a failed match."""
    bare = "://" not in pattern and not os.path.dirname(pattern)  # Beam lists nothing for "*.csv"
    try:
        found = match_path(os.path.join(".", pattern) if bare else pattern)  # Beam's rules; a URI through Beam
    except Exception:  # BeamIOError, OSError and friends: nothing there
        return []
    local = "://" not in pattern  # normalised, so "./a.csv" and "a.csv" are one file
    return [(os.path.normpath(path) if local else path, size) for path, size in found]


# Compressed files are not read: beside readable files of a folder they would be left out silently.
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip", ".7z", ".lz4", ".snappy")


def left_out_problem(folder: str, names: list[str], kinds: str) -> str | None:
    """A folder's files that are not inputs: markers and hidden files (``_SUCCESS``, ``.crc``) are nothing;
    a compressed file is refused (its rows would be missing); any other is named in a warning."""
    shown = [os.path.basename(n.rstrip("/")) for n in names]
    other = [n for n in shown if n and not n.startswith((".", "_")) and not n.endswith(".crc")]
    packed = [n for n in other if n.lower().endswith(_COMPRESSED)]
    if packed:
        return (
            f"{folder}: holds {len(packed)} compressed file(s) (such as {packed[0]}) that are not read: "
            f"decompress them to {kinds} files, or move them out; nothing was read"
        )
    if other:
        log.warning("%s: %d file(s) not %s left out (such as %s)", folder, len(other), kinds, other[0])
    return None


def subfolder_problem(folder: str, formats: tuple[tuple[str, str], ...]) -> str | None:
    """Input files in subfolders of ``folder`` (a listing of ``FOLDER/*`` holds its own files only) are refused,
    not left out silently: their rows would be missing (a Hive-style ``region=11/`` partition, a Spark
    ``base.csv/`` folder of parts). So is a local folder or subfolder that cannot be listed (what it holds is not
    known). Hidden and marker folders (``.x``, ``_temporary``) are passed over."""
    root = folder.rstrip("/") or folder
    local = "://" not in root
    if local and not os.path.isdir(root):
        return None
    failed: list[OSError] = []
    if local:
        found = _local_files(root, failed.append)
    else:
        found = [name for name, _ in match_files(join_path(root, "**"))]
    dangling = sorted(
        shown
        for shown, name in ((_shown(root, name, local), name) for name in found if local)
        if _is_input(name, formats) and not _hidden(shown.split("/")) and not os.path.exists(name)
    )
    if dangling:  # a link to a file that is gone: its rows are not there to read
        return f"{folder}: {dangling[0]} is a link to a file that does not exist; nothing was read"
    shown = {_shown(root, e.filename or root, local): type(e).__name__ for e in failed}
    if "." in shown:
        return f"{folder}: cannot be listed ({shown['.']}); nothing was read"
    blind = sorted(name for name in shown if not _hidden(name.split("/")))
    if blind:
        return f"{folder}: {len(blind):,} of its subfolders cannot be listed (such as {blind[0]}); nothing was read"
    nested = sorted(
        shown
        for shown in (_shown(root, name, local) for name in found)
        if "/" in shown and not _hidden(shown.split("/")[:-1]) and _is_input(shown, formats)
    )
    if not nested:
        return None
    return (
        f"{folder}: {len(nested):,} file(s) in its subfolders (such as {nested[0]}) are not read: give each "
        "subfolder with --base (it may repeat), or move the files up; nothing was read"
    )


def _shown(root: str, name: str, local: bool) -> str:
    """``name`` relative to ``root``, with ``/`` between its parts ("." for root itself)."""
    return os.path.relpath(name, root) if local else (name[len(root) :].strip("/") or ".")


def _hidden(parts: list[str]) -> bool:
    return any(part.startswith((".", "_")) and part != "." for part in parts)


def _local_files(root: str, failed) -> list[str]:
    """Every file under the local folder ``root``, also under the links to folders it holds (a walk does not
    follow them; a link back to ``root`` or above it, a loop, is passed over); ``failed(OSError)`` for each
    folder that cannot be listed."""
    real = os.path.realpath(root)
    tops = [root]
    try:
        links = [e.path for e in os.scandir(root) if e.is_symlink() and e.is_dir()]
    except OSError as e:
        failed(e)
        return []
    for link in links:
        target = os.path.realpath(link)
        if not (real == target or real.startswith(target.rstrip(os.sep) + os.sep)):
            tops.append(link)
    return [os.path.join(d, f) for top in tops for d, _, files in os.walk(top, onerror=failed) for f in files]


def _is_input(name: str, formats: tuple[tuple[str, str], ...]) -> bool:
    """A file of an input format, compressed or not."""
    low = name.lower()
    stem = next((low[: -len(z)] for z in _COMPRESSED if low.endswith(z)), low)
    return input_format(stem, formats) is not None
