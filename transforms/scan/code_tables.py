"""The code tables behind the document numbers: compiled from the policy, looked up with numpy.

A check character proves a number was copied right, not that its coded parts
are codes. The policy's ``code_tables`` section (docs/policy.md "Code tables",
docs/regulation.md §2.8) names each table with its source and date:

* ``uscc_authorities``: the registration authorities of GB 32100 (position 1
  of a USCC) and the organisation categories each may register (position 2);
* ``province_level_codes`` and ``national_division``: the first two digits of
  a GB/T 2260 division, and ``100000`` for registration at national level
  (positions 3-8 of a USCC, the first six digits of a 15-digit licence, the
  province of a 2023 permanent-resident number, a line's region);
* ``divisions``: the GB/T 2260 codes, current and historical
  (:mod:`transforms.scan.divisions`);
* ``countries``: ISO 3166-1 (GB/T 2659) alpha-3 and numeric codes from
  pycountry, with the withdrawn alpha-3 codes of ISO 3166-3.

:class:`CodeTables` is frozen, hashable and picklable (it travels in the
policy). The lookups (:func:`pair_table`, :func:`byte_pairs`, ...) are numpy
tables indexed by the bytes or digit values of a whole batch, built once per
process and table.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from importlib import metadata
from typing import Any, Callable

import numpy as np

from transforms.scan.divisions import DivisionTableError, csv_divisions, division_text

__all__ = [
    "CodeTables",
    "CodeTableError",
    "compile_code_tables",
    "pycountry_codes",
    "pair_table",
    "byte_pairs",
    "alpha3_table",
    "numeric_table",
]


class CodeTableError(ValueError):
    """A code table that cannot be used; ``str()`` is one line: ``where: problem``."""


@dataclasses.dataclass(frozen=True)
class CodeTables:
    """The compiled tables of one policy (build with :func:`compile_code_tables`)."""

    version: str
    uscc_pairs: frozenset[str]  # authority + category, "91", "92", "Y1", ...
    province_level: frozenset[str]  # "11" ... "82"
    national_division: str  # "100000"
    divisions: str  # GB/T 2260 "code<TAB>name" lines, sorted (transforms.scan.divisions)
    alpha3: frozenset[str]
    numeric: frozenset[str]
    sources: tuple[tuple[str, str], ...]  # (table, "source; date"), for manifests and the docs
    digest: str  # sha256 over every table's content


@functools.lru_cache(maxsize=1)
def pycountry_codes() -> tuple[frozenset[str], frozenset[str]]:
    """(alpha-3, numeric) of ISO 3166-1, plus the withdrawn alpha-3 codes of ISO 3166-3 (cards keep them)."""
    import pycountry

    alpha3 = {c.alpha_3 for c in pycountry.countries} | {c.alpha_3 for c in pycountry.historic_countries}
    numeric = {c.numeric for c in pycountry.countries}
    return frozenset(alpha3), frozenset(numeric)


def _source(spec: dict) -> str:
    return f"{spec.get('source', '')}; {spec.get('date', '')}".strip("; ")


def _divisions(spec: dict, read: Callable[[str], bytes]) -> str:
    files = []
    for name in spec.get("files") or []:
        try:
            files.append(csv_divisions(read(name), f"code_tables.divisions.files {name}"))
        except DivisionTableError as exc:
            raise CodeTableError(str(exc)) from None
    extra = {str(code): str(name) for code, name in (spec.get("extra") or {}).items()}
    if any("\t" in name or "\n" in name for name in extra.values()):
        raise CodeTableError("code_tables.divisions.extra: a name holds a tab or a line break")
    return division_text(bool(spec.get("python_stdnum", True)), files, extra)


def _countries(spec: dict) -> tuple[frozenset[str], frozenset[str]]:
    alpha3, numeric = pycountry_codes() if spec.get("pycountry", True) else (frozenset(), frozenset())
    return alpha3 | set(spec.get("extra_alpha3") or ()), numeric | set(spec.get("extra_numeric") or ())


def compile_code_tables(section: dict[str, Any], read: Callable[[str], bytes]) -> CodeTables:
    """The tables of a policy's (schema-checked) ``code_tables`` section.

    ``read(name)`` returns the bytes of a table file the section lists.
    Raises :class:`CodeTableError` for a table that cannot be used.
    """
    authorities = section["uscc_authorities"]
    pairs = frozenset(a + c for a, cats in authorities["categories"].items() for c in cats)
    provinces = section["province_level_codes"]
    divisions = _divisions(section["divisions"], read)
    alpha3, numeric = _countries(section["countries"])
    sources = (
        ("uscc_authorities", _source(authorities)),
        ("province_level_codes", _source(provinces)),
        ("divisions", _source(section["divisions"])),
        ("countries", _source(section["countries"])),
    )
    libraries = {name: _version(name) for name in ("python-stdnum", "pycountry")}
    content = [sorted(pairs), sorted(provinces["codes"]), section["national_division"], divisions]
    content += [sorted(alpha3), sorted(numeric), libraries]
    return CodeTables(
        version=str(section["version"]),
        uscc_pairs=pairs,
        province_level=frozenset(provinces["codes"]),
        national_division=section["national_division"],
        divisions=divisions,
        alpha3=alpha3,
        numeric=numeric,
        sources=sources,
        digest=hashlib.sha256(repr(content).encode("utf-8")).hexdigest(),
    )


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


# ---- numpy lookups, built once per process and table ------------------------------------------


@functools.lru_cache(maxsize=8)
def pair_table(pairs: frozenset[str]) -> np.ndarray:
    """(256, 256) bool: True at [byte1, byte2] when the two characters are one of ``pairs``."""
    table = np.zeros((256, 256), bool)
    for pair in pairs:
        if len(pair) != 2 or not pair.isascii():
            raise ValueError("code pairs must be two ASCII characters")
        table[ord(pair[0]), ord(pair[1])] = True
    return table


def byte_pairs(table: np.ndarray, m: np.ndarray, start: int) -> np.ndarray:
    """``table`` looked up at the bytes ``m[:, start]`` and ``m[:, start + 1]`` of every row."""
    return table[m[:, start], m[:, start + 1]]


@functools.lru_cache(maxsize=8)
def alpha3_table(codes: frozenset[str]) -> np.ndarray:
    """Bool of 26**3 entries, indexed by ``(c0 - 65) * 676 + (c1 - 65) * 26 + (c2 - 65)``."""
    table = np.zeros(26**3, bool)
    for code in codes:
        if len(code) == 3 and code.isascii() and code.isalpha() and code.isupper():
            table[(ord(code[0]) - 65) * 676 + (ord(code[1]) - 65) * 26 + ord(code[2]) - 65] = True
    return table


@functools.lru_cache(maxsize=8)
def numeric_table(codes: frozenset[str]) -> np.ndarray:
    """Bool of 1000 entries, indexed by the three-digit value."""
    table = np.zeros(1000, bool)
    for code in codes:
        if len(code) == 3 and code.isascii() and code.isdigit():
            table[int(code)] = True
    return table
