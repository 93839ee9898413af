"""Quarters: parsing "2025Q1", deciding which are closed, and placing shell periods in them.

The shell stores an ISO week ("2025-W11", for day or week precision) or a month ("2025-03").
A month belongs to its calendar quarter; an ISO week to the quarter of its Thursday (the day
that decides which year an ISO week belongs to).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date

QUARTER_PATTERN = re.compile(r"^(\d{4})Q([1-4])$")
WEEK_PATTERN = re.compile(r"^(\d{4})-W(\d{2})$")
MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")


class PeriodError(ValueError):
    """Raised for a malformed quarter or a period range that cannot be exported."""


@dataclass(frozen=True, order=True)
class Quarter:
    """A calendar quarter."""

    year: int
    number: int

    def __str__(self) -> str:
        """The "2025Q1" form used in commands and files."""
        return f"{self.year}Q{self.number}"

    @property
    def last_day(self) -> date:
        """The quarter's last day."""
        month = self.number * 3
        # Not "the day before the next quarter starts": that overflows after 9999Q4.
        return date(self.year, month, calendar.monthrange(self.year, month)[1])

    def next(self) -> Quarter:
        """The following quarter."""
        return Quarter(self.year + (self.number == 4), self.number % 4 + 1)


def parse_quarter(text: str) -> Quarter:
    """Parse "2025Q1" (case-insensitive); raise PeriodError otherwise."""
    match = QUARTER_PATTERN.match(text.strip().upper())
    if match is None or int(match.group(1)) < 1:  # year 0 has no dates
        raise PeriodError(f"{text!r} is not a quarter; write it like 2025Q1")
    return Quarter(int(match.group(1)), int(match.group(2)))


def quarter_range(first: Quarter, last: Quarter, *, today: date) -> list[Quarter]:
    """Every quarter from ``first`` to ``last``; raise PeriodError unless all are closed."""
    if last < first:
        raise PeriodError("the range ends before it starts")
    if last.last_day >= today:
        raise PeriodError(f"{last} is not closed yet; only finished quarters are published")
    quarters = [first]
    while quarters[-1] < last:
        quarters.append(quarters[-1].next())
    if len(quarters) > 40:
        raise PeriodError("at most 40 quarters (10 years) in one export")
    return quarters


def quarter_of_period(period: str) -> Quarter | None:
    """The quarter of a shell period ("2025-W11" or "2025-03"), or None if it is malformed."""
    week = WEEK_PATTERN.match(period)
    if week:
        try:
            thursday = date.fromisocalendar(int(week.group(1)), int(week.group(2)), 4)
        except ValueError:
            return None
        return Quarter(thursday.year, (thursday.month - 1) // 3 + 1)
    month = MONTH_PATTERN.match(period)
    if month and 1 <= int(month.group(2)) <= 12:
        return Quarter(int(month.group(1)), (int(month.group(2)) - 1) // 3 + 1)
    return None
