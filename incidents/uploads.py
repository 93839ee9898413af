"""Evidence uploads that never touch the disk in clear.

Werkzeug spools any uploaded file over 500 KiB to a temporary file. The request class of the
register (``incidents.requests``) replaces that with ``SealingUpload``: every byte a witness
sends is encrypted as it is parsed (STREAM, 64 KiB chunks, under a key derived from the data key
of the report or addition being filed) and only ciphertext is written, to a "partial" file in the
instance folder. The first bytes are kept in memory just long enough to recognise the file type
by its content and, for images, to refuse decompression bombs from the header. A file that is
refused is not encrypted further: its remaining bytes are read and dropped, so that the rest of
the form survives and the witness gets a message next to the field.

Files become permanent only when the service commits the report or addition; on any error, and
at the end of every request, partial files are deleted (they hold ciphertext only).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from flask import g, has_request_context

from incidents import crypto
from incidents.appstate import current_settings

SNIFF_BYTES = 1024 * 1024
MAX_IMAGE_PIXELS = 120_000_000
PARTIAL_DIRECTORY = "partial"


@dataclass(frozen=True)
class MediaType:
    """A file type the register accepts, recognised from content."""

    code: str
    mime: str
    is_image: bool = False


JPEG = MediaType("jpeg", "image/jpeg", is_image=True)
PNG = MediaType("png", "image/png", is_image=True)
WEBP = MediaType("webp", "image/webp", is_image=True)
HEIC = MediaType("heic", "image/heic")
PDF = MediaType("pdf", "application/pdf")
MP4 = MediaType("mp4", "video/mp4")
MOV = MediaType("mov", "video/quicktime")
M4A = MediaType("m4a", "audio/mp4")
AAC = MediaType("aac", "audio/aac")
OGG = MediaType("ogg", "audio/ogg")
MP3 = MediaType("mp3", "audio/mpeg")
TEXT = MediaType("text", "text/plain")

_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_MP4_BRANDS = {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"dash"}
_M4A_BRANDS = {b"M4A ", b"M4B ", b"M4P "}
_MARKUP_MARKERS = (b"<!doctype", b"<html", b"<script", b"<svg", b"<?xml", b"<body", b"<iframe")
_TAG_PATTERN = re.compile(
    rb"<(?:[a-zA-Z][a-zA-Z0-9-]*(?:\s[^<>]{0,2000})?/?|/[a-zA-Z][a-zA-Z0-9-]*\s*|[!?][^<>]{0,2000})>"
)


def sniff_type(head: bytes) -> MediaType | None:
    """Recognise an accepted type from the first bytes; None for anything else.

    Markup (HTML, SVG, XML), executables and scripts are never accepted, whatever their name.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"OggS"):
        return OGG
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIC_BRANDS:
            return HEIC
        if brand == b"qt  ":
            return MOV
        if brand in _M4A_BRANDS:
            return M4A
        if brand in _MP4_BRANDS:
            return MP4
        return None
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return MP3
    if head[:2] in (b"\xff\xf1", b"\xff\xf9"):
        return AAC
    return TEXT if _is_plain_text(head) else None


def _is_plain_text(head: bytes) -> bool:
    """UTF-8 text without NULs, control characters, markup or a script's #! line."""
    if not head or head.startswith(b"#!"):
        return False
    sample = head[:SNIFF_BYTES]
    # Only a character cut off by the end of the sample is fine, and only when the sample is
    # not the whole file: invalid bytes anywhere else (even in a file's last bytes) are binary.
    is_whole_file = len(sample) < SNIFF_BYTES
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(sample, final=is_whole_file)
    except UnicodeDecodeError:
        return False
    if any(ord(ch) < 32 and ch not in "\n\r\t\f" for ch in text):
        return False
    lowered = sample.lower().lstrip()
    if any(marker in lowered[:4096] for marker in _MARKUP_MARKERS):
        return False
    # Any tag-like construct (<img ...>, <a href=...>) makes it markup a browser would render.
    return _TAG_PATTERN.search(sample) is None


def image_pixels(head: bytes) -> int | None:
    """Pixel count of an image from its header (Pillow reads the header only), or None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(head)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        # Pillow refuses a header over twice its own limit before telling the size: the image
        # has at least that many pixels, more than MAX_IMAGE_PIXELS, so it is "too large".
        return 2 * (Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS) + 1
    except Exception:  # any parse failure (Pillow raises many kinds) means "header not readable"
        return None
    return width * height


# --------------------------------------------------------------------------- uploads


@dataclass
class SealingUpload:
    """One uploaded file, encrypted as Werkzeug writes it; only ciphertext reaches the disk."""

    attachment_id: uuid.UUID
    filename: str
    partial_path: Path
    max_bytes: int
    sealer: crypto.StreamSealer | None
    sink: IO[bytes] | None
    problem: str | None = None
    size: int = 0
    sha256: str = ""
    media: MediaType | None = None
    padded_size: int = 0
    _head: bytearray = field(default_factory=bytearray)
    _digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    _finished: bool = False

    def write(self, data: bytes) -> int:
        """Receive the next bytes from the parser."""
        self.size += len(data)
        if self.problem is not None:
            return len(data)
        if self.size > self.max_bytes:
            self._refuse("too_large")
            return len(data)
        self._digest.update(data)
        if len(self._head) < SNIFF_BYTES:
            self._head += data[: SNIFF_BYTES - len(self._head)]
        if self.sealer is not None:
            self.sealer.write(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Werkzeug seeks to 0 when the part ends: that is when the file is checked and closed."""
        if offset == 0 and whence == 0:
            self.finish()
        return 0

    def finish(self) -> None:
        """Close the stream, check the content, forget the plaintext head."""
        if self._finished:
            return
        self._finished = True
        if self.problem is None:
            self._check_content(bytes(self._head))
        if self.problem is None and self.sealer is not None:
            self.padded_size = self.sealer.finish()
            self.sha256 = self._digest.hexdigest()
        self._head = bytearray()
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        if self.problem is not None:
            self.discard()

    def _check_content(self, head: bytes) -> None:
        """Refuse empty, unknown or oversized/unreadable image files; else record the type."""
        if self.size == 0:
            self._refuse("empty")
            return
        media = sniff_type(head)
        if media is None:
            self._refuse("unknown_type")
            return
        if media.is_image:
            pixels = image_pixels(head)
            if pixels is None:
                self._refuse("unreadable_image")
                return
            if pixels > MAX_IMAGE_PIXELS:
                self._refuse("image_too_large")
                return
        self.media = media

    def _refuse(self, problem: str) -> None:
        """Mark the upload refused, stop sealing and delete what was written."""
        self.problem = problem
        self.sealer = None
        self._head = bytearray()
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        self.discard()

    def discard(self) -> None:
        """Delete the partial ciphertext file."""
        self.partial_path.unlink(missing_ok=True)

    # File-like methods Werkzeug and FileStorage may call; reading plaintext is impossible.
    def read(self, size: int = -1) -> bytes:
        """Nothing can be read back: the plaintext is gone."""
        return b""

    def readline(self, size: int = -1) -> bytes:
        """Nothing can be read back: the plaintext is gone."""
        return b""

    def close(self) -> None:
        """Closing finishes the stream."""
        self.finish()


@dataclass
class UploadBatch:
    """The files of one request, sealed under the data key of the envelope being filed."""

    envelope_id: uuid.UUID
    data_key: bytes
    directory: Path
    max_files: int
    max_bytes: int
    uploads: list[SealingUpload] = field(default_factory=list)

    def open_upload(self, filename: str) -> SealingUpload:
        """Start sealing the next file (or drop it when there are already enough)."""
        attachment_id = uuid.uuid4()
        partial = self.directory / PARTIAL_DIRECTORY / attachment_id.hex
        if len([u for u in self.uploads if u.problem != "too_many"]) >= self.max_files:
            upload = SealingUpload(attachment_id, filename, partial, self.max_bytes, None, None)
            upload.problem = "too_many"
            self.uploads.append(upload)
            return upload
        partial.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        sink = os.fdopen(fd, "wb")
        key = crypto.attachment_key(self.data_key, attachment_id=attachment_id)
        sealer = crypto.StreamSealer(key, sink=sink)
        upload = SealingUpload(attachment_id, filename, partial, self.max_bytes, sealer, sink)
        self.uploads.append(upload)
        return upload

    @property
    def files(self) -> list[SealingUpload]:
        """Uploads that carried a file (empty "no file chosen" parts are ignored)."""
        return [u for u in self.uploads if not (u.problem == "empty" and not u.filename)]

    def problems(self) -> list[SealingUpload]:
        """Uploads that were refused."""
        return [u for u in self.files if u.problem is not None]

    def accepted(self) -> list[SealingUpload]:
        """Uploads sealed and ready to be committed."""
        return [u for u in self.files if u.problem is None]

    def discard_all(self) -> None:
        """Delete every partial file of this request."""
        for upload in self.uploads:
            upload.finish()
            upload.discard()


BATCH_KEY = "incidents_upload_batch"
ATTACHMENT_DIRECTORY = "attachments"


def current_batch(*, create: bool = False) -> UploadBatch | None:
    """The upload batch of this request, created on first use (by the request class)."""
    if not has_request_context():
        return None
    batch: UploadBatch | None = g.get(BATCH_KEY)
    if batch is None and create:
        settings = current_settings()
        batch = UploadBatch(
            envelope_id=uuid.uuid4(),
            data_key=crypto.new_data_key(),
            directory=attachment_directory(settings.instance_path),
            max_files=settings.max_attachments,
            max_bytes=settings.max_attachment_bytes,
        )
        setattr(g, BATCH_KEY, batch)
    return batch


def attachment_directory(instance_path: Path) -> Path:
    """Where attachment ciphertext lives (final files; partial ones in a subfolder)."""
    return instance_path / ATTACHMENT_DIRECTORY


def discard_uncommitted(_error: BaseException | None = None) -> None:
    """Teardown: delete the partial files of this request (committed ones were moved away)."""
    batch: UploadBatch | None = g.get(BATCH_KEY)
    if batch is not None:
        batch.discard_all()
