"""Plain factory functions for tests: form data, CSRF tokens, staff accounts, reports, grants."""

from __future__ import annotations

import html
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from incidents import crypto

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
_RECEIPT = re.compile(r'<p class="receipt-code"[^>]*><code>([0-9A-Z-]+)</code>')


def csrf_token(client: FlaskClient, url: str = "/report") -> str:
    """GET ``url`` and return the CSRF token of its form."""
    response = client.get(url)
    match = _CSRF.search(response.get_data(as_text=True))
    assert match, f"no CSRF token on {url} (status {response.status_code})"
    return match.group(1)


def report_form_data(**overrides: Any) -> dict[str, Any]:
    """Valid report form fields; override any of them by keyword."""
    data: dict[str, Any] = {
        "category": "threat",
        "occurred_on": "2025-03-14",
        "date_precision": "day",
        "country": "RS",
        "city": "belgrade",
        "place_detail": "near the embassy",
        "narrative": "Two men followed me from the rally and said they know where I live.",
        "targeted_person": "me",
        "perpetrator_type": "home_state",
        "perpetrator_description": "dark jacket, spoke Russian",
        "contact": "signal: example.01",
        "consent_contact": "y",
        "consent_statistics": "y",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def submit_report(client: FlaskClient, **overrides: Any) -> TestResponse:
    """File a report through the form (with a fresh CSRF token) and return the response."""
    data = {"csrf_token": csrf_token(client), **report_form_data(**overrides)}
    return client.post("/report", data=data)


def receipt_from(response: TestResponse) -> str:
    """Extract the receipt code from a receipt page."""
    match = _RECEIPT.search(response.get_data(as_text=True))
    assert match, "no receipt on the page"
    return match.group(1)


# --------------------------------------------------------------------------- staff

STAFF_PASSWORD = "a long staff password"


@dataclass
class StaffAccount:
    """A staff account made for a test, with what is needed to log in as it."""

    id: int
    username: str
    role: str
    password: str
    totp_secret: str | None

    def code(self, *, offset_steps: int = 0) -> str:
        """A current TOTP code (optionally of a neighbouring 30-second step)."""
        if self.totp_secret is None:
            return ""
        totp = pyotp.TOTP(self.totp_secret)
        return totp.at(datetime.now(UTC) + timedelta(seconds=30 * offset_steps))


def make_user(
    app: Flask, *, role: str = "organizer", username: str | None = None, active: bool = True
) -> StaffAccount:
    """Create a staff account directly through the accounts service (TOTP enrolled if needed)."""
    from incidents.db import db
    from incidents.services import accounts

    name = username or f"{role}-{secrets.token_hex(3)}"
    with app.app_context():
        user = accounts.create_user(username=name, password=STAFF_PASSWORD, role=role, actor="test")
        secret = accounts.new_totp_secret() if user.needs_totp else None
        user.totp_secret = secret
        user.is_active = active
        db.session.commit()
        return StaffAccount(user.id, user.username, role, STAFF_PASSWORD, secret)


def login(client: FlaskClient, account: StaffAccount, *, code: str | None = None) -> TestResponse:
    """Log in through the real login form; returns the response (302 on success)."""
    token = csrf_token(client, "/staff/login")
    return client.post(
        "/staff/login",
        data={
            "csrf_token": token,
            "username": account.username,
            "password": account.password,
            "code": account.code() if code is None else code,
        },
    )


def page_csrf_token(client: FlaskClient, url: str) -> str:
    """The first CSRF token on any page (staff pages carry several forms)."""
    response = client.get(url)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', response.get_data(as_text=True))
    assert match, f"no CSRF token on {url} (status {response.status_code})"
    return match.group(1)


def flashed(response: TestResponse) -> list[str]:
    """The text of every alert (flashed message or page error) on a page, unescaped."""
    page = response.get_data(as_text=True)
    found = re.findall(r'<div class="alert [^"]*"[^>]*>(.*?)</div>', page, flags=re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", text)).strip() for text in found]


# Argon2id with argon2-cffi's defaults costs about a quarter of a second per hash or check; tests
# of triage, keys and cases log in many accounts and are not about password hashing.
FAST_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def use_fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash and check staff passwords with cheap Argon2id parameters for one test."""
    from incidents.services import accounts

    monkeypatch.setattr(accounts, "_hasher", FAST_PASSWORD_HASHER)


# --------------------------------------------------------------------------- reports and grants


def make_report(
    app: Flask,
    *,
    received_on: date | None = None,
    status: str = "new",
    **overrides: Any,
) -> uuid.UUID:
    """File a report through the reports service (sealed to the organizer key); return its id.

    ``overrides`` change the draft (``category``, ``occurred_on``, ``date_precision``,
    ``country``, ``city``, sealed texts, consents); ``status`` is written straight to the row.
    """
    from incidents.db import db
    from incidents.models import Report
    from incidents.services import reports

    values: dict[str, Any] = {
        "category": "threat",
        "occurred_on": date(2025, 3, 14),
        "date_precision": "day",
        "country": "RS",
        "city": "belgrade",
        "place_detail": "near the embassy",
        "narrative": "Two men followed me from the rally.",
        "targeted_person": "me",
        "perpetrator_type": "home_state",
        "perpetrator_description": "dark jacket",
        "contact": "signal: example.01",
        "consent_contact": True,
        "consent_statistics": True,
    }
    values.update(overrides)
    with app.app_context():
        settings = app.extensions["incidents.settings"]
        filed = reports.file_report(
            reports.ReportDraft(**values),
            keyring=app.extensions["incidents.keyring"].get(),
            receipt_secret=settings.receipt_key,
            received_on=received_on or datetime.now(UTC).date(),
        )
        if status != "new":
            row = db.session.get(Report, filed.report_id)
            assert row is not None
            row.status = status
            db.session.commit()
        return filed.report_id


def grant_for(
    app: Flask,
    report_id: uuid.UUID,
    *,
    organizer_key: crypto.PrivateKey,
    recipient: crypto.PublicKey,
) -> bytes:
    """What the organizer's desk makes: the report key unwrapped and re-wrapped to ``recipient``."""
    from incidents.db import db
    from incidents.models import Wrap

    with app.app_context():
        wrap = db.session.get(Wrap, (report_id, organizer_key.key_id.hex()))
        assert wrap is not None, "the report has no wrap to the organizer key"
        data_key = crypto.unwrap_data_key(wrap.blob, report_id=report_id, private_key=organizer_key)
    return crypto.wrap_data_key(data_key, report_id=report_id, recipient=recipient)


def make_volunteer_key(
    app: Flask, volunteer: StaffAccount, *, approved_by: StaffAccount | None = None
) -> crypto.PrivateKey:
    """Register a new X-Wing key for ``volunteer`` (approved when an organizer is given)."""
    from incidents.db import db
    from incidents.models import User
    from incidents.services import recipients

    private_key = crypto.PrivateKey.generate()
    armor = private_key.public_key().to_armor().encode("ascii")
    with app.app_context():
        owner = db.session.get(User, volunteer.id)
        assert owner is not None
        row = recipients.register_key(owner, armor, keyring=None)
        if approved_by is not None:
            organizer = db.session.get(User, approved_by.id)
            assert organizer is not None
            recipients.approve_key(row.key_id, organizer=organizer)
    return private_key
