"""CSV cells that spreadsheets would evaluate are escaped (OWASP's CSV injection rule)."""

from __future__ import annotations

import csv
import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from pipelines.io.spreadsheet import spreadsheet_safe

ATTACKS = ['=HYPERLINK("http://x","click")', "@SUM(1+1)", "+cmd|' /C calc'!A0", "-2+3", "\t=1+1", "\r=1+1"]


@pytest.mark.parametrize("value", ATTACKS)
def test_a_cell_that_starts_a_formula_is_quoted_as_text(value):
    table = spreadsheet_safe(pa.table({"agent_id": [value, "AG00001"]}))
    assert table.column("agent_id").to_pylist() == ["'" + value, "AG00001"]


def test_plain_text_numbers_and_nulls_are_left_alone():
    table = pa.table({"region": ["110105", None, "a=b", "x-1"], "count": [1, -2, 3, 4]})
    assert spreadsheet_safe(table).equals(table)


def test_no_cell_of_the_written_csv_starts_a_formula():
    table = spreadsheet_safe(pa.table({"region": ATTACKS, "agents": list(range(len(ATTACKS)))}))
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    rows = list(csv.reader(io.StringIO(sink.getvalue().decode(), newline="")))[1:]
    assert len(rows) == len(ATTACKS)
    assert {row[0][:1] for row in rows} == {"'"}
