"""The developer tools' one-file outputs (``generate``, ``simulate``): an existing file is replaced only when asked
(``--overwrite``: the path may name a real base or a real event file), and a file the tool began and could not
finish is removed (it made it, so it may delete it), never left half-written."""

from __future__ import annotations

import contextlib
from typing import Iterator

from apache_beam.io.filesystems import FileSystems

__all__ = ["existing_file_refusal", "removed_on_failure"]


def existing_file_refusal(path: str, overwrite: bool) -> str | None:
    """The one-line refusal when ``path`` exists and ``--overwrite`` was not given; None otherwise."""
    if overwrite or not FileSystems.exists(path):
        return None
    return f"--out {path} exists: it is not replaced (it may be real data); give a new path, or --overwrite"


@contextlib.contextmanager
def removed_on_failure(path: str) -> Iterator[None]:
    """Remove ``path`` when the block fails (an interrupt included) after creating it."""
    existed = FileSystems.exists(path)
    try:
        yield
    except BaseException:
        if not existed and FileSystems.exists(path):
            with contextlib.suppress(Exception):
                FileSystems.delete([path])
        raise
