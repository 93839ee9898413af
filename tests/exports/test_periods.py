"""Quarters (``incidents.exports.periods``): parsing, closed ranges, and placing shell periods.

Only closed quarters are published (DESIGN §7), so a range whose last quarter has not ended
before ``today`` is refused. A shell period is an ISO week ("2025-W11") or a month ("2025-03");
an ISO week belongs to the quarter of its Thursday, the day that decides an ISO week's year, so
the days of late December in week 1 count in the next year's Q1 and the days of early January
in week 52 or 53 count in the previous year's Q4.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incidents.exports.periods import (
    PeriodError,
    Quarter,
    parse_quarter,
    quarter_of_period,
    quarter_range,
)


def quarter_of_day(day: date) -> Quarter:
    """The calendar quarter of a day, computed independently of the module under test."""
    return Quarter(day.year, (day.month - 1) // 3 + 1)


# --------------------------------------------------------------------------- parse_quarter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025Q1", Quarter(2025, 1)),
        ("2025Q4", Quarter(2025, 4)),
        ("2025q2", Quarter(2025, 2)),
        ("  1999Q3 ", Quarter(1999, 3)),
    ],
)
def test_parse_quarter_accepts_year_q_number(text: str, expected: Quarter) -> None:
    assert parse_quarter(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2025",
        "2025Q0",
        "2025Q5",
        "2025Q",
        "25Q1",
        "02025Q1",
        "2025-Q1",
        "2025 Q1",
        "Q1 2025",
        "2025Q1Q2",
        "2025-03",
        "2025-W11",
        "0000Q1",
    ],
)
def test_parse_quarter_rejects_anything_else_with_a_hint(text: str) -> None:
    with pytest.raises(PeriodError, match="2025Q1"):
        parse_quarter(text)


def test_quarter_prints_in_the_form_it_is_parsed_from() -> None:
    assert str(Quarter(2025, 3)) == "2025Q3"
    assert parse_quarter(str(Quarter(2025, 3))) == Quarter(2025, 3)


def test_quarters_order_by_year_then_number_and_next_crosses_the_year() -> None:
    assert Quarter(2024, 4) < Quarter(2025, 1) < Quarter(2025, 2)
    assert Quarter(2025, 1).next() == Quarter(2025, 2)
    assert Quarter(2025, 4).next() == Quarter(2026, 1)


# --------------------------------------------------------------------------- last_day


@pytest.mark.parametrize("year", [2023, 2024, 2025, 1900, 2000, 2100])
def test_last_day_of_each_quarter_is_the_end_of_its_third_month(year: int) -> None:
    assert [Quarter(year, number).last_day for number in (1, 2, 3, 4)] == [
        date(year, 3, 31),
        date(year, 6, 30),
        date(year, 9, 30),
        date(year, 12, 31),
    ]


@pytest.mark.parametrize(
    ("year", "days_in_q1"),
    [(2024, 91), (2025, 90), (2000, 91), (1900, 90), (2100, 90)],
)
def test_first_quarter_has_a_leap_day_only_in_leap_years(year: int, days_in_q1: int) -> None:
    assert (Quarter(year, 1).last_day - Quarter(year - 1, 4).last_day).days == days_in_q1


def test_last_day_of_the_last_representable_quarter_does_not_overflow() -> None:
    assert Quarter(9999, 4).last_day == date(9999, 12, 31)


# --------------------------------------------------------------------------- quarter_range


def test_range_lists_every_quarter_in_order_across_years() -> None:
    quarters = quarter_range(Quarter(2024, 3), Quarter(2025, 2), today=date(2026, 1, 1))
    assert [str(quarter) for quarter in quarters] == ["2024Q3", "2024Q4", "2025Q1", "2025Q2"]


def test_range_of_one_closed_quarter_is_that_quarter() -> None:
    assert quarter_range(Quarter(2025, 1), Quarter(2025, 1), today=date(2025, 4, 1)) == [
        Quarter(2025, 1)
    ]


def test_range_ending_with_the_quarter_that_contains_today_is_refused() -> None:
    with pytest.raises(PeriodError, match="not closed"):
        quarter_range(Quarter(2025, 1), Quarter(2025, 3), today=date(2025, 8, 15))


def test_range_is_refused_on_the_last_day_of_its_last_quarter() -> None:
    with pytest.raises(PeriodError, match="not closed"):
        quarter_range(Quarter(2025, 1), Quarter(2025, 1), today=date(2025, 3, 31))


def test_range_is_allowed_from_the_first_day_after_its_last_quarter() -> None:
    assert quarter_range(Quarter(2025, 1), Quarter(2025, 1), today=date(2025, 4, 1))


def test_range_ending_after_today_is_refused() -> None:
    with pytest.raises(PeriodError, match="not closed"):
        quarter_range(Quarter(2025, 1), Quarter(2027, 2), today=date(2026, 1, 5))


def test_reversed_range_is_refused() -> None:
    with pytest.raises(PeriodError, match="ends before it starts"):
        quarter_range(Quarter(2025, 3), Quarter(2025, 1), today=date(2026, 1, 1))


def test_range_of_forty_quarters_is_allowed_and_forty_one_refused() -> None:
    today = date(2026, 1, 1)
    assert len(quarter_range(Quarter(2016, 1), Quarter(2025, 4), today=today)) == 40
    with pytest.raises(PeriodError, match="at most 40"):
        quarter_range(Quarter(2015, 4), Quarter(2025, 4), today=today)


def test_range_from_the_first_representable_year_is_refused_as_too_long() -> None:
    with pytest.raises(PeriodError, match="at most 40"):
        quarter_range(Quarter(1, 1), Quarter(2025, 4), today=date(2026, 1, 1))


# --------------------------------------------------------------------------- quarter_of_period


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        ("2025-01", Quarter(2025, 1)),
        ("2025-03", Quarter(2025, 1)),
        ("2025-04", Quarter(2025, 2)),
        ("2025-06", Quarter(2025, 2)),
        ("2025-07", Quarter(2025, 3)),
        ("2025-09", Quarter(2025, 3)),
        ("2025-10", Quarter(2025, 4)),
        ("2025-12", Quarter(2025, 4)),
    ],
)
def test_month_belongs_to_its_calendar_quarter(period: str, expected: Quarter) -> None:
    assert quarter_of_period(period) == expected


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        # 2025-W13: Monday 24 March, Thursday 27 March
        ("2025-W13", Quarter(2025, 1)),
        # 2025-W14: Monday 31 March, Thursday 3 April -> the whole week counts in Q2
        ("2025-W14", Quarter(2025, 2)),
        # 2025-W27: Monday 30 June, Thursday 3 July
        ("2025-W27", Quarter(2025, 3)),
        # 2025-W40: Monday 29 September, Thursday 2 October
        ("2025-W40", Quarter(2025, 4)),
    ],
)
def test_week_straddling_quarters_belongs_to_the_quarter_of_its_thursday(
    period: str, expected: Quarter
) -> None:
    assert quarter_of_period(period) == expected


def test_week_one_holding_late_december_days_counts_in_the_next_years_q1() -> None:
    # 2025-W01 runs from Monday 30 December 2024 to Sunday 5 January 2025.
    assert date(2024, 12, 30).isocalendar()[:2] == (2025, 1)
    assert quarter_of_period("2025-W01") == Quarter(2025, 1)
    # 2026-W01 runs from Monday 29 December 2025.
    assert date(2025, 12, 29).isocalendar()[:2] == (2026, 1)
    assert quarter_of_period("2026-W01") == Quarter(2026, 1)


def test_week_53_holding_early_january_days_counts_in_the_previous_years_q4() -> None:
    # 2020-W53 runs from Monday 28 December 2020 to Sunday 3 January 2021.
    assert date(2021, 1, 3).isocalendar()[:2] == (2020, 53)
    assert quarter_of_period("2020-W53") == Quarter(2020, 4)
    # 2026 starts on a Thursday and has 53 weeks; 2026-W53 holds 1-3 January 2027.
    assert date(2027, 1, 1).isocalendar()[:2] == (2026, 53)
    assert quarter_of_period("2026-W53") == Quarter(2026, 4)


def test_week_52_holding_early_january_days_counts_in_the_previous_years_q4() -> None:
    # 2022-W52 runs from Monday 26 December 2022 to Sunday 1 January 2023.
    assert date(2023, 1, 1).isocalendar()[:2] == (2022, 52)
    assert quarter_of_period("2022-W52") == Quarter(2022, 4)


@pytest.mark.parametrize(
    "period",
    [
        "",
        "2025",
        "2025-00",
        "2025-13",
        "2025-3",
        "2025-003",
        "2025-W00",
        "2025-W53",  # 2025 has only 52 ISO weeks
        "2025-W54",
        "2025-W1",
        "2025W11",
        "2025-w11",
        "2025-03-14",
        "2025Q1",
        " 2025-03",
        "2025-03 ",
        "garbage",
    ],
)
def test_malformed_period_has_no_quarter(period: str) -> None:
    assert quarter_of_period(period) is None


@given(st.dates())
def test_iso_week_of_any_day_belongs_to_the_quarter_of_that_weeks_thursday(day: date) -> None:
    iso_year, week, weekday = day.isocalendar()
    thursday = day + timedelta(days=4 - weekday)
    assert quarter_of_period(f"{iso_year:04d}-W{week:02d}") == quarter_of_day(thursday)


@given(st.dates())
def test_month_of_any_day_belongs_to_the_quarter_of_that_day(day: date) -> None:
    assert quarter_of_period(f"{day.year:04d}-{day.month:02d}") == quarter_of_day(day)


@given(st.integers(min_value=1000, max_value=9999), st.integers(min_value=1, max_value=4))
def test_any_quarter_survives_printing_and_parsing(year: int, number: int) -> None:
    assert parse_quarter(str(Quarter(year, number))) == Quarter(year, number)
