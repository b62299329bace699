"""Data contracts: the Avro schemas, and the Arrow schemas derived from them.

The Avro schema files (``*.avsc``) are the single source of truth; the Arrow
schema of each record is derived here, never written out a second time.

    >>> arrow_schema("dead_letter").names[:2]
    ['step', 'reason']
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import pyarrow as pa

__all__ = ["avro_schema", "arrow_schema", "field_names", "policy_path"]

_PRIMITIVES = {
    "string": pa.string(),
    "long": pa.int64(),
    "int": pa.int32(),
    "boolean": pa.bool_(),
    "double": pa.float64(),
    "float": pa.float32(),
    "bytes": pa.binary(),
}
_LOGICAL = {
    "date": pa.date32(),
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
}


@functools.lru_cache(maxsize=None)
def avro_schema(name: str) -> dict:
    """The parsed Avro schema ``schemas/<name>.avsc``."""
    text = resources.files(__name__).joinpath(f"{name}.avsc").read_text("utf-8")
    return json.loads(text)


def _arrow_type(avro_type) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) for an Avro field type."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1:
            raise ValueError(f"unsupported Avro union {avro_type!r}")
        return _arrow_type(branches[0])[0], "null" in avro_type
    if isinstance(avro_type, str):
        return _PRIMITIVES[avro_type], False
    logical = avro_type.get("logicalType")
    if logical in _LOGICAL:
        return _LOGICAL[logical], False
    if avro_type["type"] == "array":
        return pa.list_(_arrow_type(avro_type["items"])[0]), False
    if avro_type["type"] == "map":
        return pa.map_(pa.string(), _arrow_type(avro_type["values"])[0]), False
    if avro_type["type"] == "enum":
        return pa.string(), False
    if avro_type["type"] == "record":
        return pa.struct([_arrow_field(f) for f in avro_type["fields"]]), False
    return _arrow_type(avro_type["type"])


def _arrow_field(field: dict) -> pa.Field:
    typ, nullable = _arrow_type(field["type"])
    return pa.field(field["name"], typ, nullable=nullable)


@functools.lru_cache(maxsize=None)
def arrow_schema(name: str) -> pa.Schema:
    """The Arrow schema derived from ``schemas/<name>.avsc``."""
    return pa.schema([_arrow_field(f) for f in avro_schema(name)["fields"]])


def field_names(name: str) -> list[str]:
    return [f["name"] for f in avro_schema(name)["fields"]]


def policy_path() -> str:
    """Path of the default Decree 25 policy shipped with the package."""
    return str(resources.files(__name__).joinpath("decree25_policy.yaml"))
