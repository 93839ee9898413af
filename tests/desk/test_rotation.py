"""Organizer key rotation from the desk side (incidents.desk.rotation) against the test server.

The desk proves it holds the old and the new key, re-wraps every report, addition, reply and
note key to the new key, and moves the server's pin. Interrupted runs finish when run again,
also when only the answer to the last step was lost. Wraps are read raw from the tables, so the
checks do not depend on the services under test. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner

from incidents import create_app, crypto
from incidents.appstate import current_keyring
from incidents.cli import DESK_TOKEN_VARIABLE, PASSPHRASE_VARIABLE
from incidents.config import Settings
from incidents.db import db
from incidents.desk import work
from incidents.desk.client import NetworkError, ServerClient, UrllibTransport
from incidents.desk.rotation import RotationResult, rotate_organizer_key
from incidents.keyring import Keyring
from incidents.models import Report, User
from incidents.services import bundles, casefile, demo, desk_outputs, followup, organizer_keys
from tests.conftest import KeyFiles, empty_database
from tests.desk.conftest import FlaskTransport, issue_token, key_files
from tests.factories import (
    make_filed_report,
    make_reply,
    make_user,
    submit_report,
    use_fast_password_hashing,
)

SEEDED = 300
BATCH = 100
FIRST_BATCH = [
    "GET /api/v1/session",
    "POST /api/v1/organizer-key/challenge",
    "POST /api/v1/organizer-key/start",
    f"GET /api/v1/organizer-key/pending?limit={BATCH}",
    "POST /api/v1/organizer-key/wraps",  # refused: the token is not proven yet
    "POST /api/v1/proof",
    "POST /api/v1/proof/answer",
    "POST /api/v1/organizer-key/wraps",  # sent again, now stored
    f"GET /api/v1/organizer-key/pending?limit={BATCH}",
]
"""The calls of a first run up to the first batch stored and the next page asked for."""


@pytest.fixture(autouse=True)
def _fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_password_hashing(monkeypatch)


@dataclass
class Rotation:
    """What a rotation run needs: the server's transport, an organizer's token, the two keys."""

    app: Flask
    transport: FlaskTransport
    token: str
    boss_id: int
    old: crypto.PrivateKey
    new: crypto.PrivateKey

    def make_client(self, key_id: str) -> ServerClient:
        """A desk client presenting ``key_id`` and holding that key (it proves it when the
        server asks), over the shared (breakable) transport."""
        holder = self.old if key_id == self.old.key_id.hex() else self.new
        return ServerClient(self.transport, token=self.token, key_id=key_id, private_key=holder)

    def run(self, progress: list[tuple[int, int]] | None = None) -> RotationResult:
        """One run of the desk's rotation."""
        seen = progress if progress is not None else []
        return rotate_organizer_key(
            self.make_client,
            old=self.old,
            new=self.new,
            progress=lambda done, total: seen.append((done, total)),
            batch=BATCH,
        )


@pytest.fixture
def rotation(app: Flask, organizer: KeyFiles) -> Rotation:
    """An organizer with a token, and a fresh key to rotate the session's organizer key to."""
    boss = make_user(app, role="organizer")
    return Rotation(
        app=app,
        transport=FlaskTransport(app.test_client()),
        token=issue_token(app, boss.id).secret,
        boss_id=boss.id,
        old=organizer.private_key,
        new=crypto.PrivateKey.generate(),
    )


# --------------------------------------------------------------------------- raw views


def as_uuid(value: object) -> uuid.UUID:
    """A UUID column read raw (SQLite: 32 hex characters; PostgreSQL: a UUID)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


@dataclass(frozen=True)
class RawWrap:
    """One row of ``wraps`` (envelope = report) or ``envelope_wraps``."""

    report_id: uuid.UUID
    envelope_id: uuid.UUID
    key_id: str
    blob: bytes


def raw_wraps(app: Flask) -> list[RawWrap]:
    """Every wrap row of both tables, read with plain SQL."""
    with app.app_context():
        reports = db.session.execute(sa.text("SELECT report_id, key_id, blob FROM wraps")).all()
        envelopes = db.session.execute(
            sa.text("SELECT report_id, envelope_id, key_id, blob FROM envelope_wraps")
        ).all()
    return [
        RawWrap(as_uuid(report_id), as_uuid(report_id), str(key_id), bytes(blob))
        for report_id, key_id, blob in reports
    ] + [
        RawWrap(as_uuid(report_id), as_uuid(envelope_id), str(key_id), bytes(blob))
        for report_id, envelope_id, key_id, blob in envelopes
    ]


def raw_ids(app: Flask, sql: str) -> set[uuid.UUID]:
    """Ids returned by a one-column query."""
    with app.app_context():
        return {as_uuid(value) for (value,) in db.session.execute(sa.text(sql)).all()}


def all_report_ids(app: Flask) -> set[uuid.UUID]:
    """Every stored report id."""
    return raw_ids(app, "SELECT id FROM reports")


def all_envelope_ids(app: Flask) -> set[uuid.UUID]:
    """Every addition, reply and note id."""
    return raw_ids(
        app, "SELECT id FROM additions UNION SELECT id FROM messages UNION SELECT id FROM notes"
    )


def keyring_now(app: Flask) -> Keyring:
    """The keyring the server seals to now (the pin a rotation moved included)."""
    with app.test_request_context():
        return current_keyring()


def pending_count(app: Flask) -> int:
    """How many wraps still need the new key."""
    with app.test_request_context():
        _page, remaining = organizer_keys.pending_wraps(current_keyring(), limit=0)
    return remaining


def new_report_via_form(app: Flask, narrative: str) -> uuid.UUID:
    """File a report through the witness form; return its id."""
    before = all_report_ids(app)
    response = submit_report(app.test_client(), narrative=narrative)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    (report_id,) = all_report_ids(app) - before
    return report_id


# --------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class FollowedUp:
    """A report with an addition, a reply and a note, and their texts."""

    report_id: uuid.UUID
    addition: str
    reply: str
    note: str


def seed_reports(app: Flask, count: int) -> None:
    """Synthetic reports sealed to the current organizer key."""
    with app.app_context():
        demo.seed_reports(
            count,
            keyring=current_keyring(),
            receipt_secret=app.extensions["incidents.settings"].receipt_key,
            today=datetime.now(UTC).date(),
            seed=20260214,
        )


def report_with_followups(app: Flask, organizer: KeyFiles, boss_id: int, n: int) -> FollowedUp:
    """A report with a witness addition, a reply to the witness and a staff note."""
    filed = make_filed_report(app, narrative=f"Rotation narrative {n}.")
    texts = FollowedUp(filed.report_id, f"addition-{n}", f"reply-{n}", f"note-{n}")
    settings = app.extensions["incidents.settings"]
    with app.app_context():
        case = followup.find_case(filed.receipt, receipt_secret=settings.receipt_key)
        followup.add_information(
            case,
            text=texts.addition,
            uploads=None,
            keyring=current_keyring(),
            received_on=datetime.now(UTC).date(),
            instance_path=settings.instance_path,
        )
    make_reply(
        app,
        filed.report_id,
        receipt=filed.receipt,
        body=texts.reply,
        organizer_key=organizer.public_key,
    )
    with app.app_context():
        report = db.session.get(Report, filed.report_id)
        boss = db.session.get(User, boss_id)
        assert report is not None
        assert boss is not None
        keyring = current_keyring()
        bundle = bundles.case_bundle(report, key_id=keyring.organizer.key_id_hex, keyring=keyring)
        desk_outputs.apply_outputs(
            {"notes": [work.seal_note(bundle, texts.note)]},
            user=boss,
            keyring=keyring,
            instance_path=settings.instance_path,
        )
    return texts


# --------------------------------------------------------------------------- tests


def test_interrupted_rotation_finishes_and_every_wrap_moves_to_the_new_key(
    app: Flask, organizer: KeyFiles, rotation: Rotation
) -> None:
    # Given 300 synthetic reports and three with an addition, a reply and a note
    seed_reports(app, SEEDED)
    followed = [report_with_followups(app, organizer, rotation.boss_id, n) for n in range(3)]
    old_id, new_id = rotation.old.key_id.hex(), rotation.new.key_id.hex()
    to_move = len([wrap for wrap in raw_wraps(app) if wrap.key_id == old_id])
    assert to_move == SEEDED + 3 + 3 * 3

    # When the connection breaks after the first batch was stored
    rotation.transport.fail_after = len(FIRST_BATCH)
    with pytest.raises(NetworkError):
        rotation.run()

    # Then one batch is wrapped to the new key, the pin has not moved, the key is incoming
    assert rotation.transport.calls == FIRST_BATCH
    assert len([wrap for wrap in raw_wraps(app) if wrap.key_id == new_id]) == BATCH
    keyring = keyring_now(app)
    assert keyring.organizer.key_id_hex == old_id
    assert keyring.incoming is not None
    assert keyring.incoming.key_id_hex == new_id
    # and a report filed meanwhile is sealed to both keys
    meanwhile = new_report_via_form(app, "Filed while the keys were being rotated.")
    assert {w.key_id for w in raw_wraps(app) if w.report_id == meanwhile} == {old_id, new_id}
    remaining = pending_count(app)
    assert remaining == to_move - BATCH

    # When the rotation is run again
    rotation.transport.fail_after = None
    calls_before = len(rotation.transport.calls)
    progress: list[tuple[int, int]] = []
    result = rotation.run(progress)

    # Then it continues where it stopped (no new challenge; the token is still proven) and
    # moves the pin
    second_run = rotation.transport.calls[calls_before:]
    assert "POST /api/v1/organizer-key/challenge" not in second_run
    assert "POST /api/v1/proof" not in second_run
    assert second_run[-1] == "POST /api/v1/organizer-key/finish"
    assert result == RotationResult(rewrapped=remaining, organizer_key_id=new_id)
    assert progress[-1] == (remaining, remaining)

    # And no wrap is addressed to the old key, in its column or in its header
    wraps = raw_wraps(app)
    assert [w.envelope_id for w in wraps if w.key_id == old_id] == []
    assert [w.envelope_id for w in wraps if crypto.wrap_key_id(w.blob).hex() == old_id] == []
    # and every report, addition, reply and note has a wrap that the new key opens
    mine = [w for w in wraps if w.key_id == new_id]
    assert {w.report_id for w in mine if w.envelope_id == w.report_id} == all_report_ids(app)
    assert {w.envelope_id for w in mine if w.envelope_id != w.report_id} == all_envelope_ids(app)
    for wrap in mine:
        assert crypto.wrap_key_id(wrap.blob).hex() == new_id
        data_key = crypto.unwrap_data_key(
            wrap.blob, report_id=wrap.envelope_id, private_key=rotation.new
        )
        assert len(data_key) == 32

    # And every case opens with the new key, follow-ups included; none with the old one
    with app.app_context():
        for report_id in all_report_ids(app):
            casefile.open_case(report_id, private_key=rotation.new)
        for texts in followed:
            case = casefile.open_case(texts.report_id, private_key=rotation.new)
            assert [item.text for item in case.additions] == [texts.addition]
            assert [item.body for item in case.replies] == [texts.reply]
            assert [item.body for item in case.notes] == [texts.note]
        with pytest.raises(casefile.NoWrapForKeyError):
            casefile.open_case(followed[0].report_id, private_key=rotation.old)

    # And the server now seals to the new key only
    keyring = keyring_now(app)
    assert keyring.organizer.key_id_hex == new_id
    assert keyring.incoming is None
    after = new_report_via_form(app, "Filed after the rotation.")
    assert {w.key_id for w in raw_wraps(app) if w.report_id == after} == {new_id}


def test_rotation_whose_finish_answer_is_lost_reports_already_done(
    app: Flask, rotation: Rotation
) -> None:
    # Given three reports
    seed_reports(app, 3)
    new_id = rotation.new.key_id.hex()

    # When the server moves the pin but the answer to "finish" is lost
    rotation.transport.fail_after = len(FIRST_BATCH)
    rotation.transport.lose_answer = True
    with pytest.raises(NetworkError):
        rotation.run()

    # Then the pin did move on the server
    assert rotation.transport.calls == [*FIRST_BATCH, "POST /api/v1/organizer-key/finish"]
    assert keyring_now(app).organizer.key_id_hex == new_id

    # When the organizer runs the rotation again
    rotation.transport.fail_after = None
    result = rotation.run()

    # Then it reports that the rotation was already finished, and changes nothing
    assert result == RotationResult(rewrapped=0, organizer_key_id=new_id, already_done=True)
    assert keyring_now(app).organizer.key_id_hex == new_id
    assert {w.key_id for w in raw_wraps(app)} == {new_id}


def test_a_moved_pin_stays_in_this_tests_database(
    app: Flask,
    settings: Settings,
    organizer: KeyFiles,
    rotation: Rotation,
    sqlite_template: Path,
    tmp_path: Path,
) -> None:
    # Given a finished rotation in this test's database
    seed_reports(app, 2)
    assert rotation.run().organizer_key_id == rotation.new.key_id.hex()
    assert keyring_now(app).organizer.key_id_hex == rotation.new.key_id.hex()

    # When the next test gets its database (PostgreSQL: this one, emptied as after every
    # test; SQLite: a fresh copy of the session's template)
    with app.app_context():
        dialect = db.engine.dialect.name
    if dialect == "postgresql":
        empty_database(app)
        keyring = keyring_now(app)
    else:
        path = tmp_path / "next-test.sqlite3"
        shutil.copyfile(sqlite_template, path)
        following = create_app(dataclasses.replace(settings, database_url=f"sqlite:///{path}"))
        keyring = keyring_now(following)
        empty_database(following)

    # Then it seals to the configured organizer key again
    assert keyring.organizer.key_id_hex == organizer.public_key.key_id_hex
    assert keyring.incoming is None


def assert_one_line_error(result: Result, fragment: str) -> None:
    """A non-zero exit, one ``Error:`` line containing ``fragment``, and no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert fragment in errors[0], errors[0]


@pytest.mark.parametrize("wrong", ["old", "new"])
def test_keys_rotate_refuses_a_wrong_passphrase_before_contacting_the_server(
    app: Flask,
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wrong: str,
) -> None:
    # Given a new key file, and no way for the command to reach a server unnoticed
    new = key_files(tmp_path / "new-key", "new", crypto.PrivateKey.generate())

    def no_network(*_args: object, **_kwargs: object) -> None:
        pytest.fail("keys rotate contacted the server before checking both passphrases")

    monkeypatch.setattr(UrllibTransport, "request", no_network)
    typed = (
        "not the passphrase\n"
        if wrong == "old"
        else f"{organizer.passphrase}\nnot the passphrase either\n"
    )

    # When the organizer types a wrong passphrase for one of the key files
    result = runner.invoke(
        args=[
            "keys",
            "rotate",
            "--old",
            str(organizer.private_path),
            "--new",
            str(new.private_path),
            "--server",
            "http://127.0.0.1:9",
        ],
        input=typed,
        env={PASSPHRASE_VARIABLE: None, DESK_TOKEN_VARIABLE: "irt_not-used"},
    )

    # Then one clear message, and the pin stays where it was
    assert_one_line_error(result, "wrong passphrase (or the key file was altered); nothing was")
    assert ("Passphrase of the NEW key file" in result.output) == (wrong == "new")
    assert keyring_now(app).organizer.key_id_hex == organizer.public_key.key_id_hex
