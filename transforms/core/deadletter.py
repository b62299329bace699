"""Dead letters: one schema for every step (``schemas/dead_letter.avsc``).

A dead letter says where a record came from (file and row, or event_id) and
why it could not be used. It never carries identity values: callers pass
reason codes, column names and value-free explanations only, and the ids it
quotes (event_id, line_id) are kept only when they look like ids
(:func:`plain_ids`): a name, an address or a document number sent where an id
belongs (a shifted column, a careless publisher's attribute) is null, and the
source file and row still find the record.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema

__all__ = ["DeadLetterContext", "dead_letter_table", "empty_dead_letters", "json_lines", "plain_ids", "SCHEMA"]

SCHEMA = arrow_schema("dead_letter")

# An identity card number inside an id: 18 characters (division, a birth date of 18xx-20xx, sequence, check) or
# the first generation's 15 digits (division, YYMMDD, sequence), not inside a longer run of digits. The dates keep
# most other long numbers (IMSIs, snowflake ids) plain.
_MONTH_DAY = "(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])"
_DOC_NUMBER = (
    rf"(^|[^0-9])([1-9][0-9]{{5}}(18|19|20)[0-9]{{2}}{_MONTH_DAY}[0-9]{{3}}[0-9Xx]"
    rf"|[1-9][0-9]{{5}}[0-9]{{2}}{_MONTH_DAY}[0-9]{{3}})([^0-9]|$)"
)


def plain_ids(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The values that look like ids (printable ASCII holding no identity card number); null for the others."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.string())
    plain = pc.and_(pc.string_is_ascii(values), pc.utf8_is_printable(values))
    plain = pc.and_(plain, pc.invert(pc.match_substring_regex(values, _DOC_NUMBER)))
    return pc.if_else(pc.fill_null(plain, False), values, pa.scalar(None, pa.string()))


@dataclasses.dataclass(frozen=True)
class DeadLetterContext:
    """Run-level fields stamped on every dead letter of one step's run."""

    step: str
    run_id: str
    time: str  # UTC ISO-8601 start of the run


def dead_letter_table(
    ctx: DeadLetterContext,
    reason: Sequence[str] | pa.Array,
    *,
    source_file: Sequence | pa.Array | str | None = None,
    source_row: Sequence | pa.Array | None = None,
    event_id: Sequence | pa.Array | None = None,
    line_id: Sequence | pa.Array | None = None,
    field: Sequence | pa.Array | str | None = None,
    detail: Sequence | pa.Array | str | None = None,
) -> pa.Table:
    """Build a dead-letter table; scalars are repeated, ``None`` columns are null."""
    n = len(reason)

    def column(value, typ):
        if value is None:
            return pa.nulls(n, typ)
        if isinstance(value, str):
            return pa.array([value] * n, typ)
        if isinstance(value, pa.ChunkedArray):
            value = value.combine_chunks()
        if isinstance(value, pa.Array):
            return value.cast(typ)
        return pa.array(list(value), typ)

    cols = {
        "step": column(ctx.step, pa.string()),
        "reason": column(reason if not isinstance(reason, str) else [reason], pa.string()),
        "run_id": column(ctx.run_id, pa.string()),
        "time": column(ctx.time, pa.string()),
        "source_file": column(source_file, pa.string()),
        "source_row": column(source_row, pa.int64()),
        "event_id": plain_ids(column(event_id, pa.string())),
        "line_id": plain_ids(column(line_id, pa.string())),
        "field": column(field, pa.string()),
        "detail": column(detail, pa.string()),
    }
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def empty_dead_letters() -> pa.Table:
    return SCHEMA.empty_table()


def json_lines(table: pa.Table):
    """The rows of a dead-letter table as JSON Lines texts (no newline), as every step writes them."""
    import json

    for row in table.to_pylist():
        yield json.dumps(row, ensure_ascii=False, sort_keys=False)
