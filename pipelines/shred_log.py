"""The shred log's per-line records, appended a chunk at a time (a retention purge shreds millions of lines).

``transforms.crypto.audit.append`` takes a list and reads the audit folder to
find the chain's head on every call; the records of millions of lines are
neither held in a list nor re-read: the head is found once, then each chunk of
line ids (read from the shred's line files a row group at a time) is chained
on, written and fsync'ed, and the registry's witness moved along (the caller
saves the registry, as with ``append``). The records and their MACs are
exactly those ``append`` would have made.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable

from transforms.crypto.audit import LOGS, AuditError, _append_lines, _head, _Macs, read_folder
from transforms.crypto.registry import folder_location

if TYPE_CHECKING:
    from transforms.crypto.keyset import Keyset
    from transforms.crypto.registry import Registry

__all__ = ["append_line_records"]


def append_line_records(
    keyset: Keyset, registry: Registry, folder: str, log: str, chunks: Iterable[list[str]], record: dict
) -> int:
    """One ``{"event": "shred", "line_id": X, **record}`` record per line id of ``chunks``; returns how many."""
    if log not in LOGS:
        raise AuditError(f"{log} is not an audit log ({', '.join(LOGS)})")
    folder = folder_location(folder)
    seq, mac = _head(keyset, registry, folder, read_folder(folder))
    macs, written = _Macs(), 0
    for line_ids in chunks:
        lines = []
        for line_id in line_ids:
            seq += 1
            body = {"event": "shred", "line_id": line_id, **record, "keyset_id": keyset.keyset_id, "seq": seq}
            mac = macs(keyset, mac, log, body)
            lines.append(json.dumps({**body, "mac": mac}, ensure_ascii=False) + "\n")
        if lines:
            _append_lines(folder, log, "".join(lines).encode("utf-8"))
            registry.set_chain_head(folder, seq, mac)
            written += len(lines)
    return written
