"""Attachments: commit sealed uploads, and open them again with a private key.

At intake the ciphertext is already on disk (``incidents.uploads``); committing adds a row with
the padded size and the sealed metadata (original name, type, size and SHA-256 for the chain of
custody) and moves the file from "partial" to its final name. Opening happens off the server
(CLI now, the desk later): the original is written out only after its SHA-256 matches, and a
working copy can be made with metadata removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from incidents import crypto
from incidents.db import db
from incidents.models import Attachment
from incidents.uploads import SealingUpload, UploadBatch, attachment_directory

META_FLOOR = 256
MAX_NAME_LENGTH = 200


class AttachmentError(Exception):
    """Raised when an attachment cannot be opened or its hash does not match."""


def meta_field_name(attachment_id: uuid.UUID) -> str:
    """Field name bound into the AAD of an attachment's sealed metadata."""
    return f"attachment/{attachment_id}"


def clean_filename(name: str) -> str:
    """The base name only, without path or control characters, at most 200 characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return cleaned[:MAX_NAME_LENGTH] or "file"


def add_attachment_rows(batch: UploadBatch, *, report_id: uuid.UUID, first_seq: int) -> None:
    """Add rows for the accepted uploads of ``batch`` (within the caller's transaction)."""
    for offset, upload in enumerate(batch.accepted()):
        meta = {
            "name": clean_filename(upload.filename),
            "type": upload.media.mime if upload.media else "application/octet-stream",
            "size": upload.size,
            "sha256": upload.sha256,
        }
        db.session.add(
            Attachment(
                id=upload.attachment_id,
                report_id=report_id,
                envelope_id=batch.envelope_id,
                seq=first_seq + offset,
                padded_size=upload.padded_size,
                meta_sealed=crypto.seal_bytes(
                    json.dumps(meta, ensure_ascii=False).encode("utf-8"),
                    data_key=batch.data_key,
                    report_id=batch.envelope_id,
                    name=meta_field_name(upload.attachment_id),
                    floor=META_FLOOR,
                ),
            )
        )


def publish_files(uploads: Sequence[SealingUpload], *, instance_path: Path) -> None:
    """Move committed ciphertext from "partial" to its final name (atomic rename).

    The access and modification times are set to the epoch: a file's times would otherwise
    record the exact moment of a submission, which the database deliberately does not keep.
    (The inode change time cannot be set; see docs/threat-model.md.)
    """
    directory = attachment_directory(instance_path)
    for upload in uploads:
        final = directory / upload.attachment_id.hex
        os.replace(upload.partial_path, final)
        os.utime(final, (0, 0))


def delete_files(attachment_ids: Sequence[uuid.UUID], *, instance_path: Path) -> None:
    """Remove attachment ciphertext files (their keys are gone with the report's wraps)."""
    directory = attachment_directory(instance_path)
    for attachment_id in attachment_ids:
        (directory / attachment_id.hex).unlink(missing_ok=True)


@dataclass(frozen=True)
class AttachmentMeta:
    """Decrypted metadata of an attachment."""

    name: str
    type: str
    size: int
    sha256: str


def open_meta(row: Attachment, *, data_key: bytes) -> AttachmentMeta:
    """Decrypt an attachment's metadata with the data key of its envelope."""
    return open_meta_blob(
        row.meta_sealed, attachment_id=row.id, envelope_id=row.envelope_id, data_key=data_key
    )


def open_meta_blob(
    blob: bytes, *, attachment_id: uuid.UUID, envelope_id: uuid.UUID, data_key: bytes
) -> AttachmentMeta:
    """Decrypt sealed attachment metadata (bound to the attachment and its envelope)."""
    raw = crypto.open_bytes(
        blob, data_key=data_key, report_id=envelope_id, name=meta_field_name(attachment_id)
    )
    values = json.loads(raw)
    return AttachmentMeta(
        name=str(values["name"]),
        type=str(values["type"]),
        size=int(values["size"]),
        sha256=str(values["sha256"]),
    )


class _HashingSink(io.RawIOBase):
    """Hash plaintext on its way to ``sink``, so the bytes written out are the bytes checked."""

    def __init__(self, sink: BinaryIO) -> None:
        """Start an empty SHA-256 in front of ``sink``."""
        self.digest = hashlib.sha256()
        self._sink = sink

    # Narrower than RawIOBase.write (any buffer): open_stream only ever writes bytes.
    def write(self, data: bytes) -> int:  # type: ignore[override]
        """Hash ``data`` and write it to the sink."""
        self.digest.update(data)
        self._sink.write(data)
        return len(data)


def decrypt_to(
    row: Attachment, *, data_key: bytes, source: BinaryIO, sink: BinaryIO
) -> AttachmentMeta:
    """Decrypt an attachment into ``sink`` and verify its SHA-256 against the sealed metadata."""
    return decrypt_sealed_to(
        row.meta_sealed,
        attachment_id=row.id,
        envelope_id=row.envelope_id,
        data_key=data_key,
        source=source,
        sink=sink,
    )


def decrypt_sealed_to(
    meta_sealed: bytes,
    *,
    attachment_id: uuid.UUID,
    envelope_id: uuid.UUID,
    data_key: bytes,
    source: BinaryIO,
    sink: BinaryIO,
) -> AttachmentMeta:
    """Decrypt an attachment's ciphertext from ``source`` into ``sink`` and verify its SHA-256
    against the sealed metadata (raise AttachmentError on a mismatch)."""
    meta = open_meta_blob(
        meta_sealed, attachment_id=attachment_id, envelope_id=envelope_id, data_key=data_key
    )
    hashing = _HashingSink(sink)
    key = crypto.attachment_key(data_key, attachment_id=attachment_id)
    crypto.open_stream(source, key=key, sink=hashing, size=meta.size)  # type: ignore[arg-type]
    if hashing.digest.hexdigest() != meta.sha256:
        raise AttachmentError("the file's SHA-256 does not match the one recorded at intake")
    return meta
