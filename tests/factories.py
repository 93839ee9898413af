"""Plain factory functions for tests: form data, CSRF tokens and filed reports."""

from __future__ import annotations

import re
from typing import Any

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
