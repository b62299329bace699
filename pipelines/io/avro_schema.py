"""What an Avro file's writer schema holds, as the planner of a read sees it (``pipelines/io/planning.py``).

A file of a contract (the subscriber base, registration events) is a record per row, one field per column:
:func:`top_level_problem` says what else the schema is (a file of plain strings, of arrays, a union...), and
:func:`avro_columns` names the record's fields and those that hold no text or plain value.
"""

from __future__ import annotations

__all__ = ["avro_columns", "top_level_problem"]

_AVRO_PLAIN = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_AVRO_KINDS = {"array": "lists", "map": "maps", "record": "structs (records)", "error": "structs (records)"}
_AVRO_TYPES = _AVRO_PLAIN | {"array", "map", "enum", "fixed"}


def top_level_problem(writer_schema) -> str | None:
    """None when the schema is a record (the rows); otherwise what its top level is, in a few words naming only
    Avro's own type names (never a name the file defines)."""
    if isinstance(writer_schema, dict) and writer_schema.get("type") in ("record", "error"):
        return None
    if isinstance(writer_schema, list):
        return "a union"
    kind = writer_schema.get("type") if isinstance(writer_schema, dict) else writer_schema
    if isinstance(kind, (dict, list)):
        return top_level_problem(kind)
    return f"of type {kind}" if kind in _AVRO_TYPES else "a named type"


def _avro_kind(schema, named: dict[str, str | None]) -> str | None:
    """What an Avro field of this type holds when it is not text or a plain value (see
    ``transforms.core.rows.column_type_problem``); None when it is. ``named`` collects the
    named types (records, enums, fixed) met so far, for later references by name."""
    if isinstance(schema, list):  # a union: any branch that is not plain makes the column so
        kinds = [_avro_kind(branch, named) for branch in schema]
        return next((k for k in kinds if k), None)
    if isinstance(schema, str):
        return None if schema in _AVRO_PLAIN else named.get(schema.rsplit(".", 1)[-1])
    if not isinstance(schema, dict):
        return None
    kind_of = schema.get("type")
    if isinstance(kind_of, (list, dict)) or kind_of in _AVRO_PLAIN:
        return _avro_kind(kind_of, named)
    if kind_of == "fixed":
        kind = None if schema.get("logicalType") in ("decimal", "duration") else "fixed-size binary values"
    elif kind_of == "enum":
        kind = None
    else:
        kind = _AVRO_KINDS.get(kind_of, f"values of Avro type {kind_of}")
    if schema.get("name"):
        named[str(schema["name"]).rsplit(".", 1)[-1]] = kind
    if kind_of in ("record", "error"):
        for field in schema.get("fields", []):
            _avro_kind(field.get("type"), named)  # registers the named types it defines
    return kind


def avro_columns(writer_schema: dict) -> tuple[list[str], dict[str, str]]:
    """(field names, field name -> what it holds when that is not text or a plain value) of a record schema."""
    named: dict[str, str | None] = {}
    names, refused = [], {}
    for field in writer_schema.get("fields", []):
        names.append(field["name"])
        kind = _avro_kind(field.get("type"), named)
        if kind:
            refused[field["name"]] = kind
    return names, refused
