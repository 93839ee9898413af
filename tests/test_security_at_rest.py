"""Ciphertext at rest (DESIGN S1, S2, S6): what a seized server's disk and logs hold.

A report is filed through the form with a unique phrase in every sealed field and an unusual
exact date; then the database files (SQLite file, WAL and shared memory, or a ``pg_dump`` of
PostgreSQL), the instance folder, new files in the system temp directory and every log record
are searched for them, as bytes in several encodings. The same report must still open with the
organizer's private key.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from incidents import crypto
from incidents.config import Settings
from incidents.db import db
from incidents.models import SEALED_FIELDS, Report, Wrap
from incidents.services.casefile import open_case
from tests.conftest import KeyFiles, require_service
from tests.factories import submit_report

EXACT_DATE = "2003-07-29"  # a Tuesday of ISO week 2003-W31; not today, not a default
TEXT_FIELDS = ("place_detail", "narrative", "targeted_person", "perpetrator_description", "contact")
PG_DUMP_FALLBACK = Path("/usr/lib/postgresql/15/bin/pg_dump")
MAX_SCANNED_FILE = 256 * 1024 * 1024


def encodings_of(text: str) -> list[bytes]:
    """The byte forms in which ``text`` could be found on disk or in a dump."""
    utf8 = text.encode("utf-8")
    return [
        utf8,
        text.encode("utf-16-le"),
        text.encode("utf-16-be"),
        utf8.hex().encode("ascii"),  # bytea in a plain pg_dump, hex dumps in logs
        utf8.hex().upper().encode("ascii"),
    ]


def needles_for(*texts: str) -> list[bytes]:
    """Every encoding of every text."""
    return [needle for text in texts for needle in encodings_of(text)]


def files_under(*roots: Path) -> Iterator[Path]:
    """Regular files under the given folders (symlinks not followed)."""
    for root in roots:
        if not root.exists():
            continue
        for directory, _subdirs, names in os.walk(root, followlinks=False):
            for name in names:
                path = Path(directory, name)
                if path.is_file() and not path.is_symlink():
                    yield path


def find_in_files(paths: Iterable[Path], needles: list[bytes]) -> list[str]:
    """``path: needle`` for every file that contains one of the needles."""
    hits = []
    for path in paths:
        try:
            if path.stat().st_size > MAX_SCANNED_FILE:
                continue
            data = path.read_bytes()
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            continue  # deleted meanwhile by another process, or not ours to read
        hits += [f"{path}: {needle[:40]!r}" for needle in needles if needle in data]
    return hits


def temp_snapshot() -> dict[Path, tuple[int, int]]:
    """(mtime, size) of every file in the system temp directory."""
    snapshot = {}
    for path in files_under(Path(tempfile.gettempdir())):
        try:
            stat = path.stat()
        except (FileNotFoundError, PermissionError):
            continue
        snapshot[path] = (stat.st_mtime_ns, stat.st_size)
    return snapshot


def sqlite_files(settings: Settings) -> list[Path]:
    """The SQLite database file and its WAL and shared-memory files (those that exist)."""
    database = sa.engine.make_url(settings.database_url).database
    assert database
    main = Path(database)
    return [p for p in (main, Path(f"{main}-wal"), Path(f"{main}-shm")) if p.exists()]


def pg_dump_output(settings: Settings) -> bytes:
    """A plain-text ``pg_dump`` of the test database (schema and data)."""
    pg_dump = shutil.which("pg_dump") or (
        str(PG_DUMP_FALLBACK) if PG_DUMP_FALLBACK.exists() else None
    )
    if pg_dump is None:
        require_service("pg_dump is not installed")
    assert pg_dump is not None
    url = sa.engine.make_url(settings.database_url).set(drivername="postgresql")
    completed = subprocess.run(
        [pg_dump, "--no-owner", "--dbname", url.render_as_string(hide_password=False)],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return completed.stdout


def stored_report(app: Flask) -> tuple[Report, list[Wrap]]:
    """The only stored report and its wraps."""
    with app.app_context():
        report = db.session.scalars(sa.select(Report)).one()
        wraps = list(db.session.scalars(sa.select(Wrap)).all())
        db.session.expunge_all()
    return report, wraps


@pytest.fixture
def phrase() -> str:
    """A phrase that exists nowhere else."""
    return "ZEBRA-" + secrets.token_hex(8)


@pytest.fixture
def sealed_values(phrase: str) -> dict[str, str]:
    """One distinct value per sealed text field, each carrying the phrase."""
    return {
        "place_detail": f"{phrase} Knez Mihailova 12, third floor",
        "narrative": f"{phrase} They waited at the door and named my sister in Perm.",
        "targeted_person": f"{phrase} Ivan Petrov",
        "perpetrator_description": f"{phrase} grey Lada, plates 777",
        "contact": f"{phrase} signal: ivan.77",
    }


def test_a_filed_report_leaves_no_plaintext_on_disk_temp_or_logs(
    app: Flask,
    client: FlaskClient,
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    phrase: str,
    sealed_values: dict[str, str],
) -> None:
    """Given an empty register and logging at DEBUG everywhere,
    when a witness files a report with the phrase in every sealed field and an exact date,
    then neither the phrase, nor any field value, nor the exact date is in any byte of the
    database, its WAL, the instance folder, new temp files or the logs,
    while the ciphertext itself is found there (so the search looks at the right bytes).
    """
    for logger in ("", "incidents", "sqlalchemy", "sqlalchemy.engine", "werkzeug", "flask"):
        caplog.set_level(logging.DEBUG, logger=logger)  # SQL statements and rows included
    before = temp_snapshot()

    response = submit_report(client, occurred_on=EXACT_DATE, date_precision="day", **sealed_values)

    assert response.status_code == 200
    report, wraps = stored_report(app)
    assert report.occurred_period == "2003-W31"
    needles = needles_for(phrase, EXACT_DATE, *sealed_values.values())
    # A blob larger than a database page is split, so look for a slice of it.
    ciphertext = report.narrative_sealed[2:66]

    if settings.database_url.startswith("sqlite"):
        live_files = sqlite_files(settings)
        assert any(ciphertext in path.read_bytes() for path in live_files)
        assert find_in_files(live_files, needles) == []
        with app.app_context():
            db.engine.dispose()  # checkpoint the WAL into the main file, then look again
        checkpointed = sqlite_files(settings)
        assert ciphertext in checkpointed[0].read_bytes()
        assert find_in_files(checkpointed, needles) == []
    else:
        dump = pg_dump_output(settings)
        assert ciphertext.hex().encode() in dump
        assert wraps[0].blob.hex().encode() in dump
        assert [needle for needle in needles if needle in dump] == []

    instance_and_test_files = list(files_under(settings.instance_path, tmp_path))
    assert find_in_files(instance_and_test_files, needles) == []

    after = temp_snapshot()
    changed = [path for path, stamp in after.items() if before.get(path) != stamp]
    assert find_in_files(changed, needles) == []

    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records), "SQL not logged"
    logged = "\n".join(
        [caplog.text]
        + [
            f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
            for record in caplog.records
        ]
    ).encode("utf-8")
    assert [needle for needle in needles if needle in logged] == []
    log_files = [p for p in files_under(settings.instance_path, tmp_path) if p.suffix == ".log"]
    assert find_in_files(log_files, needles) == []


def test_the_clear_columns_hold_only_the_coarse_shell(
    app: Flask, client: FlaskClient, phrase: str, sealed_values: dict[str, str]
) -> None:
    submit_report(client, occurred_on=EXACT_DATE, **sealed_values)

    with app.app_context():
        row = db.session.execute(sa.select(Report.__table__)).mappings().one()
    clear = {
        name: value
        for name, value in row.items()
        if not name.endswith("_sealed")
        and name not in ("witness_lookup_hash", "witness_public_key")
    }
    for name, value in clear.items():
        text = str(value)
        assert phrase not in text, name
        assert EXACT_DATE not in text, name
        assert "07-29" not in text, name
    assert clear["occurred_period"] == "2003-W31"


def test_sealed_columns_hold_format_v1_blobs(
    app: Flask, client: FlaskClient, organizer: KeyFiles, sealed_values: dict[str, str]
) -> None:
    submit_report(client, occurred_on=EXACT_DATE, **sealed_values)

    report, wraps = stored_report(app)
    for name, blob in report.sealed_fields().items():
        assert blob[0] == crypto.FORMAT_VERSION == 1, name
        assert blob[1] == crypto.FIELD_SUITE_AES256GCM == 1, name
        floor = crypto.LONG_FIELD_FLOOR if name == "narrative" else crypto.SHORT_FIELD_FLOOR
        assert len(blob) == 2 + crypto.NONCE_LENGTH + floor + 16, name
    nonces = {blob[2 : 2 + crypto.NONCE_LENGTH] for blob in report.sealed_fields().values()}
    assert len(nonces) == len(SEALED_FIELDS), "every field has its own nonce"
    assert len(wraps) == 1
    wrap = wraps[0]
    assert wrap.report_id == report.id
    assert wrap.key_id == organizer.public_key.key_id_hex
    assert wrap.blob[0] == crypto.FORMAT_VERSION
    assert wrap.blob[1] == crypto.SUITE_XWING
    assert wrap.blob[2 : 2 + crypto.KEY_ID_LENGTH] == organizer.public_key.key_id


def test_ciphertext_length_does_not_reveal_text_length(app: Flask, client: FlaskClient) -> None:
    """Given a 10-character and a 3,000-character narrative (and short fields of 1 and 200
    characters), when both reports are filed, then their sealed blobs have equal lengths.
    """
    submit_report(client, narrative="x" * 10, place_detail="a", targeted_person="b")
    submit_report(client, narrative="y" * 3000, place_detail="c" * 200, targeted_person="d" * 200)

    with app.app_context():
        rows = db.session.scalars(sa.select(Report)).all()
        lengths = [{name: len(blob) for name, blob in row.sealed_fields().items()} for row in rows]
    assert len(lengths) == 2
    assert lengths[0] == lengths[1]
    assert lengths[0]["narrative"] == 2 + crypto.NONCE_LENGTH + crypto.LONG_FIELD_FLOOR + 16


def test_the_stored_report_opens_with_the_organizer_key(
    app: Flask, client: FlaskClient, organizer: KeyFiles, sealed_values: dict[str, str]
) -> None:
    submit_report(client, occurred_on=EXACT_DATE, **sealed_values)

    with app.app_context():
        report_id = db.session.scalars(sa.select(Report.id)).one()
        opened = open_case(report_id, private_key=organizer.private_key)

    assert opened.sealed == {"occurred_on": EXACT_DATE, **sealed_values}
    assert opened.shell.id == str(report_id)
    assert opened.shell.occurred_period == "2003-W31"


def test_the_stored_report_does_not_open_with_another_key(
    app: Flask, client: FlaskClient, organizer: KeyFiles
) -> None:
    submit_report(client)
    other = crypto.PrivateKey.generate()

    with app.app_context():
        report = db.session.scalars(sa.select(Report)).one()
        wrap = db.session.scalars(sa.select(Wrap)).one()
        with pytest.raises(crypto.DecryptionError):
            crypto.open_report(
                report.sealed_fields(), report_id=report.id, wrap=wrap.blob, private_key=other
            )
        with pytest.raises(crypto.DecryptionError):
            crypto.open_report(
                report.sealed_fields(),
                report_id=uuid.uuid4(),
                wrap=wrap.blob,
                private_key=organizer.private_key,
            )
