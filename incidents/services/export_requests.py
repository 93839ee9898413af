"""The NGO export workflow: request, organizer decision, download for 14 days.

An NGO asks for a product and a range of closed quarters; nothing is computed until an
organizer approves, seeing the ε the export would spend and what is left of the year's cap.
Approval runs the export (which charges the ledger first) and keeps the package for the
requesting NGO only, for 14 days.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypedDict

from sqlalchemy import select

from incidents import audit
from incidents.clock import as_utc, now
from incidents.db import db
from incidents.exports import ledger
from incidents.exports.periods import PeriodError, parse_quarter, quarter_range
from incidents.models import ExportRequest, User
from incidents.services import exports
from incidents.services.errors import DomainError
from incidents.vocabulary import N_

DOWNLOAD_LIFETIME = timedelta(days=14)
OPEN_PRODUCTS = ("P1",)
"""Products every NGO may request."""
VETTED_PRODUCTS = ("P1", "P2", "P3")
"""Products of vetted partners."""


def products_for(user: User) -> tuple[str, ...]:
    """The products this NGO may request."""
    return VETTED_PRODUCTS if user.is_vetted_partner else OPEN_PRODUCTS


EXPORT_DIRECTORY = "exports"


class ExportWorkflowError(DomainError):
    """Raised when a request, decision or download is not allowed; safe to show."""


def request_export(
    ngo: User, *, product: str, first: str, last: str, by_country: bool, language: str, today: date
) -> ExportRequest:
    """Record an NGO's request (committed) after checking product and closed quarters."""
    if ngo.role != "ngo":
        raise ExportWorkflowError(N_("Only NGO accounts request exports."))
    if product not in products_for(ngo):
        raise ExportWorkflowError(N_("This product is not available to your organization."))
    try:
        quarter_range(parse_quarter(first), parse_quarter(last), today=today)
    except PeriodError as exc:
        raise ExportWorkflowError(
            N_("Choose closed quarters, written like 2025Q1, with the first before the last.")
        ) from exc
    row = ExportRequest(
        id=uuid.uuid4(),
        requester_id=ngo.id,
        product=product,
        first_quarter=first.strip().upper(),
        last_quarter=last.strip().upper(),
        by_country=by_country,
        language=language,
        status="pending",
        reason="",
        requested_at=now(),
    )
    db.session.add(row)
    audit.record(
        actor=ngo.username,
        action="export.request",
        target=str(row.id),
        details={"product": product, "from": row.first_quarter, "to": row.last_quarter},
    )
    db.session.commit()
    return row


@dataclass(frozen=True)
class BudgetView:
    """What an organizer sees before approving: the cost and what is left this year."""

    cost: Decimal
    spent: Decimal
    cap: Decimal

    @property
    def left(self) -> Decimal:
        """ε left this year."""
        return max(Decimal(0), self.cap - self.spent)

    @property
    def is_affordable(self) -> bool:
        """True if one more export of this cost fits under the cap."""
        return self.spent + self.cost <= self.cap


def budget_view(*, cost: Decimal, cap: Decimal) -> BudgetView:
    """The year's spending against the cap, for one more export of ``cost``."""
    return BudgetView(cost=cost, spent=ledger.spent_in(now().year), cap=cap)


def pending_requests() -> Sequence[ExportRequest]:
    """Requests waiting for an organizer, oldest first."""
    query = select(ExportRequest).where(ExportRequest.status == "pending")
    return db.session.scalars(query.order_by(ExportRequest.requested_at)).all()


def recent_approved(limit: int = 20) -> Sequence[ExportRequest]:
    """The most recently approved requests (for the organizer's timeline switch)."""
    query = select(ExportRequest).where(ExportRequest.status == "approved")
    return db.session.scalars(query.order_by(ExportRequest.decided_at.desc()).limit(limit)).all()


def requests_of(user: User) -> Sequence[ExportRequest]:
    """An NGO's own requests, newest first."""
    query = select(ExportRequest).where(ExportRequest.requester_id == user.id)
    return db.session.scalars(query.order_by(ExportRequest.requested_at.desc())).all()


def _pending(request_id: uuid.UUID) -> ExportRequest:
    """A request still waiting for a decision; raise ExportWorkflowError."""
    row = db.session.get(ExportRequest, request_id)
    if row is None or row.status != "pending":
        raise ExportWorkflowError(N_("This request is not waiting for a decision."))
    return row


class _ExportOptions(TypedDict):
    """What every export function needs for one approved request."""

    first: str
    last: str
    actor: str
    destination: Path
    today: date
    translate: exports.Translate


def approve(
    request_id: uuid.UUID,
    *,
    organizer: User,
    instance_path: Path,
    epsilon: Decimal,
    yearly_cap: Decimal,
    contributions: int,
    today: date,
    translator: Callable[[str], exports.Translate] | None = None,
) -> ExportRequest:
    """Run the export (charging the ledger first) and make it downloadable for 14 days.

    ``translator(language)`` gives the function that puts the package's explanation into the
    requesting NGO's language (the web layer passes one; without it the text stays English).
    """
    row = _pending(request_id)
    destination = instance_path / EXPORT_DIRECTORY / row.id.hex
    requester = db.session.get(User, row.requester_id)
    if requester is None or row.product not in products_for(requester):
        raise ExportWorkflowError(N_("This product is not available to your organization."))
    translate = translator(row.language) if translator else exports.untranslated
    common: _ExportOptions = {
        "first": row.first_quarter,
        "last": row.last_quarter,
        "actor": organizer.username,
        "destination": destination,
        "today": today,
        "translate": translate,
    }
    spent = Decimal(0)
    result: exports.ExportResult | exports.SuppressedResult | exports.TimelineResult
    if row.product == "P2":
        result = exports.export_timeline(**common)
    elif row.product == "P3":
        result = exports.export_suppressed(by_country=row.by_country, **common)
    else:
        spent = epsilon
        result = exports.export_counts(
            by_country=row.by_country,
            epsilon=epsilon,
            yearly_cap=yearly_cap,
            contributions=contributions,
            **common,
        )
    export_id, archive, digest = result.export_id, result.archive, result.sha256
    row.status = "approved"
    row.decided_by_id = organizer.id
    row.decided_at = now()
    row.export_id = export_id
    row.archive_name = archive.name
    row.archive_sha256 = digest
    row.expires_at = row.decided_at + DOWNLOAD_LIFETIME
    audit.record(
        actor=organizer.username,
        action="export.approve",
        target=str(row.id),
        details={"export_id": export_id, "product": row.product, "epsilon": str(spent)},
    )
    db.session.commit()
    return row


def refuse(request_id: uuid.UUID, *, organizer: User, reason: str) -> None:
    """Refuse a request with a reason shown to the NGO (committed); nothing is computed."""
    row = _pending(request_id)
    row.status = "refused"
    row.reason = reason.strip()[:500]
    row.decided_by_id = organizer.id
    row.decided_at = now()
    audit.record(actor=organizer.username, action="export.refuse", target=str(row.id))
    db.session.commit()


def download_path(request_id: uuid.UUID, *, user: User, instance_path: Path) -> Path:
    """The package of an approved, unexpired request of this NGO; raise ExportWorkflowError."""
    row = db.session.get(ExportRequest, request_id)
    if row is None or row.requester_id != user.id or row.status != "approved":
        raise ExportWorkflowError(N_("No such export."))
    if row.expires_at is None or as_utc(row.expires_at) <= now() or not row.archive_name:
        raise ExportWorkflowError(N_("This export has expired; request a new one."))
    path = instance_path / EXPORT_DIRECTORY / row.id.hex / row.archive_name
    if not path.is_file():
        raise ExportWorkflowError(N_("No such export."))
    audit.record(actor=user.username, action="export.download", target=str(row.id))
    db.session.commit()
    return path
