"""Assigning reports to legal-aid volunteers, recording key grants, and revoking access.

Assignment is bookkeeping on the server; access is cryptographic. A volunteer can read a case
only once the organizer's desk has unwrapped the report's data key and wrapped it to the
volunteer's approved key: until that wrap is recorded here the case shows "awaiting key grant".
Revoking deletes the volunteer's wraps of the report and of every addition (crypto-shredding
their access on the server).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select

from incidents import audit, crypto
from incidents.clock import now
from incidents.db import db, forget_deleted_rows
from incidents.models import (
    Addition,
    Assignment,
    EnvelopeWrap,
    Message,
    Note,
    RecipientKey,
    Report,
    User,
    Wrap,
)
from incidents.services.errors import DomainError
from incidents.services.recipients import active_key_of
from incidents.services.reports import ReportShell, shell_of
from incidents.services.triage import get_report, set_status
from incidents.vocabulary import N_

ASSIGNABLE_STATUSES = frozenset({"new", "triaged", "assigned", "in_progress"})


class CaseError(DomainError):
    """Raised when an assignment or grant is refused; the message is safe to show."""


@dataclass(frozen=True)
class CaseAssignment:
    """A volunteer on a case and whether their key has received the report key yet."""

    user_id: int
    username: str
    key_id: str | None
    fingerprint: str | None
    has_grant: bool


def eligible_volunteers() -> Sequence[User]:
    """Active volunteers with an approved key: the only people a case can go to."""
    query = select(User).where(User.role == "volunteer", User.is_active.is_(True))
    return [
        user
        for user in db.session.scalars(query.order_by(User.username)).all()
        if active_key_of(user)
    ]


def assign_report(report_id: uuid.UUID, *, volunteer_id: int, organizer: User) -> None:
    """Assign a report to a volunteer who has an approved key (committed)."""
    report = get_report(report_id)
    volunteer = db.session.get(User, volunteer_id)
    if volunteer is None or volunteer.role != "volunteer" or not volunteer.is_active:
        raise CaseError(N_("Choose an active legal-aid volunteer."))
    if active_key_of(volunteer) is None:
        raise CaseError(N_("This volunteer has no approved key yet."))
    if report.status not in ASSIGNABLE_STATUSES:
        raise CaseError(N_("Reopen the report before assigning it."))
    if db.session.get(Assignment, (report.id, volunteer.id)) is not None:
        raise CaseError(N_("This volunteer is already assigned to the report."))
    db.session.add(
        Assignment(
            report_id=report.id,
            user_id=volunteer.id,
            assigned_by_id=organizer.id,
            assigned_at=now(),
        )
    )
    audit.record(
        actor=organizer.username,
        action="case.assign",
        target=str(report.id),
        details={"volunteer": volunteer.username},
    )
    if report.status in ("new", "triaged"):
        set_status(report, "assigned", actor=organizer, check=False)
    db.session.commit()


def unassign_report(report_id: uuid.UUID, *, volunteer_id: int, organizer: User) -> None:
    """Take a case back: remove the assignment and delete every wrap to that volunteer's keys."""
    report = get_report(report_id)
    assignment = db.session.get(Assignment, (report.id, volunteer_id))
    volunteer = db.session.get(User, volunteer_id)
    if assignment is None or volunteer is None:
        raise CaseError(N_("This volunteer is not assigned to the report."))
    key_ids = select(RecipientKey.key_id).where(RecipientKey.owner_id == volunteer_id)
    removed = db.session.execute(
        delete(Wrap).where(Wrap.report_id == report.id, Wrap.key_id.in_(key_ids))
    )
    removed_envelopes = db.session.execute(
        delete(EnvelopeWrap).where(
            EnvelopeWrap.report_id == report.id, EnvelopeWrap.key_id.in_(key_ids)
        )
    )
    db.session.delete(assignment)
    audit.record(
        actor=organizer.username,
        action="case.revoke",
        target=str(report.id),
        details={
            "volunteer": volunteer.username,
            "wraps_deleted": removed.rowcount,  # type: ignore[attr-defined]
            "envelope_wraps_deleted": removed_envelopes.rowcount,  # type: ignore[attr-defined]
        },
    )
    db.session.flush()
    if report.status in ("assigned", "in_progress") and not assignments_of(report.id):
        set_status(report, "triaged", actor=organizer, check=False, reason="volunteer removed")
    db.session.commit()
    forget_deleted_rows()


def assignments_of(report_id: uuid.UUID) -> Sequence[CaseAssignment]:
    """Volunteers assigned to a report, with their key and whether the grant is recorded."""
    query = select(Assignment, User).join(User, User.id == Assignment.user_id)
    rows = db.session.execute(query.where(Assignment.report_id == report_id)).all()
    result = []
    for _assignment, user in rows:
        key = active_key_of(user)
        has_grant = key is not None and db.session.get(Wrap, (report_id, key.key_id)) is not None
        result.append(
            CaseAssignment(
                user_id=user.id,
                username=user.username,
                key_id=key.key_id if key else None,
                fingerprint=key.fingerprint if key else None,
                has_grant=has_grant,
            )
        )
    return result


@dataclass(frozen=True)
class VolunteerCase:
    """A case as its volunteer sees it on the server: shell, status and grant state."""

    shell: ReportShell
    has_grant: bool


def cases_of(volunteer: User) -> Sequence[VolunteerCase]:
    """Reports assigned to ``volunteer``, newest received first."""
    query = (
        select(Report)
        .join(Assignment, Assignment.report_id == Report.id)
        .where(Assignment.user_id == volunteer.id)
        .order_by(Report.received_on.desc(), Report.id)
    )
    key = active_key_of(volunteer)
    cases = []
    for report in db.session.scalars(query).all():
        has_grant = key is not None and db.session.get(Wrap, (report.id, key.key_id)) is not None
        cases.append(VolunteerCase(shell=shell_of(report), has_grant=has_grant))
    return cases


def is_assigned(report_id: uuid.UUID, user: User) -> bool:
    """True if ``user`` is assigned to the report."""
    return db.session.get(Assignment, (report_id, user.id)) is not None


def record_grant(report_id: uuid.UUID, blob: bytes, *, actor: User) -> str:
    """Store a wrap of the report key to an assigned volunteer's approved key (committed).

    Returns the recipient key id; see ``stage_grant``.
    """
    key_id = stage_grant(get_report(report_id), blob, envelopes={}, actor=actor)
    db.session.commit()
    return key_id


def stage_grant(
    report: Report, blob: bytes, *, envelopes: Mapping[uuid.UUID, bytes], actor: User
) -> str:
    """Add (or replace) a volunteer's wrap of the report key, and of the keys of the report's
    additions, replies and notes given in ``envelopes``, within the current transaction.

    The wrap's header names its recipient key; it must be the active key of a volunteer who is
    assigned to the report, and every envelope wrap must name the same key and belong to an
    envelope of this report. The server cannot check that a wrap opens (it holds no private
    key), only that it is well formed and addressed correctly. Returns the recipient key id.
    """
    key_id = _grant_key_id(blob)
    key = db.session.get(RecipientKey, key_id)
    if key is None or key.role != "volunteer" or key.owner_id is None:
        raise CaseError(N_("The grant is addressed to a key that is not a volunteer key."))
    if not key.is_approved or key.is_retired:
        raise CaseError(N_("The grant is addressed to a key that is not approved."))
    if db.session.get(Assignment, (report.id, key.owner_id)) is None:
        raise CaseError(N_("The key's owner is not assigned to this report."))
    put_wrap(report_id=report.id, envelope_id=report.id, key_id=key_id, blob=blob)
    known = _envelope_ids(report.id)
    for envelope_id, envelope_blob in envelopes.items():
        if envelope_id not in known:
            raise CaseError(N_("The grant names something that is not part of this report."))
        if _grant_key_id(envelope_blob) != key_id:
            raise CaseError(N_("The grant's wraps are addressed to different keys."))
        put_wrap(report_id=report.id, envelope_id=envelope_id, key_id=key_id, blob=envelope_blob)
    audit.record(
        actor=actor.username,
        action="case.grant",
        target=str(report.id),
        details={"key_id": key_id, "envelopes": len(envelopes)},
    )
    return key_id


def _grant_key_id(blob: bytes) -> str:
    """The recipient key id named in a wrap's header; CaseError if it is not a wrap."""
    try:
        return crypto.wrap_key_id(blob).hex()
    except crypto.FormatError as exc:
        raise CaseError(N_("This is not a key grant of the register.")) from exc


def put_wrap(*, report_id: uuid.UUID, envelope_id: uuid.UUID, key_id: str, blob: bytes) -> None:
    """Store a wrap to ``key_id``, or replace the existing one (within the transaction): of the
    report's own data key when ``envelope_id`` is the report id, else of that envelope's."""
    if envelope_id == report_id:
        existing: Wrap | EnvelopeWrap | None = db.session.get(Wrap, (report_id, key_id))
        if existing is None:
            db.session.add(Wrap(report_id=report_id, key_id=key_id, blob=blob))
    else:
        existing = db.session.get(EnvelopeWrap, (envelope_id, key_id))
        if existing is None:
            db.session.add(
                EnvelopeWrap(envelope_id=envelope_id, key_id=key_id, report_id=report_id, blob=blob)
            )
    if existing is not None:
        existing.blob = blob


def _envelope_ids(report_id: uuid.UUID) -> set[uuid.UUID]:
    """Ids of the report's additions, replies and notes."""
    ids: set[uuid.UUID] = set()
    for model in (Addition, Message, Note):
        ids.update(db.session.scalars(select(model.id).where(model.report_id == report_id)))
    return ids
