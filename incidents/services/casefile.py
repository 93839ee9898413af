"""Open a whole case with a private key: report, additions, attachments, replies.

Runs where the private key is (the organizer's CLI now, the desk later), never on the public
server. Everything decrypted here lives in the returned dataclasses only.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from sqlalchemy import select

from incidents import crypto
from incidents.db import db
from incidents.models import (
    SEALED_FIELDS,
    Addition,
    Attachment,
    EnvelopeWrap,
    Message,
    Report,
    Wrap,
)
from incidents.services.attachments import AttachmentMeta, decrypt_to, open_meta
from incidents.services.errors import NoWrapForKeyError, ReportNotFoundError
from incidents.services.followup import ADDITION_FIELD, REPLY_FIELD
from incidents.services.reports import ReportShell, shell_of
from incidents.uploads import attachment_directory


@dataclass(frozen=True)
class OpenedAddition:
    """A decrypted addition from the witness."""

    seq: int
    received_on: str
    text: str


@dataclass(frozen=True)
class OpenedAttachment:
    """Decrypted metadata of an attachment (the file itself is opened separately)."""

    seq: int
    padded_size: int
    name: str
    type: str
    size: int
    sha256: str


@dataclass(frozen=True)
class OpenedReply:
    """A decrypted reply to the witness."""

    seq: int
    written_on: str
    body: str


@dataclass(frozen=True)
class CaseFile:
    """Everything of a case that ``private_key`` can open."""

    shell: ReportShell
    sealed: dict[str, str]
    additions: list[OpenedAddition] = field(default_factory=list)
    attachments: list[OpenedAttachment] = field(default_factory=list)
    replies: list[OpenedReply] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (for ``reports open``)."""
        return {
            **self.shell.to_dict(),
            "sealed": dict(self.sealed),
            "additions": [asdict(item) for item in self.additions],
            "attachments": [asdict(item) for item in self.attachments],
            "replies": [asdict(item) for item in self.replies],
        }


def _report(report_id: uuid.UUID) -> Report:
    """Load a report row or raise ReportNotFoundError."""
    report = db.session.get(Report, report_id)
    if report is None:
        raise ReportNotFoundError(f"no report {report_id}")
    return report


def report_data_key(report_id: uuid.UUID, *, private_key: crypto.PrivateKey) -> bytes:
    """Unwrap the report's data key with ``private_key``; raise NoWrapForKeyError."""
    wrap = db.session.get(Wrap, (report_id, private_key.key_id.hex()))
    if wrap is None:
        raise NoWrapForKeyError(f"report {report_id} is not wrapped to this key")
    return crypto.unwrap_data_key(wrap.blob, report_id=report_id, private_key=private_key)


def envelope_data_key(envelope_id: uuid.UUID, *, private_key: crypto.PrivateKey) -> bytes | None:
    """Unwrap an addition's or reply's data key, or None if it is not wrapped to this key."""
    wrap = db.session.get(EnvelopeWrap, (envelope_id, private_key.key_id.hex()))
    if wrap is None:
        return None
    return crypto.unwrap_data_key(wrap.blob, report_id=envelope_id, private_key=private_key)


def _data_key_for(
    envelope_id: uuid.UUID, report_id: uuid.UUID, report_key: bytes, private_key: crypto.PrivateKey
) -> bytes | None:
    """The data key of an envelope: the report's own, or its own wrap (None if absent)."""
    if envelope_id == report_id:
        return report_key
    return envelope_data_key(envelope_id, private_key=private_key)


EnvelopeRow = TypeVar("EnvelopeRow", Addition, Message)


def _open_envelopes(
    model: type[EnvelopeRow],
    report_id: uuid.UUID,
    *,
    sealed: Callable[[EnvelopeRow], bytes],
    field: str,
    private_key: crypto.PrivateKey,
) -> list[tuple[EnvelopeRow, str]]:
    """Rows of a case's additions or replies, in order, with the text this key can open."""
    rows = db.session.scalars(
        select(model).where(model.report_id == report_id).order_by(model.seq)
    ).all()
    opened = []
    for row in rows:
        key = envelope_data_key(row.id, private_key=private_key)
        if key is not None:
            text = crypto.open_field(sealed(row), data_key=key, report_id=row.id, name=field)
            opened.append((row, text))
    return opened


def open_case(report_id: uuid.UUID, *, private_key: crypto.PrivateKey) -> CaseFile:
    """Decrypt the report and everything attached to it that is wrapped to ``private_key``."""
    report = _report(report_id)
    report_key = report_data_key(report_id, private_key=private_key)
    sealed = dict.fromkeys(SEALED_FIELDS, "")  # erased values open as empty text
    sealed.update(
        {
            name: crypto.open_field(blob, data_key=report_key, report_id=report_id, name=name)
            for name, blob in report.sealed_fields().items()
        }
    )
    additions = [
        OpenedAddition(row.seq, row.received_on.isoformat(), text)
        for row, text in _open_envelopes(
            Addition, report_id, sealed=lambda r: r.text_sealed, field=ADDITION_FIELD,
            private_key=private_key,
        )
    ]  # fmt: skip
    attachments = []
    for row in db.session.scalars(
        select(Attachment).where(Attachment.report_id == report_id).order_by(Attachment.seq)
    ).all():
        key = _data_key_for(row.envelope_id, report_id, report_key, private_key)
        if key is None:
            continue
        meta = open_meta(row, data_key=key)
        attachments.append(
            OpenedAttachment(row.seq, row.padded_size, meta.name, meta.type, meta.size, meta.sha256)
        )
    replies = [
        OpenedReply(row.seq, row.created_on.isoformat(), text)
        for row, text in _open_envelopes(
            Message, report_id, sealed=lambda r: r.body_sealed, field=REPLY_FIELD,
            private_key=private_key,
        )
    ]  # fmt: skip
    return CaseFile(
        shell=shell_of(report),
        sealed=sealed,
        additions=additions,
        attachments=attachments,
        replies=replies,
    )


def open_attachment(
    report_id: uuid.UUID,
    seq: int,
    *,
    private_key: crypto.PrivateKey,
    instance_path: Path,
    sink: BinaryIO,
) -> AttachmentMeta:
    """Decrypt attachment number ``seq`` of a report into ``sink``, verifying its SHA-256."""
    _report(report_id)
    row = db.session.scalars(
        select(Attachment).where(Attachment.report_id == report_id, Attachment.seq == seq)
    ).first()
    if row is None:
        raise ReportNotFoundError(f"report {report_id} has no attachment {seq}")
    report_key = report_data_key(report_id, private_key=private_key)
    key = _data_key_for(row.envelope_id, report_id, report_key, private_key)
    if key is None:
        raise NoWrapForKeyError("this attachment is not wrapped to this key")
    path = attachment_directory(instance_path) / row.id.hex
    with path.open("rb") as source:
        return decrypt_to(row, data_key=key, source=source, sink=sink)


def open_attachment_bytes(
    report_id: uuid.UUID, seq: int, *, private_key: crypto.PrivateKey, instance_path: Path
) -> tuple[AttachmentMeta, bytes]:
    """Decrypt an attachment into memory (for making a working copy)."""
    buffer = io.BytesIO()
    meta = open_attachment(
        report_id, seq, private_key=private_key, instance_path=instance_path, sink=buffer
    )
    return meta, buffer.getvalue()
