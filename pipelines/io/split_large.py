"""Large CSV and Avro files cut into byte ranges inside a Beam job (``pipelines/io/ranges.py`` explains how).

    splits | "SplitLargeFiles" >> SplitLargeFiles(encoding="utf-8") | beam.Reshuffle() | read each split

Each range is scanned on its own worker; the scans of one file meet by its path (a GroupByKey) and are
numbered from the top of the file. A step run on this machine without Beam does the same with
``split_large_files`` and its pool of worker processes.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines.io.planning import Split
from pipelines.io.ranges import BYTES_PER_SPLIT, RangeScan, cut_ranges, number_ranges, scan_checked

__all__ = ["SplitLargeFiles"]


@beam.typehints.with_output_types(beam.typehints.Tuple[str, RangeScan], whole=Split)
class _ScanRangeFn(beam.DoFn):
    def __init__(self, encoding: str):
        self._encoding = encoding

    def process(self, split: Split):
        if split.byte_range is None or split.rows is not None:
            yield beam.pvalue.TaggedOutput("whole", split)
            return
        yield split.path, RangeScan(split, scan_checked(split, self._encoding))


def _numbered(element) -> list[Split]:
    _, scans = element
    return number_ranges(list(scans))


class SplitLargeFiles(beam.PTransform):
    """Splits in; the same splits out, with every large CSV or Avro file cut into byte ranges that hold whole
    records and know their first row (see the module docstring). Parquet is split by row groups when planned."""

    def __init__(self, encoding: str = "utf-8", bytes_per_split: int = BYTES_PER_SPLIT):
        super().__init__()
        self._encoding, self._bytes = encoding, bytes_per_split

    def expand(self, splits):
        scanned = (
            splits
            | "CutRanges" >> beam.FlatMap(cut_ranges, self._bytes)
            | "SpreadRanges" >> beam.Reshuffle()
            | "ScanRanges" >> beam.ParDo(_ScanRangeFn(self._encoding)).with_outputs("whole", main="scans")
        )
        numbered = scanned.scans | "ByFile" >> beam.GroupByKey() | "NumberRanges" >> beam.FlatMap(_numbered)
        return (scanned.whole, numbered) | "AllSplits" >> beam.Flatten()
