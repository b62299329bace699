"""Document numbers built by the tests from the formulas of docs/regulation.md, and the code tables as the
standards state them (tests/test_documents.py, tests/test_code_tables.py, tests/test_classify.py,
tests/test_scan_oracle.py).

The check characters are computed here by small scalar references written straight from the formulas
(§2.1, §2.4, §2.5, §2.6), independently of ``transforms.scan.checkdigits``; every number a test needs is
built from its parts with them, never copied. The tables are typed from the standards (GB 32100 tables
1-2, GB/T 2260 province-level codes) or read from their source (pycountry, python-stdnum's table and the
supplement CSV) without the code under test.
"""

from __future__ import annotations

import csv
import io
from importlib import resources

USCC_SET = "0123456789ABCDEFGHJKLMNPQRTUWXY"

# GB 32100-2015 tables 1 and 2 as amended (docs/regulation.md §2.4): authority -> its categories.
USCC_CATEGORIES = {
    "1": "1239",
    "2": "19",
    "3": "123459",
    "4": "19",
    "5": "1239",
    "6": "129",
    "7": "129",
    "8": "19",
    "9": "123",
    "A": "19",
    "N": "1239",
    "Y": "1",
}
# GB/T 2260 province-level codes: 11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71, 81, 82.
PROVINCE_LEVEL = [
    f"{c}"
    for lo, hi in ((11, 15), (21, 23), (31, 37), (41, 46), (50, 54), (61, 65), (71, 71), (81, 82))
    for c in range(lo, hi + 1)
]
CITIZEN_PROVINCES = [p for p in PROVINCE_LEVEL if p not in ("71", "81", "82")]
NATIONAL = "100000"


def ref_mod11_2(body17: str) -> str:
    """§2.1: W[i] = 2^(17-i) mod 11, C = "10X98765432"[S mod 11]."""
    s = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(body17))
    return "10X98765432"[s % 11]


def ref_uscc(body17: str) -> str:
    """§2.4: W_i = 3^i mod 31, C18 = CHARSET[(31 - S mod 31) mod 31]."""
    s = sum(USCC_SET.index(c) * pow(3, i, 31) for i, c in enumerate(body17))
    return USCC_SET[(31 - s % 31) % 31]


def ref_gb11714(body8: str) -> str:
    """§2.5: C9 = 11 - (S mod 11), A=10..Z=35; 10 -> X, 11 -> 0."""
    s = sum(int(c, 36) * w for c, w in zip(body8, [3, 7, 9, 10, 5, 8, 4, 2]))
    c9 = 11 - s % 11
    return {10: "X", 11: "0"}.get(c9, str(c9))


def ref_mod11_10(body14: str) -> str:
    """§2.6: ISO 7064 MOD 11,10."""
    p = 10
    for d in body14:
        s = (p + int(d)) % 10 or 10
        p = (2 * s) % 11
    return str((11 - p) % 10)


def citizen(region: str, ymd: str, seq: str = "001") -> str:
    """An 18-character citizen number (§2.1): address code, YYYYMMDD, sequence, MOD 11-2."""
    body = region + ymd + seq
    return body + ref_mod11_2(body)


def uscc(authority: str, category: str, division: str, org_body: str = "MA1BUFLT") -> str:
    """A USCC (§2.4): authority, category, division, an organisation code with its GB 11714 check, mod 31."""
    body = authority + category + division + org_body + ref_gb11714(org_body)
    return body + ref_uscc(body)


def licence(division: str, sequence: str = "01234567") -> str:
    """A legacy 15-digit business registration number (§2.6): division, sequence, MOD 11,10."""
    body = division + sequence
    return body + ref_mod11_10(body)


def fprid_2023(province: str, nationality: str, ymd: str = "19800101", seq: str = "001") -> str:
    """A 2023 permanent-resident number (§2.3): 9, province, ISO 3166-1 numeric, birth date, sequence, MOD 11-2."""
    return citizen("9" + province + nationality, ymd, seq)


def fprid_2017(alpha3: str, authority: str = "1100", yymmdd: str = "800101", rest: str = "11") -> str:
    """A 2004/2017 permanent-resident number (§2.3): ISO 3166-1 alpha-3, authority, YYMMDD, two digits."""
    return alpha3 + authority + yymmdd + rest


def countries() -> tuple[set[str], set[str]]:
    """(alpha-3 with the withdrawn ISO 3166-3 codes, numeric) straight from pycountry."""
    import pycountry

    alpha3 = {c.alpha_3 for c in pycountry.countries} | {c.alpha_3 for c in pycountry.historic_countries}
    return alpha3, {c.numeric for c in pycountry.countries}


def gbt2260_codes() -> set[str]:
    """Every code of python-stdnum's GB/T 2260 table and of the shipped supplement, read from the sources."""
    from stdnum import numdb

    codes = {
        low + child_low for _, low, _, _, children in numdb.get("cn/loc").prefixes for _, child_low, _, _, _ in children
    }
    text = resources.files("schemas").joinpath("gbt2260_supplement.csv").read_text("utf-8")
    return codes | {row["code"] for row in csv.DictReader(io.StringIO(text))}
