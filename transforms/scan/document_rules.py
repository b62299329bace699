"""The tunable part of the document-number checks (docs/policy.md "Document numbers", "Code tables").

:class:`DocumentRules` is built from a policy by ``Policy.document_rules()``;
``DocumentRules()`` holds the default policy's values, for callers (and
tests) that check numbers without loading a policy first.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools

from transforms.scan.code_tables import CodeTables

__all__ = ["DocumentRules"]

# GB/T 2260 province-level codes (docs/policy.md "Document numbers"; docs/regulation.md §2.1).
_PROVINCES = frozenset(
    f"{c}" for lo, hi in ((11, 15), (21, 23), (31, 37), (41, 46), (50, 54), (61, 65)) for c in range(lo, hi + 1)
)


@dataclasses.dataclass(frozen=True)
class DocumentRules:
    """The tunable part of the document-number policy (defaults: docs/policy.md "Document numbers")."""

    province_codes: frozenset[str] = _PROVINCES
    max_age_years: int = 150
    first_generation_void_since: datetime.date = datetime.date(2013, 1, 1)
    hmt_prefixes: tuple[str, ...] = ("810000", "820000", "830000")
    free_text_min: int = 4  # MILITARY_ID, ARMED_POLICE_ID
    free_text_max: int = 32
    # Compared to the normalised value: the default policy's document_numbers.placeholders
    # (schemas/decree25_policy.yaml), which DocumentRules() must equal. docs/regulation.md §6 found no
    # source for them: they are plausible junk.
    number_placeholders: tuple[str, ...] = (
        "无",
        "未知",
        "不详",
        "暂无",
        "空",
        "待补",
        "待补充",
        "其他",
        "测试",
        "NULL",
        "NONE",
        "NIL",
        "TEST",
        "N/A",
        "NA",
        "UNKNOWN",
        "123456",
        "1234567",
        "12345678",
        "123456789",
        "1234567890",
        "0123456789",
        "000000",
    )
    passport_min: int = 5
    passport_max: int = 17
    alnum_min: int = 6  # PUBLIC_INSTITUTION_CERT / SOCIAL_GROUP_CERT free form
    alnum_max: int = 32
    org_code_reserved_prefixes: tuple[str, ...] = ("PDY",)
    # The code tables (transforms.scan.code_tables); None: the default policy's.
    tables: CodeTables | None = None

    def code_tables(self) -> CodeTables:
        return self.tables if self.tables is not None else _default_tables()


@functools.lru_cache(maxsize=1)
def _default_tables() -> CodeTables:
    from transforms.scan.policy import load_policy

    return load_policy().code_tables
