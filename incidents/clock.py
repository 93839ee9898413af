"""Time in one place: every stored time is UTC; SQLite hands back naive datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Treat a naive datetime read from the database as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
