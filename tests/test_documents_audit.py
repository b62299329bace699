"""An adversarial audit of the scan's document, name, address and date checks against the standards.

Every expected verdict is computed here, from the formulas of docs/regulation.md §2 (the scalar references of
tests/support/doc_numbers.py, written from them independently of transforms.scan.checkdigits):
valid numbers are built from their parts, then damaged (one character changed, two swapped, the wrong
length, a letter outside the character set, an impossible or future birth date). Cases where the sources are
ambiguous and the project made a documented choice (docs/policy.md "Decisions the regulation leaves open")
are left out, not guessed: the 150-year age boundary day, the province code 71 of a citizen number, the
unconfirmed 7-3-1 digit of the 2017 permanent-resident card. The authority/category table of GB 32100 is
tested as docs/regulation.md §2.4 says to treat it: a pair outside it is a warning (a review flag), not a reject.

Three ways in: check_document_numbers (the arrays), classify_batch (a line with its labels, names and
addresses), and once `backfill scan` on a Parquet base. python-stdnum (cn.ric, cn.uscc, iso7064) is the
differential oracle where its rules and the policy's agree (docs/regulation.md §7). All numbers are
synthetic; none is a real person's.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
import subprocess
import sys
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas import field_names
from tests.support.doc_numbers import CITIZEN_PROVINCES as SUPPORT_CITIZEN_PROVINCES
from tests.support.doc_numbers import PROVINCE_LEVEL as SUPPORT_PROVINCE_LEVEL
from tests.support.doc_numbers import USCC_CATEGORIES as USCC_PAIRS
from tests.support.doc_numbers import USCC_SET as USCC_CHARSET
from tests.support.doc_numbers import ref_gb11714 as gb11714
from tests.support.doc_numbers import ref_mod11_2 as mod11_2
from tests.support.doc_numbers import ref_mod11_10 as mod11_10
from tests.support.doc_numbers import ref_uscc as uscc_check
from tests.support.rows import AS_OF, organisation, person
from tests.support.scan import classify
from transforms.crypto.tokenize import normalize as token_normalize
from transforms.scan.dates import parse_dates, parse_timestamps
from transforms.scan.documents import REASONS, REVIEWS, DocumentRules, check_document_numbers
from transforms.scan.policy import load_policy

FORMAT, CHECKSUM, BIRTH, REGION, FIRST_GEN, MISMATCH, CODE = REASONS
DIVISION_REVIEW, CODE_REVIEW = REVIEWS

# ---- the standards' algorithms and tables (tests/support/doc_numbers.py: written from docs/regulation.md §2.1,
# §2.4, §2.5, §2.6, independently of transforms.scan.checkdigits) --------------------------------------------

CITIZEN_PROVINCES = [int(p) for p in SUPPORT_CITIZEN_PROVINCES]
# GB/T 2260 province-level codes: the citizens' and 71 Taiwan, 81 Hong Kong, 82 Macao.
PROVINCE_LEVEL = [int(p) for p in SUPPORT_PROVINCE_LEVEL]


def citizen(region: str, ymd: str, seq: str = "123") -> str:
    body = region + ymd + seq
    return body + mod11_2(body)


def make_uscc(authority: str, category: str, division: str, org_body: str) -> str:
    body = authority + category + division + org_body + gb11714(org_body)
    return body + uscc_check(body)


def uscc_expected(number: str) -> set[str]:
    """The verdict of a normalised USCC by docs/regulation.md §2.4: 18 characters of the 31; the mod-31 check and the
    embedded GB 11714 check; positions 3-8 a province-level division or 100000 (else a reject); positions 1-2 a
    pair of the GB 32100 table (else a warning: the review flag)."""
    if len(number) != 18 or any(c not in USCC_CHARSET for c in number):
        return {FORMAT}
    out = set()
    if uscc_check(number[:17]) != number[17] or gb11714(number[8:16]) != number[16]:
        out.add(CHECKSUM)
    division = number[2:8]
    if not (division.isdigit() and (int(division[:2]) in PROVINCE_LEVEL or division == "100000")):
        out.add(CODE)
    if number[1] not in USCC_PAIRS.get(number[0], ""):
        out.add(CODE_REVIEW)
    return out


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def verdicts(kind: str, numbers: list[str], as_of: datetime.date = AS_OF) -> list[set[str]]:
    out = check_document_numbers(pa.array([kind] * len(numbers)), pa.array(numbers, pa.string()), as_of)
    return [{code for code in REASONS + REVIEWS if out[code][i]} for i in range(len(numbers))]


def verdict(kind: str, number: str, as_of: datetime.date = AS_OF) -> set[str]:
    return verdicts(kind, [number], as_of)[0]


def line(policy, org: bool = False, **fields) -> dict:
    rows, dead = classify([(organisation if org else person)(**fields)], policy)
    assert not dead, [d["reason"] for d in dead]
    return rows["L1"]


def shift_years(day: datetime.date, years: int) -> datetime.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


# ---- §2.1 resident identity number ---------------------------------------------------------------------


def test_mod11_2_reference_matches_the_worked_example_and_stdnum():
    from stdnum.iso7064 import mod_11_2

    assert mod11_2("11010519491231002") == "X"
    assert citizen("610104", "19620927", "690") == "610104196209276908"  # docs/regulation.md §2.1 upgrade
    rng = random.Random(112)
    for _ in range(500):
        body = "".join(rng.choice("0123456789") for _ in range(17))
        assert mod_11_2.calc_check_digit(body) == mod11_2(body)


def test_every_check_character_and_every_single_substitution():
    valid = [citizen("110101", "19900101", f"{s:03d}") for s in range(1, 60)]
    assert {v[-1] for v in valid} == set("0123456789X")
    assert verdicts("citizen_id", valid) == [set()] * len(valid)
    base = citizen("440308", "19990110", "151")
    damaged, expected = [], []
    for i in range(18):
        for c in "0123456789X" if i == 17 else "0123456789":
            if c != base[i]:
                number = base[:i] + c + base[i + 1 :]
                damaged.append(number)
                expected.append(mod11_2(number[:17]) != number[17])  # MOD 11-2 catches every substitution
    assert all(expected)
    got = verdicts("citizen_id", damaged)
    assert all(CHECKSUM in g for g in got)


def test_adjacent_transpositions_fail_the_checksum():
    base = citizen("320106", "19850723", "417")
    swapped = [base[:i] + base[i + 1] + base[i] + base[i + 2 :] for i in range(16) if base[i] != base[i + 1]]
    for number, got in zip(swapped, verdicts("citizen_id", swapped)):
        assert (CHECKSUM in got) == (mod11_2(number[:17]) != number[17])
        assert CHECKSUM in got


def test_leap_days_and_impossible_dates():
    real = ["20000229", "19960229", "20240229", "19491231", "19000228"]
    fake = ["19000229", "20230229", "20190229", "19901301", "19900100", "19900431", "19900001", "19900132"]
    assert verdicts("citizen_id", [citizen("110101", d) for d in real]) == [set()] * len(real)
    assert verdicts("citizen_id", [citizen("110101", d) for d in fake]) == [{BIRTH}] * len(fake)


@pytest.mark.parametrize("as_of", [AS_OF, datetime.date(2024, 2, 29), datetime.date(2013, 1, 1)])
def test_birth_dates_against_the_as_of_date(as_of):
    def ymd(day: datetime.date) -> str:
        return day.strftime("%Y%m%d")

    ok = [as_of, as_of - datetime.timedelta(days=1), shift_years(as_of, -149)]
    bad = [as_of + datetime.timedelta(days=1), shift_years(as_of, 1), shift_years(as_of, -152)]
    numbers = [citizen("110105", ymd(d)) for d in ok + bad]
    assert verdicts("citizen_id", numbers, as_of) == [set()] * 3 + [{BIRTH}] * 3


def test_normalisation_of_a_resident_id_on_a_line(policy):
    number = citizen("110105", "19491231", "002")
    assert number.endswith("X")
    spellings = [
        number.lower(),
        fullwidth(number),
        fullwidth(number.lower()),
        f"  {number[:6]} {number[6:14]} {number[14:]}  ",
        f"{number[:6]}-{number[6:14]}-{number[14:]}",
        f"\u00a0{number[:6]}\u3000{number[6:]}\u200b",
        f"\ufeff{number}",
        f"{number[:6]}\u2014{number[6:]}",
    ]
    for spelling in spellings:
        row = line(policy, doc_number=spelling)
        assert (row["identity_status"], row["reasons"]) == ("COMPLETE", []), repr(spelling)


def test_region_codes_and_numbers_of_other_documents():
    for province in CITIZEN_PROVINCES:
        assert verdict("citizen_id", citizen(f"{province}0102", "19800101")) <= {DIVISION_REVIEW}
    for prefix in ("000000", "990000", "100000", "910000", "200000", "700000"):
        assert verdict("citizen_id", citizen(prefix, "19800101")) == {REGION}, prefix
    for permit in ("810000", "820000", "830000"):
        assert verdict("citizen_id", citizen(permit, "19800101")) == {REGION, MISMATCH}
    assert verdict("citizen_id", citizen("911840", "19800101")) == {REGION, MISMATCH}  # 2023 permanent resident
    # A division outside GB/T 2260 under a real province: a review flag, never a failure (docs/regulation.md §2.8).
    assert verdict("citizen_id", citizen("110199", "19800101")) == {DIVISION_REVIEW}


def test_first_generation_fifteen_digit_numbers():
    old = "610104620927690"
    assert verdict("citizen_id", old) == {FIRST_GEN}
    assert verdict("citizen_id", old, datetime.date(2012, 12, 31)) == set()
    assert verdict("citizen_id", old, datetime.date(2013, 1, 1)) == {FIRST_GEN}
    # Its upgrade (insert 19, add the MOD 11-2 character) is a valid second-generation number.
    assert verdict("citizen_id", citizen(old[:6], "19" + old[6:12], old[12:])) == set()
    # The century is 19: 000229 is 1900-02-29, which never existed; 960229 is 1996-02-29.
    assert verdict("citizen_id", "610104000229690") == {FIRST_GEN, BIRTH}
    assert verdict("citizen_id", "610104960229690") == {FIRST_GEN}
    assert verdict("citizen_id", "990104620927690") == {FIRST_GEN, REGION}
    for bad in ("61010462092769X", "61010462092769", "6101046209276901", "61010462O927690"):
        assert verdict("citizen_id", bad) == {FORMAT}


def _stdnum_regions() -> list[str]:
    from stdnum import numdb

    out = []
    for _, low, high, _, children in numdb.get("cn/loc").prefixes:
        for province in range(int(low), int(high) + 1):
            for length, lo, hi, _, _ in children:
                out += [f"{province:02d}{c:0{length}d}" for c in range(int(lo), int(hi) + 1)]
    return sorted(out)


def _stdnum_ric(number: str) -> str:
    from stdnum import exceptions
    from stdnum.cn import ric

    try:
        ric.validate(number)
        return "valid"
    except exceptions.InvalidComponent:
        try:
            ric.get_birth_date(number)
        except exceptions.InvalidComponent:
            return "date"
        return "place"  # the county did not exist in the birth year: not a rule of the policy (§2.2)
    except exceptions.ValidationError:
        return "invalid"


def _real_date(text: str) -> datetime.date | None:
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def test_resident_ids_agree_with_stdnum_where_the_rules_agree():
    rng = random.Random(20260101)
    # Citizen provinces only: 71 is kept out by docs/policy.md, 81/82 are residence permits (§2.2).
    regions = [r for r in _stdnum_regions() if int(r[:2]) in CITIZEN_PROVINCES]
    first, span = datetime.date(1880, 1, 1), (AS_OF - datetime.date(1880, 1, 1)).days
    numbers = []
    while len(numbers) < 3000:
        born = first + datetime.timedelta(days=rng.randrange(span + 1))
        number = citizen(rng.choice(regions), born.strftime("%Y%m%d"), f"{rng.randrange(1000):03d}")
        if _stdnum_ric(number) != "valid":
            continue  # a county that did not exist in the birth year: draw again
        roll = rng.random()
        if roll < 0.3:
            i = rng.randrange(18)
            number = number[:i] + rng.choice("0123456789X" if i == 17 else "0123456789") + number[i + 1 :]
        elif roll < 0.45:
            i = rng.randrange(16)
            number = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
        numbers.append(number)
    ours = verdicts("citizen_id", numbers)
    compared = 0
    for number, got in zip(numbers, ours):
        theirs = _stdnum_ric(number)
        born = _real_date(number[6:14])
        if theirs == "place" or (born is not None and not shift_years(AS_OF, -150) <= born <= AS_OF):
            continue  # stdnum has no age rule and a stricter place rule
        compared += 1
        assert (got - {DIVISION_REVIEW} == set()) == (theirs == "valid"), (number[:6], theirs, got)
        if theirs == "valid":
            assert DIVISION_REVIEW not in got  # every stdnum county is in the policy's table
    assert compared > 2800


# ---- §2.2 residence permits, §2.3 foreign permanent resident IDs --------------------------------------


def test_hmt_residence_permits():
    for prefix in ("810000", "820000", "830000"):
        numbers = [citizen(prefix, d, s) for d in ("19940823", "20000229", "19750615") for s in ("002", "003")]
        assert verdicts("hmt_residence_permit", numbers) == [set()] * len(numbers)
        assert verdict("hmt_residence_permit", citizen(prefix, "19000229")) == {BIRTH}
        assert verdict("hmt_residence_permit", citizen(prefix, "20310101")) == {BIRTH}
        good = citizen(prefix, "19940823")
        wrong = good[:-1] + ("0" if good[-1] != "0" else "1")
        assert verdict("hmt_residence_permit", wrong) == {CHECKSUM}
        assert verdict("hmt_residence_permit", good.lower()[:-1]) == {FORMAT}
    for prefix in ("810100", "820001", "840000", "800000", "000000"):
        assert verdict("hmt_residence_permit", citizen(prefix, "19940823")) == {FORMAT}
    assert verdict("hmt_residence_permit", citizen("110105", "19940823")) == {MISMATCH}


def test_permanent_resident_id_2023_card():
    def fprid(province: str, nationality: str, ymd: str = "19800101", seq: str = "001") -> str:
        return citizen("9" + province + nationality, ymd, seq)

    valid = [fprid("11", "840"), fprid("31", "392"), fprid("44", "410", "20000229"), fprid("65", "004")]
    assert verdicts("foreign_permanent_resident_id", valid) == [set()] * 4
    wrong_check = [v[:-1] + next(c for c in "0123456789X" if c != v[-1]) for v in valid]
    assert verdicts("foreign_permanent_resident_id", wrong_check) == [{CHECKSUM}] * 4
    assert verdict("foreign_permanent_resident_id", fprid("99", "840")) == {CODE}  # no province 99
    assert verdict("foreign_permanent_resident_id", fprid("11", "000")) == {CODE}  # no country 000
    assert verdict("foreign_permanent_resident_id", fprid("11", "840", "20230229")) == {BIRTH}
    assert verdict("foreign_permanent_resident_id", fprid("11", "840", "20261201")) == {BIRTH}
    # A citizen's or a residence permit's number filed as a permanent resident's.
    assert verdict("foreign_permanent_resident_id", citizen("110105", "19800101")) == {MISMATCH}
    assert verdict("foreign_permanent_resident_id", citizen("820000", "19800101")) == {MISMATCH}
    assert verdict("foreign_permanent_resident_id", citizen("011840", "19800101")) == {FORMAT}


def test_permanent_resident_numbers_of_every_province_level_code_filed_as_other_documents(policy):
    # docs/regulation.md §2.3: a 9, a province code of the accepting authority, ISO 3166 numeric nationality, MOD 11-2.
    # The permanent-resident check accepts every province-level code (71, 81, 82 too); filed as a resident
    # ID or a residence permit such a number is another document's (docs/policy.md "Document numbers").
    for province in PROVINCE_LEVEL:
        number = citizen(f"9{province}840", "19800101", "001")
        assert number[0] == "9" and mod11_2(number[:17]) == number[17]
        assert verdict("foreign_permanent_resident_id", number) == set(), province
        # Its first two digits (9x) are no citizen province: REGION, and the mismatch.
        assert verdict("citizen_id", number) == {REGION, MISMATCH}, province
        assert verdict("hmt_residence_permit", number) == {MISMATCH}, province
    # Digits 2-3 that are no province-level code: not a permanent-resident number, so no mismatch.
    for province in ("00", "10", "99", "83"):
        assert verdict("citizen_id", citizen(f"9{province}840", "19800101")) == {REGION}, province
    row = line(policy, doc_number=citizen("982840", "19800101"))
    assert (row["identity_status"], row["reasons"]) == ("INVALID", ["DOC_NUMBER_REGION", "DOC_TYPE_MISMATCH"])


def test_permanent_resident_id_2004_2017_card(policy):
    shapes = ["USA110080010111", "GBR310099123151", "JPN440000022920", "DEU110099123119"]
    assert verdicts("foreign_permanent_resident_id", shapes) == [set()] * 4
    assert verdict("foreign_permanent_resident_id", "QQQ110080010111") == {CODE}  # not ISO 3166-1 alpha-3
    assert verdict("foreign_permanent_resident_id", "USA110001022911") == {BIRTH}  # 1901 and 2001 not leap
    assert verdict("foreign_permanent_resident_id", "USA110080133011") == {BIRTH}
    for bad in ("US1110080010111", "USA11008001011", "USA1100800101111", "USA11008001011X", "U5A110080010111"):
        assert verdict("foreign_permanent_resident_id", bad) == {FORMAT}
    row = line(policy, doc_type="外国人永久居留身份证", doc_number=" usa 1100 800101 11 ", name="John Smith")
    assert (row["identity_status"], row["reasons"], row["flags"]) == ("COMPLETE", [], [])


# ---- §2.4 USCC, §2.5 organisation code, §2.6 legacy registration number --------------------------------


def _random_uscc(rng: random.Random, digit_authority: bool = False) -> str:
    authorities = [a for a in USCC_PAIRS if a.isdigit() or not digit_authority]
    authority = rng.choice(authorities)
    division = rng.choice([f"{rng.choice(CITIZEN_PROVINCES + [71, 81, 82])}{rng.randrange(10000):04d}", "100000"])
    org_body = "".join(rng.choice(USCC_CHARSET) for _ in range(8))
    return make_uscc(authority, rng.choice(USCC_PAIRS[authority]), division, org_body)


def test_uscc_worked_examples_and_generated_codes():
    assert uscc_check("91110000600037341") == "L" and gb11714("MA1BUFLT") == "4"
    rng = random.Random(32100)
    generated = [_random_uscc(rng) for _ in range(400)]
    assert verdicts("uscc", generated) == [set()] * 400
    assert verdicts("business_license", generated) == [set()] * 400
    assert verdicts("uscc_or_alnum", generated) == [set()] * 400


def test_uscc_charset_excludes_i_o_z_s_v_at_every_position():
    base = make_uscc("9", "1", "110108", "MA1BUFLT")
    numbers = [base[:i] + c + base[i + 1 :] for i in range(18) for c in "IOZSV"]
    assert verdicts("uscc", numbers) == [{FORMAT}] * len(numbers)


def test_uscc_single_substitutions_and_transpositions():
    base = make_uscc("9", "2", "371000", "MA3MXH0E")
    numbers = []
    for i in range(18):
        numbers += [base[:i] + c + base[i + 1 :] for c in USCC_CHARSET if c != base[i]]
    numbers += [base[:i] + base[i + 1] + base[i] + base[i + 2 :] for i in range(17) if base[i] != base[i + 1]]
    for number, got in zip(numbers, verdicts("uscc", numbers)):
        assert CHECKSUM in got, number
        assert got == uscc_expected(number), number


def test_uscc_embedded_organisation_code_uses_gb11714_values():
    # 9 + 1 + division + an organisation code whose 9th character is wrong, with a right mod-31 character:
    # GB 32100 passes, GB 11714 fails (docs/regulation.md §2.4 I6).
    body = "91110000" + "60003734" + "2"
    assert gb11714("60003734") == "1"
    assert verdict("uscc", body + uscc_check(body)) == {CHECKSUM}
    # An organisation code whose check is X sits in a USCC as X.
    assert gb11714("10000018") == "X"
    assert verdict("uscc", make_uscc("9", "1", "310000", "10000018")) == set()


def test_uscc_authorities_stdnum_rejects_are_valid():
    for authority in ("A", "N", "Y"):
        number = make_uscc(authority, USCC_PAIRS[authority][0], "330100", "MA2AB001")
        assert verdict("uscc", number) == set()


def test_usccs_agree_with_stdnum_where_the_rules_agree():
    from stdnum.cn import uscc as stdnum_uscc

    rng = random.Random(31)
    numbers = []
    for _ in range(3000):
        number = _random_uscc(rng, digit_authority=True)  # stdnum wants positions 1-8 to be digits
        roll = rng.random()
        if roll < 0.3:
            i = rng.randrange(9, 18)
            number = number[:i] + rng.choice(USCC_CHARSET) + number[i + 1 :]
        elif roll < 0.45:
            i = rng.randrange(8, 17)
            number = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
        numbers.append(number)
    for number, got in zip(numbers, verdicts("uscc", numbers)):
        embedded_ok = gb11714(number[8:16]) == number[16]
        assert (got == set()) == (stdnum_uscc.is_valid(number) and embedded_ok), number


def test_uscc_pair_outside_gb32100_is_a_warning_not_a_reject(policy):
    # docs/regulation.md §2.4: "Treat position 1/2 table mismatches as a warning, not a reject."
    pairs = [(a, c) for a in USCC_CHARSET for c in USCC_CHARSET]
    numbers = [make_uscc(a, c, "110108", "MA1BUFLT") for a, c in pairs]
    want = [set() if c in USCC_PAIRS.get(a, "") else {CODE_REVIEW} for a, c in pairs]
    assert want == [uscc_expected(n) for n in numbers]
    assert sum(w == set() for w in want) == sum(len(c) for c in USCC_PAIRS.values())
    for kind in ("uscc", "business_license", "org_code"):  # every check that takes a USCC
        assert verdicts(kind, numbers) == want, kind
    assert verdicts("uscc_or_alnum", numbers) == [set()] * len(numbers)  # letters and digits: no pair table
    # A registering division that is not province-level stays a reject, beside the warning.
    for authority, category in (("B", "1"), ("8", "8"), ("9", "1"), ("Y", "1")):
        number = make_uscc(authority, category, "880106", "MA1BUFLT")
        for kind in ("uscc", "business_license", "org_code"):
            assert verdict(kind, number) == uscc_expected(number) >= {CODE}, (kind, authority + category)
    made_up = make_uscc("B", "1", "110108", "MA1BUFLT")
    wrong = made_up[:-1] + next(c for c in USCC_CHARSET if c != made_up[-1])
    assert verdict("uscc", wrong) == {CHECKSUM, CODE_REVIEW}
    # On a line: the number stays valid (COMPLETE), the line is flagged for review.
    for label in ("统一社会信用代码", "营业执照", "工商注册号", "组织机构代码证", "14", "民办非企业单位登记证书"):
        row = line(policy, org=True, doc_type=label, doc_number=made_up.lower())
        got = (row["identity_status"], row["reasons"], row["flags"], row["needs_review"])
        assert got == ("COMPLETE", [], [CODE_REVIEW], True), label
    bad_division = line(policy, org=True, doc_number=make_uscc("B", "1", "880106", "MA1BUFLT"))
    assert (bad_division["identity_status"], bad_division["reasons"], bad_division["flags"]) == (
        "INVALID",
        ["DOC_NUMBER_CODE"],
        [CODE_REVIEW],
    )
    # 事业单位 / 社会团体 certificates take "a USCC, or 6 to 32 letters and digits": no pair table there.
    assert line(policy, org=True, doc_type="事业单位法人证书", doc_number=made_up)["flags"] == []


def test_organisation_code_lines_accept_a_uscc(policy):
    # Since 三证合一 (2015) the organisation code certificate is replaced by the USCC, which embeds the
    # GB 11714 organisation code at positions 9-17 (docs/regulation.md §2.4, §2.6; §1.3 lists 统一社会信用代码(证)
    # in the organisation code row).
    rng = random.Random(2015)
    usccs = [_random_uscc(rng) for _ in range(300)]
    assert all(uscc_expected(u) == set() for u in usccs)
    assert verdicts("org_code", usccs) == [set()] * len(usccs)
    assert verdicts("org_code", [u[8:17] for u in usccs]) == [set()] * len(usccs)  # the embedded code alone
    damaged = []
    for u in usccs[:40]:
        i = rng.randrange(18)
        damaged.append(u[:i] + rng.choice(USCC_CHARSET + "IOZSV") + u[i + 1 :])
        damaged.append(u[:i] + u[i + 1 :])  # 17 characters
        damaged.append(u + rng.choice(USCC_CHARSET))  # 19 characters
    want = [uscc_expected(d) if len(d) == 18 else {FORMAT} for d in damaged]
    assert verdicts("org_code", damaged) == want
    i6 = "91110000" + "60003734" + "2"  # docs/regulation.md §2.4 I6: mod 31 passes, the embedded code fails
    assert verdict("org_code", i6 + uscc_check(i6)) == {CHECKSUM}
    for label in _UNIT_LABELS + ["ORG_CODE"]:
        number = fullwidth(usccs[0].lower())
        row = line(policy, org=True, doc_type=label, doc_number=number)
        assert (row["identity_status"], row["reasons"], row["flags"]) == ("COMPLETE", [], []), label
        bad = line(policy, org=True, doc_type=label, doc_number=usccs[1][:-1] + ("0" if usccs[1][-1] != "0" else "1"))
        assert bad["reasons"] == ["DOC_NUMBER_CHECKSUM"], label
    # The nine-character code is still accepted, and the PDY range is still refused.
    assert line(policy, org=True, doc_type="组织机构代码证", doc_number="60003734-1")["reasons"] == []
    assert verdict("org_code", "PDY00001" + gb11714("PDY00001")) == {FORMAT}


def test_organisation_codes(policy):
    rng = random.Random(11714)
    bodies = ["60003734", "77255161", "MA1BUFLT", "10000018", "10000004"]
    bodies += ["".join(rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(8)) for _ in range(300)]
    codes = [b + gb11714(b) for b in bodies]
    assert {c[-1] for c in codes} >= set("0123456789X")
    assert verdicts("org_code", codes) == [set()] * len(codes)
    wrong = [c[:-1] + next(x for x in "0123456789X" if x != c[-1]) for c in codes]
    assert verdicts("org_code", wrong) == [{CHECKSUM}] * len(wrong)
    assert verdict("org_code", "PDY00001" + gb11714("PDY00001")) == {FORMAT}  # self-defined range
    assert verdicts("org_code", ["60003734", "6000373411", "60003734A", "6000-3734"]) == [{FORMAT}] * 4
    for spelling in ("10000018-x", "１０００００１８－Ｘ", " 10000018 X ", "10000018‐X"):
        row = line(policy, org=True, doc_type="组织机构代码证", doc_number=spelling)
        assert (row["identity_status"], row["reasons"]) == ("COMPLETE", []), spelling


def test_legacy_registration_numbers_agree_with_stdnum_mod_11_10():
    from stdnum.iso7064 import mod_11_10

    assert mod11_10("11010801234567") == "0"
    rng = random.Random(1771)
    numbers = []
    for _ in range(2000):
        body = f"{rng.choice(CITIZEN_PROVINCES)}{rng.randrange(10**12):012d}"
        number = body + mod11_10(body)
        if rng.random() < 0.5:
            i = rng.randrange(15)
            number = number[:i] + rng.choice("0123456789") + number[i + 1 :]
        numbers.append(number)
    for number, got in zip(numbers, verdicts("business_license", numbers)):
        assert (got == set()) == mod_11_10.is_valid(number), number
    assert verdict("business_license", "990108012345670"[:14] + mod11_10("99010801234567")) == {CODE}


# ---- §2.7 travel permits, passports, military IDs -------------------------------------------------------


def test_travel_permits_passports_and_military_ids(policy):
    assert verdicts("hk_macao_permit", ["H12345678", "M12345678", "H1234567801", "M0000000100"]) == [set()] * 4
    bad_permits = ["H1234567", "H123456789", "C12345678", "W12345678", "12345678", "HM1234567"]
    assert verdicts("hk_macao_permit", bad_permits) == [{FORMAT}] * len(bad_permits)
    assert verdicts("taiwan_permit", ["12345678", "0561682001", "0561682001(D)"]) == [set()] * 3
    assert verdicts("taiwan_permit", ["1234567", "123456789", "T1234567"]) == [{FORMAT}] * 3
    assert verdicts("passport", ["E12345678", "12345", "A" * 17]) == [set()] * 3
    assert verdicts("passport", ["1234", "A" * 18, "E1234567_", "E1234^678"]) == [{FORMAT}] * 4
    assert verdicts("free_text", ["南字第12345678号", "武字第1234号"]) == [set()] * 2
    assert verdicts("free_text", ["123", "0000", "XXXXXX", "123456", "NULL"]) == [{FORMAT}] * 5
    # Letters of the permits arrive in lower case and full width.
    for doc_type, number in (("港澳证", "h12345678"), ("港澳证", "Ｍ１２３４５６７８"), ("台胞证", "0561682001（d）")):
        row = line(policy, doc_type=doc_type, doc_number=number)
        assert (row["identity_status"], row["reasons"]) == ("COMPLETE", []), (doc_type, number)


def test_a_passport_number_read_from_its_machine_readable_zone(policy):
    # ICAO 9303: the MRZ's document-number field is 9 characters, a shorter number padded with "<" fillers;
    # a reader's export keeps them. Fillers at the end are not the number; a "<" inside it is no filler.
    for padded, number in (("AB1234567", "AB1234567"), ("E1234567<", "E1234567"), ("x12345<<<", "X12345")):
        row = line(policy, doc_type="护照", doc_number=padded, name="JOHN SMITH")
        assert (row["identity_status"], row["reasons"]) == ("COMPLETE", []), padded
        # tokens and masks are made of the same normalised number: the padded and the plain one meet
        assert token_normalize("doc_number", [padded]).to_pylist() == [number]
    assert line(policy, doc_type="护照", doc_number="AB<12345", name="JOHN SMITH")["reasons"] == ["DOC_NUMBER_FORMAT"]


def test_document_number_placeholders_of_the_policy(policy):
    # The default policy's list (schemas/decree25_policy.yaml) is the one DocumentRules() holds: a direct
    # caller and the CLI refuse the same junk on a military or police ID.
    listed = policy.raw["document_numbers"]["placeholders"]
    assert tuple(listed) == DocumentRules().number_placeholders
    for junk in ("暂无", "空", "待补", "待补充", "其他", "NIL", "1234567890", "000000", "无", "UNKNOWN"):
        assert junk in listed, junk
    assert verdict("free_text", "1234567890") == {FORMAT}
    # Placeholders shorter than the 4-character minimum are refused for that alone; with a minimum of 1 the
    # list refuses them too, and a real short number passes.
    loose = DocumentRules(free_text_min=1)
    short = ["空", "待补", "待补充", "其他", "NIL", "暂无", "字12"]
    out = check_document_numbers(pa.array(["free_text"] * len(short)), pa.array(short), AS_OF, loose)
    assert out[FORMAT].tolist() == [True] * 6 + [False]
    for label in ("军官证", "警官证", "人民警察证"):
        assert line(policy, doc_type=label, doc_number="1234567890")["reasons"] == ["DOC_NUMBER_FORMAT"], label


def test_default_document_rules_are_the_default_policys():
    # DocumentRules() says it holds the default policy's values; a direct caller must get the CLI's verdicts.
    rules, loaded = DocumentRules(), load_policy().document_rules()
    for field in dataclasses.fields(DocumentRules):
        if field.name != "tables":
            assert getattr(rules, field.name) == getattr(loaded, field.name), field.name


# ---- §1.3 document labels --------------------------------------------------------------------------------

_PERSON_NUMBERS = {
    "RESIDENT": citizen("110105", "19800101"),
    "MILITARY": "南字第12345678号",
    "HK_MACAO": "H12345678",
    "TAIWAN": "12345678",
    "PASSPORT": "E12345678",
}
_PERSON_LABELS = {
    "RESIDENT": ["01", "0", "1", "2", "101", "身份证", "居民身份证(18位)", "居民身份证（18位）", "身份证15位"]
    + ["IDCARD", "IdCard", "0-本地身份证", "1-外地身份证", "临时身份证", "41", "TempId", "户口簿", "户口薄"]
    + ["户口本", "04", "HUKOUBU", "户口本（禁止新增）"],
    "MILITARY": ["军官证", "士兵证", "士官证", "02", "103", "PLA", "SoldierID", "警官证", "09", "104", "PolicePaper"],
    "HK_MACAO": ["港澳证", "17", "107"],
    "TAIWAN": ["台胞证", "42", "108"],
    "PASSPORT": ["护照", "03", "105", "PASSPORT", "A-护照", " passport "],
}
_PERSON_REFUSED = ["驾驶证", "学生证", "社保卡", "工作证", "暂住证", "残疾证", "测试证", "测试号码证件", "虚拟证件"]
_PERSON_REFUSED += ["预开户编号", "实名制待核实", "银行帐户", "其他", "其它", "99", "199"]
_UNIT_LABELS = ["组织机构代码证", "14", "205", "民办非企业单位登记证书"]
_UNIT_USCC_LABELS = ["统一社会信用代码", "统一社会信用代码证", "营业执照", "06", "201", "工商注册号", "税务登记证"]
_UNIT_USCC_LABELS += ["BusinessLicence", "事业单位法人证书", "社会团体法人登记证书", "12", "25", "31", "202", "206"]
_UNIT_USCC_LABELS += ["单位介绍信/公函+公章", "单位介绍信／公函＋公章"]
_UNIT_REFUSED = ["集团编号", "客户标识码", "物联产品", "小微企业虚拟证件", "测试号码证件类型", "部队番号证件"]


def test_person_document_labels_of_regulation_1_3(policy):
    for group, labels in _PERSON_LABELS.items():
        for label in labels:
            row = line(policy, doc_type=label, doc_number=_PERSON_NUMBERS[group])
            assert (row["identity_status"], row["reasons"], row["flags"]) == ("COMPLETE", [], []), label
    for label in _PERSON_REFUSED:
        row = line(policy, doc_type=label, doc_number="ABC123456")
        assert row["reasons"] == ["DOC_TYPE_NOT_ACCEPTED"], label
    row = line(policy, doc_type="回乡证", doc_number="H12345678")  # ambiguous label: checked, and reviewed
    assert (row["identity_status"], row["reasons"], row["flags"]) == ("COMPLETE", [], ["DOC_TYPE_LABEL_REVIEW"])
    assert line(policy, doc_type="回乡证", doc_number="H1234")["reasons"] == ["DOC_NUMBER_FORMAT"]


# The documents' own titles (as printed on the card or in the regulations) beside the operator tools' labels.
_TITLES = {
    "RESIDENT": ["第二代居民身份证", "第二代身份证", "中华人民共和国居民身份证", "居民户口簿"],
    "MILITARY": [
        "中国人民解放军军人身份证件",
        "文职干部证",
        "武警身份证",
        "武装警察身份证件",
        "中国人民武装警察部队身份证件",
    ],
    "HMT": ["港澳居民居住证", "台湾居民居住证"],
    "FPRID": ["中华人民共和国外国人永久居留身份证"],
}


def test_document_titles_are_labels(policy):
    numbers = {
        "RESIDENT": citizen("110105", "19800101"),
        "MILITARY": _PERSON_NUMBERS["MILITARY"],
        "HMT": citizen("810000", "19900101"),
        "FPRID": citizen("911840", "19800101"),  # 9, Beijing, USA (840): the 2023 card
    }
    for group, labels in _TITLES.items():
        for label in labels:
            row = line(policy, doc_type=label, doc_number=numbers[group])
            assert (row["identity_status"], row["reasons"], row["flags"]) == ("COMPLETE", [], []), label
    usccs = make_uscc("9", "1", "110108", "MA1BUFLT")
    for label in ("企业法人营业执照", "企业营业执照", "个体工商户营业执照"):
        row = line(policy, org=True, doc_type=label, doc_number=usccs)
        assert (row["identity_status"], row["reasons"]) == ("COMPLETE", []), label
    # a title read as its document is checked as it: a residence-permit number under a resident ID's title
    assert "DOC_TYPE_MISMATCH" in line(policy, doc_type="第二代居民身份证", doc_number=numbers["HMT"])["reasons"]


def test_unit_document_labels_of_regulation_1_3(policy):
    usccs = make_uscc("9", "1", "110108", "MA1BUFLT")
    for label in _UNIT_LABELS:
        row = line(policy, org=True, doc_type=label, doc_number="60003734-1")
        assert (row["identity_status"], row["reasons"]) == ("COMPLETE", []), label
    for label in _UNIT_USCC_LABELS:
        row = line(policy, org=True, doc_type=label, doc_number=usccs)
        assert (row["identity_status"], row["reasons"]) == ("COMPLETE", []), label
    for label in _UNIT_REFUSED:
        assert line(policy, org=True, doc_type=label, doc_number=usccs)["reasons"] == ["DOC_TYPE_NOT_ACCEPTED"]
    # A person's document on an organisation's line, and the reverse (Art. 7 vs Art. 8).
    assert line(policy, org=True, doc_type="身份证", doc_number=citizen("110105", "19800101"))["reasons"] == [
        "DOC_TYPE_NOT_ALLOWED_FOR_KIND"
    ]
    crossed = line(policy, doc_type="营业执照", doc_number=usccs)
    assert crossed["reasons"] == ["DOC_TYPE_NOT_ALLOWED_FOR_KIND"]


def test_mislabelled_identity_cards_and_the_police_card_are_review_labels(policy):
    # docs/regulation.md §1.3: 香港身份证 and 澳门身份证 are listed under the HK/Macao permit (mislabelled), 人民警察证 with the
    # armed police ID. Each is read as that document and checked as it, and the line is flagged for review.
    review = ["DOC_TYPE_LABEL_REVIEW"]
    for label in ("香港身份证", "澳门身份证", " 香港身份证 "):
        for number in ("H12345678", "m1234567801", "Ｈ１２３４５６７８"):
            row = line(policy, doc_type=label, doc_number=number)
            assert (row["identity_status"], row["reasons"], row["flags"]) == ("COMPLETE", [], review), label
        hk_card = line(policy, doc_type=label, doc_number="A123456(7)")  # an identity card number: no permit
        assert (hk_card["identity_status"], hk_card["reasons"], hk_card["flags"]) == (
            "INVALID",
            ["DOC_NUMBER_FORMAT"],
            review,
        )
    # The other HK, Macao and Taiwan identity-card labels stay not accepted, with no number check and no flag.
    for label in ("香港居民身份证", "香港永久性居民身份证", "澳门居民身份证", "澳门永久性居民身份证", "台湾身份证"):
        row = line(policy, doc_type=label, doc_number="A1234567")
        assert (row["reasons"], row["flags"]) == (["DOC_TYPE_NOT_ACCEPTED"], []), label
    police = line(policy, doc_type="人民警察证", doc_number="京公警字第012345号")
    assert (police["identity_status"], police["reasons"], police["flags"]) == ("COMPLETE", [], review)
    assert line(policy, doc_type="人民警察证", doc_number="0000")["reasons"] == ["DOC_NUMBER_FORMAT"]
    # Read as the armed police ID, a mainland document: a Latin name is flagged too (docs/policy.md "Names").
    latin = line(policy, doc_type="人民警察证", doc_number="京公警字第012345号", name="Zhang San")
    assert latin["flags"] == ["DOC_TYPE_LABEL_REVIEW", "NAME_CHARSET_REVIEW"]
    # A person's document on an organisation's line.
    assert line(policy, org=True, doc_type="香港身份证", doc_number="H12345678")["reasons"] == [
        "DOC_TYPE_NOT_ALLOWED_FOR_KIND"
    ]


# ---- §5 names, §6 placeholders, addresses ------------------------------------------------------------------


@pytest.mark.parametrize(
    "dot", ["\u00b7", "\u0387", "\u30fb", "\uff65", "\u2022", "\u2027", "\u2219", "\u22c5", "\u2e31", ".", "\uff0e"]
)
def test_middle_dot_look_alikes_in_minority_names(policy, dot):
    for name in (f"阿依古丽{dot}买买提", f"阿{dot}卜{dot}杜", f"玉素甫{dot}艾买提{dot}托合提"):
        row = line(policy, name=name)
        assert (row["identity_status"], row["reasons"], row["flags"]) == ("COMPLETE", [], []), name
    for name in (f"{dot}阿依古丽", f"阿依古丽{dot}", f"阿依{dot}{dot}古丽", f"阿依{dot}\u00b7古丽"):
        assert line(policy, name=name)["reasons"] == ["NAME_FORMAT"], name


def test_name_scripts(policy):
    clean = ["張偉", "欧阳娜娜", "\U00020bb7明", "\u3400华", "李\ufeff\u200b四", "\u3000王五\u3000"]
    for name in clean:
        row = line(policy, name=name)
        assert (row["identity_status"], row["reasons"], row["flags"]) == ("COMPLETE", [], []), repr(name)
    for name in ("ＺＨＡＮＧ　ＳＡＮ", "Zhang San", "张san"):  # Latin on a mainland document: review only
        row = line(policy, name=name)
        assert (row["identity_status"], row["reasons"], row["flags"]) == ("COMPLETE", [], ["NAME_CHARSET_REVIEW"])
    foreign = line(policy, doc_type="护照", doc_number="E12345678", name="ＭＡＲＹ　ＳＭＩＴＨ")
    assert (foreign["identity_status"], foreign["flags"]) == ("COMPLETE", [])
    for name in ("张3", "张３", "王五1"):
        assert line(policy, name=name)["reasons"] == ["NAME_FORMAT"], name
    assert line(policy, name="张")["reasons"] == ["NAME_TOO_SHORT"]
    assert line(policy, name="阿" * 50)["reasons"] == []


def test_placeholder_names_of_regulation_6(policy):
    person_junk = [".", "-", "批量受理", "批开卡", "某某代办", "某代办", "临时账户", "本人", "张三本人", "红星工厂"]
    person_junk += ["未知", "无", "测试", "某某", "张某某", "test", "TEST", "Null", "ｎｕｌｌ"]
    for name in person_junk:
        row = line(policy, name=name)
        assert row["reasons"] == ["NAME_PLACEHOLDER"] and row["flags"] == [], name
    for name in (".", "-", "过户", "其他", "测试卡", "本人", "北京本人科技有限公司"):
        assert line(policy, org=True, name=name)["reasons"] == ["NAME_PLACEHOLDER"], name
    # 工厂 ("factory") makes a person's name junk, not an organisation's; a unit name needs 4 characters.
    assert line(policy, org=True, name="北京第一机床工厂")["reasons"] == []
    assert line(policy, org=True, name="新华社")["reasons"] == ["NAME_TOO_SHORT"]
    handler = line(policy, org=True, handler_name="某代办")
    assert handler["reasons"] == ["HANDLER_INVALID"]


def test_addresses_of_regulation_5_and_6(policy):
    keywords = "省 市 区 县 旗 乡 镇 苏木 街道 路 巷 胡同 里 弄 幢 栋 楼 单元 室 号 村 社区 组 嘎查".split()
    for keyword in keywords:
        row = line(policy, address=f"阳光花园{keyword}东侧")
        assert row["reasons"] == [], keyword
    assert line(policy, address="哈哈")["reasons"] == ["ADDRESS_PLACEHOLDER"]
    assert line(policy, address="北京市朝阳")["reasons"] == ["ADDRESS_TOO_SHORT"]
    assert line(policy, address="阳光花园东门口")["reasons"] == ["ADDRESS_NOT_SPECIFIC"]
    assert line(policy, address="北京市朝阳区建国路８８号")["reasons"] == []


def test_traditional_character_addresses(policy):
    # NFKC does not fold traditional characters into simplified ones, so a Hong Kong, Macao or Taiwan address
    # needs the traditional forms of the keywords of docs/regulation.md §5 (and 邨, a Hong Kong housing estate).
    traditional = "區 縣 鄉 鎮 蘇木 衚衕 棟 樓 單元 號 社區 組 大廈 邨".split()
    simplified = "区 县 乡 镇 苏木 胡同 栋 楼 单元 号 社区 组 大厦".split()
    for keyword in traditional:
        assert unicodedata.normalize("NFKC", keyword) == keyword
        assert not any(s in keyword for s in simplified)
        row = line(policy, address=f"陽光花園{keyword}東側")
        assert row["reasons"] == [], keyword
    for address in ("香港新界沙田區禾輋邨豐和樓", "澳門氹仔區海洋花園大廈", "臺北市大安區和平東路"):
        assert line(policy, address=address)["reasons"] == [], address
    assert line(policy, address="陽光花園東門口")["reasons"] == ["ADDRESS_NOT_SPECIFIC"]


# ---- dates of the line -----------------------------------------------------------------------------------


def test_line_dates_are_real_calendar_days():
    dates, bad = parse_dates(
        pa.array(["2024-02-29", "2000-02-29", "20230229", "1900-02-29", "2023/2/29", "0000-01-01"])
    )
    assert bad.tolist() == [False, False, True, True, True, True]
    # Every accepted date is one a reader of the output can use.
    assert [d.isoformat() for d in dates.filter(pa.array(~bad)).to_pylist()] == ["2024-02-29", "2000-02-29"]
    times = ["2024-02-29T12:00:00+08:00", "0000-01-01T00:00:00Z", "0000-12-31T23:00:00-08:00", "2023-02-29T00:00:00Z"]
    stamps, bad = parse_timestamps(pa.array(times))
    assert bad.tolist() == [False, True, True, True]
    assert stamps.filter(pa.array(~bad)).to_pylist()[0].isoformat() == "2024-02-29T04:00:00+00:00"


def test_dates_written_the_chinese_way_are_dates(policy):
    """``2013年8月1日`` (with a time after it or not): operator exports write dates so; such a line was a BAD_DATE
    dead letter, never classified. The same calendar checks apply; the oracle agrees."""
    from bench.naive_rules import parse_date, parse_timestamp

    days = [datetime.date(2013, 8, 1), datetime.date(2024, 2, 29), datetime.date(2026, 11, 30)]
    written = [f"{d.year}年{d.month}月{d.day}日" for d in days] + [
        f"{days[2].year}年{days[2].month:02d}月30日 10:30:00"
    ]
    not_dates = ["2023年2月29日", "2026年11月30", "2026年13月1日", "26年11月30日"]
    got, bad = parse_dates(pa.array(written + not_dates))
    assert got.to_pylist()[: len(written)] == days + [days[2]] and bad.tolist() == [False] * 4 + [True] * 4
    assert [parse_date(v) for v in written + not_dates] == [(d, False) for d in days + [days[2]]] + [(None, True)] * 4
    stamps, bad = parse_timestamps(pa.array(written[3:]))
    assert stamps.to_pylist()[0].isoformat() == "2026-11-30T10:30:00+00:00" and not bad.any()
    assert parse_timestamp(written[3])[0] == int(stamps.cast(pa.int64()).to_pylist()[0])
    rows, dead = classify([person(line_id="L1", activated_on="2013年8月1日")], policy)
    assert not dead and rows["L1"]["activated_on"] == datetime.date(2013, 8, 1)


def test_a_zero_year_is_a_bad_date_dead_letter(policy):
    rows, dead = classify([person(line_id="L1", activated_on="0000-01-01")], policy)
    assert not rows and [(d["reason"], d["field"]) for d in dead] == [("BAD_DATE", "activated_on")]


# ---- the CLI ---------------------------------------------------------------------------------------------

_CLI_AS_OF = datetime.date(2025, 3, 1)


def _cli_rows() -> list[tuple[dict, list[str], list[str]]]:
    """(row, expected reasons, expected flags): built from the standards, against _CLI_AS_OF."""
    born_tomorrow = (_CLI_AS_OF + datetime.timedelta(days=1)).strftime("%Y%m%d")
    good = citizen("110105", "19800215")
    cases = [
        (person(), [], []),
        (person(doc_number=fullwidth(citizen("110101", "19900101", "004").lower())), [], []),
        (person(doc_number=citizen("110105", _CLI_AS_OF.strftime("%Y%m%d"))), [], []),
        (person(doc_number=citizen("110105", born_tomorrow)), ["DOC_NUMBER_BIRTH_DATE"], []),
        (person(doc_number=citizen("110101", "20230229")), ["DOC_NUMBER_BIRTH_DATE"], []),
        (person(doc_number=good[:-1] + ("1" if good[-1] != "1" else "2")), ["DOC_NUMBER_CHECKSUM"], []),
        (person(doc_number="610104620927690"), ["DOC_NUMBER_FIRST_GENERATION"], []),
        (person(doc_number=citizen("820000", "19900101")), ["DOC_NUMBER_REGION", "DOC_TYPE_MISMATCH"], []),
        (person(doc_type="港澳台居民居住证", doc_number=citizen("820000", "19900101")), [], []),
        (person(doc_type="港澳台居民居住证", doc_number=citizen("110105", "19900101")), ["DOC_TYPE_MISMATCH"], []),
        (person(doc_type="外国人永久居留身份证", doc_number=citizen("911840", "19800101"), name="John Smith"), [], []),
        (person(doc_number=citizen("110199", "19800101")), [], ["DOC_NUMBER_DIVISION_REVIEW"]),
        (person(name="阿依古丽\u2022买买提"), [], []),
        (person(name="未知"), ["NAME_PLACEHOLDER"], []),
        (person(doc_type="回乡证", doc_number="h12345678"), [], ["DOC_TYPE_LABEL_REVIEW"]),
        (organisation(doc_number=make_uscc("9", "1", "110108", "MA1BUFLT").lower()), [], []),
        (organisation(doc_number="91110000600037342" + uscc_check("91110000600037342")), ["DOC_NUMBER_CHECKSUM"], []),
        (
            organisation(doc_type="组织机构代码证", doc_number="PDY00001" + gb11714("PDY00001")),
            ["DOC_NUMBER_FORMAT"],
            [],
        ),
        (organisation(doc_type="营业执照", doc_number="11010801234567" + mod11_10("11010801234567")), [], []),
        # The policy changes of decree25-2013.2: a USCC pair outside GB 32100 is a warning (docs/regulation.md §2.4) ...
        (organisation(doc_number=make_uscc("B", "1", "110108", "MA1BUFLT")), [], ["DOC_NUMBER_CODE_REVIEW"]),
        (organisation(doc_number=make_uscc("8", "8", "880106", "MA1BUFLT")), ["DOC_NUMBER_CODE"], [CODE_REVIEW]),
        # ... an organisation code line accepts a USCC, which embeds the code (三证合一) ...
        (organisation(doc_type="组织机构代码证", doc_number=make_uscc("9", "1", "310000", "10000018")), [], []),
        (organisation(doc_type="205", doc_number=make_uscc("L", "1", "310000", "MA1BUFLT")), [], [CODE_REVIEW]),
        # ... mislabelled HK/Macao cards and the police card are read as the document of their row, reviewed ...
        (person(doc_type="香港身份证", doc_number="M23456789"), [], ["DOC_TYPE_LABEL_REVIEW"]),
        (person(doc_type="澳门身份证", doc_number="A123456(7)"), ["DOC_NUMBER_FORMAT"], ["DOC_TYPE_LABEL_REVIEW"]),
        (person(doc_type="台湾居民身份证", doc_number="A123456789"), ["DOC_TYPE_NOT_ACCEPTED"], []),
        (person(doc_type="人民警察证", doc_number="京公警字第012345号"), [], ["DOC_TYPE_LABEL_REVIEW"]),
        # ... traditional-character addresses have their keywords ...
        (person(address="香港新界沙田區禾輋邨豐和樓"), [], []),
        # ... the placeholders the policy and DocumentRules() now share ...
        (person(doc_type="军官证", doc_number="1234567890"), ["DOC_NUMBER_FORMAT"], []),
        # ... and a 2023 permanent-resident number of province-level code 71/81/82 filed as a resident ID.
        (person(doc_number=citizen("981840", "19800101")), ["DOC_NUMBER_REGION", "DOC_TYPE_MISMATCH"], []),
    ]
    default = person()["doc_number"]
    out = []
    for i, (row, reasons, flags) in enumerate(cases):
        if row["doc_number"] == default:  # one number per line: no DOC_NAME_CONFLICT between the cases
            row = {**row, "doc_number": citizen("110105", "19800101", f"{i:03d}")}
        out.append(({**row, "line_id": f"A{i:02d}"}, reasons, flags))
    return out


@pytest.mark.e2e
def test_backfill_scan_on_a_parquet_base(tmp_path):
    cases = _cli_rows()
    names = field_names("subscriber_base")
    base = pa.Table.from_pydict({n: pa.array([row.get(n) for row, _, _ in cases], pa.string()) for n in names})
    pq.write_table(base, tmp_path / "base.parquet")
    backfill = os.path.join(os.path.dirname(sys.executable), "backfill")
    args = ["scan", "--base", str(tmp_path / "base.parquet"), "--out", str(tmp_path / "out")]
    args += ["--as-of", _CLI_AS_OF.isoformat(), "--workers", "1", "--progress-seconds", "0"]
    proc = subprocess.run([backfill, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {r["line_id"]: r for r in pq.read_table(tmp_path / "out" / "classified").to_pylist()}
    assert len(got) == len(cases)
    for row, reasons, flags in cases:
        out = got[row["line_id"]]
        assert (out["reasons"], out["flags"]) == (reasons, flags), row["line_id"]
        assert out["identity_status"] == ("INVALID" if reasons else "COMPLETE")
        assert out["needs_review"] == bool(flags)
        assert out["as_of"] == _CLI_AS_OF
    text = proc.stdout + proc.stderr
    for row, _, _ in cases:  # no document number in what the run prints
        assert row["doc_number"] not in text


def test_verdict_arrays_are_booleans_of_the_input_length():
    out = check_document_numbers(pa.array(["citizen_id", None, "uscc"]), pa.array([None, "x", "y"]), AS_OF)
    assert set(out) == set(REASONS + REVIEWS)
    assert all(v.dtype == np.bool_ and v.shape == (3,) for v in out.values())
    assert not any(v[:2].any() for v in out.values())
