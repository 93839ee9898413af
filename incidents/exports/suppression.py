"""P3: exact counts with primary and secondary cell suppression, for vetted partners.

The table is the complete grid (rows: quarters; columns: category groups, or group × country)
with row totals, column totals and the grand total. **Primary suppression** hides every entry
(cell or total) from 1 to 9. **Secondary suppression** then makes sure that no hidden entry can
be recovered from a published total: every line, that is every row with its total and every
column with its total (and the totals row and column with the grand total), must hide either
nothing or at least two entries. Where a line hides exactly one, the smallest published entry
of that line is hidden too (non-zero entries first), and the check repeats until it holds.

This protects against reading a hidden value off a single line's sum. It is the classic
heuristic of statistical offices, not a full linear-programming audit: combinations of several
lines can sometimes narrow a hidden value to an interval. Zeros are published (an empty cell
points at nobody) unless secondary suppression needs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LOW, HIGH = 1, 9
TOTAL = "total"

Entry = tuple[str, str]
"""(row key, column key); the totals use ``TOTAL`` as key."""


@dataclass(frozen=True)
class SuppressedTable:
    """Counts with hidden entries as None, margins included."""

    rows: list[str]
    columns: list[str]
    values: dict[Entry, int | None]
    primary: int
    secondary: int


def _lines(rows: Sequence[str], columns: Sequence[str]) -> list[list[Entry]]:
    """Every line whose entries sum to its last entry: rows, columns, and the margins."""
    all_rows, all_columns = [*rows, TOTAL], [*columns, TOTAL]
    row_lines = [[(row, column) for column in all_columns] for row in all_rows]
    column_lines = [[(row, column) for row in all_rows] for column in all_columns]
    return row_lines + column_lines


def with_margins(
    rows: Sequence[str], columns: Sequence[str], counts: Mapping[Entry, int]
) -> dict[Entry, int]:
    """The full table: cells (missing ones are 0), row totals, column totals, grand total."""
    table = {(row, column): counts.get((row, column), 0) for row in rows for column in columns}
    for row in rows:
        table[(row, TOTAL)] = sum(table[(row, column)] for column in columns)
    for column in columns:
        table[(TOTAL, column)] = sum(table[(row, column)] for row in rows)
    table[(TOTAL, TOTAL)] = sum(table[(row, TOTAL)] for row in rows)
    return table


def suppress(
    rows: Sequence[str], columns: Sequence[str], counts: Mapping[Entry, int]
) -> SuppressedTable:
    """Apply primary (1–9) and secondary suppression to the table with its margins."""
    table = with_margins(rows, columns, counts)
    hidden = {entry for entry, value in table.items() if LOW <= value <= HIGH}
    primary = len(hidden)
    lines = _lines(rows, columns)
    changed = True
    while changed:
        changed = False
        for line in lines:
            unknown = [entry for entry in line if entry in hidden]
            if len(unknown) != 1:
                continue
            candidates = [entry for entry in line if entry not in hidden]
            if not candidates:
                continue
            # The smallest published entry, non-zero first: hiding it costs the least.
            hidden.add(min(candidates, key=lambda entry: (table[entry] == 0, table[entry])))
            changed = True
    values: dict[Entry, int | None] = {
        entry: (None if entry in hidden else value) for entry, value in table.items()
    }
    return SuppressedTable(
        rows=list(rows),
        columns=list(columns),
        values=values,
        primary=primary,
        secondary=len(hidden) - primary,
    )


def recoverable_entries(result: SuppressedTable) -> list[Entry]:
    """Hidden entries that a single line's sum would reveal (empty when suppression worked)."""
    exposed = []
    for line in _lines(result.rows, result.columns):
        unknown = [entry for entry in line if result.values[entry] is None]
        if len(unknown) == 1:
            exposed.append(unknown[0])
    return exposed
