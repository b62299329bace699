"""CSV cells that a spreadsheet will not run: formula injection escaped, as OWASP recommends.

Analysts open the report's and the incident's CSV files in Excel or WPS. A
cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
is taken as a formula there (``=HYPERLINK(...)`` in an agent id of a
registration event, say), so such a cell gets a leading apostrophe: the
spreadsheet shows the text as it is and runs nothing. Only text columns are
touched, vectorised; numbers stay numbers.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["FORMULA_START", "spreadsheet_safe"]

FORMULA_START = r"^[=+\-@\t\r]"


def _escaped(column: pa.ChunkedArray) -> pa.ChunkedArray:
    risky = pc.fill_null(pc.match_substring_regex(column, FORMULA_START), False)
    if not pc.any(risky).as_py():
        return column
    return pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)


def spreadsheet_safe(table: pa.Table) -> pa.Table:
    """``table`` with every text cell that a spreadsheet would evaluate prefixed by ``'``."""
    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            table = table.set_column(i, field, _escaped(table.column(i)))
    return table
