"""The document checks of the scan as one DuckDB SQL query: a yardstick, not a scan.

    .venv/bin/python -m bench.duck --base bench-data/base_2m.parquet [--as-of 2026-11-30]

Prints one JSON object: rows read, rows classified, seconds, the counts by
identity_status, and which rules it covers (:data:`COVERS`) and which it
leaves out (:data:`LEAVES_OUT`). The label and enum tables come from the
default policy, so a label maps to the same document as in the scan.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time

import duckdb
import pyarrow as pa

from transforms.scan.policy import NOT_ACCEPTED, load_policy

__all__ = ["run_duck", "COVERS", "LEAVES_OUT"]

COVERS = [
    "normalise: strip format characters (Cf), trim and collapse white space (Unicode Z too), upper-case, "
    "drop spaces and hyphens in numbers",
    "labels and enums through the policy's tables (unknown, not accepted, wrong kind)",
    "citizen numbers (RESIDENT_ID, TEMP_RESIDENT_ID, HOUSEHOLD_REGISTER): 18 characters, MOD 11-2, "
    "birth date (real, not after as-of, within 150 years), province code; 15 digits = void",
    "HMT permit: 81/82/83 prefix, MOD 11-2, birth date; FPRID: 9 + MOD 11-2 + birth date, or 3 letters + 12 digits",
    "USCC: 31-character set, mod 31, embedded GB 11714 code; ORG_CODE: a USCC or GB 11714, PDY refused; "
    "BUSINESS_LICENSE: USCC or 15 digits with MOD 11,10; TAX_REGISTRATION: USCC, 6 digits + a GB 11714 "
    "organisation code, a licence number, or a citizen number (+ 2 digits)",
    "HK/Macao, Taiwan, passport, military, certificate numbers: length and pattern",
    "required fields and handler presence; status precedence MISSING > INCOMPLETE > INVALID",
    "names: placeholders, 本人/工厂, length, digits in a person's name; addresses: placeholders, length, "
    "Han text without a keyword",
]
LEAVES_OUT = [
    "NFKC (full-width digits and letters), middle-dot folding",
    "DOC_TYPE_MISMATCH, name separators, Latin addresses, the handler's document and name checks",
    "dead letters (bad enums drop out, dates are not checked), duplicates, cross-record flags",
]

_W_MOD11_2 = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
_W_USCC = [pow(3, i, 31) for i in range(17)]
_W_GB11714 = [3, 7, 9, 10, 5, 8, 4, 2]
_USCC = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def _weighted(terms) -> str:
    return " + ".join(f"({term}) * {w}" for term, w in terms)


# Checksums as flat arithmetic: DuckDB evaluates it column-wise, several times
# faster than list lambdas over the characters. MOD 11-2 reads the 17 digits as
# one BIGINT (the row has matched [0-9]{17} before).
_MOD11_2_SUM = _weighted((f"(x // {10 ** (16 - i)}) % 10", w) for i, w in enumerate(_W_MOD11_2))
_USCC_SUM = _weighted((f"strpos('{_USCC}', n[{i + 1}]) - 1", w) for i, w in enumerate(_W_USCC))
_GB11714_SUM = _weighted(
    (f"CASE WHEN ord(b[{i + 1}]) < 65 THEN ord(b[{i + 1}]) - 48 ELSE ord(b[{i + 1}]) - 55 END", w)
    for i, w in enumerate(_W_GB11714)
)

_MACROS = f"""
CREATE OR REPLACE TEMP MACRO clean(s) AS
    trim(regexp_replace(regexp_replace(s, '\\p{{Cf}}', '', 'g'), '[\\s\\p{{Z}}]+', ' ', 'g'));
CREATE OR REPLACE TEMP MACRO norm(s) AS
    nullif(CASE WHEN regexp_matches(s, '[\\p{{Cf}}\\s\\p{{Z}}]') THEN clean(s) ELSE s END, '');
CREATE OR REPLACE TEMP MACRO num(s) AS
    nullif(regexp_replace(regexp_replace(upper(s), '[\\p{{Cf}}\\s\\p{{Z}}\\-]', '', 'g'), '<+$', ''), '');
CREATE OR REPLACE TEMP MACRO mod112_of(x) AS '10X98765432'[(({_MOD11_2_SUM}) % 11 + 1)::BIGINT];
CREATE OR REPLACE TEMP MACRO mod112(n) AS mod112_of(try_cast(left(n, 17) AS BIGINT));
CREATE OR REPLACE TEMP MACRO birth_ok(s, as_of, years) AS coalesce(
    try_cast(substr(s, 1, 4) || '-' || substr(s, 5, 2) || '-' || substr(s, 7, 2) AS DATE)
    BETWEEN as_of - to_years(years) AND as_of, false);
CREATE OR REPLACE TEMP MACRO id18_ok(n, as_of, years) AS
    regexp_full_match(n, '[0-9]{{17}}[0-9X]') AND mod112(n) = n[18] AND birth_ok(substr(n, 7, 8), as_of, years);
CREATE OR REPLACE TEMP MACRO gb11714_c9(b) AS 11 - ({_GB11714_SUM}) % 11;
CREATE OR REPLACE TEMP MACRO gb11714(b) AS
    CASE gb11714_c9(b) WHEN 10 THEN 'X' WHEN 11 THEN '0' ELSE chr((48 + gb11714_c9(b))::INTEGER) END;
CREATE OR REPLACE TEMP MACRO uscc_ok(n) AS
    regexp_full_match(n, '[0-9A-HJ-NPQRTUWXY]{{18}}')
    AND '{_USCC}'[((31 - ({_USCC_SUM}) % 31) % 31 + 1)::BIGINT] = n[18]
    AND gb11714(substr(n, 9, 8)) = n[17];
CREATE OR REPLACE TEMP MACRO mod1110_ok(n) AS
    (11 - list_reduce(list_transform(range(14), lambda i: ord(n[i + 1]) - 48),
        lambda p, d: (2 * CASE WHEN (p + d) % 10 = 0 THEN 10 ELSE (p + d) % 10 END) % 11, 10)) % 10
    = ord(n[15]) - 48;
"""

_QUERY = """
WITH base AS (
    SELECT norm(r.line_id) AS line_id, k.code AS kind, s.code AS status,
           upper(norm(r.doc_type)) AS label, num(r.doc_number) AS n, norm(r.name) AS name,
           norm(r.address) AS addr, upper(norm(r.handler_doc_type)) AS hlabel,
           num(r.handler_doc_number) AS hn, norm(r.handler_name) AS hname
    FROM read_parquet($path) r
    LEFT JOIN kinds k ON k.label = upper(norm(r.subscriber_kind))
    LEFT JOIN statuses s ON s.label = upper(norm(r.status))
),
docs AS (
    SELECT base.*, l.code, l.doc_kind, l.chk
    FROM base LEFT JOIN labels l ON l.label = base.label
    WHERE line_id IS NOT NULL AND kind IS NOT NULL AND status IS NOT NULL
),
checked AS (
    SELECT *,
        CASE
            WHEN n IS NULL OR chk IS NULL THEN false
            WHEN chk = 'citizen_id' THEN NOT (id18_ok(n, $as_of, $years) AND substr(n, 1, 2) IN $provinces)
            WHEN chk = 'hmt_residence_permit' THEN NOT (substr(n, 1, 6) IN $hmt AND id18_ok(n, $as_of, $years))
            WHEN chk = 'foreign_permanent_resident_id' THEN NOT (
                (n[1] = '9' AND id18_ok(n, $as_of, $years)) OR regexp_full_match(n, '[A-Z]{3}[0-9]{12}'))
            WHEN chk = 'hk_macao_permit' THEN NOT regexp_full_match(n, '[HM]([0-9]{8}|[0-9]{10})|[HM]A[0-9]{7}')
            WHEN chk = 'taiwan_permit' THEN NOT regexp_full_match(n, '[0-9]{8}|[0-9]{10}(\\([A-Z]\\))?')
            WHEN chk = 'passport' THEN NOT regexp_full_match(n, '[A-Z0-9]{5,17}')
            WHEN chk = 'free_text' THEN NOT (length(n) BETWEEN 4 AND 32) OR n IN $number_junk
            WHEN chk = 'uscc' THEN NOT uscc_ok(n)
            WHEN chk = 'org_code' THEN NOT (uscc_ok(n) OR (regexp_full_match(n, '[0-9A-Z]{8}[0-9X]')
                AND NOT starts_with(n, 'PDY') AND gb11714(substr(n, 1, 8)) = n[9]))
            WHEN chk = 'business_license' THEN NOT (uscc_ok(n)
                OR (regexp_full_match(n, '[0-9]{15}') AND mod1110_ok(n)))
            WHEN chk = 'uscc_or_alnum' THEN NOT regexp_full_match(n, '[A-Z0-9]{6,32}')
            WHEN chk = 'tax_registration' THEN NOT (uscc_ok(n)
                OR (regexp_full_match(n, '[0-9]{15}') AND mod1110_ok(n))
                OR (regexp_full_match(n, '[0-9]{6}[0-9A-Z]{8}[0-9X]') AND NOT starts_with(substr(n, 7), 'PDY')
                    AND gb11714(substr(n, 7, 8)) = n[15])
                OR (regexp_full_match(n, '.{18}([0-9]{2})?') AND id18_ok(left(n, 18), $as_of, $years)
                    AND substr(n, 1, 2) IN $provinces))
        END AS bad_number,
        name IS NOT NULL AND (upper(name) IN $name_junk OR contains(name, '本人')
            OR (kind = 'INDIVIDUAL' AND (length(name) < 2 OR contains(name, '工厂')
                OR regexp_matches(name, '[0-9]')))
            OR (kind = 'ORGANIZATION' AND length(name) < 4) OR length(name) > 50) AS bad_name,
        addr IS NOT NULL AND (upper(addr) IN $address_junk OR length(addr) < 6
            OR (regexp_matches(addr, '\\p{Han}') AND NOT regexp_matches(addr, $keywords))) AS bad_address
    FROM docs
)
SELECT identity_status, count(*) AS lines FROM (
    SELECT CASE
        WHEN label IS NULL AND n IS NULL AND name IS NULL AND addr IS NULL THEN 'MISSING'
        WHEN label IS NULL OR n IS NULL OR name IS NULL OR addr IS NULL
            OR (kind = 'ORGANIZATION' AND (hlabel IS NULL OR hn IS NULL OR hname IS NULL)) THEN 'INCOMPLETE'
        WHEN code IS NULL OR code = $not_accepted OR doc_kind <> kind OR bad_number OR bad_name OR bad_address
            THEN 'INVALID'
        ELSE 'COMPLETE' END AS identity_status
    FROM checked
) GROUP BY identity_status ORDER BY identity_status
"""


def _tables(policy) -> dict[str, pa.Table]:
    labels = dict(policy.review_labels)
    labels.update(policy.label_lookup)
    rows = [(label, code, *policy.documents.get(code, (None, None))) for label, code in labels.items()]
    return {
        "labels": pa.table(
            {
                "label": [r[0] for r in rows],
                "code": [r[1] for r in rows],
                "doc_kind": [r[2] for r in rows],
                "chk": [r[3] for r in rows],
            }
        ),
        "kinds": pa.table(
            {"label": list(policy.enums["subscriber_kind"]), "code": list(policy.enums["subscriber_kind"].values())}
        ),
        "statuses": pa.table({"label": list(policy.enums["status"]), "code": list(policy.enums["status"].values())}),
    }


def run_duck(base: str, as_of: dt.date) -> dict:
    """Run the query over one Parquet file; returns counts and timings."""
    policy = load_policy()
    con = duckdb.connect()
    for name, table in _tables(policy).items():
        con.register(name, table)
    con.execute(_MACROS)
    numbers = policy.document_numbers
    params = {
        "path": base,
        "as_of": as_of,
        "years": int(numbers["max_age_years"]),
        "provinces": list(numbers["province_codes"]),
        "hmt": list(numbers["hmt_prefixes"]),
        "number_junk": [p.upper() for p in numbers.get("placeholders", [])],
        "name_junk": [p.upper() for p in policy.names["placeholders"]],
        "address_junk": [p.upper() for p in policy.addresses["placeholders"]],
        "keywords": "|".join(policy.addresses["keywords"]),
        "not_accepted": NOT_ACCEPTED,
    }
    start = time.perf_counter()
    counts = dict(con.execute(_QUERY, params).fetchall())
    seconds = time.perf_counter() - start
    rows = con.execute("SELECT count(*) FROM read_parquet($path)", {"path": base}).fetchone()[0]
    return {
        "rows": rows,
        "classified": sum(counts.values()),
        "query_seconds": seconds,
        "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
        "identity_status": counts,
        "covers": COVERS,
        "leaves_out": LEAVES_OUT,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.duck", description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 11, 30))
    args = parser.parse_args(argv)
    print(json.dumps(run_duck(args.base, args.as_of), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
