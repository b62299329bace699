"""What ``{region}`` renders: the region's GB/T 2260 name, from the policy's division table.

Beam-free. A line's ``region`` is a six-digit GB/T 2260 code (``370702``); a
public announcement, an SMS or a call script names the place
(``山东省潍坊市潍城区``), as :func:`transforms.scan.divisions.region_names`
gives it from the policy's ``code_tables.divisions``. A code the table does not
know renders as itself; a line without a region renders as empty text. The
lookup is vectorised (``index_in`` into the table's sorted codes, then
``take``); the jobs keep the code in their ``region`` field.

    region_text(pa.array(["370702", "999999", None]), policy.code_tables.divisions)
    # ["山东省潍坊市潍城区", "999999", None]
"""

from __future__ import annotations

import functools

import pyarrow as pa
import pyarrow.compute as pc

from transforms.notify.render import sms_units
from transforms.scan.divisions import full_names, region_names

__all__ = ["region_text", "longest_region_name"]


def region_text(codes, divisions: str | None) -> pa.Array:
    """The name of each region code (the code itself when the table has no name for it; null stays null).
    Without a table (``divisions`` None), the codes."""
    if isinstance(codes, pa.ChunkedArray):
        codes = codes.combine_chunks()
    codes = codes.cast(pa.string())
    if not divisions:
        return codes
    return pc.coalesce(region_names(codes, divisions), codes)


@functools.lru_cache(maxsize=4)
def longest_region_name(divisions: str) -> str:
    """The full name of the table that is longest as an SMS counts it (for the ``max_sms_parts`` check)."""
    names = [name for name in full_names(divisions).values() if name]
    return max(names, key=lambda name: (sms_units(name)[1], name), default="")
