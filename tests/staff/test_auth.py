"""Staff authentication: login factors, generic failures, TOTP replay and drift, rate limiting,
session cookies and lifetimes, disabling, password and authenticator changes, safe redirects
after login, invitations, the ``users create-organizer`` command and CSRF on the login form.

Time-dependent behaviour (TOTP steps, idle and maximum session age, invitation expiry) runs on a
frozen clock (``clock``) that replaces ``now`` in the accounts and sessions services, so that no
test sleeps and no test depends on where in a 30-second step it happens to run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from werkzeug.test import TestResponse

from incidents.config import Settings
from incidents.db import Base, db
from incidents.models import AuditEvent, Invitation, StaffSession, User
from incidents.services import accounts, sessions
from tests.factories import (
    STAFF_PASSWORD,
    StaffAccount,
    flashed,
    login,
    make_user,
    page_csrf_token,
    use_fast_password_hashing,
)

GENERIC_FAILURE = "The username, password or code is not correct."
LOGIN_PATH = "/staff/login"
REAL_PASSWORD_HASHER = accounts._hasher  # before any test swaps it for a cheap one
NEW_PASSWORD = "a brand new long password"


@pytest.fixture(autouse=True)
def _fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cheap Argon2id parameters; ``test_create_organizer_command...`` checks the real ones."""
    use_fast_password_hashing(monkeypatch)


@dataclasses.dataclass
class Clock:
    """A frozen "now" for the accounts and sessions services."""

    moment: datetime

    def now(self) -> datetime:
        """The frozen time."""
        return self.moment

    def advance(self, **delta: float) -> None:
        """Move time forward."""
        self.moment += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Freeze time for TOTP checks, sessions and invitations (at the start of a 30 s step)."""
    start = datetime.now(UTC).replace(microsecond=0)
    frozen = Clock(start - timedelta(seconds=start.second % 30))
    monkeypatch.setattr(accounts, "now", frozen.now)
    monkeypatch.setattr(sessions, "now", frozen.now)
    return frozen


def code_at(account: StaffAccount, clock: Clock, *, steps: int = 0) -> str:
    """The account's TOTP code ``steps`` 30-second steps away from the frozen now."""
    assert account.totp_secret is not None
    return pyotp.TOTP(account.totp_secret).at(clock.moment + timedelta(seconds=30 * steps))


def wrong_code(secret: str, clock: Clock) -> str:
    """Six digits that are no valid code anywhere in the accepted window."""
    totp = pyotp.TOTP(secret)
    window = {totp.at(clock.moment + timedelta(seconds=30 * step)) for step in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222") if code not in window)


def post_login(client: FlaskClient, **fields: str) -> TestResponse:
    """POST the login form with a fresh CSRF token."""
    token = page_csrf_token(client, LOGIN_PATH)
    return client.post(LOGIN_PATH, data={"csrf_token": token, **fields})


def logout(client: FlaskClient) -> TestResponse:
    """Press "Log out" (the form is on every staff page)."""
    token = page_csrf_token(client, "/staff/account")
    return client.post("/staff/logout", data={"csrf_token": token})


def is_login_redirect(response: TestResponse) -> bool:
    """True for a redirect to the staff login page."""
    location = response.headers.get("Location", "")
    return response.status_code == 302 and urlsplit(location).path == LOGIN_PATH


def audit_events(app: Flask, action: str | None = None) -> list[tuple[str, str, str]]:
    """(actor, action, target) of every audit event, oldest first, optionally of one action."""
    with app.app_context():
        query = sa.select(AuditEvent.actor, AuditEvent.action, AuditEvent.target)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        rows = db.session.execute(query.order_by(AuditEvent.seq)).all()
        return [(row.actor, row.action, row.target) for row in rows]


def user_row(app: Flask, user_id: int) -> User:
    """The stored account (detached, for reading)."""
    with app.app_context():
        row = db.session.get(User, user_id)
        assert row is not None
        db.session.expunge(row)
        return row


def session_count(app: Flask, user_id: int) -> int:
    """How many server-side sessions an account has."""
    with app.app_context():
        query = sa.select(sa.func.count()).select_from(StaffSession)
        return int(db.session.scalar(query.where(StaffSession.user_id == user_id)) or 0)


def session_cookie(response: TestResponse) -> str:
    """The Set-Cookie header of the session cookie."""
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    assert headers, "no session cookie was set"
    return headers[-1]


def session_token(client: FlaskClient) -> str | None:
    """The server-side session token the client's cookie carries (None when logged out)."""
    with client.session_transaction() as stored:
        token = stored.get("_user_id")
    return str(token) if token is not None else None


def database_text(app: Flask) -> str:
    """Every value of every table, as one text (bytes decoded byte for byte)."""
    parts: list[str] = []
    with app.app_context():
        for table in Base.metadata.sorted_tables:
            for row in db.session.execute(sa.select(table)):
                for value in row:
                    is_bytes = isinstance(value, bytes | bytearray | memoryview)
                    parts.append(bytes(value).decode("latin-1") if is_bytes else str(value))
    return "\n".join(parts)


# --------------------------------------------------------------------------- login


HOME_BY_ROLE = {"organizer": "/staff/reports", "volunteer": "/staff/cases", "ngo": "/exports"}


@pytest.mark.parametrize("role", ["organizer", "volunteer", "ngo"])
def test_each_role_logs_in_with_its_factors(app: Flask, client: FlaskClient, role: str) -> None:
    account = make_user(app, role=role)
    # Organizers and volunteers need a TOTP code; NGO accounts have none and send none.
    assert (account.totp_secret is not None) == (role != "ngo")
    response = login(client, account)
    assert response.status_code == 302
    assert response.headers["Location"] == HOME_BY_ROLE[role]
    assert client.get(HOME_BY_ROLE[role]).status_code == 200
    assert audit_events(app, "login.success") == [
        (account.username, "login.success", account.username)
    ]


def test_every_login_failure_gets_the_same_generic_message(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    # Given: an organizer and a disabled volunteer
    organizer = make_user(app, role="organizer", username="organizer-one")
    disabled = make_user(app, role="volunteer", username="volunteer-gone", active=False)
    assert organizer.totp_secret is not None
    attempts = {
        "wrong username": dict(
            username="nobody-here", password=STAFF_PASSWORD, code=code_at(organizer, clock)
        ),
        "wrong password": dict(
            username=organizer.username, password="not the password", code=code_at(organizer, clock)
        ),
        "wrong code": dict(
            username=organizer.username,
            password=STAFF_PASSWORD,
            code=wrong_code(organizer.totp_secret, clock),
        ),
        "missing code": dict(username=organizer.username, password=STAFF_PASSWORD, code=""),
        "disabled account": dict(
            username=disabled.username, password=STAFF_PASSWORD, code=code_at(disabled, clock)
        ),
    }
    # When: each of them is tried
    responses = {name: post_login(client, **fields) for name, fields in attempts.items()}
    # Then: every answer is the same 400 page with the same single message
    for name, response in responses.items():
        assert response.status_code == 400, name
        assert flashed(response) == [GENERIC_FAILURE], name
        assert STAFF_PASSWORD not in response.get_data(as_text=True), name
    assert session_token(client) is None
    # And: every failure is on record, without saying which factor was wrong
    assert audit_events(app, "login.failure") == [
        ("anonymous", "login.failure", "(unknown account)"),
        ("anonymous", "login.failure", organizer.username),
        ("anonymous", "login.failure", organizer.username),
        ("anonymous", "login.failure", organizer.username),
        ("anonymous", "login.failure", disabled.username),
    ]
    assert audit_events(app, "login.success") == []


def test_a_totp_code_cannot_be_used_twice(app: Flask, client: FlaskClient, clock: Clock) -> None:
    volunteer = make_user(app, role="volunteer")
    code = code_at(volunteer, clock)
    assert login(client, volunteer, code=code).status_code == 302
    assert logout(client).status_code == 302
    # The same code again, within its validity window: refused.
    replay = login(client, volunteer, code=code)
    assert replay.status_code == 400
    assert flashed(replay) == [GENERIC_FAILURE]
    # The next step's code still works: the account itself is not locked.
    assert login(client, volunteer, code=code_at(volunteer, clock, steps=1)).status_code == 302


def test_totp_codes_one_step_away_are_accepted_two_steps_away_refused(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    organizer = make_user(app, role="organizer")
    # Refused first: an accepted code would make every older step count as used.
    for steps in (-2, 2):
        response = login(client, organizer, code=code_at(organizer, clock, steps=steps))
        assert response.status_code == 400, f"a code {steps} steps away was accepted"
    for steps in (-1, 1):
        response = login(client, organizer, code=code_at(organizer, clock, steps=steps))
        assert response.status_code == 302, f"a code {steps} steps away was refused"
        assert logout(client).status_code == 302


def test_sixth_login_attempt_within_a_minute_is_rate_limited_and_recorded(
    app: Flask, client: FlaskClient
) -> None:
    # Given: an account under attack, and a colleague
    target = make_user(app, role="ngo", username="target-account")
    colleague = make_user(app, role="ngo", username="colleague-account")
    # When: five wrong passwords are tried within a minute
    for _ in range(5):
        response = post_login(client, username=target.username, password="guess guess guess")
        assert response.status_code == 400
    # Then: the sixth attempt is refused before the password is even checked, right or wrong
    blocked = post_login(client, username=target.username, password=STAFF_PASSWORD)
    assert blocked.status_code == 429
    assert session_token(client) is None
    # And: both the failures and the blocking are on record
    assert len(audit_events(app, "login.failure")) == 5
    assert audit_events(app, "login.rate_limited") == [
        ("anonymous", "login.rate_limited", target.username)
    ]
    assert audit_events(app, "login.success") == []
    # And: the limit is per account, not per client: the colleague logs in from the same client
    assert login(client, colleague).status_code == 302


def test_login_without_csrf_token_is_refused(app: Flask, client: FlaskClient) -> None:
    ngo = make_user(app, role="ngo")
    response = client.post(LOGIN_PATH, data={"username": ngo.username, "password": ngo.password})
    assert response.status_code == 400
    assert session_token(client) is None
    assert audit_events(app, "login.success") == []


# --------------------------------------------------------------------------- session cookie


def test_session_cookie_is_httponly_and_samesite_strict(app: Flask, client: FlaskClient) -> None:
    response = login(client, make_user(app, role="ngo"))
    cookie = session_cookie(response)
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # local testing runs over plain HTTP


def test_session_cookie_is_secure_in_production(
    settings: Settings, make_app: Callable[[Settings], Flask]
) -> None:
    production = make_app(dataclasses.replace(settings, env="production"))
    response = production.test_client().get(LOGIN_PATH, base_url="https://localhost")
    cookie = session_cookie(response)
    assert "; Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


def test_session_token_changes_at_every_login(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    organizer = make_user(app, role="organizer")
    page_csrf_token(client, LOGIN_PATH)
    anonymous_cookie = client.get_cookie("session")
    assert anonymous_cookie is not None
    assert session_token(client) is None
    assert login(client, organizer, code=code_at(organizer, clock)).status_code == 302
    first_cookie, first_token = client.get_cookie("session"), session_token(client)
    assert login(client, organizer, code=code_at(organizer, clock, steps=1)).status_code == 302
    second_cookie, second_token = client.get_cookie("session"), session_token(client)
    assert first_cookie is not None
    assert second_cookie is not None
    assert len({anonymous_cookie.value, first_cookie.value, second_cookie.value}) == 3
    assert first_token is not None
    assert second_token is not None
    assert first_token != second_token
    # The token is random, not the account id, and the database keeps only its hash.
    assert first_token != str(organizer.id)
    stored = database_text(app)
    assert first_token not in stored
    assert second_token not in stored
    with app.app_context():
        digest = hashlib.sha256(second_token.encode()).digest()
        assert db.session.get(StaffSession, digest) is not None


def test_logout_invalidates_the_session_on_the_server(app: Flask, client: FlaskClient) -> None:
    ngo = make_user(app, role="ngo")
    assert login(client, ngo).status_code == 302
    stolen = client.get_cookie("session")
    assert stolen is not None
    assert logout(client).status_code == 302
    assert session_count(app, ngo.id) == 0
    # Replaying the cookie from before the logout gets the login page, not the account.
    client.set_cookie("session", stolen.value)
    assert is_login_redirect(client.get("/exports"))


def test_logout_needs_the_csrf_token(app: Flask, client: FlaskClient) -> None:
    ngo = make_user(app, role="ngo")
    assert login(client, ngo).status_code == 302
    assert client.post("/staff/logout").status_code == 400
    assert client.get("/exports").status_code == 200


def test_idle_session_expires_after_30_minutes(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    ngo = make_user(app, role="ngo")
    assert login(client, ngo).status_code == 302
    # Activity keeps the session alive...
    for _ in range(3):
        clock.advance(minutes=29)
        assert client.get("/exports").status_code == 200
    # ...31 idle minutes end it, on the server too.
    clock.advance(minutes=31)
    assert is_login_redirect(client.get("/exports"))
    assert session_count(app, ngo.id) == 0


def test_session_ends_after_12_hours_even_when_active(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    ngo = make_user(app, role="ngo")
    assert login(client, ngo).status_code == 302
    elapsed = timedelta()
    while elapsed + timedelta(minutes=25) < timedelta(hours=12):
        clock.advance(minutes=25)
        elapsed += timedelta(minutes=25)
        assert client.get("/exports").status_code == 200, f"ended early, after {elapsed}"
    clock.advance(minutes=25)
    assert is_login_redirect(client.get("/exports"))


def test_disabling_an_account_ends_its_open_sessions_at_once(app: Flask) -> None:
    # Given: a volunteer logged in, and an organizer on the accounts page
    organizer = make_user(app, role="organizer")
    volunteer = make_user(app, role="volunteer")
    volunteer_browser, organizer_browser = app.test_client(), app.test_client()
    assert login(volunteer_browser, volunteer).status_code == 302
    assert volunteer_browser.get("/staff/cases").status_code == 200
    assert login(organizer_browser, organizer).status_code == 302
    token = page_csrf_token(organizer_browser, "/staff/users")
    # When: the organizer disables the volunteer
    response = organizer_browser.post(
        f"/staff/users/{volunteer.id}/active", data={"csrf_token": token, "active": "0"}
    )
    assert response.status_code == 302
    # Then: the volunteer's open browser is sent to the login page on its next request
    assert is_login_redirect(volunteer_browser.get("/staff/cases"))
    assert session_count(app, volunteer.id) == 0
    assert not user_row(app, volunteer.id).is_active
    assert audit_events(app, "account.disable") == [
        (organizer.username, "account.disable", volunteer.username)
    ]


# --------------------------------------------------------------------------- account changes


def change_password(client: FlaskClient, *, current: str, new: str) -> TestResponse:
    """Submit the password form of /staff/account and follow the redirect back."""
    token = page_csrf_token(client, "/staff/account")
    return client.post(
        "/staff/account/password",
        data={"csrf_token": token, "current": current, "password": new, "password_again": new},
        follow_redirects=True,
    )


def test_password_change_needs_the_current_password_and_a_long_new_one(
    app: Flask, client: FlaskClient
) -> None:
    ngo = make_user(app, role="ngo")
    assert login(client, ngo).status_code == 302
    stored_hash = user_row(app, ngo.id).password_hash

    wrong_current = change_password(client, current="not my password", new=NEW_PASSWORD)
    assert "The current password is not correct." in flashed(wrong_current)
    too_short = change_password(client, current=STAFF_PASSWORD, new="short pw 11")
    assert any("at least 12 characters" in message for message in flashed(too_short))

    assert user_row(app, ngo.id).password_hash == stored_hash
    assert audit_events(app, "account.password_change") == []


def test_password_change_ends_other_sessions_but_keeps_this_one(app: Flask) -> None:
    # Given: the same NGO account logged in on a laptop and a phone
    ngo = make_user(app, role="ngo")
    laptop, phone = app.test_client(), app.test_client()
    assert login(laptop, ngo).status_code == 302
    assert login(phone, ngo).status_code == 302
    # When: the password is changed on the laptop
    changed = change_password(laptop, current=STAFF_PASSWORD, new=NEW_PASSWORD)
    assert "Your password was changed. Your other sessions were ended." in flashed(changed)
    # Then: the laptop stays logged in, the phone is logged out
    assert laptop.get("/staff/account").status_code == 200
    assert is_login_redirect(phone.get("/staff/account"))
    assert session_count(app, ngo.id) == 1
    # And: only the new password works from now on
    assert login(phone, dataclasses.replace(ngo, password=STAFF_PASSWORD)).status_code == 400
    assert login(phone, dataclasses.replace(ngo, password=NEW_PASSWORD)).status_code == 302
    assert audit_events(app, "account.password_change") == [
        (ngo.username, "account.password_change", ngo.username)
    ]


_SECRET_FIELD = re.compile(r'name="secret"[^>]*value="([A-Z2-7]+)"')


def test_totp_reenrollment_switches_the_secret_only_after_a_valid_code_and_password(
    app: Flask, client: FlaskClient, clock: Clock
) -> None:
    organizer = make_user(app, role="organizer")
    assert login(client, organizer, code=code_at(organizer, clock)).status_code == 302
    page = client.get("/staff/account").get_data(as_text=True)
    match = _SECRET_FIELD.search(page)
    assert match, "no new secret offered on /staff/account"
    new_secret = match.group(1)
    assert new_secret != organizer.totp_secret
    assert "<svg" in page  # the QR code is inline SVG
    token = page_csrf_token(client, "/staff/account")

    # A wrong code: nothing changes.
    client.post(
        "/staff/account/totp",
        data={
            "csrf_token": token,
            "secret": new_secret,
            "code": wrong_code(new_secret, clock),
            "current": organizer.password,
        },
    )
    assert user_row(app, organizer.id).totp_secret == organizer.totp_secret

    # A valid code but without the current password (a stolen session): nothing changes.
    new_code = pyotp.TOTP(new_secret).at(clock.moment)
    client.post(
        "/staff/account/totp",
        data={"csrf_token": token, "secret": new_secret, "code": new_code, "current": "wrong"},
    )
    assert user_row(app, organizer.id).totp_secret == organizer.totp_secret

    # A valid code of the new secret and the password: the switch happens.
    client.post(
        "/staff/account/totp",
        data={
            "csrf_token": token,
            "secret": new_secret,
            "code": new_code,
            "current": organizer.password,
        },
    )
    assert user_row(app, organizer.id).totp_secret == new_secret
    assert [event[1] for event in audit_events(app, "account.totp_enroll")] == [
        "account.totp_enroll"
    ]

    # From now on the old app's codes fail and the new app's codes work.
    assert logout(client).status_code == 302
    clock.advance(seconds=30)
    assert login(client, organizer, code=code_at(organizer, clock)).status_code == 400
    switched = dataclasses.replace(organizer, totp_secret=new_secret)
    assert login(client, switched, code=code_at(switched, clock)).status_code == 302


# --------------------------------------------------------------------------- redirects


OFF_SITE_TARGETS = (
    "//evil.example",
    "https://evil.example/x",
    "/\\evil.example",
    "javascript:alert(1)",
    "/\\/evil.example/staff/",
    "http:/staff/keys",
)


def test_login_refuses_to_redirect_off_site(app: Flask) -> None:
    followed = {}
    for number, target in enumerate(OFF_SITE_TARGETS):
        # One account per target keeps each login under the per-account rate limit.
        ngo = make_user(app, role="ngo", username=f"ngo-{number}")
        response = post_login(
            app.test_client(), username=ngo.username, password=ngo.password, next=target
        )
        assert response.status_code == 302
        followed[target] = response.headers["Location"]
    assert followed == dict.fromkeys(OFF_SITE_TARGETS, "/exports")


def test_login_follows_a_staff_page_it_was_sent_from(app: Flask, client: FlaskClient) -> None:
    organizer = make_user(app, role="organizer")
    # An anonymous visit to /staff/keys goes to the login page, remembering the page.
    sent = client.get("/staff/keys")
    assert is_login_redirect(sent)
    remembered = parse_qs(urlsplit(sent.headers["Location"]).query)["next"]
    assert remembered == ["/staff/keys"]
    page = client.get(sent.headers["Location"]).get_data(as_text=True)
    assert 'name="next" type="hidden" value="/staff/keys"' in page
    # After logging in, the browser goes back there.
    response = post_login(
        client,
        username=organizer.username,
        password=organizer.password,
        code=organizer.code(),
        next="/staff/keys",
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/staff/keys"
    assert client.get("/staff/keys").status_code == 200


# --------------------------------------------------------------------------- invitations


_LINK = re.compile(r"https?://[^\s<\"]+/staff/invite/([A-Za-z0-9_-]+)")


def invite(app: Flask, organizer_browser: FlaskClient, role: str) -> str:
    """The organizer creates an invitation on /staff/users; return the token of its link."""
    token = page_csrf_token(organizer_browser, "/staff/users")
    response = organizer_browser.post(
        "/staff/users/invite", data={"csrf_token": token, "role": role}
    )
    assert response.status_code == 200
    match = _LINK.search(response.get_data(as_text=True))
    assert match, "no invitation link on the page"
    return match.group(1)


def accept(
    client: FlaskClient, invitation: str, *, username: str, secret: str = "", code: str = ""
) -> TestResponse:
    """Fill in the invitation form (with the secret offered on the page unless given)."""
    page = client.get(f"/staff/invite/{invitation}")
    offered = _SECRET_FIELD.search(page.get_data(as_text=True))
    token = page_csrf_token(client, f"/staff/invite/{invitation}")
    return client.post(
        f"/staff/invite/{invitation}",
        data={
            "csrf_token": token,
            "username": username,
            "password": NEW_PASSWORD,
            "password_again": NEW_PASSWORD,
            "secret": secret or (offered.group(1) if offered else ""),
            "code": code,
        },
    )


def find_account(app: Flask, username: str) -> User | None:
    """The stored account with this username, if any (detached)."""
    with app.app_context():
        row = db.session.scalars(sa.select(User).where(User.username == username)).first()
        if row is not None:
            db.session.expunge(row)
        return row


def test_invitation_link_is_shown_once_stored_hashed_and_works_once(app: Flask) -> None:
    # Given: an organizer creates an invitation for an NGO
    organizer = make_user(app, role="organizer")
    organizer_browser = app.test_client()
    assert login(organizer_browser, organizer).status_code == 302
    token = invite(app, organizer_browser, "ngo")
    # Then: the link is not shown again, and the database holds only its hash
    assert token not in organizer_browser.get("/staff/users").get_data(as_text=True)
    with app.app_context():
        invitations = db.session.scalars(sa.select(Invitation)).all()
        assert [row.token_hash for row in invitations] == [accounts.hash_token(token)]
    assert token not in database_text(app)
    # When: the invitee uses it
    invitee = app.test_client()
    assert invitee.get(f"/staff/invite/{token}").status_code == 200
    created = accept(invitee, token, username="partner-ngo")
    assert created.status_code == 302
    assert created.headers["Location"] == "/exports"
    assert invitee.get("/exports").status_code == 200
    # Then: the link cannot be used a second time
    stranger = app.test_client()
    assert stranger.get(f"/staff/invite/{token}").status_code == 404
    csrf = page_csrf_token(stranger, LOGIN_PATH)
    again = stranger.post(
        f"/staff/invite/{token}",
        data={
            "csrf_token": csrf,
            "username": "second-ngo",
            "password": NEW_PASSWORD,
            "password_again": NEW_PASSWORD,
        },
    )
    assert again.status_code == 404
    assert find_account(app, "second-ngo") is None
    assert [event[1] for event in audit_events(app) if event[1].startswith("invitation.")] == [
        "invitation.create",
        "invitation.accept",
    ]


def test_invitation_expires_after_72_hours(app: Flask, clock: Clock) -> None:
    organizer = make_user(app, role="organizer")
    organizer_browser, invitee = app.test_client(), app.test_client()
    assert login(organizer_browser, organizer, code=code_at(organizer, clock)).status_code == 302
    token = invite(app, organizer_browser, "volunteer")
    clock.advance(hours=71, minutes=59)
    assert invitee.get(f"/staff/invite/{token}").status_code == 200
    clock.advance(minutes=1)
    expired = invitee.get(f"/staff/invite/{token}")
    assert expired.status_code == 404
    assert "This invitation cannot be used" in expired.get_data(as_text=True)


def test_unknown_invitation_token_gets_the_invalid_page(app: Flask, client: FlaskClient) -> None:
    response = client.get("/staff/invite/not-a-real-token")
    assert response.status_code == 404
    assert "This invitation cannot be used" in response.get_data(as_text=True)


def test_volunteer_invitation_requires_a_confirmed_authenticator(app: Flask, clock: Clock) -> None:
    organizer = make_user(app, role="organizer")
    organizer_browser, invitee = app.test_client(), app.test_client()
    assert login(organizer_browser, organizer, code=code_at(organizer, clock)).status_code == 302
    token = invite(app, organizer_browser, "volunteer")
    page = invitee.get(f"/staff/invite/{token}").get_data(as_text=True)
    assert "<svg" in page  # QR code rendered inline, no external service
    match = _SECRET_FIELD.search(page)
    assert match
    secret = match.group(1)

    # Without a code, or with a wrong one: no account, and the link stays usable.
    assert accept(invitee, token, username="new-volunteer", secret=secret).status_code == 400
    wrong = accept(
        invitee, token, username="new-volunteer", secret=secret, code=wrong_code(secret, clock)
    )
    assert wrong.status_code == 400
    assert find_account(app, "new-volunteer") is None

    # With a valid code: the account exists, with that authenticator enrolled.
    code = pyotp.TOTP(secret).at(clock.moment)
    created = accept(invitee, token, username="new-volunteer", secret=secret, code=code)
    assert created.status_code == 302
    assert created.headers["Location"] == "/staff/cases"
    account = find_account(app, "new-volunteer")
    assert account is not None
    assert account.role == "volunteer"
    assert account.totp_secret == secret


def test_ngo_invitation_needs_no_second_factor(app: Flask) -> None:
    organizer = make_user(app, role="organizer")
    organizer_browser, invitee = app.test_client(), app.test_client()
    assert login(organizer_browser, organizer).status_code == 302
    token = invite(app, organizer_browser, "ngo")
    page = invitee.get(f"/staff/invite/{token}").get_data(as_text=True)
    assert "<svg" not in page
    created = accept(invitee, token, username="partner-org")
    assert created.status_code == 302
    account = find_account(app, "partner-org")
    assert account is not None
    assert account.role == "ngo"
    assert account.totp_secret is None


# --------------------------------------------------------------------------- command line


def test_create_organizer_command_prints_an_enrollment_uri(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounts, "_hasher", REAL_PASSWORD_HASHER)
    result = runner.invoke(
        args=["users", "create-organizer", "First.Organizer"],
        env={"INCIDENTS_USER_PASSWORD": NEW_PASSWORD},
    )
    assert result.exit_code == 0, result.output
    uri = re.search(r"otpauth://totp/\S+", result.output)
    assert uri, result.output
    secret = parse_qs(urlsplit(uri.group(0)).query)["secret"][0]
    account = find_account(app, "first.organizer")
    assert account is not None
    assert account.role == "organizer"
    assert account.totp_secret == secret
    # Argon2id with argon2-cffi's default cost (RFC 9106 low-memory profile), never plain text.
    assert account.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert NEW_PASSWORD not in database_text(app)
    # The new organizer can log in with the password and the enrolled authenticator.
    browser = app.test_client()
    organizer = StaffAccount(account.id, account.username, "organizer", NEW_PASSWORD, secret)
    assert login(browser, organizer).status_code == 302


def test_create_organizer_command_refuses_a_taken_username_or_short_password(
    app: Flask, runner: FlaskCliRunner
) -> None:
    make_user(app, role="volunteer", username="taken-name")
    taken = runner.invoke(
        args=["users", "create-organizer", "Taken-Name"],
        env={"INCIDENTS_USER_PASSWORD": NEW_PASSWORD},
    )
    assert taken.exit_code == 1
    assert "This username is taken." in taken.output
    assert "otpauth://" not in taken.output
    account = find_account(app, "taken-name")
    assert account is not None
    assert account.role == "volunteer"

    short = runner.invoke(
        args=["users", "create-organizer", "someone"],
        env={"INCIDENTS_USER_PASSWORD": "too short"},
    )
    assert short.exit_code == 1
    assert "at least 12 characters" in short.output
    assert find_account(app, "someone") is None


def test_logging_in_again_ends_the_previous_session(app: Flask, client: FlaskClient) -> None:
    """Given a logged-in organizer, when they log in again in the same browser, then the old
    session token no longer opens anything."""
    organizer = make_user(app, role="organizer")
    assert login(client, organizer).status_code == 302
    with app.app_context():
        before = {row.token_hash for row in db.session.scalars(sa.select(StaffSession)).all()}
    assert login(client, organizer, code=organizer.code(offset_steps=1)).status_code == 302
    with app.app_context():
        after = {row.token_hash for row in db.session.scalars(sa.select(StaffSession)).all()}
    assert len(after) == 1
    assert not (before & after)


def test_an_invitation_dies_with_the_account_that_made_it(app: Flask) -> None:
    """Given an invitation created by an organizer who is then disabled, the link no longer
    works (disabling ends the account's tokens at once)."""
    creator = make_user(app, role="organizer")
    make_user(app, role="organizer")  # someone must remain to do the disabling
    with app.app_context():
        user = db.session.get(User, creator.id)
        assert user is not None
        invitation = accounts.create_invitation(role="volunteer", organizer=user)
        db.session.commit()
        assert app.test_client().get(f"/staff/invite/{invitation.token}").status_code == 200
        user.is_active = False
        db.session.commit()
    assert app.test_client().get(f"/staff/invite/{invitation.token}").status_code == 404


@pytest.mark.parametrize("name", ["witness", "Anonymous", "cli", "desk"])
def test_names_the_audit_log_uses_for_non_staff_cannot_be_taken(app: Flask, name: str) -> None:
    with app.app_context(), pytest.raises(accounts.AccountError):
        accounts.create_user(username=name, password="a long staff password", role="ngo", actor="t")
