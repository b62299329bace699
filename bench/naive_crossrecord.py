"""The naive baseline's row order and cross-record steps (:mod:`bench.naive`): which duplicate row wins,
the per-document flags and the final rows, one element at a time in plain Python.
"""

from __future__ import annotations

from transforms.core.reasons import FLAGS


def _order(row: dict):
    """Latest updated_at wins; then the later file and row; then a content order."""
    return (
        row["_updated_at"] if row["_updated_at"] is not None else -(1 << 62),
        row["_src_file"] or "",
        row["_src_row"] if row["_src_row"] is not None else -1,
        repr(sorted((k, str(v)) for k, v in row.items())),
    )


def _document_entry(row: dict):
    if row["_doc_key"] is not None:
        active_person = row["status"] != "TERMINATED" and row["subscriber_kind"] == "INDIVIDUAL"
        yield row["_doc_key"], (row["line_id"], row["_name_key"], active_person)


def _document_flags(element, limit: int):
    """DOC_NAME_CONFLICT on every line of the document; DOC_LINE_LIMIT on the lines counted."""
    _, entries = element
    entries = list(entries)
    conflict = len({name for _, name, _ in entries if name is not None}) > 1
    over = sum(active for _, _, active in entries) > limit
    for line_id, _, active in entries:
        flags = (["DOC_NAME_CONFLICT"] if conflict else []) + (["DOC_LINE_LIMIT"] if over and active else [])
        if flags:
            yield line_id, flags


def _finalize(element):
    _, joined = element
    flags = {f for found in joined["flags"] for f in found}
    for row in joined["rows"]:
        out = {k: v for k, v in row.items() if not k.startswith("_")}
        out["flags"] = [f for f in FLAGS if f in flags or f in row["flags"]]
        out["needs_review"] = bool(out["flags"])
        yield out
