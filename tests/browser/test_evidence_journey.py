"""The evidence journey in the system Chromium with JavaScript disabled, on both databases.

A witness files a report with a 20 MB photo that carries a GPS position and a unique marker
(in its EXIF, in a JPEG comment and repeated through the file). While the upload runs, a second
thread searches every byte the server process could have written for the marker: the files
under the system temporary directory that changed, the instance folder (where the ciphertext
lands), ``tmp_path`` and every file the process holds open, deleted ones included (an unlinked
spool file is invisible to a directory scan). The upload is held half-way until one full scan
has run, so "while" is certain, not a matter of timing. After the upload the same places, the
database (SQLite file, WAL and shared memory, or a ``pg_dump``) and the logs are searched again.

The witness then comes back with the receipt, reads a reply sealed to the receipt-derived key,
adds text and a PDF, and withdraws consent to statistics.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import Page

from incidents import uploads
from incidents.config import Settings
from incidents.services import casefile
from incidents.services.reports import list_report_shells
from tests.browser.test_witness_journey import (
    Answers,
    backend_name,
    changed_since,
    files_under,
    fill_report,
    is_postgresql,
    leaks_in,
    pg_dump,
    receipt_on,
    send_report,
    snapshot,
)
from tests.conftest import KeyFiles
from tests.factories import jpeg_with_gps, make_reply, minimal_pdf

pytestmark = pytest.mark.browser

PHOTO_SIZE = 20 * 1024 * 1024
HALF_WAY = PHOTO_SIZE // 2
SCAN_DEADLINE_SECONDS = 60
PAUSE_LIMIT_SECONDS = 30
ADDED = "Your information was added and encrypted."


def evidence_photo(marker: str) -> bytes:
    """A 20 MB JPEG with GPS EXIF; ``marker`` in its EXIF, in a comment and all through it."""
    photo = jpeg_with_gps(size=(640, 480), comment=marker)
    comment = marker.encode("ascii") * 8
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    photo = photo[:2] + segment + photo[2:]  # a COM segment right after SOI
    # Trailing data after the image (phones append such blocks): random bytes with the
    # marker every 16 KiB, so any 64 KiB piece of the file would give it away.
    block = 16 * 1024
    filler = bytearray()
    while len(photo) + len(filler) < PHOTO_SIZE:
        filler += marker.encode("ascii") + os.urandom(block - len(marker))
    return photo + bytes(filler[: PHOTO_SIZE - len(photo)])


def open_regular_files() -> Iterator[tuple[str, Path]]:
    """Every regular file this process holds open: (what it points to, a path to read it)."""
    for fd in os.listdir("/proc/self/fd"):
        path = Path("/proc/self/fd", fd)
        try:
            target = os.readlink(path)
            if stat.S_ISREG(os.stat(path).st_mode):
                yield target, path
        except OSError:
            continue  # closed meanwhile, or the listing's own descriptor


@dataclass
class Scanner:
    """Searches the server's places for the marker, in passes, from a second thread."""

    marker: str
    places: list[Path]
    temp_root: Path
    temp_before: dict[Path, tuple[int, int, int]]
    witness_files: set[Path]
    found: list[str] = field(default_factory=list)
    passes: int = 0
    midway_partials: list[int] = field(default_factory=list)

    def is_witness_file(self, target: str) -> bool:
        """The witness's own files (on their phone) are not the server's."""
        return Path(target.removesuffix(" (deleted)")) in self.witness_files

    def read(self, path: Path) -> bytes:
        """Read a file that may vanish meanwhile."""
        try:
            return path.read_bytes()
        except (FileNotFoundError, PermissionError, IsADirectoryError, OSError):
            return b""

    def scan_once(self) -> None:
        """One full pass over every place; names every file the marker was found in."""
        paths = {path for place in self.places if place.exists() for path in files_under(place)}
        paths |= set(changed_since(self.temp_root, self.temp_before))
        for path in sorted(paths - self.witness_files):
            self.found += leaks_in(self.read(path), [self.marker], str(path))
        for target, path in open_regular_files():
            if not self.is_witness_file(target):
                self.found += leaks_in(self.read(path), [self.marker], f"open file {target}")
        self.passes += 1


def scan_during(
    scanner: Scanner, *, done: threading.Event, midway: threading.Event, scanned: threading.Event
) -> threading.Thread:
    """Scan in a loop until ``done``; when the upload pauses at ``midway``, scan and release it."""

    def loop() -> None:
        deadline = time.monotonic() + SCAN_DEADLINE_SECONDS
        try:
            while not done.is_set() and time.monotonic() < deadline:
                scanner.scan_once()
                if midway.is_set() and not scanned.is_set():
                    scanner.scan_once()  # a whole pass that began while the upload waits
                    partial = scanner.places[0] / "attachments" / uploads.PARTIAL_DIRECTORY
                    scanner.midway_partials = [p.stat().st_size for p in partial.glob("*")]
                    scanned.set()
        finally:
            scanned.set()  # never leave the upload waiting

    thread = threading.Thread(target=loop, name="marker-scanner", daemon=True)
    thread.start()
    return thread


def database_bytes(settings: Settings) -> tuple[bytes, str]:
    """The database as a seizer would copy it: SQLite file, WAL and SHM, or a pg_dump."""
    if settings.database_url.startswith("postgresql"):
        return pg_dump(settings.database_url), "pg_dump"
    database = Path(sa.make_url(settings.database_url).database or "")
    files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    return b"".join(path.read_bytes() for path in files if path.exists()), "SQLite files"


def test_a_20_mb_photo_never_reaches_the_disk_in_clear_and_the_witness_follows_up(
    app: Flask,
    live_server: str,
    no_js_page: Page,
    organizer: KeyFiles,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings: Settings = app.extensions["incidents.settings"]
    page = no_js_page

    # Given: on the witness's phone, a 20 MB photo with a GPS position and a unique marker
    marker = f"GLACIER-{secrets.token_hex(8)}"
    phone = tmp_path_factory.mktemp("witness-phone")
    photo = evidence_photo(marker)
    photo_path = phone / "IMG_2041.jpg"
    photo_path.write_bytes(photo)
    pdf = minimal_pdf("summons")
    pdf_path = phone / "summons.pdf"
    pdf_path.write_bytes(pdf)
    assert len(photo) == PHOTO_SIZE
    caplog.set_level(logging.DEBUG)  # from here on, every log line of the server is kept
    capfd.readouterr()

    # And: a scanner of the server's places, shown to find the marker where it is: in a file
    # on disk, and in a deleted temporary file that is still open (how Werkzeug spools)
    temp_root = Path(tempfile.gettempdir())
    temp_before = snapshot(temp_root)

    def new_scanner() -> Scanner:
        return Scanner(
            marker=marker,
            places=[settings.instance_path, tmp_path],
            temp_root=temp_root,
            temp_before=temp_before,
            witness_files={photo_path, pdf_path},
        )

    assert leaks_in(photo_path.read_bytes(), [marker], "the photo"), "the scan would miss it"
    with tempfile.TemporaryFile(dir=tmp_path) as spool:
        spool.write(photo[:100_000])
        spool.flush()
        probe = new_scanner()
        probe.scan_once()
    assert any("(deleted)" in place for place in probe.found), probe.found
    scanner = new_scanner()

    # And: the upload waits half-way until the scanner has made a whole pass
    midway, scanned, done = threading.Event(), threading.Event(), threading.Event()
    real_write = uploads.SealingUpload.write

    def pausing_write(self: uploads.SealingUpload, data: bytes) -> int:
        written = real_write(self, data)
        if self.size >= HALF_WAY and not midway.is_set():
            midway.set()
            scanned.wait(timeout=PAUSE_LIMIT_SECONDS)
        return written

    monkeypatch.setattr(uploads.SealingUpload, "write", pausing_write)

    # When: the witness, without JavaScript, fills the form, chooses the photo and sends it
    page.goto(f"{live_server}/report")
    fill_report(
        page,
        Answers(
            category="surveillance",
            occurred_on="2025-05-09",
            country="RS",
            city="belgrade",
            narrative="A man photographed us at the rally and followed me home.",
            consent_contact=False,
            consent_statistics=True,
        ),
    )
    page.set_input_files("form.report-form input[type=file]", photo_path)
    thread = scan_during(scanner, done=done, midway=midway, scanned=scanned)
    try:
        response = send_report(page)
    finally:
        done.set()
        thread.join(timeout=SCAN_DEADLINE_SECONDS)
    assert not thread.is_alive()

    # Then: the report is filed and a receipt shown
    assert response.status == 200
    receipt = receipt_on(page)

    # And: the scanner ran during the upload, while half the photo was sealed on disk
    assert midway.is_set(), "the upload never reached half-way"
    assert scanner.passes >= 2
    assert scanner.midway_partials, "no ciphertext was being written while the scan ran"
    assert max(scanner.midway_partials) >= HALF_WAY // 2

    # And: after the upload, nothing anywhere holds the marker: files, database and logs
    scanner.scan_once()
    stored, where = database_bytes(settings)
    found = scanner.found + leaks_in(stored, [marker], where)
    captured = capfd.readouterr()
    logs = [caplog.text, *(r.getMessage() for r in caplog.records), captured.out, captured.err]
    found += leaks_in("\n".join(logs).encode("utf-8"), [marker], "the logs")
    assert found == []

    # And: the ciphertext is there, and the organizer key gives back the exact photo
    with app.app_context():
        (shell,) = list_report_shells()
        report_id = uuid.UUID(shell.id)
        meta, data = casefile.open_attachment_bytes(
            report_id, 1, private_key=organizer.private_key, instance_path=settings.instance_path
        )
    assert data == photo
    assert (meta.name, meta.type, meta.size) == ("IMG_2041.jpg", "image/jpeg", PHOTO_SIZE)
    assert meta.sha256 == hashlib.sha256(photo).hexdigest()
    stored_files = list((settings.instance_path / "attachments").glob("[0-9a-f]*"))
    assert len(stored_files) == 1
    assert stored_files[0].stat().st_size > PHOTO_SIZE

    # Given: a legal-aid volunteer's reply, sealed on a desk to the witness key
    reply = "We received the photo. A lawyer will contact the police for you this week."
    make_reply(app, report_id, receipt=receipt, body=reply, organizer_key=organizer.public_key)

    # When: the witness comes back with the receipt, typed in small letters
    page.goto(f"{live_server}/followup")
    page.fill("input[name=receipt]", receipt.lower())
    page.click("form.narrow-form button[type=submit]")
    page.wait_for_load_state()

    # Then: they read the reply and their consents
    assert page.locator("h1").inner_text() == "Your report"
    assert page.locator(".reply-body").all_inner_texts() == [reply]
    assert "Counted in anonymous statistics: yes" in page.locator("body").inner_text()

    # When: they add text and a PDF
    added_text = "The summons came by post two days later."
    add_form = page.locator("form[action$='/followup/add']")
    add_form.locator("textarea[name=text]").fill(added_text)
    add_form.locator("input[type=file]").set_input_files(pdf_path)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        add_form.locator("button[type=submit]").click()
    page.wait_for_load_state()

    # Then: the addition is confirmed, and the reply is still shown
    assert posted.value.status == 200
    assert page.locator(".alert-info").inner_text().strip() == ADDED
    assert page.locator(".reply-body").all_inner_texts() == [reply]

    # When: they withdraw consent to statistics
    consent_form = page.locator("form[action$='/followup/consent']")
    consent_form.locator("input[name=withdraw_statistics]").check()
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        consent_form.locator("button[type=submit]").click()
    page.wait_for_load_state()

    # Then: the page and the shell say statistics are withdrawn; contact stays as it was
    assert posted.value.status == 200
    assert "Counted in anonymous statistics: no" in page.locator("body").inner_text()
    page.screenshot(path=artifacts / f"case-page-{backend_name(app)}.png", full_page=True)
    with app.app_context():
        (shell,) = list_report_shells()
        case = casefile.open_case(report_id, private_key=organizer.private_key)
    assert shell.consent_statistics is False
    assert shell.consent_contact is False

    # And: the organizer's key opens the addition, both files and the reply, in order
    assert [a.text for a in case.additions] == [added_text]
    assert [(a.seq, a.name, a.type, a.sha256) for a in case.attachments] == [
        (1, "IMG_2041.jpg", "image/jpeg", hashlib.sha256(photo).hexdigest()),
        (2, "summons.pdf", "application/pdf", hashlib.sha256(pdf).hexdigest()),
    ]
    assert [r.body for r in case.replies] == [reply]

    # And: neither the reply nor the added text is in the database in clear
    stored, where = database_bytes(settings)
    assert leaks_in(stored, [reply, added_text], where) == []
    assert is_postgresql(app) == where.startswith("pg_dump")
