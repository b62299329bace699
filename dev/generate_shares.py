"""What the synthetic base is made of (``dev.generate``): the intended shares and the tables built from them.

Shares are of all lines (enum values, identity class) or of a subscriber kind
(documents, defects); the derived tables (label offsets, agent weights, ...)
are what the vectorised makers index. Changing a share changes every base.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dev import generate_data as D
from dev.generate_arrays import strs
from schemas import field_names
from transforms.scan.checkdigits import USCC_CHARSET

__all__ = [
    "KINDS",
    "LINE_TYPES",
    "STATUSES",
    "IDENTITY",
    "PERSON_DOCS",
    "ORG_DOCS",
    "PERSON_INVALID",
    "ORG_INVALID",
    "RAW_LABEL",
    "HANDLER_ONLY",
    "BLANKS",
    "DUPLICATE_LINE_ID",
    "EMPTY_LINE_ID",
    "BAD_ENUM",
    "BAD_DATE",
    "DIRTY_ENUM",
    "MSISDN_FORMATTED",
    "IOT_DATA_CARD",
    "NO_AGENT",
    "AGENTS",
    "OTHER_BIRTHPLACE",
    "MINORITY_NAME",
    "LOOKALIKE_DOT",
    "XINJIANG",
    "LATIN_FOREIGN",
    "RURAL",
    "ZONED_TIMESTAMP",
    "DIRT",
    "LINE_LIMIT_GROUPS",
    "NAME_CONFLICTS",
    "ORG_SHARED",
    "DOCS",
    "INVALID",
    "K",
    "COLUMNS",
    "SCHEMA",
    "ACTIVATED_FROM",
    "DATA_END",
    "UPDATED_FROM",
    "UPDATED_END",
    "BORN_FROM",
    "BORN_TO",
    "Y2K",
    "YEARS28",
]

# Shares of all lines (enum values, identity class); of a subscriber kind (documents).
KINDS = {"INDIVIDUAL": 0.94, "ORGANIZATION": 0.06}
LINE_TYPES = {"MOBILE": 0.86, "FIXED": 0.08, "DATA_CARD": 0.06}
STATUSES = {"ACTIVE": 0.82, "SUSPENDED": 0.07, "TERMINATED": 0.11}
IDENTITY = {"COMPLETE": 0.62, "MISSING": 0.11, "INCOMPLETE": 0.15, "INVALID": 0.12}
PERSON_DOCS = {
    "RESIDENT_ID": 0.90,
    "HOUSEHOLD_REGISTER": 0.02,
    "TEMP_RESIDENT_ID": 0.01,
    "MILITARY_ID": 0.01,
    "ARMED_POLICE_ID": 0.005,
    "HK_MACAO_TRAVEL_PERMIT": 0.015,
    "TAIWAN_TRAVEL_PERMIT": 0.01,
    "HMT_RESIDENCE_PERMIT": 0.01,
    "FOREIGN_PASSPORT": 0.015,
    "FOREIGN_PERMANENT_RESIDENT_ID": 0.005,
}
ORG_DOCS = {
    "USCC": 0.70,
    "BUSINESS_LICENSE": 0.12,
    "ORG_CODE": 0.08,
    "PUBLIC_INSTITUTION_CERT": 0.06,
    "SOCIAL_GROUP_CERT": 0.04,
}
# The one defect of an INVALID line, by subscriber kind.
PERSON_INVALID = {
    "checksum": 0.20,
    "birth_date": 0.10,
    "region": 0.06,
    "first_generation": 0.10,
    "permit_as_resident_id": 0.05,
    "number_format": 0.04,
    "name_placeholder": 0.12,
    "name_too_short": 0.05,
    "address_placeholder": 0.12,
    "doc_not_accepted": 0.08,
    "doc_unknown": 0.04,
    "org_doc_for_person": 0.04,
}
ORG_INVALID = {
    "org_uscc_checksum": 0.20,
    "org_embedded_check": 0.08,
    "org_code_reserved": 0.05,
    "org_license_checksum": 0.07,
    "org_person_doc": 0.08,
    "org_name_placeholder": 0.12,
    "org_name_too_short": 0.06,
    "org_address_placeholder": 0.12,
    "org_doc_not_accepted": 0.07,
    "org_handler_invalid": 0.15,
}
RAW_LABEL = 0.5  # doc_type written as an operator label (docs/regulation.md §1.3), not the code
HANDLER_ONLY = 0.35  # of INCOMPLETE organisation lines: only handler fields are absent
BLANKS = {None: 0.6, "": 0.15, " ": 0.15, "\u3000": 0.05, "  ": 0.05}  # how an absent value looks
DUPLICATE_LINE_ID, EMPTY_LINE_ID = 0.002, 0.0001
BAD_ENUM, BAD_DATE = 0.0002, 0.0002  # dead letters: PREPAID, 2019-13-40
DIRTY_ENUM = 0.03  # per enum column: " mobile ", "Active", ...
MSISDN_FORMATTED = 0.08  # +86, 0086, 86, spaces, hyphens, (area code)
IOT_DATA_CARD = 0.2  # of DATA_CARD lines: 13-digit IoT numbers
NO_AGENT, AGENTS = 0.25, 300  # no agent: online / self-service openings
OTHER_BIRTHPLACE = 0.2  # citizen numbers whose address code is not the line's region
MINORITY_NAME, LOOKALIKE_DOT, XINJIANG = 0.02, 0.3, 0.7  # dotted names; of them: look-alike dot, in Xinjiang
LATIN_FOREIGN, RURAL = 0.75, 0.15  # of foreign documents: Latin names; of persons: village addresses
ZONED_TIMESTAMP = 0.1  # updated_at with "+08:00"
DIRT = {
    "fullwidth_digits": 0.01,
    "zero_width": 0.005,
    "ideographic_space": 0.005,
    "edge_spaces": 0.015,
    "double_space": 0.01,
    "grouped_number": 0.005,
    "lower_x": 0.3,
    "fullwidth_x": 0.05,
}  # x: of X-ending
LINE_LIMIT_GROUPS, NAME_CONFLICTS, ORG_SHARED = 2, 6, 0.3  # per block; share of organisation lines

DOCS, INVALID = list(PERSON_DOCS) + list(ORG_DOCS), list(PERSON_INVALID) + list(ORG_INVALID)
K = {d: i for i, d in enumerate(DOCS)}
COLUMNS = field_names("subscriber_base")
SCHEMA = pa.schema([pa.field(c, pa.string()) for c in COLUMNS])
ACTIVATED_FROM, DATA_END, UPDATED_FROM, UPDATED_END, BORN_FROM, BORN_TO, Y2K = map(
    D.day_number, ("2003-01-01", "2025-12-31", "2024-01-01", "2026-01-31", "1935-01-02", "2009-12-31", "2000-01-01")
)
YEARS28 = 10227  # days in 28 years: the same month, day and leap-ness (ages are 16-90 in 2026)

# Tables the makers index (not part of the module's star-export).
LABELS = strs([lab for d in DOCS for lab in D.DOC_LABELS[d]])  # every document's labels, code first
LABEL_CNT = np.array([len(D.DOC_LABELS[d]) for d in DOCS])
LABEL_OFF = np.cumsum(LABEL_CNT) - LABEL_CNT
CITIZEN = np.isin(np.arange(len(DOCS)), [K["RESIDENT_ID"], K["HOUSEHOLD_REGISTER"], K["TEMP_RESIDENT_ID"]])
CHECK11, USCC = np.frombuffer(b"0123456789X", np.uint8), np.frombuffer(USCC_CHARSET.encode(), np.uint8)
BAD_BIRTHS = D.ascii_matrix([f"{y:04d}{m:02d}{d:02d}" for y, m, d in D.BAD_BIRTH_DATES])
AGENT_IDS = strs([f"AG{i:05d}" for i in range(1, AGENTS + 1)] + [None])
AGENT_P = list((1 - NO_AGENT) * (w := 1.0 / np.arange(10, AGENTS + 10)) / w.sum()) + [NO_AGENT]
