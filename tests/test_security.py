"""Security properties that cut across modules: HTTPS forms, referrer policy, fail-closed memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from incidents.keyring import KeyringCache
from incidents.services.errors import KeyUnavailableError
from incidents.uploads import sniff_type
from tests.conftest import KeyFiles
from tests.factories import report_form_data


def test_pages_send_a_referrer_only_to_the_site_itself(client: FlaskClient) -> None:
    response = client.get("/report")
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert '<meta name="referrer" content="same-origin">' in response.get_data(as_text=True)


def test_a_report_can_be_filed_over_https(app: Flask) -> None:
    """Given the site served over HTTPS (as behind a TLS proxy), when a browser posts the form
    with the same-origin Referer the referrer policy allows, then the report is filed (Flask-WTF
    checks the Referer on HTTPS requests)."""
    client = app.test_client()
    base = "https://register.example"
    token = csrf_token_over_https(client, base)
    response = client.post(
        "/report",
        base_url=base,
        data={"csrf_token": token, **report_form_data()},
        headers={"Referer": f"{base}/report"},
    )
    assert response.status_code == 200
    assert "receipt-code" in response.get_data(as_text=True)


def csrf_token_over_https(client: FlaskClient, base: str) -> str:
    """The form's CSRF token, fetched over HTTPS."""
    page = client.get("/report", base_url=base).get_data(as_text=True)
    marker = 'name="csrf_token" type="hidden" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


def test_a_closed_form_does_not_keep_refused_requests_in_memory(tmp_path: Path) -> None:
    """The keyring cache raises a new error each time: one cached exception object would collect
    the frames (and form data) of every refused request on its traceback."""
    cache = KeyringCache(tmp_path / "missing.pub", pinned_key_id="0" * 32)
    raised = []
    for _ in range(3):
        try:
            cache.get()
        except KeyUnavailableError as exc:
            raised.append(exc)
    assert len({id(exc) for exc in raised}) == 3
    assert all("does not exist" in str(exc) for exc in raised)


def test_withdrawing_contact_consent_erases_the_sealed_contact(
    app: Flask, organizer: KeyFiles
) -> None:
    """Given a report with contact details, when the witness withdraws consent to be contacted,
    then the sealed contact column is emptied (crypto-shredded) and the case opens with an
    empty contact, everything else intact."""
    from incidents.db import db
    from incidents.models import ERASED, Report
    from incidents.services import casefile, followup
    from tests.factories import make_filed_report

    filed = make_filed_report(app, contact="signal: WITHDRAWN-CONTACT")
    settings = app.extensions["incidents.settings"]
    with app.app_context():
        case = followup.find_case(filed.receipt, receipt_secret=settings.receipt_key)
        followup.withdraw_consent(case, statistics=False, contact=True)
        row = db.session.get(Report, filed.report_id)
        assert row is not None
        assert row.contact_sealed == ERASED
        assert row.consent_contact is False
        opened = casefile.open_case(filed.report_id, private_key=organizer.private_key)
    assert opened.sealed["contact"] == ""
    assert opened.sealed["narrative"] == "Two men followed me from the rally."


@pytest.mark.parametrize(
    "content",
    [b"<img src=x onerror=alert(1)>", b"note\n<b>bold</b>", b"x </p> y", b"<!-- hidden -->"],
)
def test_markup_is_never_accepted_as_plain_text(content: bytes) -> None:
    assert sniff_type(content) is None


@pytest.mark.parametrize(
    "content", [b"hello <3 and a < b", b"mail me <me@example.org> or <https://example.org>"]
)
def test_angle_brackets_in_ordinary_text_are_fine(content: bytes) -> None:
    kind = sniff_type(content)
    assert kind is not None
    assert kind.code == "text"
