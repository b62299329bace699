"""Files a user names that are not files of data: a named pipe would block the command forever (nothing writes
into it), a device such as ``/dev/zero`` never ends, a socket cannot be read. A campaign, a policy or a
suppression list given as one is refused in one line before it is opened."""

from __future__ import annotations

import os
import stat

__all__ = ["special_file"]

_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
_KINDS += ((stat.S_ISSOCK, "a socket"),)


def special_file(path: str) -> str | None:
    """What a local ``path`` is when it is no regular file ("a named pipe", "a device", "a socket"); None for a
    regular file, a folder, a URI or a path that does not exist (the read says what is wrong then)."""
    if "://" in path:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((kind for test, kind in _KINDS if test(mode)), None)
