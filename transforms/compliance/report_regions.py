"""Regions with their names, rolled up to provinces, sorted by backlog (the report's ``by_region``, ``by_province``).

    regions = by_region(region_fact, divisions)       # every region: code, name, province, counts
    provinces = by_province(regions)                  # the same counts per province

Names come from the policy's GB/T 2260 table (``code_tables.divisions``,
``transforms/scan/divisions.py``): the region's full name (北京市朝阳区) and
its province's (北京市). A region's province is its first two digits followed
by ``0000``; a code that is not six digits, or a line without a region, has no
province (its row has a null province, kept, never dropped). Both tables are
sorted by backlog (remaining lines, largest first), then by code.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from transforms.compliance.report_groups import ratio
from transforms.scan.divisions import region_names

__all__ = ["by_region", "by_province", "REGION_COLUMNS", "PROVINCE_COLUMNS"]

_COUNTS = ["needed", "complete", "registered", "remaining", "past_deadline"]
REGION_COLUMNS = ["region", "region_name", "province", "province_name", *_COUNTS[:4], "completion_rate", _COUNTS[4]]
PROVINCE_COLUMNS = ["province", "province_name", "regions", *_COUNTS[:4], "completion_rate", _COUNTS[4]]
_BACKLOG = [("remaining", "descending"), ("needed", "descending")]


def _provinces(codes: pa.Array) -> pa.Array:
    """The province code of each six-digit region code (null otherwise)."""
    six = pc.fill_null(pc.match_substring_regex(codes, r"^[0-9]{6}$"), False)
    prefix = pc.binary_join_element_wise(pc.utf8_slice_codeunits(codes, 0, 2), pa.scalar("0000"), "")
    return pc.if_else(six, prefix, pa.scalar(None, pa.string()))


def _rated(table: pa.Table) -> pa.Table:
    table = table.append_column("remaining", pc.subtract(table["needed"], table["complete"]))
    return table.append_column("completion_rate", ratio(table["complete"], table["needed"]))


def by_region(fact: pa.Table, divisions: str) -> pa.Table:
    """Every region of the needed lines with its name and province, largest backlog first."""
    codes = fact["region"].combine_chunks().cast(pa.string())
    provinces = _provinces(codes)
    table = (
        _rated(fact)
        .append_column("region_name", region_names(codes, divisions))
        .append_column("province", provinces)
        .append_column("province_name", region_names(provinces, divisions))
    )
    return table.select(REGION_COLUMNS).sort_by([*_BACKLOG, ("region", "ascending")])


def by_province(regions: pa.Table, divisions: str) -> pa.Table:
    """The regions' counts per province (regions without one under a null province), largest backlog first."""
    counts = ["needed", "complete", "registered", "past_deadline"]
    summed = (
        regions.select(["province", *counts])
        .append_column("regions", pa.repeat(pa.scalar(1, pa.int64()), regions.num_rows))
        .group_by("province", use_threads=False)
        .aggregate([(c, "sum") for c in [*counts, "regions"]])
    )
    summed = summed.rename_columns([n.removesuffix("_sum") for n in summed.column_names])
    codes = summed["province"].combine_chunks().cast(pa.string())
    table = _rated(summed).append_column("province_name", region_names(codes, divisions))
    return table.select(PROVINCE_COLUMNS).sort_by([*_BACKLOG, ("province", "ascending")])
