"""Personal API tokens (incidents.services.api_tokens) and how the desk API answers them.

A token is shown to its owner once; the server keeps only its SHA-256 hash, the day it was made,
the day it expires (90 days later) and the day it was last used. Every refusal is a 401 with a
JSON body. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from incidents.config import Settings
from incidents.db import Base, db
from incidents.models import ApiToken, AuditEvent, User
from incidents.services import accounts, api_tokens
from tests.conftest import KeyFiles
from tests.factories import (
    StaffAccount,
    login,
    make_user,
    make_volunteer_key,
    use_fast_password_hashing,
)

ISSUED_AT = datetime(2026, 1, 10, 9, 30, tzinfo=UTC)
EXPIRED = "The API token has expired. Make a new one on your account page."
REVOKED = "The API token was revoked. Make a new one on your account page."
NOT_VALID = "The API token is not valid."


@pytest.fixture(autouse=True)
def _fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_password_hashing(monkeypatch)


# --------------------------------------------------------------------------- helpers


def issue(app: Flask, account: StaffAccount, *, label: str = "laptop") -> api_tokens.NewToken:
    """Issue a token for ``account`` through the service."""
    with app.app_context():
        user = db.session.get(User, account.id)
        assert user is not None
        return api_tokens.issue_token(user, label=label)


def revoke(app: Flask, token_id: uuid.UUID, *, by: StaffAccount) -> None:
    """Revoke a token as ``by``."""
    with app.app_context():
        user = db.session.get(User, by.id)
        assert user is not None
        api_tokens.revoke_token(token_id, user=user)


def token_row(app: Flask, token_id: uuid.UUID) -> ApiToken:
    """The stored token row (detached)."""
    with app.app_context():
        row = db.session.get(ApiToken, token_id)
        assert row is not None
        db.session.expunge(row)
        return row


def session_call(client: FlaskClient, secret: str, key_id: str) -> TestResponse:
    """GET /api/v1/session as a desk holding ``key_id`` would."""
    return client.get(
        "/api/v1/session",
        headers={"Authorization": f"Bearer {secret}", "X-Incidents-Key-Id": key_id},
    )


def assert_refused(response: TestResponse, message: str) -> None:
    """A 401 JSON answer with the token error code and ``message``; never cached, no cookie."""
    assert response.status_code == 401
    assert response.mimetype == "application/json"
    assert response.get_json() == {"error": "token", "message": message}
    assert "no-store" in response.headers["Cache-Control"]
    assert "Set-Cookie" not in response.headers


def database_values(app: Flask) -> Iterator[bytes]:
    """Every stored value of every row of every table, as bytes (text as UTF-8)."""
    with app.app_context():
        for table in Base.metadata.sorted_tables:
            for row in db.session.execute(sa.select(table)).all():
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        yield bytes(value)
                    elif value is not None:
                        yield str(value).encode("utf-8")
        db.session.remove()


def sqlite_files(settings: Settings) -> list[Path]:
    """The SQLite database file and its WAL (empty list on PostgreSQL)."""
    if not settings.database_url.startswith("sqlite:///"):
        return []
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    return [candidate for candidate in (path, Path(f"{path}-wal")) if candidate.exists()]


def at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    """Set the token service's clock to ``moment``."""
    monkeypatch.setattr(api_tokens, "now", lambda: moment)


# --------------------------------------------------------------------------- issuing


def test_the_secret_is_shown_once_and_only_its_sha256_is_stored(
    app: Flask, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: an organizer
    account = make_user(app, role="organizer")
    at(monkeypatch, ISSUED_AT)

    # When: a token is issued
    token = issue(app, account, label="  office desk  ")

    # Then: the caller gets the secret, with its visible prefix and 90 days of validity
    assert token.secret.startswith("irt_")
    assert len(token.secret) > 40
    assert token.expires_on == date(2026, 4, 10)

    # And: the raw row holds the SHA-256 of the secret, dates only, and no client details
    with app.app_context():
        rows = db.session.execute(sa.text("SELECT * FROM api_tokens")).mappings().all()
    assert len(rows) == 1
    row = rows[0]
    assert set(row.keys()) == {
        "id",
        "token_hash",
        "user_id",
        "label",
        "created_on",
        "expires_on",
        "last_used_on",
        "revoked_on",
        "proof_hash",
        "proven_until",
        "proven_key_id",
    }
    assert bytes(row["token_hash"]) == hashlib.sha256(token.secret.encode()).digest()
    assert row["label"] == "office desk"
    assert row["user_id"] == account.id
    assert (row["last_used_on"], row["revoked_on"]) == (None, None)
    # ... and a new token is not proven: its desk has not shown that it holds its key yet
    assert (row["proof_hash"], row["proven_until"], row["proven_key_id"]) == (None, None, None)

    # And: the secret (or its random part) is in no stored value, nor in the database files
    needles = [token.secret.encode(), token.secret.removeprefix("irt_").encode()]
    assert not any(needle in value for value in database_values(app) for needle in needles)
    for path in sqlite_files(settings):
        content = path.read_bytes()
        assert not any(needle in content for needle in needles), path.name

    # And: listing the user's tokens tells nothing that would let anyone use it again
    with app.app_context():
        user = db.session.get(User, account.id)
        assert user is not None
        listed = api_tokens.tokens_of(user)
        assert [(item.id, item.label) for item in listed] == [(token.id, "office desk")]
        assert not hasattr(listed[0], "secret")


def test_issuing_is_audited_without_the_secret(app: Flask) -> None:
    account = make_user(app, role="volunteer")

    token = issue(app, account, label="home")

    with app.app_context():
        events = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "api_token.issue")
        ).all()
        assert [(event.actor, event.target) for event in events] == [
            (account.username, str(token.id))
        ]
        assert token.secret not in events[0].details


def test_an_ngo_account_cannot_get_a_token(app: Flask) -> None:
    account = make_user(app, role="ngo")

    with app.app_context():
        user = db.session.get(User, account.id)
        assert user is not None
        with pytest.raises(api_tokens.ApiTokenError) as raised:
            api_tokens.issue_token(user, label="partner")
        count = db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken))

    assert str(raised.value) == "Only organizers and legal-aid volunteers use the desk."
    assert count == 0


# --------------------------------------------------------------------------- using


def test_a_token_acts_as_its_owner_and_records_only_the_day_it_was_used(
    app: Flask, client: FlaskClient, organizer: KeyFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: an organizer's token, issued on 10 January
    account = make_user(app, role="organizer")
    at(monkeypatch, ISSUED_AT)
    token = issue(app, account)

    # When: the desk uses it on 12 February in the afternoon
    at(monkeypatch, datetime(2026, 2, 12, 16, 45, 13, tzinfo=UTC))
    response = session_call(client, token.secret, organizer.public_key.key_id_hex)

    # Then: the API answers as that organizer
    assert response.status_code == 200
    body = response.get_json()
    assert (body["username"], body["role"]) == (account.username, "organizer")
    assert body["key_id"] == organizer.public_key.key_id_hex

    # And: only the day of use is stored, never a time
    row = token_row(app, token.id)
    assert row.last_used_on == date(2026, 2, 12)
    assert type(row.last_used_on) is date


@pytest.mark.parametrize(
    ("days_after_issue", "accepted"), [(0, True), (89, True), (90, True), (91, False)]
)
def test_a_token_is_valid_for_90_days(
    app: Flask,
    client: FlaskClient,
    organizer: KeyFiles,
    monkeypatch: pytest.MonkeyPatch,
    days_after_issue: int,
    accepted: bool,
) -> None:
    account = make_user(app, role="organizer")
    at(monkeypatch, ISSUED_AT)
    token = issue(app, account)

    at(monkeypatch, ISSUED_AT + timedelta(days=days_after_issue))
    response = session_call(client, token.secret, organizer.public_key.key_id_hex)

    if accepted:
        assert response.status_code == 200
        assert response.get_json()["username"] == account.username
    else:
        assert_refused(response, EXPIRED)


def test_a_token_whose_expiry_day_has_passed_is_refused(
    app: Flask, client: FlaskClient, organizer: KeyFiles
) -> None:
    # Given: a token whose expiry date lies in the past
    account = make_user(app, role="organizer")
    token = issue(app, account)
    with app.app_context():
        row = db.session.get(ApiToken, token.id)
        assert row is not None
        row.expires_on = datetime.now(UTC).date() - timedelta(days=1)
        db.session.commit()

    # When / Then: it is refused with a 401 that says why, and is not marked as used
    assert_refused(session_call(client, token.secret, organizer.public_key.key_id_hex), EXPIRED)
    assert token_row(app, token.id).last_used_on is None


def test_a_revoked_token_is_refused_and_the_owners_other_tokens_still_work(
    app: Flask, client: FlaskClient, organizer: KeyFiles
) -> None:
    # Given: two tokens of one organizer, one of them revoked
    account = make_user(app, role="organizer")
    kept, revoked = issue(app, account, label="office"), issue(app, account, label="lost laptop")
    revoke(app, revoked.id, by=account)
    key_id = organizer.public_key.key_id_hex

    # Then: the revoked one gets a 401, the other one still works
    assert_refused(session_call(client, revoked.secret, key_id), REVOKED)
    assert session_call(client, kept.secret, key_id).status_code == 200
    assert token_row(app, revoked.id).revoked_on == datetime.now(UTC).date()
    assert token_row(app, kept.id).revoked_on is None


def test_revoking_twice_keeps_the_first_day_and_one_audit_event(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = make_user(app, role="volunteer")
    token = issue(app, account)
    at(monkeypatch, ISSUED_AT)
    revoke(app, token.id, by=account)

    at(monkeypatch, ISSUED_AT + timedelta(days=3))
    revoke(app, token.id, by=account)

    assert token_row(app, token.id).revoked_on == ISSUED_AT.date()
    with app.app_context():
        count = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "api_token.revoke")
        )
    assert count == 1


def desk_member(
    app: Flask, organizer: KeyFiles, chief: StaffAccount, role: str
) -> tuple[StaffAccount, str]:
    """A staff member of ``role`` and the key id their desk holds."""
    account = make_user(app, role=role)
    if role == "volunteer":
        return account, make_volunteer_key(app, account, approved_by=chief).key_id.hex()
    return account, organizer.public_key.key_id_hex


def set_active(app: Flask, account: StaffAccount, *, active: bool, by: StaffAccount) -> None:
    """An organizer disables or re-enables an account through the accounts service."""
    with app.app_context():
        user, organizer = db.session.get(User, account.id), db.session.get(User, by.id)
        assert user is not None
        assert organizer is not None
        accounts.set_active(user, active=active, organizer=organizer)
        db.session.commit()


@pytest.mark.parametrize("role", ["organizer", "volunteer"])
def test_disabling_an_account_revokes_its_tokens_for_good(
    app: Flask, client: FlaskClient, organizer: KeyFiles, role: str
) -> None:
    # Given: a working token of a staff member with a registered desk key
    chief = make_user(app, role="organizer")
    account, key_id = desk_member(app, organizer, chief, role)
    token = issue(app, account)
    assert session_call(client, token.secret, key_id).status_code == 200

    # When: an organizer disables the account
    set_active(app, account, active=False, by=chief)

    # Then: the token is refused, and it stays refused after the account is enabled again
    assert_refused(session_call(client, token.secret, key_id), REVOKED)
    assert token_row(app, token.id).revoked_on == datetime.now(UTC).date()
    set_active(app, account, active=True, by=chief)
    assert_refused(session_call(client, token.secret, key_id), REVOKED)


@pytest.mark.parametrize("role", ["organizer", "volunteer"])
def test_a_live_token_of_an_inactive_account_is_refused(
    app: Flask, client: FlaskClient, organizer: KeyFiles, role: str
) -> None:
    # Given: a token that was never revoked, of an account marked inactive in the database
    chief = make_user(app, role="organizer")
    account, key_id = desk_member(app, organizer, chief, role)
    token = issue(app, account)
    with app.app_context():
        user = db.session.get(User, account.id)
        assert user is not None
        user.is_active = False
        db.session.commit()

    # When / Then: the token is refused all the same, and not marked as used
    assert_refused(session_call(client, token.secret, key_id), NOT_VALID)
    assert token_row(app, token.id).last_used_on is None


def test_changing_the_password_revokes_the_accounts_tokens(
    app: Flask, client: FlaskClient, organizer: KeyFiles
) -> None:
    account = make_user(app, role="organizer")
    token = issue(app, account)

    with app.app_context():
        user = db.session.get(User, account.id)
        assert user is not None
        accounts.change_password(user, current=account.password, new="another long staff password")
        db.session.commit()

    assert_refused(session_call(client, token.secret, organizer.public_key.key_id_hex), REVOKED)


def test_revoking_someone_elses_token_is_refused_and_it_keeps_working(
    app: Flask, client: FlaskClient, organizer: KeyFiles
) -> None:
    # Given: two organizers, each with a token
    owner, other = make_user(app, role="organizer"), make_user(app, role="organizer")
    token = issue(app, owner)

    # When: the other organizer tries to revoke the owner's token (and an unknown id)
    for token_id in (token.id, uuid.uuid4()):
        with app.app_context():
            user = db.session.get(User, other.id)
            assert user is not None
            with pytest.raises(api_tokens.ApiTokenError) as raised:
                api_tokens.revoke_token(token_id, user=user)
        assert str(raised.value) == "No such token."

    # Then: the token is untouched and still works
    assert token_row(app, token.id).revoked_on is None
    response = session_call(client, token.secret, organizer.public_key.key_id_hex)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token irt_something",
        "Bearer irt_" + "A" * 43,
        "Bearer not-a-register-token",
        "Bearer irt_" + "x" * 300,
    ],
    ids=[
        "missing",
        "empty",
        "scheme only",
        "scheme and space",
        "basic",
        "other scheme",
        "unknown",
        "no prefix",
        "too long",
    ],
)
def test_a_request_without_a_valid_bearer_token_gets_401_json(
    app: Flask, client: FlaskClient, organizer: KeyFiles, authorization: str | None
) -> None:
    make_user(app, role="organizer")
    headers = {"X-Incidents-Key-Id": organizer.public_key.key_id_hex}
    if authorization is not None:
        headers["Authorization"] = authorization

    response = client.get("/api/v1/session", headers=headers)

    assert response.status_code == 401
    assert response.get_json()["error"] == "token"
    assert "no-store" in response.headers["Cache-Control"]
    assert "Set-Cookie" not in response.headers


def test_a_staff_login_cookie_is_not_an_api_credential(
    app: Flask, client: FlaskClient, organizer: KeyFiles
) -> None:
    # Given: an organizer logged in to the staff pages in this browser
    account = make_user(app, role="organizer")
    assert login(client, account).status_code == 302

    # When: the browser calls the API with its cookie but no token
    response = client.get(
        "/api/v1/session", headers={"X-Incidents-Key-Id": organizer.public_key.key_id_hex}
    )

    # Then: it is refused
    assert_refused(response, "An API token is required.")


def test_tokens_are_listed_newest_first_including_revoked_ones(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = make_user(app, role="organizer")
    at(monkeypatch, ISSUED_AT)
    old = issue(app, account, label="old")
    at(monkeypatch, ISSUED_AT + timedelta(days=5))
    new = issue(app, account, label="new")
    revoke(app, old.id, by=account)
    other = make_user(app, role="organizer")
    issue(app, other, label="someone else's")

    with app.app_context():
        user = db.session.get(User, account.id)
        assert user is not None
        listed = [(row.id, row.label, row.revoked_on) for row in api_tokens.tokens_of(user)]

    assert listed == [
        (new.id, "new", None),
        (old.id, "old", ISSUED_AT.date() + timedelta(days=5)),
    ]
