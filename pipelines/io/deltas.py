"""The streaming merge's committed windows read in a Beam pipeline (``backfill compact``).

    tables = p | ReadWindows(["out/stream/deltas/w-000001", ...], keyset_id="ks-...", deltas="out/stream/deltas")
    tables["delta"], tables["delta_keys"], tables["delta_values"], tables["counts"]

Each window folder (``pipelines/io/windows.py`` describes it) is read by one
worker, in batches: its ``delta.parquet`` rows (``schemas/merged_line.avsc``)
and its vault's key and value rows, each with a ``_window`` column, the
window's position in the list (the compaction's tie-break between windows
and how a winning delta row finds its own vault rows). A window whose vault
rows were made under another keyset fails the job with one line: they would
not open under ``--keys``. ``counts`` holds, per window, ``{"deltas":
{"windows": 1, "rows_read": N}}`` for the compaction's balance.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines.common import UserError
from pipelines.io.planning import InputError
from pipelines.io.vault_files import table_files
from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)
from transforms.crypto.vault import VaultError
from transforms.merge.compact import DELTA_SCHEMAS, WINDOW

__all__ = ["ReadWindows"]

_TAGS = {"delta_keys": ("keys", "delta_keys"), "delta_values": ("values", "delta_values")}


def _batches(path: str, schema: pa.Schema, position: int, batch_size: int):
    """The rows of one Parquet file in ``schema`` (its ``_window`` set to ``position``), in batches."""
    names = [n for n in schema.names if n != WINDOW]
    with FileSystems.open(path) as handle:
        pf = pq.ParquetFile(handle)
        present = set(pf.schema_arrow.names)
        for batch in pf.iter_batches(batch_size=batch_size, columns=[n for n in names if n in present]):
            n = batch.num_rows
            columns = [
                batch.column(f.name).cast(f.type) if f.name in present else pa.nulls(n, f.type)
                for f in schema
                if f.name != WINDOW
            ]
            columns.append(pa.array(np.full(n, position, np.int64)))
            yield pa.Table.from_arrays(columns, schema=schema)


@beam.typehints.with_output_types(pa.Table, delta_keys=pa.Table, delta_values=pa.Table, counts=dict)
class _ReadWindowFn(beam.DoFn):
    def __init__(self, keyset_id: str, deltas: str, batch_size: int):
        self._keyset_id, self._deltas, self._batch_size = keyset_id, deltas, batch_size

    def process(self, element):
        position, window = element
        rows = 0
        try:
            for table in _batches(
                FileSystems.join(window, "delta.parquet"), DELTA_SCHEMAS["delta"], position, self._batch_size
            ):
                rows += table.num_rows
                yield table
            for tag, (kind, schema) in _TAGS.items():
                for shard in table_files(FileSystems.join(window, "vault"), kind):
                    for table in _batches(shard, DELTA_SCHEMAS[schema], position, self._batch_size):
                        if tag == "delta_keys":
                            self._check_keyset(window, table)
                        yield beam.pvalue.TaggedOutput(tag, table)
        except (UserError, InputError, VaultError):
            raise
        except Exception as exc:  # the type only: a message may quote data
            raise InputError(f"{window}: cannot read the window ({type(exc).__name__})") from None
        yield beam.pvalue.TaggedOutput("counts", {"deltas": {"windows": 1, "rows_read": rows}})

    def _check_keyset(self, window: str, keys: pa.Table) -> None:
        foreign = set(pc.unique(keys.column("keyset_id")).to_pylist()) - {self._keyset_id}
        if foreign:
            raise UserError(
                f"--deltas {self._deltas}: window {FileSystems.split(window)[1]} has vault rows made under keyset "
                f"{sorted(foreign)[0]}, not {self._keyset_id} (--keys): they would not open"
            )


class ReadWindows(beam.PTransform):
    """Committed window folders -> ``{"delta", "delta_keys", "delta_values", "counts"}`` (see the module docstring)."""

    def __init__(self, windows: list[str], keyset_id: str, deltas: str, batch_size: int = 65_536):
        super().__init__()
        self._windows, self._keyset_id, self._deltas = list(windows), keyset_id, deltas
        self._batch_size = batch_size

    def expand(self, pbegin):
        read = (
            pbegin
            | "Windows" >> beam.Create(list(enumerate(self._windows)))
            | "Spread" >> beam.Reshuffle()
            | "Read"
            >> beam.ParDo(_ReadWindowFn(self._keyset_id, self._deltas, self._batch_size)).with_outputs(
                "delta_keys", "delta_values", "counts", main="delta"
            )
        )
        return {tag: read[tag] for tag in ("delta", "delta_keys", "delta_values", "counts")}
