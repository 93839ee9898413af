"""Staff pages for the desk: API tokens on the account page, the Desk page, bundle files and
uploaded desk outputs (incidents.staff.views through api_tokens, bundles and desk_outputs).

A token's secret is shown once and kept nowhere but in its owner's hands; a bundle file holds
only the user's own cases and only wraps to their key; an outputs file is applied whole, and
one that is addressed to another key, altered or not allowed is refused with nothing stored.
"""

from __future__ import annotations

import dataclasses
import html
import io
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from incidents import crypto
from incidents.bundle import BUNDLE_FORMAT, OUTPUTS_FORMAT, b64, dump_file, load_file, unb64
from incidents.config import Settings
from incidents.db import Base, db
from incidents.models import ApiToken, AuditEvent, EnvelopeWrap, Note, User
from incidents.services import cases
from incidents.services.accounts import hash_token
from incidents.services.followup import NOTE_FIELD
from tests.conftest import KeyFiles
from tests.factories import (
    STAFF_PASSWORD,
    StaffAccount,
    answer_bundle_challenge,
    bundle_file_proof,
    flashed,
    grant_for,
    login,
    make_report,
    make_user,
    make_volunteer_key,
    page_csrf_token,
    use_fast_password_hashing,
)

TOKEN_SECRET = re.compile(r"irt_[A-Za-z0-9_-]{40,}")
NOT_AN_OUTPUTS_FILE = "This file is not a desk outputs file for your key, or it was altered."
KEY_HEADER = "X-Incidents-Key-Id"


@pytest.fixture(autouse=True)
def _fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords are incidental here; tests/staff/test_auth.py covers the real cost."""
    use_fast_password_hashing(monkeypatch)


# --------------------------------------------------------------------------- helpers


def today() -> date:
    """Today in UTC, as the server dates tokens and bundle files."""
    return datetime.now(UTC).date()


def logged_in(app: Flask, role: str) -> tuple[StaffAccount, FlaskClient]:
    """A new account of ``role`` and a client logged in as it."""
    account = make_user(app, role=role)
    client = app.test_client()
    assert login(client, account).status_code == 302
    return account, client


def make_token(client: FlaskClient, label: str = "office laptop") -> TestResponse:
    """Press "Make a token" on the account page."""
    token = page_csrf_token(client, "/staff/account")
    data = {"csrf_token": token, "label": label, "current_password": STAFF_PASSWORD}
    return client.post("/staff/account/tokens", data=data)


def secret_on(response: TestResponse) -> str:
    """The token secret shown on a page."""
    match = TOKEN_SECRET.search(response.get_data(as_text=True))
    assert match, "no token secret on the page"
    return match.group(0)


def tokens_of(app: Flask, account: StaffAccount) -> list[ApiToken]:
    """The account's token rows."""
    with app.app_context():
        rows = db.session.scalars(sa.select(ApiToken).where(ApiToken.user_id == account.id))
        return list(rows.all())


def api_session(client: FlaskClient, secret: str, *, key_id: str) -> TestResponse:
    """What a desk asks first: who the token belongs to."""
    headers = {"Authorization": f"Bearer {secret}", KEY_HEADER: key_id}
    return client.get("/api/v1/session", headers=headers)


def database_text(app: Flask) -> str:
    """Every value of every row of every table, as one text."""
    parts: list[str] = []
    with app.app_context():
        for table in Base.metadata.sorted_tables:
            for row in db.session.execute(sa.select(table)):
                parts.extend(
                    value.hex() if isinstance(value, bytes) else str(value) for value in row
                )
        db.session.remove()
    return "\n".join(parts)


def sqlite_files(app: Flask) -> list[Path]:
    """The SQLite database file and its WAL, if the test runs on SQLite."""
    with app.app_context():
        url = db.engine.url
    if url.get_backend_name() != "sqlite" or not url.database:
        return []
    path = Path(url.database)
    return [candidate for candidate in (path, Path(f"{path}-wal")) if candidate.exists()]


def sealed_note(
    report_id: uuid.UUID, *, text: str, recipients: Iterable[crypto.PublicKey]
) -> dict[str, Any]:
    """A note as a desk seals it: its own data key, the sealed body, a wrap to each recipient."""
    note_id = uuid.uuid4()
    data_key = crypto.new_data_key()
    sealed = crypto.seal_field(text, data_key=data_key, report_id=note_id, name=NOTE_FIELD)
    return {
        "id": str(note_id),
        "report_id": str(report_id),
        "sealed": b64(sealed),
        "wraps": {
            key.key_id_hex: b64(crypto.wrap_data_key(data_key, report_id=note_id, recipient=key))
            for key in recipients
        },
    }


def outputs_file(key_id: str, *, notes: list[dict[str, Any]], proof: str | None = None) -> bytes:
    """An outputs file, as an air-gapped desk holding ``key_id`` writes it.

    ``proof`` is the desk's answer to the challenge of the last bundle file it loaded (see
    ``tests.factories.bundle_file_proof``); without it the server refuses the file.
    """
    body: dict[str, Any] = {"key_id": key_id, "notes": notes}
    if proof is not None:
        body["proof"] = proof
    return dump_file(OUTPUTS_FORMAT, body)


def upload_outputs(client: FlaskClient, data: bytes) -> TestResponse:
    """Upload an outputs file on the Desk page."""
    token = page_csrf_token(client, "/staff/desk")
    return client.post(
        "/staff/desk/outputs",
        data={"csrf_token": token, "outputs_file": (io.BytesIO(data), "outputs.json")},
        content_type="multipart/form-data",
    )


def download_bundle(client: FlaskClient) -> TestResponse:
    """Press "Download my case bundle" on the Desk page."""
    token = page_csrf_token(client, "/staff/desk")
    return client.post("/staff/desk/bundle", data={"csrf_token": token})


def stored_counts(app: Flask) -> tuple[int, int, int]:
    """How many notes, envelope wraps and audit events the database holds."""
    with app.app_context():
        counts = tuple(
            int(db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)
            for model in (Note, EnvelopeWrap, AuditEvent)
        )
        db.session.remove()
    return counts[0], counts[1], counts[2]


def assigned_volunteer(
    app: Flask, organizer: KeyFiles
) -> tuple[StaffAccount, FlaskClient, crypto.PrivateKey, uuid.UUID, uuid.UUID]:
    """Given: a volunteer with an approved key, one report granted to them and one not.

    Returns the volunteer, their logged-in client, their private key, the assigned report and
    the other report.
    """
    boss = make_user(app, role="organizer")
    volunteer, client = logged_in(app, "volunteer")
    private_key = make_volunteer_key(app, volunteer, approved_by=boss)
    mine = make_report(app, narrative="The volunteer's own case, sealed.")
    other = make_report(app, narrative="Somebody else's case, sealed.")
    with app.app_context():
        organizer_row = db.session.get(User, boss.id)
        assert organizer_row is not None
        cases.assign_report(mine, volunteer_id=volunteer.id, organizer=organizer_row)
    grant = grant_for(
        app, mine, organizer_key=organizer.private_key, recipient=private_key.public_key()
    )
    with app.app_context():
        organizer_row = db.session.get(User, boss.id)
        assert organizer_row is not None
        cases.record_grant(mine, grant, actor=organizer_row)
    return volunteer, client, private_key, mine, other


# --------------------------------------------------------------------------- tokens


def test_a_new_token_is_shown_once_and_stored_only_as_its_hash(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    # Given: a volunteer on their account page
    caplog.set_level(logging.DEBUG)
    account, client = logged_in(app, "volunteer")
    # When: they make a token
    response = make_token(client, "office laptop")
    # Then: the page shows the secret, warns that it is shown once and says how to use it
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    secret = secret_on(response)
    assert "It will not be shown again." in page
    assert "flask --app app desk --key FILE --server http://localhost" in page
    assert "no-store" in response.headers["Cache-Control"]
    # ... and nothing but its hash is kept: not in the database, the cookie, the log or a page
    [row] = tokens_of(app, account)
    assert row.token_hash == hash_token(secret)
    assert row.label == "office laptop"
    assert secret not in database_text(app)
    for path in sqlite_files(app):
        assert secret.encode() not in path.read_bytes()
    with client.session_transaction() as cookie_session:
        assert secret not in repr(dict(cookie_session))
    assert secret not in caplog.text
    again = client.get("/staff/account")
    assert again.status_code == 200
    assert secret not in again.get_data(as_text=True)
    assert "office laptop" in again.get_data(as_text=True)


def test_the_token_list_shows_each_tokens_state(app: Flask) -> None:
    # Given: a volunteer with an active, an expired and a revoked token
    account, client = logged_in(app, "volunteer")
    for label in ("active one", "expired one", "revoked one"):
        assert make_token(client, label).status_code == 200
    with app.app_context():
        rows = db.session.scalars(sa.select(ApiToken).where(ApiToken.user_id == account.id))
        by_label = {row.label: row for row in rows}
        by_label["expired one"].expires_on = today() - timedelta(days=1)
        by_label["revoked one"].revoked_on = today()
        db.session.commit()
    # When: they open their account page
    page = client.get("/staff/account").get_data(as_text=True)
    # Then: each row says what the API would make of it, and only live tokens can be revoked
    rows_html = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
    states = {
        label: next(row for row in rows_html if f"<td>{label}</td>" in row)
        for label in ("active one", "expired one", "revoked one")
    }
    assert "<strong>active</strong>" in states["active one"]
    assert "expired" in states["expired one"]
    assert "revoked" in states["revoked one"]
    assert "never" in states["active one"]
    assert "/revoke" in states["expired one"]
    assert "/revoke" not in states["revoked one"]


def test_a_revoked_token_no_longer_opens_the_api(app: Flask) -> None:
    # Given: a volunteer with an approved key and a token their desk uses
    boss = make_user(app, role="organizer")
    account, client = logged_in(app, "volunteer")
    key_id = make_volunteer_key(app, account, approved_by=boss).public_key().key_id_hex
    secret = secret_on(make_token(client))
    answer = api_session(app.test_client(), secret, key_id=key_id)
    assert answer.status_code == 200
    assert answer.get_json()["username"] == account.username
    # When: they revoke it on their account page
    [row] = tokens_of(app, account)
    token = page_csrf_token(client, "/staff/account")
    response = client.post(
        f"/staff/account/tokens/{row.id}/revoke",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    # Then: they are told, the list says so, and the desk is refused
    assert response.status_code == 200
    assert "The token was revoked. A desk that uses it can no longer connect." in flashed(response)
    [row] = tokens_of(app, account)
    assert row.revoked_on is not None
    assert api_session(app.test_client(), secret, key_id=key_id).status_code == 401


def test_nobody_revokes_another_users_token(app: Flask) -> None:
    # Given: a volunteer's token, and an organizer who knows its id
    volunteer, volunteer_client = logged_in(app, "volunteer")
    make_token(volunteer_client)
    [row] = tokens_of(app, volunteer)
    _, organizer_client = logged_in(app, "organizer")
    # When: the organizer tries to revoke it
    token = page_csrf_token(organizer_client, "/staff/account")
    response = organizer_client.post(
        f"/staff/account/tokens/{row.id}/revoke",
        data={"csrf_token": token},
        follow_redirects=True,
    )
    # Then: it is refused and the token stays live
    assert "No such token." in flashed(response)
    [row] = tokens_of(app, volunteer)
    assert row.revoked_on is None


def test_a_token_needs_a_name(app: Flask) -> None:
    account, client = logged_in(app, "organizer")
    response = make_token(client, "   ")
    assert response.status_code == 302
    assert tokens_of(app, account) == []


# --------------------------------------------------------------------------- the desk page


def test_the_desk_page_shows_the_key_the_desk_must_hold(app: Flask, organizer: KeyFiles) -> None:
    # An organizer's desk holds the organizer key
    _, organizer_client = logged_in(app, "organizer")
    page = organizer_client.get("/staff/desk").get_data(as_text=True)
    assert organizer.public_key.key_id_hex in page
    assert organizer.public_key.fingerprint in page
    assert 'href="/staff/desk"' in page
    # A volunteer's desk holds their approved key; without one they are told to register it
    boss = make_user(app, role="organizer")
    volunteer, client = logged_in(app, "volunteer")
    without = client.get("/staff/desk")
    assert without.status_code == 200
    assert "You have no approved key yet." in without.get_data(as_text=True)
    public_key = make_volunteer_key(app, volunteer, approved_by=boss).public_key()
    page = client.get("/staff/desk").get_data(as_text=True)
    assert public_key.key_id_hex in page
    assert public_key.fingerprint in page
    assert organizer.public_key.fingerprint not in page


def test_bundle_holds_only_the_volunteers_cases_and_wraps_to_their_key(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: a volunteer with one case granted to them and another case that is not theirs
    volunteer, client, private_key, mine, other = assigned_volunteer(app, organizer)
    key_id = private_key.public_key().key_id_hex
    # When: they download their case bundle
    response = download_bundle(client)
    # Then: it is a file download, never cached, named for them and today
    assert response.status_code == 200
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert f"cases-{volunteer.username}-{today().isoformat()}.json" in disposition
    assert "no-store" in response.headers["Cache-Control"]
    data = response.get_data()
    # ... for their key, holding only their case, with only wraps addressed to their key
    body = load_file(data, kind=BUNDLE_FORMAT, key_id=key_id)
    assert [case["report_id"] for case in body["cases"]] == [str(mine)]
    assert str(other).encode() not in data
    [case] = body["cases"]
    wraps = [case["wrap"]] + [
        entry["wrap"]
        for kind in ("additions", "replies", "notes")
        for entry in case[kind]
        if entry["wrap"] is not None
    ]
    assert all(crypto.wrap_key_id(unb64(wrap)).hex() == key_id for wrap in wraps)
    # ... which their private key opens, and nothing in it is in clear
    data_key = crypto.unwrap_data_key(unb64(case["wrap"]), report_id=mine, private_key=private_key)
    narrative = crypto.open_field(
        unb64(case["sealed"]["narrative"]), data_key=data_key, report_id=mine, name="narrative"
    )
    assert narrative == "The volunteer's own case, sealed."
    assert b"The volunteer's own case" not in data
    # ... and the download is on record
    with app.app_context():
        event = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "bundle.download")
        ).one()
        assert (event.actor, event.target) == (volunteer.username, key_id)


def test_bundle_without_an_approved_key_is_refused(app: Flask) -> None:
    _, client = logged_in(app, "volunteer")
    response = download_bundle(client)
    assert response.status_code == 400
    assert "Your account has no approved key yet." in flashed(response)
    assert "Content-Disposition" not in response.headers


def test_without_the_organizer_key_the_desk_files_are_refused_with_503(
    settings: Settings, make_app: Callable[[Settings], Flask], tmp_path: Path
) -> None:
    # Given: a server whose organizer public key file has gone missing
    broken = make_app(
        dataclasses.replace(settings, organizer_public_key_path=tmp_path / "missing.pub")
    )
    _, client = logged_in(broken, "organizer")
    # When/Then: the Desk page still opens and says so, and no bundle is made
    page = client.get("/staff/desk")
    assert page.status_code == 200
    unavailable = "The server's organizer key is unavailable, so the desk cannot be served now."
    assert unavailable in html.unescape(page.get_data(as_text=True))
    response = download_bundle(client)
    assert response.status_code == 503
    assert unavailable in flashed(response)
    assert "missing.pub" not in response.get_data(as_text=True)
    assert "Content-Disposition" not in response.headers


# --------------------------------------------------------------------------- desk outputs


@pytest.mark.parametrize("role", ["organizer", "volunteer"])
def test_a_valid_outputs_file_with_a_note_is_applied_once(
    app: Flask, organizer: KeyFiles, role: str
) -> None:
    # Given: a sealed note on a case, in an outputs file for the uploader's key
    _, client, private_key, mine, _ = assigned_volunteer(app, organizer)
    key_id = private_key.public_key().key_id_hex
    desk_key = private_key
    if role == "organizer":
        _, client = logged_in(app, "organizer")
        key_id = organizer.public_key.key_id_hex
        desk_key = organizer.private_key
    text = f"note {uuid.uuid4().hex}: met the witness's lawyer"
    note = sealed_note(mine, text=text, recipients=[organizer.public_key, private_key.public_key()])
    # ... by a desk that loaded a fresh bundle file and answers its challenge
    data = outputs_file(key_id, notes=[note], proof=bundle_file_proof(client, desk_key))
    # When: it is uploaded on the Desk page
    response = upload_outputs(client, data)
    # Then: it is stored (ciphertext only) and the counts are shown
    assert response.status_code == 302
    page = client.get(response.headers["Location"])
    assert any("notes: 1" in message for message in flashed(page))
    with app.app_context():
        row = db.session.get(Note, uuid.UUID(note["id"]))
        assert row is not None
        assert row.report_id == mine
        wraps = db.session.scalars(
            sa.select(EnvelopeWrap).where(EnvelopeWrap.envelope_id == row.id)
        ).all()
        assert {wrap.key_id for wrap in wraps} == set(note["wraps"])
        organizer_wrap = next(w for w in wraps if w.key_id == organizer.public_key.key_id_hex)
        data_key = crypto.unwrap_data_key(
            organizer_wrap.blob, report_id=row.id, private_key=organizer.private_key
        )
        opened = crypto.open_field(
            row.body_sealed, data_key=data_key, report_id=row.id, name=NOTE_FIELD
        )
        assert opened == text
    assert text not in database_text(app)
    # When: the same file is uploaded again (the desk lost the answer)
    again = upload_outputs(client, data)
    # Then: nothing is stored twice
    assert again.status_code == 302
    page = client.get(again.headers["Location"])
    assert any("already applied before: 1" in message for message in flashed(page))
    assert stored_counts(app)[0] == 1


def test_outputs_for_another_key_are_refused_and_nothing_stored(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: a volunteer, and an outputs file written by a desk holding some other key
    _, client, private_key, mine, _ = assigned_volunteer(app, organizer)
    stranger = crypto.PrivateKey.generate().public_key()
    note = sealed_note(mine, text="from another desk", recipients=[organizer.public_key])
    proof = bundle_file_proof(client, private_key)  # even the volunteer's own proof won't help
    before = stored_counts(app)
    # When: the volunteer uploads it
    response = upload_outputs(client, outputs_file(stranger.key_id_hex, notes=[note], proof=proof))
    # Then: it is refused with a clear message and nothing is stored
    assert response.status_code == 400
    assert NOT_AN_OUTPUTS_FILE in flashed(response)
    assert stored_counts(app) == before


def test_an_altered_outputs_file_is_refused_and_nothing_stored(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: a valid outputs file for the volunteer's key, with one byte of its body changed
    _, client, private_key, mine, _ = assigned_volunteer(app, organizer)
    note = sealed_note(mine, text="a note", recipients=[organizer.public_key])
    proof = bundle_file_proof(client, private_key)
    data = outputs_file(private_key.public_key().key_id_hex, notes=[note], proof=proof)
    position = data.index(note["id"].encode()) + 1
    altered = bytearray(data)
    altered[position] = ord("0") if altered[position] != ord("0") else ord("1")
    before = stored_counts(app)
    # When: the altered file is uploaded
    response = upload_outputs(client, bytes(altered))
    # Then: it is refused and nothing is stored
    assert response.status_code == 400
    assert NOT_AN_OUTPUTS_FILE in flashed(response)
    assert stored_counts(app) == before
    # ... while the file as the desk wrote it is accepted (the change alone was the problem)
    assert upload_outputs(client, data).status_code == 302
    assert stored_counts(app)[0] == before[0] + 1


def test_outputs_on_a_case_not_assigned_are_refused_whole(app: Flask, organizer: KeyFiles) -> None:
    # Given: a file with a note on the volunteer's case and one on a case that is not theirs
    _, client, private_key, mine, other = assigned_volunteer(app, organizer)
    notes = [
        sealed_note(mine, text="mine", recipients=[organizer.public_key]),
        sealed_note(other, text="not mine", recipients=[organizer.public_key]),
    ]
    proof = bundle_file_proof(client, private_key)
    before = stored_counts(app)
    # When: it is uploaded
    response = upload_outputs(
        client, outputs_file(private_key.public_key().key_id_hex, notes=notes, proof=proof)
    )
    # Then: the service's reason is shown and not even the allowed note is kept
    assert response.status_code == 400
    assert "A desk output concerns a case you cannot work." in flashed(response)
    assert stored_counts(app) == before


def test_an_upload_without_a_file_is_refused(app: Flask) -> None:
    _, client = logged_in(app, "organizer")
    token = page_csrf_token(client, "/staff/desk")
    response = client.post(
        "/staff/desk/outputs", data={"csrf_token": token}, content_type="multipart/form-data"
    )
    assert response.status_code == 400
    assert "Choose the desk outputs file made by your desk." in flashed(response)


# --------------------------------------------------------------------------- access and language

DESK_ROUTES = [
    ("GET", "/staff/desk"),
    ("POST", "/staff/desk/bundle"),
    ("POST", "/staff/desk/outputs"),
    ("POST", "/staff/account/tokens"),
    ("POST", f"/staff/account/tokens/{uuid.uuid4()}/revoke"),
]


@pytest.mark.parametrize(("method", "url"), DESK_ROUTES)
def test_ngos_and_visitors_do_not_reach_the_desk(app: Flask, method: str, url: str) -> None:
    # NGOs get 403 and never see the desk in their navigation or account page
    _, ngo_client = logged_in(app, "ngo")
    token = page_csrf_token(ngo_client, "/staff/account")
    response = ngo_client.open(url, method=method, data={"csrf_token": token, "label": "x"})
    assert response.status_code == 403
    account_page = ngo_client.get("/staff/account").get_data(as_text=True)
    assert "/staff/desk" not in account_page
    assert "/staff/account/tokens" not in account_page
    # Visitors without an account are sent to the login page
    visitor = app.test_client()
    token = page_csrf_token(visitor, "/staff/login")
    response = visitor.open(url, method=method, data={"csrf_token": token, "label": "x"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/staff/login")


def test_the_desk_pages_render_in_russian(app: Flask, organizer: KeyFiles) -> None:
    # Given: a volunteer with a case who chose Russian
    _, client, private_key, mine, _ = assigned_volunteer(app, organizer)
    assert client.get("/staff/account?lang=ru").status_code == 200
    # When/Then: every page of this module renders in Russian
    pages = [
        client.get("/staff/account"),
        client.get("/staff/desk"),
        make_token(client, "ноутбук"),
        upload_outputs(client, b"not json at all"),
        download_bundle(client),
    ]
    assert [page.status_code for page in pages] == [200, 200, 200, 400, 200]
    for page in pages[:4]:
        text = page.get_data(as_text=True)
        assert '<html lang="ru">' in text
        assert "Моя учётная запись" in text  # the navigation, from the existing catalog
    assert "Отпечаток" in pages[1].get_data(as_text=True)
    assert "ноутбук" in pages[2].get_data(as_text=True)
    note = sealed_note(mine, text="заметка", recipients=[organizer.public_key])
    proof = answer_bundle_challenge(pages[4].get_data(), private_key)  # the bundle just fetched
    applied = upload_outputs(
        client, outputs_file(private_key.public_key().key_id_hex, notes=[note], proof=proof)
    )
    assert applied.status_code == 302
    assert '<html lang="ru">' in client.get(applied.headers["Location"]).get_data(as_text=True)
