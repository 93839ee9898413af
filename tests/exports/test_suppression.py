"""P3 suppression: no count from 1 to 9 is shown, and no hidden count follows from one total."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from incidents.exports.suppression import (
    TOTAL,
    recoverable_entries,
    suppress,
    with_margins,
)

ROWS = ["2025Q1", "2025Q2", "2025Q3"]
COLUMNS = ["mobility", "liberty", "privacy", "intimidation", "physical"]


def test_margins_add_up() -> None:
    counts = {("2025Q1", "mobility"): 4, ("2025Q2", "privacy"): 30}
    table = with_margins(ROWS, COLUMNS, counts)
    assert table[("2025Q1", TOTAL)] == 4
    assert table[(TOTAL, "privacy")] == 30
    assert table[(TOTAL, TOTAL)] == 34
    assert table[("2025Q3", "physical")] == 0


def test_a_lone_small_cell_gets_a_partner_in_its_row_and_column() -> None:
    counts = {(row, column): 50 for row in ROWS for column in COLUMNS}
    counts[("2025Q1", "mobility")] = 3
    counts[("2025Q1", "liberty")] = 40
    counts[("2025Q2", "mobility")] = 20

    result = suppress(ROWS, COLUMNS, counts)

    assert result.values[("2025Q1", "mobility")] is None
    assert result.primary == 1
    assert result.values[("2025Q1", "liberty")] is None  # smallest other entry of the row
    assert result.values[("2025Q2", "mobility")] is None  # smallest other entry of the column
    assert recoverable_entries(result) == []


def test_large_counts_and_zeros_are_published_when_nothing_is_small() -> None:
    counts = {(row, column): 0 for row in ROWS for column in COLUMNS}
    counts[("2025Q2", "privacy")] = 12
    result = suppress(ROWS, COLUMNS, counts)
    assert all(value is not None for value in result.values.values())
    assert result.values[("2025Q2", "privacy")] == 12


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=40), min_size=15, max_size=15),
)
def test_no_small_value_is_shown_and_no_hidden_value_follows_from_a_line(values: list[int]) -> None:
    counts = {
        (row, column): values[index * len(COLUMNS) + offset]
        for index, row in enumerate(ROWS)
        for offset, column in enumerate(COLUMNS)
    }
    result = suppress(ROWS, COLUMNS, counts)
    table = with_margins(ROWS, COLUMNS, counts)
    for entry, shown in result.values.items():
        if 1 <= table[entry] <= 9:
            assert shown is None, entry
        if shown is not None:
            assert shown == table[entry]
    assert recoverable_entries(result) == []
    assert result.primary + result.secondary == sum(v is None for v in result.values.values())
