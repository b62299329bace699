"""Document numbers cross-checked against other projects' public validators and the issuing authorities' rules.

Each test holds a disagreement found by running the scan's classification on other projects' test vectors
(docs/regulation.md §2.7 cites the sources). No number here is a real person's: every value is built by the test
from the published rule, then damaged.

    .venv/bin/python -m pytest -q tests/test_documents_external.py
"""

from __future__ import annotations

import random

import pyarrow as pa

from bench.naive_rules import number_reasons, prepare
from tests.support.rows import AS_OF, person
from tests.support.scan import classify
from transforms.scan.documents import REASONS, check_document_numbers
from transforms.scan.normalize import normalize_doc_number
from transforms.scan.policy import load_policy

FORMAT = "DOC_NUMBER_FORMAT"


def _reasons(kind: str, raw: list[str]) -> list[set[str]]:
    numbers = normalize_doc_number(pa.array(raw, pa.string()))
    out = check_document_numbers(pa.array([kind] * len(raw)), numbers, AS_OF)
    return [{code for code in REASONS if out[code][i]} for i in range(len(raw))]


def _non_chinese_permits(rng: random.Random, count: int) -> list[str]:
    """The 2024 permit for non-Chinese permanent residents of Hong Kong and Macao, as the National Immigration
    Administration describes it: 9 characters, HA (Hong Kong) or MA (Macao) and a number for life (7 digits in
    the public validators that check it)."""
    return [rng.choice(["HA", "MA"]) + "".join(rng.choice("0123456789") for _ in range(7)) for _ in range(count)]


def test_hk_macao_permit_of_non_chinese_permanent_residents_is_accepted():
    numbers = _non_chinese_permits(random.Random(2024), 40)
    # As typed: lower case, full width, spaced or hyphenated; the normalisation makes each the number above.
    typed = [
        numbers[0].lower(),
        "".join(chr(ord(c) + 0xFEE0) for c in numbers[1]),
        numbers[2][:2] + " " + numbers[2][2:],
    ]
    typed.append(numbers[3][:2] + "-" + numbers[3][2:])
    assert _reasons("hk_macao_permit", numbers + typed) == [set()] * (len(numbers) + len(typed))


def test_damaged_non_chinese_permits_stay_malformed():
    number = _non_chinese_permits(random.Random(7), 1)[0]
    body = number[2:]
    damaged = [
        number[0] + "B" + body,  # another second letter
        "KA" + body,  # another first letter
        "CA" + body,
        number[:2] + body[:-1],  # 6 digits
        number + "0",  # 8 digits
        number[:2] + body[:-1] + "X",  # a letter in the number
        number[:2] + body[:3] + "O" + body[4:],
        number[:2] + "(" + body + ")",
        number[1] + number[0] + body,  # AH..., AM...
    ]
    assert _reasons("hk_macao_permit", damaged) == [{FORMAT}] * len(damaged)


def test_the_naive_oracle_agrees_on_the_non_chinese_permit():
    cfg = prepare(load_policy())["numbers"]
    number = _non_chinese_permits(random.Random(11), 1)[0]
    for value, expected in ((number, set()), (number + "0", {FORMAT}), ("HB" + number[2:], {FORMAT})):
        assert number_reasons("hk_macao_permit", value, AS_OF, cfg) == expected


def test_a_line_with_the_non_chinese_permit_is_complete():
    policy = load_policy()
    hong_kong, macao = _non_chinese_permits(random.Random(3), 2)
    rows = [
        person(line_id="L1", doc_type="HK_MACAO_TRAVEL_PERMIT", doc_number="HA" + hong_kong[2:], name="SMITH JOHN"),
        person(line_id="L2", doc_type="港澳居民来往内地通行证", doc_number="MA" + macao[2:], name="SILVA ANA"),
        person(line_id="L3", doc_type="17", doc_number="HB" + hong_kong[2:], name="SMITH JOHN", msisdn="13800138001"),
    ]
    rows[1]["msisdn"] = "13800138002"
    out, dead = classify(rows, policy)
    assert not dead
    assert FORMAT not in out["L1"]["reasons"] and FORMAT not in out["L2"]["reasons"]
    assert FORMAT in out["L3"]["reasons"]


def test_the_non_chinese_permits_own_title_is_a_label_of_the_hk_macao_permit():
    """港澳居民来往内地通行证（非中国籍）, the 2024 permit's title, read as HK_MACAO_TRAVEL_PERMIT (not
    DOC_TYPE_UNKNOWN); labels are matched after NFKC, so the full-width and the half-width brackets are one label."""
    from transforms.scan.normalize import normalize_label

    policy = load_policy()
    title = "港澳居民来往内地通行证（非中国籍）"
    assert policy.label_lookup[normalize_label(pa.array([title])).to_pylist()[0]] == "HK_MACAO_TRAVEL_PERMIT"
    hong_kong, macao = _non_chinese_permits(random.Random(25), 2)
    rows = [
        person(line_id="L1", doc_type=title, doc_number="HA" + hong_kong[2:], name="SMITH JOHN"),
        person(
            line_id="L2", doc_type="港澳居民来往内地通行证(非中国籍)", doc_number="MA" + macao[2:], name="SILVA ANA"
        ),
        person(line_id="L3", doc_type=title, doc_number="HA" + hong_kong[2:] + "0", name="SMITH JOHN"),
    ]
    rows[1]["msisdn"], rows[2]["msisdn"] = "13800138002", "13800138003"
    out, dead = classify(rows, policy)
    assert not dead
    for line in ("L1", "L2"):
        assert (out[line]["identity_status"], out[line]["reasons"], out[line]["flags"]) == ("COMPLETE", [], []), line
    assert out["L3"]["reasons"] == [FORMAT]  # the permit's number rule applies: 8 digits after HA is no permit
