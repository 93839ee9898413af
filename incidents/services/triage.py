"""Triage on the clear shell: search, status changes, shell corrections, duplicate links.

Nothing here reads or needs a sealed field. Every change is recorded in the status history
(for the case view) and in the audit log, in the same transaction.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, func, select

from incidents import audit, vocabulary
from incidents.clock import now
from incidents.db import db
from incidents.models import Report, StatusChange, User
from incidents.services.errors import DomainError, ReportNotFoundError
from incidents.services.reports import ReportShell, shell_of
from incidents.vocabulary import N_

PER_PAGE = 25
MAX_REASON_LENGTH = 500
PERIOD_PATTERN = re.compile(r"^\d{4}-(W(0[1-9]|[1-4]\d|5[0-3])|(0[1-9]|1[0-2]))$")
PERIOD_PREFIX_PATTERN = re.compile(r"^\d{4}(-(W\d{1,2}|\d{1,2}))?$")

TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"triaged", "rejected"}),
    "triaged": frozenset({"new", "rejected"}),
    "assigned": frozenset({"in_progress", "closed", "triaged"}),
    "in_progress": frozenset({"closed"}),
    "closed": frozenset({"in_progress"}),
    "duplicate": frozenset({"triaged"}),
    "rejected": frozenset({"triaged"}),
}
"""Status changes an organizer may make by hand. "assigned" comes from assigning a volunteer and
"duplicate" from linking a duplicate, so that those states always have what they claim."""


def is_valid_period(text: str) -> bool:
    """True for a month (2025-03) or an ISO week that exists (2025-W07; W53 only in long years)."""
    if not PERIOD_PATTERN.fullmatch(text):
        return False
    year, _, part = text.partition("-")
    if part.startswith("W"):
        try:
            date.fromisocalendar(int(year), int(part[1:]), 1)
        except ValueError:
            return False
    return True


class TriageError(DomainError):
    """Raised when a triage action is not allowed; the message is safe to show."""


@dataclass(frozen=True)
class ReportFilter:
    """Filters of the triage list; empty values mean "any"."""

    status: str = ""
    category: str = ""
    period: str = ""
    country: str = ""
    city: str = ""
    consent_statistics: bool | None = None
    consent_contact: bool | None = None


@dataclass(frozen=True)
class ReportPage:
    """One page of the triage list."""

    items: Sequence[ReportShell]
    page: int
    pages: int
    total: int


def _filtered(query: Select[Any], filters: ReportFilter) -> Select[Any]:
    """Narrow a report query by each filter that is set."""
    if filters.status:
        query = query.where(Report.status == filters.status)
    if filters.category:
        query = query.where(Report.category == filters.category)
    if filters.period and PERIOD_PREFIX_PATTERN.match(filters.period):
        query = query.where(Report.occurred_period.startswith(filters.period, autoescape=True))
    if filters.country:
        query = query.where(Report.country == filters.country)
    if filters.city:
        query = query.where(Report.city == filters.city)
    if filters.consent_statistics is not None:
        query = query.where(Report.consent_statistics.is_(filters.consent_statistics))
    if filters.consent_contact is not None:
        query = query.where(Report.consent_contact.is_(filters.consent_contact))
    return query


def search_reports(filters: ReportFilter, *, page: int = 1, per_page: int = PER_PAGE) -> ReportPage:
    """Reports matching ``filters``, newest received first, one page at a time."""
    total = int(
        db.session.scalar(_filtered(select(func.count()).select_from(Report), filters)) or 0
    )
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    query = _filtered(select(Report), filters).order_by(Report.received_on.desc(), Report.id)
    rows = db.session.scalars(query.offset((page - 1) * per_page).limit(per_page)).all()
    return ReportPage(items=[shell_of(row) for row in rows], page=page, pages=pages, total=total)


def get_report(report_id: uuid.UUID) -> Report:
    """The report with this id; raise ReportNotFoundError."""
    report = db.session.get(Report, report_id)
    if report is None:
        raise ReportNotFoundError(f"no report {report_id}")
    return report


def set_status(
    report: Report, new_status: str, *, actor: User, reason: str = "", check: bool = True
) -> None:
    """Move a report to ``new_status`` and record it (history + audit), without committing."""
    if new_status not in vocabulary.STATUS_CODES:
        raise TriageError(N_("Unknown status."))
    if check and new_status not in TRANSITIONS.get(report.status, frozenset()):
        raise TriageError(N_("This status change is not allowed from the report's current status."))
    reason = reason.strip()[:MAX_REASON_LENGTH]
    db.session.add(
        StatusChange(
            report_id=report.id,
            changed_at=now(),
            actor_id=actor.id,
            old_status=report.status,
            new_status=new_status,
            reason=reason,
        )
    )
    audit.record(
        actor=actor.username,
        action="report.status",
        target=str(report.id),
        details={"from": report.status, "to": new_status},
    )
    report.status = new_status


def change_status(report_id: uuid.UUID, new_status: str, *, actor: User, reason: str) -> None:
    """Organizer's manual status change (committed)."""
    report = get_report(report_id)
    set_status(report, new_status, actor=actor, reason=reason)
    db.session.commit()


def correct_shell(
    report_id: uuid.UUID, *, category: str, occurred_period: str, actor: User
) -> None:
    """Correct the shell category and period (committed), checked against the vocabulary."""
    report = get_report(report_id)
    if category not in vocabulary.CATEGORY_BY_CODE:
        raise TriageError(N_("Unknown category."))
    if not is_valid_period(occurred_period):
        raise TriageError(N_("A period is written as 2025-W07 (ISO week) or 2025-03 (month)."))
    changes: dict[str, audit.DetailValue] = {}
    if category != report.category:
        changes.update({"category_from": report.category, "category_to": category})
        report.category = category
    if occurred_period != report.occurred_period:
        changes.update({"period_from": report.occurred_period, "period_to": occurred_period})
        report.occurred_period = occurred_period
    if changes:
        audit.record(
            actor=actor.username, action="report.correct", target=str(report.id), details=changes
        )
    db.session.commit()


def duplicate_candidates(report: Report) -> Sequence[ReportShell]:
    """Other reports with the same category, period and place: possible duplicates."""
    query = (
        select(Report)
        .where(
            Report.id != report.id,
            Report.category == report.category,
            Report.occurred_period == report.occurred_period,
            Report.country == report.country,
            Report.city == report.city,
            Report.duplicate_of.is_(None),
        )
        .order_by(Report.received_on, Report.id)
        .limit(20)
    )
    return [shell_of(row) for row in db.session.scalars(query).all()]


def link_duplicate(report_id: uuid.UUID, original_id: uuid.UUID, *, actor: User) -> None:
    """Mark a report as a duplicate of another (committed)."""
    report, original = get_report(report_id), get_report(original_id)
    if report.id == original.id:
        raise TriageError(N_("A report cannot duplicate itself."))
    if original.duplicate_of is not None:
        raise TriageError(N_("Link to the original report, not to another duplicate."))
    report.duplicate_of = original.id
    set_status(report, "duplicate", actor=actor, reason=f"duplicate of {original.id}", check=False)
    db.session.commit()


def status_history(report_id: uuid.UUID) -> Sequence[StatusChange]:
    """Status changes of a report, oldest first."""
    query = select(StatusChange).where(StatusChange.report_id == report_id)
    return db.session.scalars(query.order_by(StatusChange.changed_at, StatusChange.id)).all()
