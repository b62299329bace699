"""County-level GB/T 2260 codes added to the division table from the MCA and NBS lists (docs/regulation.md §2.8).

Each citizen number is built here from its parts, with its MOD 11-2 check character computed in this file
(GB 11643-1999, ISO 7064), so a review flag can only come from the division table: a code an official list names
is no review, a made-up one still is.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from tests.support.rows import AS_OF, person
from tests.support.scan import classify
from transforms.scan.documents import DIVISION_REVIEW, check_document_numbers
from transforms.scan.policy import load_policy

# code: the first list that names it (docs/regulation.md §2.8)
ADDED = {
    "330113": "临平区, MCA 2021 and NBS 2021",
    "330114": "钱塘区, MCA 2021 and NBS 2021",
    "152828": "丰镇县, MCA 1980",
    "352821": "明溪县, MCA 1980",
    "362533": "井冈山县, MCA 1981",
    "232506": "阳明区, MCA 1982",
    "441001": "潮州市, MCA 1983",
    "379026": "禹城市, MCA 1994",
}
MADE_UP = ["330199", "110199"]  # under real prefectures, in no list of any year


def mod11_2(body: str) -> str:
    """The check character of 17 digits: weights 2^(17-i) mod 11, remainder r -> '10X98765432'[r]."""
    total = sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(body))
    return "10X98765432"[total % 11]


def number(division: str, birth: str = "19850615", sequence: str = "123") -> str:
    body = division + birth + sequence
    return body + mod11_2(body)


def test_the_check_character_is_the_standards():
    assert number("110105", "19491231", "002") == "11010519491231002X"  # GB 11643-1999's own example
    assert number("440524", "18800101", "001") == "440524188001010014"


@pytest.mark.parametrize("division", sorted(ADDED))
def test_an_added_division_is_no_review(division):
    rules = load_policy().document_rules()
    numbers = [number(division), number(division, "20010228", "404"), number(division, "19991231", "999")]
    out = check_document_numbers(pa.array(["citizen_id"] * len(numbers)), pa.array(numbers), AS_OF, rules)
    assert [code for code, hits in out.items() if any(hits)] == [], ADDED[division]


def test_added_divisions_classify_complete_without_a_flag():
    rows = [person(line_id=f"L{d}", doc_number=number(d)) for d in sorted(ADDED)]
    rows += [person(line_id=f"M{d}", doc_number=number(d)) for d in MADE_UP]
    got, dead = classify(rows, load_policy())
    assert dead == []
    for division in ADDED:
        line = got[f"L{division}"]
        assert (line["identity_status"], line["flags"], line["needs_review"]) == ("COMPLETE", [], False), division
    for division in MADE_UP:
        line = got[f"M{division}"]
        assert (line["identity_status"], line["flags"], line["needs_review"]) == (
            "COMPLETE",
            [DIVISION_REVIEW],
            True,
        ), division
