"""Dead letters: one schema for every step (``schemas/dead_letter.avsc``).

A dead letter says where a record came from (file and row, or event_id) and
why it could not be used. It never carries identity values: callers pass
reason codes, column names and value-free explanations only.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import pyarrow as pa

from schemas import arrow_schema

__all__ = ["DeadLetterContext", "dead_letter_table", "empty_dead_letters", "json_lines", "SCHEMA"]

SCHEMA = arrow_schema("dead_letter")


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
        "event_id": column(event_id, pa.string()),
        "line_id": column(line_id, pa.string()),
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
