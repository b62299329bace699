"""check_document_numbers against the scalar reference on random numbers, and its array contract.

Numbers of every check kind are built from random parts (check characters from the formulas,
tests/support/doc_numbers.py), then corrupted; tests/support/doc_reference.py's ``ref_reasons`` and
``ref_reviews`` give the verdict each must get. Nulls, slices, chunks, dictionary and large-string
inputs and bad calls follow.
"""

from __future__ import annotations

import datetime
import random

import numpy as np
import pyarrow as pa
import pytest

from tests.support.doc_reference import (
    AS_OF,
    BIRTH,
    CHECKSUM,
    CODE,
    CODE_REVIEW,
    DIVISION_REVIEW,
    FORMAT,
    MISMATCH,
    corrupt,
    one,
    reasons_of,
    ref_reasons,
    ref_reviews,
    valid_number,
    with_wrong_last,
)
from tests.support.doc_numbers import USCC_SET, citizen
from transforms.scan.documents import CHECKS, REASONS, REVIEWS, check_document_numbers


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_mixed_batch_matches_the_scalar_reference(seed: int):
    rng = random.Random(seed)
    kinds = [rng.choice(CHECKS) for _ in range(6000)]
    numbers = [corrupt(valid_number(k, rng), rng) for k in kinds]
    out = check_document_numbers(pa.array(kinds), pa.array(numbers), AS_OF)
    seen = {k: set() for k in CHECKS}
    for i, (kind, x) in enumerate(zip(kinds, numbers)):
        got = {r for r in REASONS + REVIEWS if out[r][i]}
        assert got == ref_reasons(kind, x) | ref_reviews(kind, x), (kind, x)
        seen[kind] |= got or {"valid"}
    # The batch really exercises the branches (else this test would prove little).
    assert seen["citizen_id"] == set(REASONS) - {CODE} | {DIVISION_REVIEW, "valid"}
    assert seen["hmt_residence_permit"] == {FORMAT, CHECKSUM, BIRTH, MISMATCH, "valid"}
    assert seen["foreign_permanent_resident_id"] == {FORMAT, CHECKSUM, BIRTH, MISMATCH, CODE, "valid"}
    # An organisation code line may carry a USCC (docs/policy.md "Document numbers"): the USCC's verdicts too.
    for kind in ("uscc", "business_license", "org_code"):
        assert seen[kind] == {FORMAT, CHECKSUM, CODE, CODE_REVIEW, "valid"}
    # A tax registration number: the legacy form, a USCC or an owner's citizen number (docs/regulation.md §2.9).
    assert seen["tax_registration"] == set(REASONS) - {"DOC_NUMBER_FIRST_GENERATION"} | set(REVIEWS) | {"valid"}


@pytest.mark.parametrize(
    "kind,widths,alphabet",
    [
        ("citizen_id", (18,), "0123456789X"),
        ("hmt_residence_permit", (18,), "0123456789X"),
        ("foreign_permanent_resident_id", (18,), "0123456789X"),
        ("uscc", (18,), USCC_SET),
        ("org_code", (9, 18), "0123456789X"),
        ("business_license", (15, 18), "0123456789"),
    ],
)
def test_generated_check_characters_pass_and_any_other_fails(kind: str, widths: tuple, alphabet: str):
    rng = random.Random(kind)
    good = []
    while len(good) < 500:  # random bodies, check character from the reference
        x = valid_number(kind, rng)
        if len(x) in widths and ref_reasons(kind, x) == set():
            good.append(x)
    assert {len(x) for x in good} == set(widths)
    assert all(r == set() for r in reasons_of(kind, good))
    bad = [with_wrong_last(x, rng.sample(alphabet, len(alphabet))) for x in good]
    assert all(r == {CHECKSUM} for r in reasons_of(kind, bad))


# ---- the array contract ---------------------------------------------------------------------


def test_nulls_get_no_reason_and_every_key_is_present():
    out = check_document_numbers(
        pa.array([None, "citizen_id", None, "passport"]), pa.array(["bad", None, None, "!"]), AS_OF
    )
    assert set(out) == set(REASONS + REVIEWS)
    for hits in out.values():
        assert hits.dtype == np.bool_ and hits.shape == (4,)
    assert out[FORMAT].tolist() == [False, False, False, True]
    assert not any(out[r][:3].any() for r in REASONS)
    empty = check_document_numbers(pa.array([], pa.string()), pa.array([], pa.string()), AS_OF)
    assert all(v.shape == (0,) for v in empty.values()) and set(empty) == set(REASONS + REVIEWS)
    nothing = check_document_numbers(pa.nulls(2, pa.string()), pa.array(["x", "y"]), AS_OF)
    assert not any(v.any() for v in nothing.values())


def _mixed(n: int = 400, seed: int = 7) -> tuple[list, list]:
    rng = random.Random(seed)
    kinds = [rng.choice(CHECKS + (None,)) for _ in range(n)]
    numbers = [None if rng.random() < 0.05 else corrupt(valid_number(k or "uscc", rng), rng) for k in kinds]
    return kinds, numbers


def _expected(kinds: list, numbers: list) -> dict[str, np.ndarray]:
    sets = [ref_reasons(k, x) if k is not None and x is not None else set() for k, x in zip(kinds, numbers)]
    return {r: np.array([r in s for s in sets], bool) for r in REASONS}


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for r in REASONS:
        np.testing.assert_array_equal(got[r], want[r], err_msg=r)


def test_sliced_arrays_with_different_offsets():
    kinds, numbers = _mixed()
    checks, values = pa.array(["uscc"] * 3 + kinds)[3:], pa.array(["x"] * 5 + numbers)[5:]
    assert (checks.offset, values.offset) == (3, 5)
    got = check_document_numbers(checks, values, AS_OF)
    _assert_same(got, _expected(kinds, numbers))
    got = check_document_numbers(pa.array(kinds)[17:301], pa.array(numbers)[17:301], AS_OF)
    _assert_same(got, _expected(kinds[17:301], numbers[17:301]))


def test_chunked_dictionary_and_large_string_inputs():
    kinds, numbers = _mixed(seed=8)
    want = _expected(kinds, numbers)
    chunked = check_document_numbers(
        pa.chunked_array([pa.array(kinds[:150], pa.string()), pa.array(kinds[150:], pa.string())]),
        pa.chunked_array([pa.array(numbers[:10]), pa.array(numbers[10:])]),
        AS_OF,
    )
    _assert_same(chunked, want)
    encoded = check_document_numbers(pa.array(kinds).dictionary_encode(), pa.array(numbers, pa.large_string()), AS_OF)
    _assert_same(encoded, want)


def test_bad_calls_raise_without_echoing_values():
    with pytest.raises(ValueError) as caught:
        check_document_numbers(pa.array(["11010519491231002X"]), pa.array(["11010519491231002X"]), AS_OF)
    assert "11010519491231002X" not in str(caught.value)
    with pytest.raises(ValueError):
        check_document_numbers(pa.array(["uscc"]), pa.array(["a", "b"]), AS_OF)
    # A kind that no row with a number uses is not an error.
    out = check_document_numbers(
        pa.array(["no_such_kind", "uscc"]).dictionary_encode()[1:], pa.array(["91110000600037341L"]), AS_OF
    )
    assert not any(v.any() for v in out.values())


def test_datetime_as_of_is_taken_as_its_date():
    x = citizen("110101", "20240630")
    assert one("citizen_id", x, datetime.datetime(2024, 6, 30, 23, 59)) == set()
