"""A vault key table re-wrapped by a Beam job: drop the shredded lines' data keys, re-wrap every other one.

    key rows --DropLines--> --DropDeks--> --Rewrap--> key rows under the new primary vault key version
                  '------------'------> dropped rows (line_id, dek_id)

What a key change (``pipelines/keys_shred.py``, ``pipelines/keys_rotate.py``)
does to each vault the keyset knows, one record batch at a time:

* **DropLines**: key rows of the lines to shred; **DropDeks**: key rows of data
  keys an earlier shred dropped (the registry's ``shredded_deks``: a vault
  written from an older copy must not carry them forward). Each set is either
  *small* (a ``keys shred --line-id`` list: at most :data:`SIDE_INPUT_LIMIT`
  ids) and given to every worker as a side input, so the key table is not
  shuffled at all; or *large* (a retention purge's due lines: millions at 300
  million lines) and joined by bucket through
  :class:`transforms.core.shuffle.ArrowGroupByBucket`, so no worker holds the
  set, only its share of one bucket. In the vault the shred names, a line of
  the set without a data key there is reported as *missing*.
* **Rewrap** (:class:`RewrapFn`): each data key still wrapped by a version in
  use is unwrapped under its old version and wrapped under the new primary
  (``Vault.rewrap``); a key under a version that opens nothing any more
  (retired or scheduled for destruction) is left as it is. The keyset is loaded
  from its path in ``setup()`` (never pickled); the new version must already be
  saved there, and a worker that loads a keyset whose primary is another
  version stops the job.

Counts: ``keys_in`` (read), ``dropped_lines`` + ``dropped_deks`` (dropped),
``rewrapped`` + ``already_unreadable`` = ``keys_out`` (written); they balance
when ``keys_in = keys_out + dropped_lines + dropped_deks``.
"""

from __future__ import annotations

import typing

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from schemas import arrow_schema
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.core.metrics import SumCounts, counter, value_counts
from transforms.core.samples import id_sample
from transforms.core.shuffle import BUCKET, ArrowGroupByBucket, with_bucket
from transforms.core.tags import COUNTS

__all__ = ["SIDE_INPUT_LIMIT", "DROPPED_SCHEMA", "drop_rows", "RewrapFn", "RewrapKeyTable", "RewrapOutputs"]

SIDE_INPUT_LIMIT = 10_000  # ids a set may have to travel to every worker as a side input
DROPPED_SCHEMA = pa.schema([("line_id", pa.string()), ("dek_id", pa.string())])
DROPPED, MISSING = "dropped", "missing"
_COLUMNS = {"lines": "line_id", "deks": "dek_id"}
_MISSING_SHOWN = 20
_SLICE = 32_768  # key rows re-wrapped at a time


def drop_rows(keys: pa.Table, column: str, ids: pa.Array) -> tuple[pa.Table, pa.Table]:
    """``(kept, dropped)``: the rows of ``keys`` whose ``column`` is not / is in ``ids``."""
    hit = pc.is_in(keys.column(column), value_set=ids)
    return keys.filter(pc.invert(hit)), keys.filter(hit)


def _ids(tables, column: str) -> pa.Array:
    parts = [t.column(column).combine_chunks().cast(pa.string()) for t in tables if t is not None and t.num_rows]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def _missing_small(found: list[str], id_tables) -> dict:
    """The lines of a small set that no key row had: their number and the first of them."""
    missing = sorted(set(_ids(id_tables, "line_id").to_pylist()) - set(found))
    return {"missing": len(missing), "missing_sample": {i: 1 for i in missing[:_MISSING_SHOWN]}}


def _dropped(rows: pa.Table) -> pa.Table:
    return rows.select(DROPPED_SCHEMA.names).cast(DROPPED_SCHEMA)


@beam.typehints.with_output_types(pa.Table, dropped=pa.Table, counts=dict)
class _DropSideFn(beam.DoFn):
    """Key rows -> kept rows; the rows whose ``column`` is in the side input's (small) set -> ``dropped``."""

    def __init__(self, tag: str):
        self._tag, self._column = tag, _COLUMNS[tag]

    def process(self, keys: pa.Table, id_tables):
        kept, gone = drop_rows(keys, self._column, _ids(id_tables, self._column))
        yield beam.pvalue.TaggedOutput(COUNTS, {f"dropped_{self._tag}": gone.num_rows})
        if gone.num_rows:
            yield beam.pvalue.TaggedOutput(DROPPED, _dropped(gone))
        if kept.num_rows:
            yield kept


@beam.typehints.with_output_types(pa.Table)
class _KeyByFn(beam.DoFn):
    def __init__(self, column: str, n_buckets: int):
        self._column, self._n = column, n_buckets

    def process(self, table: pa.Table):
        if table.num_rows:
            yield with_bucket(table, table.column(self._column).combine_chunks().cast(pa.string()), self._n)


@beam.typehints.with_output_types(pa.Table, dropped=pa.Table, missing=pa.Table, counts=dict)
class _DropJoinedFn(beam.DoFn):
    """One bucket of key rows and ids -> kept rows, ``dropped`` rows and (``report_missing``) ids without a row."""

    def __init__(self, tag: str, report_missing: bool):
        self._tag, self._column, self._missing = tag, _COLUMNS[tag], report_missing

    def process(self, element):
        _, tables = element
        keys = tables.get("keys")
        ids = pc.unique(_ids([tables.get("ids")], self._column))
        counts = {f"dropped_{self._tag}": 0}
        if keys is not None and keys.num_rows:
            kept, gone = drop_rows(keys.drop_columns([BUCKET]), self._column, ids)
            counts[f"dropped_{self._tag}"] = gone.num_rows
            if gone.num_rows:
                yield beam.pvalue.TaggedOutput(DROPPED, _dropped(gone))
            if kept.num_rows:
                yield kept
            present = keys.column(self._column).combine_chunks().cast(pa.string())
        else:
            present = pa.array([], pa.string())
        if self._missing:
            missing = ids.filter(pc.invert(pc.is_in(ids, value_set=present)))
            counts["missing"] = len(missing)
            if len(missing):
                yield beam.pvalue.TaggedOutput(MISSING, pa.table({"line_id": missing}))
        yield beam.pvalue.TaggedOutput(COUNTS, counts)


@beam.typehints.with_output_types(pa.Table, counts=dict)
class RewrapFn(beam.DoFn):
    """Key rows -> the same rows, every data key under a version in ``usable`` re-wrapped by ``primary``.

    Args:
      keys_path: the keyset, loaded in ``setup()`` (its primary vault version must be ``primary``).
      usable: the versions that open (the others' rows are left as they are: they open nothing already).
      primary: the version the job re-wraps under (saved in the keyset before the job starts).
      dry_run: unwrap and re-wrap to prove every key opens, but emit no rows.
    """

    def __init__(self, keys_path: str, usable: list[str], primary: str, dry_run: bool = False):
        self._keys_path, self._usable, self._primary, self._dry = keys_path, list(usable), primary, dry_run
        self._rewrapped = counter("keys_rewrapped")

    def setup(self):
        from transforms.crypto.keyset import Keyset, KeysetError
        from transforms.crypto.vault import Vault

        keyset = Keyset.load(self._keys_path)
        if keyset.primary_vault_version != self._primary:
            raise KeysetError(
                f"keyset {keyset.keyset_id} at {self._keys_path} has primary vault key "
                f"{keyset.primary_vault_version}, not {self._primary}: a worker read another copy of the keyset"
            )
        self._vault = Vault(keyset)

    def process(self, keys: pa.Table):
        if BUCKET in keys.column_names:
            keys = keys.drop_columns([BUCKET])
        schema = arrow_schema("vault_key")
        keys = keys.select(schema.names).cast(schema)
        for start in range(0, keys.num_rows, _SLICE):  # Vault.rewrap makes a Python row per key: a slice at a time
            yield from self._rewrap(keys.slice(start, _SLICE), schema)

    def _rewrap(self, keys: pa.Table, schema: pa.Schema):
        live = pc.is_in(keys.column("vault_key_version"), value_set=pa.array([*self._usable, self._primary]))
        dead = keys.filter(pc.invert(live))
        rewrapped = self._vault.rewrap(keys.filter(live)).cast(schema)
        self._rewrapped.inc(rewrapped.num_rows)
        out = pa.concat_tables([rewrapped, dead])
        yield beam.pvalue.TaggedOutput(
            COUNTS,
            {
                "rewrapped": rewrapped.num_rows,
                "already_unreadable": dead.num_rows,
                "keys_out": out.num_rows,
                "versions_out": value_counts(out.column("vault_key_version")),
            },
        )
        if out.num_rows and not self._dry:
            yield out


class RewrapOutputs(typing.NamedTuple):
    keys: beam.PCollection  # the key table's new rows (schemas/vault_key); none in a dry run
    dropped: beam.PCollection  # tables of (line_id, dek_id): the rows dropped
    counts: beam.PCollection  # one dict (summed): see the module docstring; samples of dropped and missing lines


class RewrapKeyTable(beam.PTransform):
    """``{"keys": key-table batches, "lines": line-id tables (optional), "deks": dek-id tables (optional)}``
    -> :class:`RewrapOutputs`.

    Args:
      small: per set (``lines``, ``deks``), whether it is small enough for a side input.
      report_missing: report the lines of the set without a data key (the vault the shred names).
      n_buckets, spill_dir: the joins' buckets and spill folder (see ArrowGroupByBucket).
    """

    def __init__(
        self,
        rewrap: RewrapFn,
        *,
        small: dict[str, bool],
        report_missing: bool,
        n_buckets: int,
        spill_dir: str | None = None,
    ):
        super().__init__()
        self._fn, self._small, self._missing = rewrap, dict(small), report_missing
        self._n, self._spill = max(1, int(n_buckets)), spill_dir

    def _drop(self, keys, ids, tag: str):
        """One drop stage: ``(kept rows, dropped rows, [counts PCollections])``."""
        name, missing = tag.title(), self._missing and tag == "lines"
        if self._small.get(tag):
            out = keys | f"Drop{name}" >> beam.ParDo(_DropSideFn(tag), beam.pvalue.AsList(ids)).with_outputs(
                DROPPED, COUNTS, main="kept"
            )
            counts = [out.counts]
            if missing:
                counts.append(
                    out.dropped
                    | "FoundLines" >> beam.FlatMap(lambda t: t.column("line_id").to_pylist())
                    | "AllFound" >> beam.combiners.ToList()
                    | "MissingLines" >> beam.Map(_missing_small, beam.pvalue.AsList(ids))
                )
            return out.kept, out.dropped, counts
        column = _COLUMNS[tag]
        joined = {
            "keys": keys | f"KeyRowsBy{name}" >> beam.ParDo(_KeyByFn(column, self._n)),
            "ids": ids | f"Key{name}" >> beam.ParDo(_KeyByFn(column, self._n)),
        } | f"JoinBy{name}" >> ArrowGroupByBucket(self._spill, label=f"JoinBy{name}")
        out = joined | f"Drop{name}" >> beam.ParDo(_DropJoinedFn(tag, missing)).with_outputs(
            DROPPED, MISSING, COUNTS, main="kept"
        )
        counts = [out.counts]
        if missing:
            counts.append(id_sample(out.missing, "missing_sample", "Missing", n=_MISSING_SHOWN))
        return out.kept, out.dropped, counts

    def expand(self, inputs: dict) -> RewrapOutputs:
        keys = inputs["keys"]
        counts = [keys | "CountIn" >> beam.Map(lambda t: {"keys_in": t.num_rows})]
        dropped = []
        for tag in ("lines", "deks"):
            if inputs.get(tag) is not None:
                keys, gone, tallies = self._drop(keys, inputs[tag], tag)
                dropped.append(gone)
                counts += tallies
        out = keys | "Rewrap" >> beam.ParDo(self._fn).with_outputs(COUNTS, main="keys")
        gone = tuple(dropped) | "FlattenDropped" >> beam.Flatten() if dropped else None
        if gone is None:
            gone = keys.pipeline | "NoneDropped" >> beam.Create([]).with_output_types(pa.Table)
        counts += [out.counts, id_sample(gone, "dropped_sample", "Dropped")]
        summed = tuple(counts) | "FlattenCounts" >> beam.Flatten() | "SumCounts" >> beam.CombineGlobally(SumCounts())
        return RewrapOutputs(out.keys, gone, summed)
