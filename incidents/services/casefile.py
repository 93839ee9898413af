"""Open a whole case with a private key: report, additions, attachments, replies.

Runs where the private key is (the organizer's CLI now, the desk later), never on the public
server. Everything decrypted here lives in the returned dataclasses only.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select

from incidents import crypto
from incidents.bundle import BundleError, unb64
from incidents.db import db
from incidents.models import (
    SEALED_FIELDS,
    Attachment,
    EnvelopeWrap,
    Report,
    Wrap,
)
from incidents.services.attachments import AttachmentMeta, decrypt_to, open_meta_blob
from incidents.services.bundles import case_bundle
from incidents.services.errors import NoWrapForKeyError, ReportNotFoundError
from incidents.services.followup import ADDITION_FIELD, NOTE_FIELD, REPLY_FIELD
from incidents.services.reports import ReportShell
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
    author: str = ""


@dataclass(frozen=True)
class OpenedNote:
    """A decrypted staff note."""

    seq: int
    written_on: str
    author: str
    body: str


@dataclass(frozen=True)
class CaseFile:
    """Everything of a case that ``private_key`` can open."""

    shell: ReportShell
    sealed: dict[str, str]
    additions: list[OpenedAddition] = field(default_factory=list)
    attachments: list[OpenedAttachment] = field(default_factory=list)
    replies: list[OpenedReply] = field(default_factory=list)
    notes: list[OpenedNote] = field(default_factory=list)
    status_history: list[dict[str, str]] = field(default_factory=list)
    unreadable: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (for ``reports open``)."""
        return {
            **self.shell.to_dict(),
            "sealed": dict(self.sealed),
            "additions": [asdict(item) for item in self.additions],
            "attachments": [asdict(item) for item in self.attachments],
            "replies": [asdict(item) for item in self.replies],
            "notes": [asdict(item) for item in self.notes],
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


def bundle_data_keys(
    bundle: Mapping[str, Any], *, private_key: crypto.PrivateKey
) -> dict[uuid.UUID, bytes]:
    """Every data key of a bundle that ``private_key`` can unwrap, by envelope id.

    Raises NoWrapForKeyError when the report itself is not wrapped to the key, and
    crypto.CryptoError when the report's own wrap fails to open (tampered, moved, or for
    another key). An addition's, reply's or note's wrap that fails to open is left out (see
    ``unreadable_envelopes``): a note a staff member sealed badly, by mistake or on purpose,
    must not make the whole case unreadable.
    """
    report_id = uuid.UUID(bundle["report_id"])
    if not bundle.get("wrap"):
        raise NoWrapForKeyError(f"report {report_id} is not wrapped to this key")
    keys = {
        report_id: crypto.unwrap_data_key(
            unb64(bundle["wrap"]), report_id=report_id, private_key=private_key
        )
    }
    for kind in ENVELOPE_KINDS:
        for entry in bundle.get(kind, []):
            if entry.get("wrap"):
                envelope_id = uuid.UUID(entry["id"])
                try:
                    keys[envelope_id] = crypto.unwrap_data_key(
                        unb64(entry["wrap"]), report_id=envelope_id, private_key=private_key
                    )
                except crypto.CryptoError:
                    continue
    return keys


def unreadable_envelopes(
    bundle: Mapping[str, Any], keys: Mapping[uuid.UUID, bytes]
) -> list[tuple[str, uuid.UUID]]:
    """(kind, id) of the additions, replies and notes wrapped to this key that it cannot open:
    the wrap or the sealed text fails authentication."""
    unreadable = []
    for kind in ENVELOPE_KINDS:
        for entry in bundle.get(kind, []):
            if not entry.get("wrap"):
                continue
            envelope_id = uuid.UUID(entry["id"])
            if envelope_id not in keys or _open_text(entry, kind, keys[envelope_id]) is None:
                unreadable.append((kind, envelope_id))
    return unreadable


def _open_text(entry: Mapping[str, Any], kind: str, data_key: bytes) -> str | None:
    """The text of one envelope, or None if it fails to open."""
    envelope_id = uuid.UUID(entry["id"])
    try:
        return crypto.open_field(
            unb64(entry["sealed"]),
            data_key=data_key,
            report_id=envelope_id,
            name=ENVELOPE_FIELDS[kind],
        )
    except crypto.CryptoError:
        return None


ENVELOPE_KINDS = ("additions", "replies", "notes")
ENVELOPE_FIELDS = {"additions": ADDITION_FIELD, "replies": REPLY_FIELD, "notes": NOTE_FIELD}


def _open_entries(
    bundle: Mapping[str, Any], kind: str, keys: Mapping[uuid.UUID, bytes]
) -> list[tuple[dict[str, Any], str]]:
    """The entries of one envelope kind that the keys open, with their text, in order (entries
    that fail to open are left out; see ``unreadable_envelopes``)."""
    opened = []
    for entry in sorted(bundle.get(kind, []), key=lambda item: int(item["seq"])):
        envelope_id = uuid.UUID(entry["id"])
        if envelope_id in keys:
            text = _open_text(entry, kind, keys[envelope_id])
            if text is not None:
                opened.append((entry, text))
    return opened


def open_bundle(bundle: Mapping[str, Any], *, private_key: crypto.PrivateKey) -> CaseFile:
    """Decrypt a case bundle (see ``incidents.bundle``) with ``private_key``.

    Everything decrypted lives only in the returned CaseFile. Raises NoWrapForKeyError when the
    report is not wrapped to the key, crypto.CryptoError when anything fails authentication,
    and BundleError when the bundle is malformed.
    """
    try:
        return _open_bundle(bundle, private_key=private_key)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, crypto.CryptoError):
            raise
        raise BundleError("the case bundle is malformed") from exc


def _open_bundle(bundle: Mapping[str, Any], *, private_key: crypto.PrivateKey) -> CaseFile:
    """open_bundle without the translation of malformed input into BundleError."""
    report_id = uuid.UUID(bundle["report_id"])
    keys = bundle_data_keys(bundle, private_key=private_key)
    sealed = dict.fromkeys(SEALED_FIELDS, "")  # erased values open as empty text
    for name, blob in bundle["sealed"].items():
        if name not in SEALED_FIELDS:
            raise BundleError(f"unknown sealed field {name!r}")
        sealed[name] = crypto.open_field(
            unb64(blob), data_key=keys[report_id], report_id=report_id, name=name
        )
    attachments = []
    for entry in sorted(bundle.get("attachments", []), key=lambda item: int(item["seq"])):
        envelope_id = uuid.UUID(entry["envelope_id"])
        if envelope_id not in keys:
            continue
        meta = open_meta_blob(
            unb64(entry["meta"]),
            attachment_id=uuid.UUID(entry["id"]),
            envelope_id=envelope_id,
            data_key=keys[envelope_id],
        )
        attachments.append(
            OpenedAttachment(
                int(entry["seq"]), int(entry["padded_size"]), meta.name, meta.type, meta.size,
                meta.sha256,
            )
        )  # fmt: skip
    return CaseFile(
        shell=ReportShell(**bundle["shell"]),
        sealed=sealed,
        additions=[
            OpenedAddition(int(entry["seq"]), entry["on"], text)
            for entry, text in _open_entries(bundle, "additions", keys)
        ],
        attachments=attachments,
        replies=[
            OpenedReply(int(entry["seq"]), entry["on"], text, entry.get("author", ""))
            for entry, text in _open_entries(bundle, "replies", keys)
        ],
        notes=[
            OpenedNote(int(entry["seq"]), entry["on"], entry.get("author", ""), text)
            for entry, text in _open_entries(bundle, "notes", keys)
        ],
        status_history=list(bundle.get("status_history", [])),
        unreadable=len(unreadable_envelopes(bundle, keys)),
    )


def open_case(report_id: uuid.UUID, *, private_key: crypto.PrivateKey) -> CaseFile:
    """Decrypt the report and everything attached to it that is wrapped to ``private_key``."""
    bundle = case_bundle(_report(report_id), key_id=private_key.key_id.hex(), keyring=None)
    return open_bundle(bundle, private_key=private_key)


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
