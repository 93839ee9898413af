"""The witness's return visit: find the report from the receipt, read replies, add information,
change consent, or have the report deleted.

Nothing about the witness is stored by a visit. The receipt is re-derived on every request (it
travels in the page's forms, never in a cookie); replies are decrypted with the receipt-derived
witness key for that response only. A wrong or malformed receipt costs the same derivation and
lookup as a right one and gets the same answer as an unknown one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from incidents import audit, crypto
from incidents.db import db, forget_deleted_rows
from incidents.keyring import Keyring
from incidents.models import (
    ERASED,
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
from incidents.services.attachments import add_attachment_rows, delete_files
from incidents.services.errors import DomainError, ReportNotSavedError
from incidents.services.reports import commit_with_files
from incidents.uploads import UploadBatch

ADDITION_FIELD = "text"
REPLY_FIELD = "body"
NOTE_FIELD = "body"
_DUMMY_RECEIPT = "0" * crypto.RECEIPT_SYMBOLS

PLAIN_STATUS = {
    "new": "received",
    "triaged": "received",
    "duplicate": "received",
    "assigned": "working",
    "in_progress": "working",
    "closed": "closed",
    "rejected": "closed",
}


class CaseNotFoundError(DomainError):
    """Raised for a receipt that matches no report (or is not a receipt at all)."""


@dataclass(frozen=True)
class WitnessCase:
    """A report found by its receipt, with the witness's own key for this request."""

    report: Report
    witness_key: crypto.PrivateKey


@dataclass(frozen=True)
class Reply:
    """A decrypted reply, shown once in the response and never stored in clear."""

    written_on: date
    body: str


def find_case(receipt: str, *, receipt_secret: bytes) -> WitnessCase:
    """Look up the report of a receipt; raise CaseNotFoundError for anything that does not match."""
    try:
        secrets_ = crypto.derive_witness_secrets(receipt)
        is_receipt = True
    except crypto.ReceiptError:
        secrets_ = crypto.derive_witness_secrets(_DUMMY_RECEIPT)
        is_receipt = False
    wanted = crypto.lookup_hash(secrets_.lookup_token, secret=receipt_secret)
    report = db.session.scalars(select(Report).where(Report.witness_lookup_hash == wanted)).first()
    if report is None or not is_receipt:
        raise CaseNotFoundError("no report for this receipt")
    return WitnessCase(report=report, witness_key=secrets_.witness_key)


def plain_status(report: Report) -> str:
    """The status in the witness's terms: received, working or closed."""
    return PLAIN_STATUS.get(report.status, "received")


def replies_for(case: WitnessCase) -> Sequence[Reply]:
    """Replies to the witness, decrypted with the receipt-derived key (skipping unreadable ones)."""
    key_id = case.witness_key.key_id.hex()
    rows = db.session.execute(
        select(Message, EnvelopeWrap)
        .join(EnvelopeWrap, EnvelopeWrap.envelope_id == Message.id)
        .where(Message.report_id == case.report.id, EnvelopeWrap.key_id == key_id)
        .order_by(Message.seq)
    ).all()
    replies = []
    for message, wrap in rows:
        try:
            values = crypto.open_report(
                {REPLY_FIELD: message.body_sealed},
                report_id=message.id,
                wrap=wrap.blob,
                private_key=case.witness_key,
            )
        except crypto.CryptoError:
            continue
        replies.append(Reply(written_on=message.created_on, body=values[REPLY_FIELD]))
    return replies


def addition_recipients(report: Report, *, keyring: Keyring) -> list[crypto.PublicKey]:
    """Everyone who may open the report now: the organizer, and the volunteers who hold a grant,
    are still assigned, have an active account and an approved, not retired key."""
    recipients = list(keyring.recipients)
    seen = {key.key_id_hex for key in recipients}
    rows = db.session.scalars(
        select(RecipientKey)
        .join(Wrap, Wrap.key_id == RecipientKey.key_id)
        .join(User, User.id == RecipientKey.owner_id)
        .join(
            Assignment,
            (Assignment.report_id == Wrap.report_id) & (Assignment.user_id == User.id),
        )
        .where(
            Wrap.report_id == report.id,
            RecipientKey.is_retired.is_(False),
            User.is_active.is_(True),
        )
    ).all()
    for row in rows:
        if row.key_id not in seen and row.is_approved:
            recipients.append(crypto.PublicKey.from_bytes(row.public_key))
            seen.add(row.key_id)
    return recipients


def _next_seq(
    model: type[Addition] | type[Message] | type[Note] | type[Attachment], report_id: uuid.UUID
) -> int:
    """The next sequence number for a new ``model`` row of a report."""
    current = db.session.scalar(select(func.max(model.seq)).where(model.report_id == report_id))
    return int(current or 0) + 1


def add_information(
    case: WitnessCase,
    *,
    text: str,
    uploads: UploadBatch | None,
    keyring: Keyring,
    received_on: date,
    instance_path: Path,
) -> uuid.UUID:
    """Seal an addition (text and files) under its own data key, wrapped like the report."""
    report = case.report
    addition_id = uuid.uuid4() if uploads is None else uploads.envelope_id
    sealed = crypto.seal_report(
        {ADDITION_FIELD: text},
        report_id=addition_id,
        recipients=addition_recipients(report, keyring=keyring),
        data_key=None if uploads is None else uploads.data_key,
    )
    try:
        db.session.add(
            Addition(
                id=addition_id,
                report_id=report.id,
                seq=_next_seq(Addition, report.id),
                received_on=received_on,
                text_sealed=sealed.fields[ADDITION_FIELD],
            )
        )
        for key_id, blob in sealed.wraps.items():
            db.session.add(
                EnvelopeWrap(
                    envelope_id=addition_id, key_id=key_id.hex(), report_id=report.id, blob=blob
                )
            )
        if uploads is not None:
            db.session.flush()
            add_attachment_rows(
                uploads, report_id=report.id, first_seq=_next_seq(Attachment, report.id)
            )
        commit_with_files(uploads, instance_path=instance_path)
    except (SQLAlchemyError, OSError) as exc:
        raise ReportNotSavedError("the database refused the addition") from exc
    return addition_id


def withdraw_consent(case: WitnessCase, *, statistics: bool, contact: bool) -> None:
    """Withdraw consent to statistics and/or contact (committed; audited without identity)."""
    report = case.report
    withdrawn: dict[str, audit.DetailValue] = {}
    if statistics and report.consent_statistics:
        report.consent_statistics = False
        withdrawn["statistics"] = True
    if contact and report.consent_contact:
        report.consent_contact = False
        # The contact details were only kept for this consent: crypto-shred the sealed value.
        report.contact_sealed = ERASED
        withdrawn["contact"] = True
    if withdrawn:
        audit.record(
            actor="witness",
            action="report.consent_withdrawn",
            target=str(report.id),
            details=withdrawn,
            day_only=True,
        )
    db.session.commit()
    if contact:
        forget_deleted_rows()


def delete_report(case: WitnessCase, *, instance_path: Path) -> None:
    """Crypto-shred a report at the witness's request: every wrap, sealed value and file goes.

    What remains is one audit event with the report id and nothing else.
    """
    report_id = case.report.id
    attachment_ids = list(
        db.session.scalars(select(Attachment.id).where(Attachment.report_id == report_id)).all()
    )
    db.session.execute(delete(EnvelopeWrap).where(EnvelopeWrap.report_id == report_id))
    db.session.execute(delete(Wrap).where(Wrap.report_id == report_id))
    db.session.execute(delete(Attachment).where(Attachment.report_id == report_id))
    db.session.execute(delete(Addition).where(Addition.report_id == report_id))
    db.session.execute(delete(Message).where(Message.report_id == report_id))
    db.session.execute(
        update(Report)
        .where(Report.duplicate_of == report_id)
        .values(duplicate_of=None, status="triaged")
    )
    db.session.delete(case.report)
    audit.record(
        actor="witness",
        action="report.deleted_by_witness",
        target=str(report_id),
        day_only=True,
    )
    db.session.commit()
    delete_files(attachment_ids, instance_path=instance_path)
    forget_deleted_rows()


def stage_envelope(
    model: type[Message] | type[Note],
    *,
    report_id: uuid.UUID,
    envelope_id: uuid.UUID,
    sealed: bytes,
    wraps: Mapping[str, bytes],
    author_id: int | None,
    created_on: date,
) -> None:
    """Add a reply or note sealed on a desk, with its wraps, as the report's next one (within
    the caller's transaction; the caller has checked the wraps)."""
    db.session.add(
        model(
            id=envelope_id,
            report_id=report_id,
            seq=_next_seq(model, report_id),
            created_on=created_on,
            author_id=author_id,
            body_sealed=sealed,
        )
    )
    for key_id, blob in wraps.items():
        db.session.add(
            EnvelopeWrap(envelope_id=envelope_id, key_id=key_id, report_id=report_id, blob=blob)
        )
    db.session.flush()


def store_reply(
    report_id: uuid.UUID,
    *,
    message_id: uuid.UUID,
    body_sealed: bytes,
    wraps: dict[str, bytes],
    author_id: int | None,
    created_on: date,
) -> None:
    """Store a reply sealed on a desk (ciphertext and wraps only), committed.

    The wraps must include the report's witness key, so the witness can read it.
    """
    report = db.session.get(Report, report_id)
    if report is None:
        raise CaseNotFoundError("no such report")
    witness_key_id = crypto.PublicKey.from_bytes(report.witness_public_key).key_id_hex
    if witness_key_id not in wraps:
        raise DomainError("a reply must be wrapped to the witness key")
    stage_envelope(
        Message,
        report_id=report_id,
        envelope_id=message_id,
        sealed=body_sealed,
        wraps=wraps,
        author_id=author_id,
        created_on=created_on,
    )
    audit.record(
        actor=str(author_id) if author_id else "desk", action="case.reply", target=str(report_id)
    )
    db.session.commit()
