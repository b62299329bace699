"""The classifier run on one batch of row dicts (tests/test_classify.py, tests/test_policy.py)."""

from __future__ import annotations

from tests.support.rows import AS_OF, CTX, SALT, raw_table
from transforms.scan.classify import classify_batch, finalize


def classify(rows, policy, as_of=AS_OF):
    """``rows`` (dicts) classified under ``policy``: ({line_id: classified row}, dead-letter rows)."""
    result = classify_batch(raw_table(rows), policy, as_of, CTX, SALT)
    out = {r["line_id"]: r for r in finalize(result.classified).to_pylist()}
    return out, result.dead_letter.to_pylist()
