"""Plain factory functions for tests: form data, CSRF tokens and filed reports."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

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
