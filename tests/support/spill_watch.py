"""Copying a running step's spill files aside as they grow (the spill tests of scan and merge read the copies
for plaintext after the step is gone)."""

from __future__ import annotations

import os
import shutil

__all__ = ["copy_grown"]


def copy_grown(folders: list[str], aside: str, sizes: dict[str, int], name_for) -> None:
    """One sweep: every file of ``folders`` that grew since the last sweep (``sizes``: path -> size, updated)
    copied into ``aside`` as ``name_for(folder, name, copies_so_far)``; a folder or file the run removed
    meanwhile (between the glob, the listing and the copy) is skipped."""
    for folder in folders:
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):  # removed as the run moved on
            continue
        for name in names:
            path = os.path.join(folder, name)
            try:
                size = os.path.getsize(path)
                if name != ".lock" and size and sizes.get(path) != size:
                    shutil.copyfile(path, os.path.join(aside, name_for(folder, name, len(sizes))))
                    sizes[path] = size
            except FileNotFoundError:  # removed as the run moved on
                continue
