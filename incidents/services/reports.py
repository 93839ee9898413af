"""Filing, listing and opening reports.

``file_report`` seals every sensitive value in memory before anything reaches the database and
stores the report, its sealed fields and its wraps in one transaction. The clear shell holds
only coarse values: the ISO week or month of the incident, never the exact date.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from incidents import crypto, vocabulary
from incidents.db import db
from incidents.keyring import Keyring
from incidents.models import SEALED_FIELDS, RecipientKey, Report, Wrap
from incidents.services.attachments import add_attachment_rows, delete_files, publish_files
from incidents.services.errors import ReportNotSavedError
from incidents.uploads import UploadBatch


@dataclass(frozen=True)
class ReportDraft:
    """What a witness submitted, validated; lives only in memory until sealed."""

    category: str
    occurred_on: date
    date_precision: str
    country: str
    city: str
    place_detail: str
    narrative: str
    targeted_person: str
    perpetrator_type: str
    perpetrator_description: str
    contact: str
    consent_contact: bool
    consent_statistics: bool

    def sealed_values(self) -> dict[str, str]:
        """The values that are sealed, by field name (the exact date as ISO text)."""
        values = {name: getattr(self, name) for name in SEALED_FIELDS if name != "occurred_on"}
        return {"occurred_on": self.occurred_on.isoformat(), **values}


@dataclass(frozen=True)
class FiledReport:
    """Result of filing: the new report's id and the receipt, shown to the witness once."""

    report_id: uuid.UUID
    receipt: str


@dataclass(frozen=True)
class ReportShell:
    """The clear, coarse fields of a report: safe for any staff member to see."""

    id: str
    received_on: str
    status: str
    category: str
    occurred_period: str
    date_precision: str
    country: str
    city: str
    geo_precision: str
    perpetrator_type: str
    consent_contact: bool
    consent_statistics: bool
    duplicate_of: str | None = None

    def to_dict(self) -> dict[str, object]:
        """Return the shell as a JSON-ready dictionary."""
        return asdict(self)


def occurred_period(occurred_on: date, precision: str) -> str:
    """Coarsen the incident date: ISO week for day/week precision, month otherwise."""
    if precision in ("day", "week"):
        year, week, _ = occurred_on.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{occurred_on.year}-{occurred_on.month:02d}"


def file_report(
    draft: ReportDraft,
    *,
    keyring: Keyring,
    receipt_secret: bytes,
    received_on: date,
    uploads: UploadBatch | None = None,
    instance_path: Path | None = None,
) -> FiledReport:
    """Seal and store a report (and its already-sealed uploads) in one transaction.

    Returns its id and the new receipt. Raises ReportNotSavedError (after rolling back, with
    no file kept) if the database refuses the write.
    """
    report_id = uuid.uuid4() if uploads is None else uploads.envelope_id
    receipt = crypto.new_receipt()
    report, wraps = seal_new_report(
        draft,
        report_id=report_id,
        receipt=receipt,
        keyring=keyring,
        receipt_secret=receipt_secret,
        received_on=received_on,
        data_key=None if uploads is None else uploads.data_key,
    )
    try:
        for recipient in keyring.recipients:
            register_recipient(recipient, role="organizer", today=received_on)
        db.session.add(report)
        db.session.add_all(wraps)
        if uploads is not None:
            db.session.flush()
            add_attachment_rows(uploads, report_id=report_id, first_seq=1)
        commit_with_files(uploads, instance_path=instance_path)
    except (SQLAlchemyError, OSError) as exc:
        raise ReportNotSavedError("the database refused the report") from exc
    return FiledReport(report_id=report_id, receipt=receipt)


def seal_new_report(
    draft: ReportDraft,
    *,
    report_id: uuid.UUID,
    receipt: str,
    keyring: Keyring,
    receipt_secret: bytes,
    received_on: date,
    status: str = "new",
    data_key: bytes | None = None,
) -> tuple[Report, list[Wrap]]:
    """Seal a draft in memory: the report row (shell, sealed fields, witness key) and its wraps."""
    witness = crypto.derive_witness_secrets(receipt)
    sealed = crypto.seal_report(
        draft.sealed_values(), report_id=report_id, recipients=keyring.recipients, data_key=data_key
    )
    report = Report(
        id=report_id,
        received_on=received_on,
        status=status,
        format_version=crypto.FORMAT_VERSION,
        category=draft.category,
        occurred_period=occurred_period(draft.occurred_on, draft.date_precision),
        date_precision=draft.date_precision,
        country=draft.country,
        city=draft.city,
        geo_precision=vocabulary.geo_precision(draft.country, draft.city),
        perpetrator_type=draft.perpetrator_type,
        consent_contact=draft.consent_contact,
        consent_statistics=draft.consent_statistics,
        witness_lookup_hash=crypto.lookup_hash(witness.lookup_token, secret=receipt_secret),
        witness_public_key=witness.witness_key.public_key().to_bytes(),
        **{f"{name}_sealed": blob for name, blob in sealed.fields.items()},
    )
    wraps = [
        Wrap(report_id=report_id, key_id=key_id.hex(), blob=blob)
        for key_id, blob in sealed.wraps.items()
    ]
    return report, wraps


def commit_with_files(uploads: UploadBatch | None, *, instance_path: Path | None) -> None:
    """Publish the batch's ciphertext files, then commit; undo both if either fails."""
    published = [] if uploads is None else uploads.accepted()
    try:
        if published:
            if instance_path is None:
                raise ValueError("attachments need the instance folder")
            publish_files(published, instance_path=instance_path)
        db.session.commit()
    except Exception:
        db.session.rollback()
        if published and instance_path is not None:
            delete_files([u.attachment_id for u in published], instance_path=instance_path)
        raise


def register_recipient(public_key: crypto.PublicKey, *, role: str, today: date) -> None:
    """Add a recipient key row if it is not there yet (within the caller's transaction)."""
    if db.session.get(RecipientKey, public_key.key_id_hex) is not None:
        return
    db.session.add(
        RecipientKey(
            key_id=public_key.key_id_hex,
            suite=public_key.suite,
            public_key=public_key.to_bytes(),
            fingerprint=public_key.fingerprint,
            role=role,
            added_on=today,
            is_retired=False,
        )
    )
    db.session.flush()


def list_report_shells() -> Sequence[ReportShell]:
    """Return the shells of all reports, newest received first (ties in random-id order)."""
    rows = db.session.scalars(select(Report).order_by(Report.received_on.desc(), Report.id)).all()
    return [shell_of(row) for row in rows]


def shell_of(report: Report) -> ReportShell:
    """The clear shell of a stored report."""
    return ReportShell(
        id=str(report.id),
        received_on=report.received_on.isoformat(),
        status=report.status,
        category=report.category,
        occurred_period=report.occurred_period,
        date_precision=report.date_precision,
        country=report.country,
        city=report.city,
        geo_precision=report.geo_precision,
        perpetrator_type=report.perpetrator_type,
        consent_contact=report.consent_contact,
        consent_statistics=report.consent_statistics,
        duplicate_of=str(report.duplicate_of) if report.duplicate_of else None,
    )
