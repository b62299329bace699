"""Input paths opened, listed and joined: local paths directly, URIs through Beam's file systems.

    with open_read(path) as f: ...                # a binary read handle
    match_path(pattern) -> [(path, size), ...]    # a file, or a glob
    join_path(folder, name)

A local path (no ``://``) never imports Beam, so a step that runs in this
process (the in-process scan) does not pay for Beam's start; a ``gs://`` or
``s3://`` URI goes through ``apache_beam.io.filesystems.FileSystems``, imported
then. The local answers are Beam's own, rule for rule (its
``LocalFileSystem``): a pattern ending in ``/`` gets ``*``; a pattern without
``*``, ``?`` or ``[`` is the path itself if it exists (a folder too); a glob
lists every file under the folder of its part before the first wildcard, at
any depth, and keeps the paths the pattern matches whole, where ``*`` stops
at ``/``, ``**`` does not, ``?`` is any one character and ``[...]`` a set
(``[!...]`` its complement). A file whose name ends in a compression suffix
(``.gz``, ``.bz2``...) is opened through Beam, which decompresses it.
"""

from __future__ import annotations

import os
import re

__all__ = ["is_uri", "open_read", "match_path", "join_path", "glob_regex"]

# Beam's CompressionTypes.detect_compression_type: a local file opened through Beam with these is decompressed.
_COMPRESSED = (".bz2", ".deflate", ".gz", ".zst", ".zstd", ".xz", ".lzma")


def is_uri(path: str) -> bool:
    return "://" in path


def open_read(path: str):
    """A binary read handle on ``path`` (as ``FileSystems.open`` gives it)."""
    if is_uri(path) or path.lower().endswith(_COMPRESSED):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.open(path)
    return open(path, "rb")


def join_path(folder: str, *names: str) -> str:
    """``folder/name`` (as ``FileSystems.join`` gives it)."""
    if is_uri(folder):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.join(folder, *names)
    return os.path.join(folder, *names)


def match_path(pattern: str) -> list[tuple[str, int]]:
    """``(path, size)`` of every file ``pattern`` names (``FileSystems.match``); raises when a listing fails."""
    if is_uri(pattern):
        from apache_beam.io.filesystems import FileSystems

        return [(m.path, m.size_in_bytes) for m in FileSystems.match([pattern])[0].metadata_list]
    if pattern.endswith(("/", "\\")):
        pattern += "*"
    prefix = re.match(r"^[^[*?]*", pattern).group(0)
    if prefix == pattern:  # no wildcard: the path itself
        return [(pattern, os.path.getsize(pattern))] if os.path.exists(pattern) else []
    wanted = glob_regex(pattern).match
    return [(path, size) for path, size in _files_under(os.path.dirname(prefix)) if wanted(path)]


def _files_under(folder: str):
    """Every file under ``folder`` at any depth, with its size (a file that vanishes meanwhile is skipped)."""
    if not os.path.exists(folder):
        return
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                yield path, os.path.getsize(path)
            except OSError:
                continue


def glob_regex(pattern: str) -> re.Pattern:
    """The regular expression of a glob, by Beam's rules (``FileSystem.translate_pattern``; see the docstring)."""
    i, n, out = 0, len(pattern), []
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            double = i < n and pattern[i] == "*"
            out.append(".*" if double else r"[^/\\]*")
            i += double
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i + (i < n and pattern[i] == "!")
            j += j < n and pattern[j] == "]"
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(r"\[")
                continue
            members, i = pattern[i:j].replace("\\", "\\\\"), j + 1
            if members[0] == "!":
                members = "^" + members[1:]
            elif members[0] == "^":
                members = "\\" + members
            out.append(f"[{members}]")
        else:
            out.append(re.escape(c))
    return re.compile(r"(?ms)" + "".join(out) + r"\Z")
