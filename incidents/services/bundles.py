"""Build case bundles for one staff member's key, and bundle files for air-gapped desks.

Which cases a bundle covers is decided here: organizers see every report, volunteers only the
reports assigned to them. Which wraps it carries is decided by the key: only wraps addressed to
the key the desk holds, so what a bundle can open is decided by cryptography, not by this code.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select

from incidents import audit
from incidents.bundle import BUNDLE_FORMAT, b64, dump_file
from incidents.clock import now
from incidents.db import db
from incidents.keyring import Keyring
from incidents.models import (
    Addition,
    Assignment,
    Attachment,
    EnvelopeWrap,
    Message,
    Note,
    RecipientKey,
    Report,
    User,
    Wrap,
)
from incidents.services import desk_proofs
from incidents.services.errors import DomainError
from incidents.services.recipients import active_key_of
from incidents.services.reports import shell_of
from incidents.services.triage import status_history
from incidents.vocabulary import N_

PAGE_SIZE = 100


class DeskKeyError(DomainError):
    """Raised when the key a desk presents is not the user's registered, approved key."""


def desk_key_id(user: User, *, keyring: Keyring) -> str:
    """The key id the user's desk must hold: the organizer key, or the volunteer's approved key."""
    if user.role == "organizer":
        return keyring.organizer.key_id_hex
    key = active_key_of(user)
    if key is None:
        raise DeskKeyError(N_("Your account has no approved key yet."))
    return key.key_id


def check_desk_key(user: User, key_id: str, *, keyring: Keyring) -> str:
    """Refuse a desk whose key is not the one registered for ``user``; return the key id."""
    expected = desk_key_id(user, keyring=keyring)
    if key_id not in keyring_key_ids(keyring, user=user, expected=expected):
        raise DeskKeyError(
            N_("The desk's key %(key_id)s is not registered on the server for this account."),
            key_id=key_id or "-",
        )
    return key_id


def keyring_key_ids(keyring: Keyring, *, user: User, expected: str) -> set[str]:
    """Key ids the user's desk may hold: the expected one, and for organizers a rotation target."""
    ids = {expected}
    if user.role == "organizer":
        ids.update(key.key_id_hex for key in keyring.recipients)
    return ids


def visible_reports(user: User) -> Select[Any]:
    """Reports ``user`` may receive bundles of, in a stable order."""
    query = select(Report)
    if user.role != "organizer":
        query = query.join(Assignment, Assignment.report_id == Report.id).where(
            Assignment.user_id == user.id
        )
    return query.order_by(Report.id)


def count_visible(user: User) -> int:
    """How many reports ``user`` may receive bundles of."""
    return int(
        db.session.scalar(select(func.count()).select_from(visible_reports(user).subquery())) or 0
    )


def can_see(user: User, report_id: uuid.UUID) -> bool:
    """True if ``user`` may receive the bundle of this report."""
    if user.role == "organizer":
        return db.session.get(Report, report_id) is not None
    return db.session.get(Assignment, (report_id, user.id)) is not None


def _envelope_wraps(report_id: uuid.UUID, key_id: str) -> dict[uuid.UUID, bytes]:
    """Wraps of the report's additions, replies and notes addressed to ``key_id``."""
    rows = db.session.scalars(
        select(EnvelopeWrap).where(
            EnvelopeWrap.report_id == report_id, EnvelopeWrap.key_id == key_id
        )
    ).all()
    return {row.envelope_id: row.blob for row in rows}


def _authors(ids: set[int | None]) -> dict[int, str]:
    """Usernames of the given user ids."""
    wanted = {user_id for user_id in ids if user_id is not None}
    if not wanted:
        return {}
    rows = db.session.execute(select(User.id, User.username).where(User.id.in_(wanted))).all()
    return {user_id: username for user_id, username in rows}


def note_recipients(report: Report, *, keyring: Keyring) -> list[dict[str, str]]:
    """Keys a note or a grant may address: the organizer and each assigned volunteer's key."""
    recipients = [
        {
            "key_id": key.key_id_hex,
            "role": "organizer",
            "user_id": "",
            "username": "",
            "public_key": b64(key.to_bytes()),
            "fingerprint": key.fingerprint,
        }
        for key in keyring.recipients
    ]
    rows = db.session.execute(
        select(User)
        .join(Assignment, Assignment.user_id == User.id)
        .where(Assignment.report_id == report.id, User.is_active.is_(True))
        .order_by(User.username)
    ).scalars()
    for user in rows:
        key = active_key_of(user)
        if key is not None:
            recipients.append(
                {
                    "key_id": key.key_id,
                    "role": "volunteer",
                    "user_id": str(user.id),
                    "username": user.username,
                    "public_key": b64(key.public_key),
                    "fingerprint": key.fingerprint,
                }
            )
    return recipients


def _envelopes(
    rows: Sequence[Addition | Message | Note],
    *,
    sealed: str,
    wraps: dict[uuid.UUID, bytes],
    authors: dict[int, str],
) -> list[dict[str, Any]]:
    """JSON entries for additions, replies or notes, each with the wrap to this key (or None)."""
    entries = []
    for row in rows:
        wrap = wraps.get(row.id)
        when = row.received_on if isinstance(row, Addition) else row.created_on
        author_id = None if isinstance(row, Addition) else row.author_id
        entries.append(
            {
                "id": str(row.id),
                "seq": row.seq,
                "on": when.isoformat(),
                "author": authors.get(author_id, "") if author_id is not None else "",
                "sealed": b64(getattr(row, sealed)),
                "wrap": b64(wrap) if wrap is not None else None,
            }
        )
    return entries


def _rows(model: type[Addition] | type[Message] | type[Note], report_id: uuid.UUID) -> Any:
    """The report's rows of ``model`` in sequence order."""
    return db.session.scalars(
        select(model).where(model.report_id == report_id).order_by(model.seq)
    ).all()


def case_bundle(report: Report, *, key_id: str, keyring: Keyring | None) -> dict[str, Any]:
    """The bundle of one report for the key ``key_id`` (ciphertext and clear shell only).

    Without a keyring (opening a case from the command line) the bundle lists no recipients.
    """
    wrap = db.session.get(Wrap, (report.id, key_id))
    wraps = _envelope_wraps(report.id, key_id)
    additions, replies, notes = (
        _rows(Addition, report.id),
        _rows(Message, report.id),
        _rows(Note, report.id),
    )
    history = status_history(report.id)
    authors = _authors(
        {row.author_id for row in [*replies, *notes]} | {change.actor_id for change in history}
    )
    attachments = db.session.scalars(
        select(Attachment).where(Attachment.report_id == report.id).order_by(Attachment.seq)
    ).all()
    return {
        "report_id": str(report.id),
        "shell": shell_of(report).to_dict(),
        "status_history": [
            {
                "on": change.changed_at.date().isoformat(),
                "from": change.old_status,
                "to": change.new_status,
                "by": authors.get(change.actor_id, "") if change.actor_id else "",
                "reason": change.reason,
            }
            for change in history
        ],
        "sealed": {name: b64(blob) for name, blob in report.sealed_fields().items()},
        "wrap": b64(wrap.blob) if wrap is not None else None,
        "witness_public_key": b64(report.witness_public_key),
        "additions": _envelopes(additions, sealed="text_sealed", wraps=wraps, authors=authors),
        "replies": _envelopes(replies, sealed="body_sealed", wraps=wraps, authors=authors),
        "notes": _envelopes(notes, sealed="body_sealed", wraps=wraps, authors=authors),
        "attachments": [
            {
                "id": str(row.id),
                "seq": row.seq,
                "envelope_id": str(row.envelope_id),
                "padded_size": row.padded_size,
                "meta": b64(row.meta_sealed),
            }
            for row in attachments
        ],
        "recipients": note_recipients(report, keyring=keyring) if keyring else [],
    }


def bundle_page(
    user: User, *, key_id: str, keyring: Keyring, after: uuid.UUID | None, limit: int = PAGE_SIZE
) -> list[dict[str, Any]]:
    """Up to ``limit`` bundles of reports ``user`` may see, ordered by id, after ``after``."""
    query = visible_reports(user)
    if after is not None:
        query = query.where(Report.id > after)
    reports: Sequence[Report] = db.session.scalars(query.limit(limit)).all()
    return [case_bundle(report, key_id=key_id, keyring=keyring) for report in reports]


def volunteer_directory() -> list[dict[str, str]]:
    """Approved volunteer keys with fingerprints (for the organizer's grant screen)."""
    rows = db.session.execute(
        select(RecipientKey, User)
        .join(User, User.id == RecipientKey.owner_id)
        .where(
            RecipientKey.role == "volunteer",
            RecipientKey.is_retired.is_(False),
            RecipientKey.approved_at.is_not(None),
            User.is_active.is_(True),
        )
        .order_by(User.username)
    ).all()
    return [
        {
            "user_id": str(user.id),
            "username": user.username,
            "key_id": key.key_id,
            "fingerprint": key.fingerprint,
            "public_key": b64(key.public_key),
        }
        for key, user in rows
    ]


def bundle_body(user: User, *, key_id: str, keyring: Keyring) -> dict[str, Any]:
    """The body of a full bundle file: every case ``user`` may see, for ``key_id``."""
    cases: list[dict[str, Any]] = []
    after: uuid.UUID | None = None
    while True:
        page = bundle_page(user, key_id=key_id, keyring=keyring, after=after)
        cases.extend(page)
        if len(page) < PAGE_SIZE:
            break
        after = uuid.UUID(page[-1]["report_id"])
    return {
        "username": user.username,
        "role": user.role,
        "key_id": key_id,
        "issued_on": now().date().isoformat(),
        "organizer_key_id": keyring.organizer.key_id_hex,
        "volunteers": volunteer_directory() if user.role == "organizer" else [],
        "cases": cases,
    }


def bundle_file(user: User, *, keyring: Keyring) -> bytes:
    """A bundle file of every case ``user`` may see, for their registered key (audited)."""
    key_id = desk_key_id(user, keyring=keyring)
    body = bundle_body(user, key_id=key_id, keyring=keyring)
    public_key = desk_proofs.desk_public_key(user, key_id, keyring=keyring)
    body["proof_challenge"] = b64(desk_proofs.issue_file_challenge(user, public_key))
    audit.record(
        actor=user.username,
        action="bundle.download",
        target=key_id,
        details={"cases": len(body["cases"])},
    )
    db.session.commit()
    return dump_file(BUNDLE_FORMAT, body)
