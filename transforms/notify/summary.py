"""SummariseJobs: the dry run's view of a wave's jobs (no I/O inside).

Job tables of each channel in; one dict out: ``rows`` maps
``"channel|region|send_day"`` to ``[jobs, SMS segments, SMS cost]``, and
``samples`` holds the first few jobs of each channel by job id (masked number,
rendered text; per A/B variant as ``"sms/B"`` when the wave has variants), for
``backfill notify --dry-run`` to print. Aggregation is per
table with Arrow's group_by; only the small tallies are combined globally.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.core import coders  # noqa: F401  (registers the Arrow table coder)

__all__ = ["SummariseJobs"]


class SummariseJobs(beam.PTransform):
    """Jobs by channel, region and send day (with SMS segments and cost), and a few samples.

    Apply to a dict ``{channel: PCollection of job tables}``; yields one dict.
    """

    def __init__(self, samples: int = 3):
        super().__init__()
        self._samples = samples

    def expand(self, jobs: dict):
        parts = [
            pcoll | f"Summarise{name.title()}" >> beam.Map(_summary, name, self._samples)
            for name, pcoll in sorted(jobs.items())
        ]
        return (
            tuple(parts)
            | "FlattenSummaries" >> beam.Flatten()
            | "MergeSummaries" >> beam.CombineGlobally(_MergeSummaries(self._samples))
        )


def _summary(table: pa.Table, channel: str, samples: int) -> dict:
    if channel == "sms":
        table = table.append_column("_n", pa.array(np.ones(table.num_rows, np.int64)))
        agg = [("_n", "sum"), ("segments", "sum"), ("cost", "sum")]
    else:
        table = table.append_column("_n", pa.array(np.ones(table.num_rows, np.int64)))
        agg = [("_n", "sum")]
    region = table.column("region") if "region" in table.column_names else pa.nulls(table.num_rows, pa.string())
    table = table.set_column(table.schema.get_field_index("region"), "region", pc.fill_null(region, "-"))
    grouped = table.group_by(["region", "send_day"], use_threads=False).aggregate(agg).to_pylist()
    rows = {
        f"{channel}|{g['region']}|{g['send_day'].isoformat()}": [
            g["_n_sum"],
            g.get("segments_sum") or 0,
            g.get("cost_sum") or 0.0,
        ]
        for g in grouped
    }
    return {"rows": rows, "samples": _samples(table, channel, samples)}


def _samples(table: pa.Table, channel: str, samples: int) -> dict:
    """The first jobs by job id of the channel (``"sms"``), or of each of its variants (``"sms/B"``)."""
    text = "script" if channel == "call" else "text"
    keep = ["job_id", "msisdn_masked", text] if channel != "announcement" else ["job_id", "region", text]
    variant = table.column("variant") if "variant" in table.column_names else pa.nulls(table.num_rows, pa.string())
    out = {}
    for name in pc.unique(variant).to_pylist() if table.num_rows else []:
        part = table.filter(pc.is_null(variant) if name is None else pc.fill_null(pc.equal(variant, name), False))
        first = pc.bottom_k_unstable(part.column("job_id"), samples)
        out[channel if name is None else f"{channel}/{name}"] = (
            part.take(first).select(keep).sort_by("job_id").to_pylist()
        )
    return out


class _MergeSummaries(beam.CombineFn):
    def __init__(self, samples: int):
        self._samples = samples

    def create_accumulator(self):
        return {"rows": {}, "samples": {}}

    def add_input(self, acc, item):
        for key, values in item["rows"].items():
            acc["rows"][key] = [a + b for a, b in zip(acc["rows"].get(key, [0, 0, 0.0]), values)]
        for channel, head in item["samples"].items():
            merged = sorted(acc["samples"].get(channel, []) + head, key=lambda r: r["job_id"])
            acc["samples"][channel] = merged[: self._samples]
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            self.add_input(out, acc)
        return out

    def extract_output(self, acc):
        return acc
