"""A pipeline that does what the graph-secret test must catch (tests/test_graph_secrets.py, its control).

It draws a salt and a key in the launcher, as the scan once drew its salt, and
gives them to a DoFn, so both are pickled into the job graph. Run as
``python -m tests.support.leaky_job [Beam flags]`` by the Dataflow dry-run child.
"""

from __future__ import annotations

import base64
import secrets
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


class _SaltedFn(beam.DoFn):
    def __init__(self, salt: str, key: str):
        self._salt, self._key = salt, key

    def process(self, element):
        yield element


def main(argv: list[str]) -> int:
    salt = secrets.token_hex(16)  # pickled with the DoFn: in the graph
    key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    with beam.Pipeline(options=PipelineOptions(argv)) as p:
        p | "One" >> beam.Create([1]) | "Salted" >> beam.ParDo(_SaltedFn(salt, key))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
