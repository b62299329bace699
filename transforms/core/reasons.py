"""The catalogue of reason and flag codes: one place, in a stable order.

```reasons`` on a classified line lists failed checks in the order of
:data:`LINE_REASONS`; dead letters carry one of :data:`DEAD_LETTER_REASONS`,
the merge's and notify's dead letters one of :data:`EVENT_REASONS` (or, for
an event that fails the policy, the first failing line reason).
The tables of docs/policy.md "Reason codes" are checked against this catalogue
by the tests (tests/test_policy.py).
"""

from __future__ import annotations

__all__ = ["LINE_REASONS", "FLAGS", "DEAD_LETTER_REASONS", "EVENT_REASONS", "CATALOGUE", "reason_index"]

# (code, meaning, source in the regulation / docs/regulation.md / docs/contract.md)
_LINE = [
    ("DOC_TYPE_MISSING", "no document type", "Art. 9 (document type recorded)"),
    ("DOC_NUMBER_MISSING", "no document number", "Art. 9"),
    ("NAME_MISSING", "no name", "Art. 9"),
    ("ADDRESS_MISSING", "no address", "Art. 9"),
    ("HANDLER_MISSING", "organisation without the handling person's document type, number or name", "Art. 6, Art. 8"),
    ("DOC_TYPE_UNKNOWN", "a document label the policy does not know", "Art. 7, Art. 8; docs/regulation.md §1.3"),
    (
        "DOC_TYPE_NOT_ACCEPTED",
        "a document Decree 25 does not accept (driving licence, student card, test or virtual document, 其他, ...)",
        "Art. 7, Art. 8; docs/regulation.md §1.3, §6",
    ),
    (
        "DOC_TYPE_NOT_ALLOWED_FOR_KIND",
        "an accepted document of the other subscriber kind (an organisation document for a person, or the reverse)",
        "Art. 7 vs Art. 8",
    ),
    (
        "DOC_NUMBER_FORMAT",
        "length, characters or pattern wrong for the document (placeholders and the PDY range included)",
        "docs/regulation.md §2.1-2.7",
    ),
    (
        "DOC_NUMBER_CHECKSUM",
        "check character wrong (MOD 11-2, GB 32100 mod 31 with the embedded GB 11714 code, GB 11714, MOD 11,10)",
        "GB 11643, GB 32100, GB 11714, GB/T 17710; docs/regulation.md §2.1-2.6",
    ),
    (
        "DOC_NUMBER_BIRTH_DATE",
        "birth date in the number not a real date, after the as-of date, or more than 150 years before it",
        "GB 11643; docs/regulation.md §2.1, §2.3",
    ),
    (
        "DOC_NUMBER_REGION",
        "citizen number whose first two digits are not a GB/T 2260 province code",
        "GB 11643, GB/T 2260; docs/regulation.md §2.1",
    ),
    (
        "DOC_NUMBER_CODE",
        "a coded part of the number is not in its code table: a USCC's registering division (positions 3-8), "
        "a 15-digit licence's registering division, a permanent resident ID's nationality (ISO 3166-1 alpha-3 on "
        "the 2004/2017 card, numeric on the 2023 card) or province",
        "GB/T 2260, GB/T 2659 (ISO 3166-1 via pycountry); docs/regulation.md §2.3, §2.4, §2.6, §2.8",
    ),
    (
        "DOC_NUMBER_FIRST_GENERATION",
        "15-digit first-generation resident ID, void since 2013-01-01",
        "docs/regulation.md §2.1",
    ),
    (
        "DOC_TYPE_MISMATCH",
        "the number belongs to another document (residence-permit 81/82/83 or 9+province-level permanent-resident number "
        "filed as a resident ID, or the reverse)",
        "国办发〔2018〕81号; docs/regulation.md §1.4, §2.2, §2.3",
    ),
    (
        "NAME_PLACEHOLDER",
        "a junk name (未知, 无, 测试, 某某, 某某代办, 批量受理, test, null, ...; a person name containing 本人)",
        "Art. 9, Art. 10; docs/regulation.md §6",
    ),
    ("NAME_TOO_SHORT", "a person's name under 2 characters, an organisation's under 4", "docs/regulation.md §5"),
    (
        "NAME_FORMAT",
        "digits in a person's name, a separator at the start or end or two in a row, or over 50 characters",
        "民委发〔2016〕33号; docs/regulation.md §5",
    ),
    ("ADDRESS_PLACEHOLDER", "a junk address (哈哈, 无, 不详, 测试, ...)", "Art. 9; docs/regulation.md §6"),
    ("ADDRESS_TOO_SHORT", "an address under 6 characters", "docs/regulation.md §5"),
    (
        "ADDRESS_NOT_SPECIFIC",
        "Han text without any administrative or street keyword (省 市 区 县 路 号 村 ...), or a Latin-script address under 10 characters or without a digit",
        "docs/regulation.md §5",
    ),
    ("HANDLER_INVALID", "the handling person's document type, number or name fails a check", "Art. 6, Art. 8"),
]
_FLAGS = [
    (
        "DOC_NAME_CONFLICT",
        "one document number carried by lines with two or more different names",
        "docs/regulation.md §6 (China Mobile rule)",
    ),
    (
        "DOC_LINE_LIMIT",
        "one person's document on more than 5 lines that are not TERMINATED",
        "六部门通告 2016 item 4 (一证五卡); docs/regulation.md §1.1, §6",
    ),
    (
        "DOC_TYPE_LABEL_REVIEW",
        "an ambiguous or mislabelled raw document label (回乡证, 香港身份证, 澳门身份证, 人民警察证: the policy's "
        "review_labels) was read as the document the policy names; a person should confirm",
        "docs/regulation.md §1.3 and its notes",
    ),
    (
        "REGION_INVALID",
        "the line's region is not a six-digit GB/T 2260 division code under a province-level code; the value is "
        "left out of every output (region empty) so that no announcement or report row carries it",
        "GB/T 2260; docs/policy.md Regions",
    ),
    (
        "DOC_NUMBER_DIVISION_REVIEW",
        "a resident ID (or household register, temporary ID) number whose six-digit division is under a province "
        "code but not in the GB/T 2260 table of current and historical codes; the number stays valid, a person "
        "should confirm",
        "GB 11643, GB/T 2260 (python-stdnum's table and the MCA/NBS lists 1980-2019); docs/regulation.md §2.8",
    ),
    (
        "NAME_CHARSET_REVIEW",
        "a person's name on a mainland document (resident ID, household register, military or armed police ID) "
        "with Latin letters, digits or spaces inside; a person should confirm",
        "GB 11643 (names in Chinese characters); docs/regulation.md §5; docs/policy.md Names",
    ),
    (
        "DOC_NUMBER_CODE_REVIEW",
        "a USCC (on a USCC, business licence or organisation code line) whose registration authority and category "
        "(positions 1-2) are not a pair of the GB 32100 table; the number stays valid, a person should confirm",
        "GB 32100-2015 tables 1-2 as amended (validator projects disagree on them); docs/regulation.md §2.4, §2.8",
    ),
]
_DEAD = [
    ("LINE_ID_MISSING", "the row has no line_id", "data contract"),
    (
        "DUPLICATE_LINE_ID",
        "another row has the same line_id and a later updated_at (or the same, later in the input)",
        "data contract",
    ),
    ("BAD_ENUM", "line_type, subscriber_kind or status missing or not in its set", "data contract"),
    ("BAD_DATE", "activated_on, terminated_on or updated_at is not a date or time", "data contract"),
    (
        "ROW_MALFORMED",
        "the row cannot be parsed (field count, encoding, NUL or control bytes, a field over the size limit)",
        "data contract",
    ),
]

_EVENT = [
    ("EVENT_ID_MISSING", "the registration event has no event_id", "docs/contract.md Registration events"),
    (
        "EVENT_ID_MALFORMED",
        "the event_id is not a plain id (printable ASCII holding no identity card number): an applied event's id "
        "is kept in the merged base, so one carrying a name or a document number is not applied",
        "docs/contract.md Registration events",
    ),
    ("LINE_ID_MISSING", "the event names no line_id (for the base: the row has no line_id)", "data contract"),
    ("BAD_TIMESTAMP", "registered_at is missing or not a valid time", "docs/contract.md Registration events"),
    (
        "UNKNOWN_LINE",
        "no line of the base has this line_id (or its base row is itself a dead letter)",
        "docs/contract.md Registration events",
    ),
    ("LINE_TERMINATED", "the event names a TERMINATED line", "docs/contract.md Registration events"),
    (
        "TIMESTAMP_IN_FUTURE",
        "registered_at is later than the day after the merge's day (--as-of, or today if later): the registering "
        "system's clock is wrong, and the latest registration would win over every real one after it",
        "docs/contract.md Registration events",
    ),
    ("RECEIPT_JOB_ID_MISSING", "a delivery receipt without a job_id", "notify receipts"),
    ("RECEIPT_UNKNOWN_JOB", "a delivery receipt for a job this campaign never sent", "notify receipts"),
    ("RECEIPT_BAD_STATUS", "a delivery receipt whose status is not DELIVERED or FAILED", "notify receipts"),
    ("RECEIPT_BAD_TIMESTAMP", "a delivery receipt whose time is not a valid time", "notify receipts"),
    (
        "MESSAGE_TOO_LARGE",
        "a Pub/Sub message body over the size cap (--max-message-bytes, default 256 KiB); the body is never kept",
        "streaming merge",
    ),
    (
        "ATTRIBUTE_MISSING",
        "a Pub/Sub message without its event_id or line_id attribute",
        "docs/contract.md Registration events",
    ),
    (
        "MESSAGE_MALFORMED",
        "a Pub/Sub message body that is not a JSON object of the event contract (not JSON, not an object, a field that is an object, array or boolean, or over the field size limit)",
        "docs/contract.md Registration events",
    ),
    (
        "EVENT_ID_CONFLICT",
        "another copy of this event_id with a different body already holds the id (it was applied or superseded "
        "first); this copy is not applied",
        "docs/contract.md Registration events",
    ),
    (
        "ATTRIBUTE_MISMATCH",
        "the body's event_id or line_id differs from the message's attribute",
        "docs/contract.md Registration events",
    ),
]

LINE_REASONS: tuple[str, ...] = tuple(c for c, _, _ in _LINE)
EVENT_REASONS: dict[str, str] = {c: meaning for c, meaning, _ in _EVENT}
FLAGS: tuple[str, ...] = tuple(c for c, _, _ in _FLAGS)
DEAD_LETTER_REASONS: tuple[str, ...] = tuple(c for c, _, _ in _DEAD)
CATALOGUE: dict[str, tuple[str, str, str]] = {
    code: (kind, meaning, source)
    for kind, rows in (("line", _LINE), ("flag", _FLAGS), ("dead_letter", _DEAD), ("event", _EVENT))
    for code, meaning, source in rows
}
_INDEX = {code: i for i, code in enumerate(LINE_REASONS)}


def reason_index(code: str) -> int:
    """Bit position of a line reason code (its place in the stable order)."""
    return _INDEX[code]
