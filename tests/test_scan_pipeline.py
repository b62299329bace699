"""ClassifyRegistrationCompleteness under TestPipeline: outputs, dead letters, counts.

Run with the spilled shuffle (local default) and with tables shuffled
inline (the Dataflow path); both must give the same result.
"""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not collected as a test class
from apache_beam.testing.util import assert_that, equal_to

from tests.support.rows import AS_OF, CTX, RUNNER, SALT, person, raw_table
from transforms.scan.composite import ClassifyRegistrationCompleteness


def _rows(tables):
    return [r for t in tables for r in t.to_pylist()]


def _verdicts(tables):
    return sorted((r["line_id"], r["identity_status"], tuple(r["reasons"]), tuple(r["flags"])) for r in _rows(tables))


def _dead(tables):
    return sorted((r["reason"], r["source_row"]) for r in _rows(tables))


def _fixture_batches():
    first = [
        person(line_id="A"),
        person(line_id="B", name="李四"),  # same document as A, another name
        person(line_id="C", doc_number="440308199901101512", name="", updated_at="2024-01-01T00:00:00"),
        person(line_id="", name="x"),
    ]
    second = [
        person(line_id="C", doc_number="440308199901101512", name="王五", updated_at="2025-01-01T00:00:00"),
        person(line_id="D", status="SOMETIMES"),
        person(line_id="E", doc_type="驾驶证", doc_number="4403081999"),
    ]
    return [raw_table(first, "one.csv"), raw_table(second, "two.csv")]


EXPECTED = [
    ("A", "COMPLETE", (), ("DOC_NAME_CONFLICT",)),
    ("B", "COMPLETE", (), ("DOC_NAME_CONFLICT",)),
    ("C", "COMPLETE", (), ()),
    ("E", "INVALID", ("DOC_TYPE_NOT_ACCEPTED",), ()),
]
EXPECTED_DEAD = [("BAD_ENUM", 2), ("DUPLICATE_LINE_ID", 3), ("LINE_ID_MISSING", 4)]


@pytest.mark.parametrize("spill", [True, False])
def test_composite_outputs(policy, tmp_path, spill):
    spill_dir = str(tmp_path / "spill") if spill else None
    p = BeamTestPipeline(runner=RUNNER)
    raw = p | "Batches" >> beam.Create(_fixture_batches())
    out = raw | ClassifyRegistrationCompleteness(policy, AS_OF, CTX, SALT, n_buckets=3, spill_dir=spill_dir)
    assert_that(
        out.classified | "Verdicts" >> beam.combiners.ToList() | beam.Map(_verdicts),
        equal_to([EXPECTED]),
        label="assert:classified",
    )
    assert_that(
        out.dead_letter | "DeadRows" >> beam.combiners.ToList() | beam.Map(_dead),
        equal_to([EXPECTED_DEAD]),
        label="assert:dead_letter",
    )

    def check_counts(counts):
        (c,) = counts
        assert c["rows_in"] == 7 and c["classified"] == 4 and c["dead_letters"] == 3
        assert c["identity_status"] == {"COMPLETE": 3, "INVALID": 1}
        assert c["flags"] == {"DOC_NAME_CONFLICT": 2}
        assert c["dead_letter_reasons"] == {"BAD_ENUM": 1, "DUPLICATE_LINE_ID": 1, "LINE_ID_MISSING": 1}

    assert_that(out.counts, check_counts, label="assert:counts")
    result = p.run()
    result.wait_until_finish()
    classified = result.metrics().query(MetricsFilter().with_name("rows_classified"))["counters"]
    assert sum(c.committed for c in classified) == 5  # C twice, before dedup


def test_output_schema_is_the_contract(policy):
    from schemas import arrow_schema

    with BeamTestPipeline(runner=RUNNER) as p:
        out = (
            p
            | beam.Create(_fixture_batches())
            | ClassifyRegistrationCompleteness(policy, AS_OF, CTX, SALT, n_buckets=2)
        )
        same = out.classified | beam.Map(lambda t: t.schema.equals(arrow_schema("classified_line")))
        assert_that(
            same | beam.combiners.ToList() | beam.Map(lambda v: bool(v) and all(v)),
            equal_to([True]),
            label="assert:schema",
        )


def test_many_buckets_same_result(policy):
    rows = [person(line_id=f"L{i:04d}", name="张三" if i % 7 else "李四") for i in range(40)]
    rows += [person(line_id=f"L{i:04d}", name="", updated_at="2000-01-01T00:00:00") for i in range(0, 40, 5)]
    batches = [raw_table(rows[i : i + 9], f"f{i}.csv") for i in range(0, len(rows), 9)]
    for buckets in (1, 16):
        with BeamTestPipeline(runner=RUNNER) as p:
            out = (
                p
                | f"Create{buckets}" >> beam.Create(batches)
                | f"Scan{buckets}" >> ClassifyRegistrationCompleteness(policy, AS_OF, CTX, SALT, n_buckets=buckets)
            )
            verdicts = out.classified | beam.combiners.ToList() | beam.Map(_verdicts)
            assert_that(verdicts | beam.Map(len), equal_to([40]), label="assert:count")
            assert_that(
                verdicts | beam.Map(lambda v: all(flags == ("DOC_NAME_CONFLICT", "DOC_LINE_LIMIT") for *_, flags in v)),
                equal_to([True]),
                label="assert:flags",
            )
