"""The NGO export workflow through the web pages: request, decision, download."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import date

from flask import Flask
from flask.testing import FlaskClient

from incidents.db import db
from incidents.models import ExportRequest, User
from tests.factories import flashed, login, make_report, make_user, page_csrf_token


def logged_in(app: Flask, role: str, *, lang: str = "en", vetted: bool = False) -> FlaskClient:
    """A browser logged in as a new account of ``role`` (in ``lang``)."""
    account = make_user(app, role=role)
    if vetted:
        with app.app_context():
            user = db.session.get(User, account.id)
            assert user is not None
            user.is_vetted_partner = True
            db.session.commit()
    client = app.test_client()
    client.get(f"/staff/login?lang={lang}")
    assert login(client, account).status_code == 302
    return client


def ask(client: FlaskClient, product: str = "P1") -> list[str]:
    """Send an export request for 2025 and return the flashed messages."""
    token = page_csrf_token(client, "/exports")
    return flashed(
        client.post(
            "/exports/request",
            data={"csrf_token": token, "product": product, "first_quarter": "2025Q1",
                  "last_quarter": "2025Q4"},
            follow_redirects=True,
        )
    )  # fmt: skip


def only_request(app: Flask) -> ExportRequest:
    """The one export request in the database."""
    with app.app_context():
        rows = db.session.query(ExportRequest).all()
        assert len(rows) == 1
        db.session.expunge(rows[0])
        return rows[0]


def test_an_approved_export_reaches_its_ngo_in_its_language(app: Flask) -> None:
    """Given an NGO working in Russian, when it asks for P1 and an organizer approves, then it
    downloads a zip whose meta.json explains the method in Russian and whose hash is on record."""
    for _ in range(15):
        make_report(app, occurred_on=date(2025, 2, 3))
    ngo = logged_in(app, "ngo", lang="ru")
    organizer = logged_in(app, "organizer")
    assert ask(ngo)  # "saved", in Russian
    request = only_request(app)
    assert request.status == "pending"

    page = organizer.get("/exports").get_data(as_text=True)
    assert "ε 0 spent of 4" in page
    token = page_csrf_token(organizer, "/exports")
    organizer.post(f"/exports/{request.id}/approve", data={"csrf_token": token})

    approved = only_request(app)
    assert approved.status == "approved"
    download = ngo.get(f"/exports/{request.id}/download")
    assert download.status_code == 200
    assert hashlib.sha256(download.data).hexdigest() == approved.archive_sha256
    with zipfile.ZipFile(io.BytesIO(download.data)) as bundle:
        meta_name = next(name for name in bundle.namelist() if name.endswith("meta.json"))
        meta = json.loads(bundle.read(meta_name))
    assert "дифференциальная приватность" in str(meta["explanation"])
    assert organizer.get(f"/exports/{request.id}/download").status_code == 403


def test_exact_products_are_for_vetted_partners_only(app: Flask) -> None:
    plain = logged_in(app, "ngo")
    assert ask(plain, "P3") == ["This product is not available to your organization."]
    assert ask(plain, "P2") == ["This product is not available to your organization."]
    vetted = logged_in(app, "ngo", vetted=True)
    assert ask(vetted, "P3") == ["Saved."]


def test_a_refusal_reaches_the_ngo_with_its_reason_and_computes_nothing(app: Flask) -> None:
    ngo = logged_in(app, "ngo")
    organizer = logged_in(app, "organizer")
    ask(ngo)
    request = only_request(app)
    token = page_csrf_token(organizer, "/exports")
    organizer.post(
        f"/exports/{request.id}/refuse", data={"csrf_token": token, "reason": "Too early."}
    )
    assert only_request(app).status == "refused"
    page = ngo.get("/exports").get_data(as_text=True)
    assert "Too early." in page
    ledger = app.test_cli_runner().invoke(args=["export", "ledger"])
    assert "0 entries" in ledger.output
