"""Witness pages: the report form, filing, bad input, CSRF, fail-closed, languages, translations.

Every test here runs on SQLite and on PostgreSQL (through the ``app``/``client``/``make_app``
fixtures). "Nothing stored" is always checked by counting rows in the tables a report writes.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from flask import Flask, abort, session
from flask.testing import FlaskClient
from flask_wtf.csrf import generate_csrf
from werkzeug.test import TestResponse

from incidents import crypto
from incidents.config import Settings
from incidents.db import db
from incidents.keyring import KeyringCache
from incidents.models import Report
from incidents.services import reports as report_service
from tests.conftest import KeyFiles
from tests.factories import csrf_token, receipt_from, report_form_data, submit_report

TRANSLATIONS = Path(__file__).resolve().parents[2] / "incidents" / "translations"
RECEIPT_PATTERN = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(?:-[0-9A-HJKMNP-TV-Z]{4}){6}")
NOT_ACCEPTING = "Not accepting reports right now"
NOT_SAVED = "Your report was not saved."
CSRF_HEADING = "The form expired"
TOO_LARGE_HEADING = "Too much data"
# Words a neutral title must not contain, in the three shipped languages.
REVEALING_WORDS = (
    "report",
    "incident",
    "intimidation",
    "witness",
    "complaint",
    "register",
    "threat",
    "сообщ",
    "отчёт",
    "отчет",
    "инцидент",
    "запугив",
    "свидетел",
    "жалоб",
    "угроз",
    "prijav",
    "izveštaj",
    "zastraš",
    "svedo",
    "pretnj",
)


# --------------------------------------------------------------------------- helpers


def stored_rows(app: Flask) -> dict[str, int]:
    """Count the rows a filed report writes (reports, wraps, recipient keys)."""
    with app.app_context():
        counts = {
            table: db.session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("reports", "wraps", "recipient_keys")
        }
        db.session.remove()
    return counts


NOTHING_STORED = {"reports": 0, "wraps": 0, "recipient_keys": 0}


def field_errors(html: str, field: str) -> list[str]:
    """The messages in the ``.field-errors`` list rendered next to ``field``."""
    match = re.search(
        rf'<ul class="field-errors" id="{re.escape(field)}-errors">(.*?)</ul>', html, re.S
    )
    if match is None:
        return []
    return [m.strip() for m in re.findall(r"<li>(.*?)</li>", match.group(1), re.S)]


def title_of(html: str) -> str:
    """The text of the page's <title>."""
    match = re.search(r"<title>(.*?)</title>", html, re.S)
    assert match, "page has no <title>"
    return match.group(1).strip()


def html_lang(html: str) -> str:
    """The lang attribute of the <html> element."""
    match = re.search(r'<html lang="([^"]+)"', html)
    assert match, "page has no <html lang>"
    return match.group(1)


def quick_exit_href(html: str) -> str | None:
    """The target of the quick-exit link (a plain <a href>, usable without JavaScript)."""
    match = re.search(r'<a class="quick-exit" id="quick-exit" href="([^"]+)"', html)
    return match.group(1) if match else None


def unique(label: str) -> str:
    """A value that cannot appear on a page or in a log by chance."""
    return f"{label}-{secrets.token_hex(6)}"


def csrf_token_without_form(app: Flask, client: FlaskClient) -> str:
    """A valid CSRF token for ``client`` while the form itself cannot be shown (503).

    A witness may have opened the form just before the key broke; this puts the same token in
    the client's session that the form would have.
    """
    with app.test_request_context():
        token = generate_csrf()
        raw = session["csrf_token"]
    with client.session_transaction() as client_session:
        client_session["csrf_token"] = raw
    return token


def post_raw(client: FlaskClient, body: bytes) -> TestResponse:
    """POST an already encoded form body, as a misbehaving client could."""
    return client.post(
        "/report", data=body, content_type="application/x-www-form-urlencoded", buffered=True
    )


class _PageText(HTMLParser):
    """Collect the visible text nodes and human-readable attributes of a page."""

    ATTRIBUTES = ("aria-label", "label", "placeholder", "title", "alt")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in attrs:
            if name in self.ATTRIBUTES and value:
                self.texts.append(" ".join(value.split()))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if text and not self._skip:
            self.texts.append(text)


def page_texts(html: str) -> list[str]:
    """Visible text of a page, one entry per text node or labelling attribute."""
    parser = _PageText()
    parser.feed(html)
    return parser.texts


# --------------------------------------------------------------------------- the form


def test_report_form_is_served_uncached_with_strict_csp(client: FlaskClient) -> None:
    response = client.get("/report")

    assert response.status_code == 200
    assert "no-store" in response.headers["Cache-Control"]
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "http:" not in csp
    assert "https:" not in csp


def test_report_form_has_no_inline_script_or_style(client: FlaskClient) -> None:
    html = client.get("/report").get_data(as_text=True)

    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts, "the quick-exit enhancement script is expected"
    for attributes, body in scripts:
        assert 'src="/static/' in attributes
        assert body.strip() == ""
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html), "inline event handlers need 'unsafe-inline'"
    assert "http://" not in html
    external = [url for url in re.findall(r'(?:src|href)="(https://[^"]+)"', html)]
    assert external == [client.application.jinja_env.globals["quick_exit_url"]]


def test_report_form_names_the_fields_of_the_issue(client: FlaskClient) -> None:
    html = client.get("/report").get_data(as_text=True)

    for name in report_form_data():
        assert f'name="{name}"' in html, name
    assert 'method="post"' in html
    assert 'name="csrf_token"' in html


def test_root_redirects_to_the_report_form(client: FlaskClient) -> None:
    response = client.get("/")

    assert response.status_code == 302
    assert response.headers["Location"].endswith("/report")


# --------------------------------------------------------------------------- filing


def test_filing_a_valid_report_shows_the_receipt_and_stores_one_report(
    app: Flask, client: FlaskClient
) -> None:
    response = submit_report(client)

    assert response.status_code == 200
    assert "no-store" in response.headers["Cache-Control"]
    receipt = receipt_from(response)
    assert RECEIPT_PATTERN.fullmatch(receipt), receipt
    assert "This code is shown only once." in response.get_data(as_text=True)
    assert stored_rows(app) == {"reports": 1, "wraps": 1, "recipient_keys": 1}


def test_each_report_gets_a_new_receipt_and_a_random_id(app: Flask, client: FlaskClient) -> None:
    receipts = {receipt_from(submit_report(client)) for _ in range(3)}

    assert len(receipts) == 3
    with app.app_context():
        ids = db.session.scalars(sa.select(Report.id)).all()
    assert len(ids) == 3
    assert all(isinstance(report_id, uuid.UUID) and report_id.version == 4 for report_id in ids)


PERIODS = [
    ("2025-03-14", "day", "2025-W11"),
    ("2025-03-14", "week", "2025-W11"),
    ("2025-03-14", "month", "2025-03"),
    ("2025-03-14", "estimate", "2025-03"),
    # The ISO week-numbering year differs from the calendar year at year boundaries.
    ("2024-12-30", "day", "2025-W01"),
    ("2021-01-03", "week", "2020-W53"),
]
PLACES = [("RS", "belgrade", "city"), ("ME", "other", "country"), ("other", "other", "none")]


def test_the_shell_stores_only_a_coarse_period(app: Flask, client: FlaskClient) -> None:
    """Given reports with exact dates and each precision,
    when they are filed, then the shell holds the ISO week (day/week precision) or the month
    (month/estimate), never the day; the day received is today (UTC).
    """
    expected = {}
    for occurred_on, precision, period in PERIODS:
        response = submit_report(client, occurred_on=occurred_on, date_precision=precision)
        assert response.status_code == 200
        expected[receipt_from(response)] = (period, precision)

    with app.app_context():
        stored = {
            report.witness_lookup_hash: (report.occurred_period, report.date_precision)
            for report in db.session.scalars(sa.select(Report))
        }
        received = set(db.session.scalars(sa.select(Report.received_on)))
    secret = app.extensions["incidents.settings"].receipt_secret.encode()
    for receipt, shell in expected.items():
        token = crypto.derive_witness_secrets(receipt).lookup_token
        assert stored[crypto.lookup_hash(token, secret=secret)] == shell, receipt
    assert len(received) == 1
    assert abs((received.pop() - date.today()).days) <= 1  # the UTC day


def test_the_shell_stores_country_city_and_their_precision(app: Flask, client: FlaskClient) -> None:
    for country, city, _precision in PLACES:
        assert submit_report(client, country=country, city=city).status_code == 200

    with app.app_context():
        reports = db.session.scalars(sa.select(Report)).all()
        places = sorted((r.country, r.city, r.geo_precision) for r in reports)
        for report in reports:
            assert report.category == "threat"
            assert report.perpetrator_type == "home_state"
            assert report.consent_contact is True
            assert report.consent_statistics is True
            assert report.status == "new"
            assert report.format_version == crypto.FORMAT_VERSION
    assert places == sorted(PLACES)


def test_unticked_consents_are_stored_as_false(app: Flask, client: FlaskClient) -> None:
    response = submit_report(client, contact="", consent_contact=None, consent_statistics=None)

    assert response.status_code == 200
    with app.app_context():
        report = db.session.scalars(sa.select(Report)).one()
        assert report.consent_contact is False
        assert report.consent_statistics is False


def test_the_stored_lookup_hash_and_witness_key_derive_from_the_receipt(
    app: Flask, client: FlaskClient, settings: Settings
) -> None:
    receipt = receipt_from(submit_report(client))

    witness = crypto.derive_witness_secrets(receipt)
    expected_hash = crypto.lookup_hash(
        witness.lookup_token, secret=settings.receipt_secret.encode()
    )
    with app.app_context():
        report = db.session.scalars(sa.select(Report)).one()
        assert report.witness_lookup_hash == expected_hash
        assert report.witness_public_key == witness.witness_key.public_key().to_bytes()


def _variants(receipt: str) -> list[str]:
    canonical = receipt.replace("-", "")
    return [
        receipt.lower(),
        canonical,
        canonical.lower(),
        " ".join(receipt.split("-")),
        f"  {receipt} \n",
        "-".join(canonical[i : i + 2] for i in range(0, len(canonical), 2)),
        receipt.replace("0", "O").replace("1", "I"),
        receipt.replace("0", "o").replace("1", "l"),
        receipt.replace("1", "L").lower(),
    ]


def test_the_receipt_is_accepted_in_normalised_forms(
    app: Flask, client: FlaskClient, settings: Settings
) -> None:
    receipt = receipt_from(submit_report(client))
    with app.app_context():
        stored_hash = db.session.scalars(sa.select(Report.witness_lookup_hash)).one()

    for variant in _variants(receipt):
        assert crypto.normalize_receipt(variant) == receipt.replace("-", ""), variant
        token = crypto.derive_witness_secrets(variant).lookup_token
        assert crypto.lookup_hash(token, secret=settings.receipt_secret.encode()) == stored_hash


def test_receipt_confusions_of_zero_and_one_still_find_the_report(
    app: Flask, client: FlaskClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a receipt full of 0 and 1 (random receipts may have none of them),
    when the witness types O for 0 and I or L for 1, in any case,
    then the typed code derives the stored lookup hash.
    """
    fixed = "0011-A0B1-C0D1-E0F1-G0H1-J0K1-M0N1"
    monkeypatch.setattr(crypto, "new_receipt", lambda: fixed)

    assert receipt_from(submit_report(client)) == fixed
    with app.app_context():
        stored_hash = db.session.scalars(sa.select(Report.witness_lookup_hash)).one()
    for typed in ("OOII-AOBI-COD1-EOFL-GOHI-JOKl-MONi", "ooll aobl codl eofl gohl jokl monl"):
        token = crypto.derive_witness_secrets(typed).lookup_token
        assert crypto.lookup_hash(token, secret=settings.receipt_secret.encode()) == stored_hash


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "0011-A0B1",
        "0011-A0B1-C0D1-E0F1-G0H1-J0K1-M0N1-0000",
        "0011-A0B1-C0D1-E0F1-G0H1-J0K1-M0N!",
    ],
)
def test_malformed_receipts_are_refused(typed: str) -> None:
    with pytest.raises(crypto.ReceiptError):
        crypto.normalize_receipt(typed)


# --------------------------------------------------------------------------- bad input

TODAY = date.today()
BAD_INPUT = [
    pytest.param({"narrative": ""}, "narrative", "describe what happened", id="no-narrative"),
    pytest.param({"narrative": None}, "narrative", "describe what happened", id="narrative-absent"),
    pytest.param({"category": ""}, "category", "choose what happened", id="no-category"),
    pytest.param(
        {"category": "coup"},
        "category",
        "listed answers",
        id="unknown-category",
    ),
    pytest.param(
        {"country": "XX"},
        "country",
        "listed answers",
        id="unknown-country",
    ),
    pytest.param(
        {"country": "RS", "city": "tbilisi"},
        "city",
        "not in the chosen country",
        id="city-of-another-country",
    ),
    pytest.param({"city": "atlantis"}, "city", "listed answers", id="unknown-city"),
    pytest.param(
        {"perpetrator_type": "aliens"},
        "perpetrator_type",
        "listed answers",
        id="unknown-perpetrator-type",
    ),
    pytest.param(
        {"date_precision": "century"},
        "date_precision",
        "listed answers",
        id="unknown-date-precision",
    ),
    pytest.param(
        {"occurred_on": (TODAY + timedelta(days=30)).isoformat()},
        "occurred_on",
        "in the future",
        id="future-date",
    ),
    pytest.param(
        {"occurred_on": "1999-12-31"},
        "occurred_on",
        "2000 or later",
        id="date-before-2000",
    ),
    pytest.param(
        {"occurred_on": "14/03/2025"},
        "occurred_on",
        "year-month-day",
        id="malformed-date",
    ),
    pytest.param(
        {"occurred_on": ""},
        "occurred_on",
        "give a date",
        id="no-date",
    ),
    pytest.param(
        {"narrative": "x" * 20001},
        "narrative",
        "20000 characters",
        id="oversized-narrative",
    ),
    pytest.param(
        {"targeted_person": "y" * 501},
        "targeted_person",
        "500 characters",
        id="oversized-short-field",
    ),
    pytest.param(
        {"contact": "signal: witness.42", "consent_contact": None},
        "contact",
        "want to be contacted",
        id="contact-without-consent",
    ),
    pytest.param(
        {"narrative": "before\x00after"},
        "narrative",
        "control characters",
        id="nul-in-narrative",
    ),
    pytest.param(
        {"perpetrator_description": "escape \x1b[31m red"},
        "perpetrator_description",
        "control characters",
        id="escape-in-description",
    ),
]
TEXT_FIELDS = ("place_detail", "narrative", "perpetrator_description", "targeted_person", "contact")
# Fields whose distinctive values must survive a re-render: a text field and a select.
KEPT_TEXT_FIELDS = ("place_detail", "narrative", "perpetrator_description")


def _distinctive_form(overrides: dict[str, object]) -> dict[str, object]:
    values = {
        "place_detail": unique("PLACE"),
        "narrative": unique("NARRATIVE") + " — ночью у дома, čovek u jakni",
        "perpetrator_description": unique("DESCRIPTION"),
        "targeted_person": unique("PERSON"),
    }
    values.update(overrides)
    return report_form_data(**values)


def _assert_input_kept(html: str, sent: dict[str, object], bad_field: str) -> None:
    kept = [name for name in KEPT_TEXT_FIELDS if name != bad_field and name in sent]
    assert kept
    for name in kept:
        assert escape(str(sent[name]), quote=True) in html, f"{name} was not kept"
    if bad_field not in ("category",):
        assert f'<option value="{sent["category"]}" selected>' in html
    if bad_field not in ("country", "city"):
        assert f'<option value="{sent["country"]}" selected>' in html
    if bad_field != "consent_contact" and "consent_contact" in sent:
        assert re.search(r'<input[^>]*checked[^>]*id="consent_contact"', html) or re.search(
            r'<input[^>]*id="consent_contact"[^>]*checked', html
        )


@pytest.mark.parametrize(("overrides", "bad_field", "message"), BAD_INPUT)
def test_bad_input_is_refused_next_to_the_field_and_nothing_is_stored(
    app: Flask,
    client: FlaskClient,
    overrides: dict[str, object],
    bad_field: str,
    message: str,
) -> None:
    """Given a form with one bad value and distinctive values elsewhere,
    when the witness sends it,
    then the form comes back (400) with the message next to that field,
    everything else the witness wrote is still in it, and nothing was stored.
    """
    sent = _distinctive_form(overrides)

    response = client.post("/report", data={"csrf_token": csrf_token(client), **sent})

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert [error for error in field_errors(html, bad_field) if message in error]
    assert f'aria-describedby="{bad_field}-errors' in html or f"{bad_field}-errors" in html
    assert "Please check the marked fields." in html
    _assert_input_kept(html, sent, bad_field)
    assert "no-store" in response.headers["Cache-Control"]
    assert stored_rows(app) == NOTHING_STORED


def test_a_rejected_form_can_be_corrected_and_sent(app: Flask, client: FlaskClient) -> None:
    rejected = client.post(
        "/report", data={"csrf_token": csrf_token(client), **report_form_data(narrative="")}
    )
    assert rejected.status_code == 400
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', rejected.text)
    assert token, "the re-rendered form carries a CSRF token"

    corrected = client.post(
        "/report", data={"csrf_token": token.group(1), **report_form_data(narrative="Now filled.")}
    )

    assert corrected.status_code == 200
    assert stored_rows(app)["reports"] == 1


@pytest.mark.parametrize(
    "raw_value",
    [
        pytest.param(b"%FF%FEabc", id="percent-encoded-invalid-utf8"),
        pytest.param(b"caf%C3", id="truncated-utf8-sequence"),
        pytest.param(b"%ED%A0%80lone-surrogate", id="encoded-surrogate"),
        pytest.param(b"\xff\xfe-raw-bytes", id="raw-invalid-bytes"),
    ],
)
def test_invalid_utf8_is_refused_next_to_the_field(
    app: Flask, client: FlaskClient, raw_value: bytes
) -> None:
    """Given a body whose narrative is not valid UTF-8 (browsers never send that),
    when it is posted,
    then the witness gets a message next to the narrative, the other fields are kept,
    and nothing is stored (not even the bytes re-encoded as "%FF" text).
    """
    sent = _distinctive_form({})
    del sent["narrative"]
    body = (
        urlencode({"csrf_token": csrf_token(client), **sent}).encode("ascii")
        + b"&narrative="
        + raw_value
    )

    response = post_raw(client, body)

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert [error for error in field_errors(html, "narrative") if "could not be read" in error]
    _assert_input_kept(html, sent, "narrative")
    assert stored_rows(app) == NOTHING_STORED


def test_a_body_over_the_size_limit_gets_the_413_page_and_nothing_is_stored(
    app: Flask, client: FlaskClient, settings: Settings
) -> None:
    """Given the configured limit for form fields (MAX_FORM_MEMORY_SIZE, 2 MiB by default),
    when a witness sends a form whose text is larger, then the translated 413 page answers
    and nothing is stored.
    """
    token = csrf_token(client)
    narrative = "z" * (app.config["MAX_FORM_MEMORY_SIZE"] + 1)

    response = client.post(
        "/report", data={"csrf_token": token, **report_form_data(narrative=narrative)}
    )

    html = response.get_data(as_text=True)
    assert response.status_code == 413
    assert TOO_LARGE_HEADING in html
    assert "nothing was stored" in html
    assert quick_exit_href(html) == settings.quick_exit_url
    assert "zzzzzzzz" not in html
    assert stored_rows(app) == NOTHING_STORED


# --------------------------------------------------------------------------- CSRF


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="no-token"),
        pytest.param("forged-token", id="wrong-token"),
        pytest.param("", id="empty-token"),
    ],
)
def test_a_post_without_a_valid_csrf_token_is_refused(
    app: Flask, client: FlaskClient, token: str | None
) -> None:
    csrf_token(client)  # the witness has a session with a real token
    data = report_form_data()
    if token is not None:
        data["csrf_token"] = token

    response = client.post("/report", data=data)

    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert CSRF_HEADING in html
    assert quick_exit_href(html)
    assert stored_rows(app) == NOTHING_STORED


def test_a_token_from_another_session_is_refused(app: Flask, client: FlaskClient) -> None:
    other = app.test_client()
    stolen = csrf_token(other)
    csrf_token(client)

    response = client.post("/report", data={"csrf_token": stolen, **report_form_data()})

    assert response.status_code == 400
    assert CSRF_HEADING in response.text
    assert stored_rows(app) == NOTHING_STORED


def test_reposting_the_same_form_after_success_does_not_store_twice(
    app: Flask, client: FlaskClient
) -> None:
    """Given a report that was just filed,
    when the browser re-sends the same form (reload of the receipt page),
    then the second post is refused and still only one report is stored.
    """
    data = {"csrf_token": csrf_token(client), **report_form_data()}
    first = client.post("/report", data=data)
    assert first.status_code == 200

    again = client.post("/report", data=data)

    assert again.status_code == 400
    assert CSRF_HEADING in again.text
    assert "receipt-code" not in again.text
    assert stored_rows(app) == {"reports": 1, "wraps": 1, "recipient_keys": 1}


# --------------------------------------------------------------------------- fail closed


def _other_public_key(path: Path) -> Path:
    path.write_text(crypto.PrivateKey.generate().public_key().to_armor())
    return path


KEY_PROBLEMS: dict[str, Callable[[Path, KeyFiles], tuple[Path, str | None, str]]] = {
    "missing-file": lambda tmp, org: (
        tmp / "absent.pub",
        org.public_key.key_id_hex,
        "does not exist",
    ),
    "malformed-file": lambda tmp, org: (
        _write(tmp / "bad.pub", "this is not a key\n"),
        org.public_key.key_id_hex,
        "is invalid",
    ),
    "truncated-key": lambda tmp, org: (
        _write(tmp / "short.pub", _truncated_armor(org.public_key)),
        org.public_key.key_id_hex,
        "is invalid",
    ),
    "binary-file": lambda tmp, org: (
        _write_bytes(tmp / "binary.pub", b"\xff\xfe\x00garbage"),
        org.public_key.key_id_hex,
        "unreadable",
    ),
    "other-key-than-pinned": lambda tmp, org: (
        _other_public_key(tmp / "other.pub"),
        org.public_key.key_id_hex,
        "is not the pinned key",
    ),
    "pin-unset": lambda tmp, org: (org.public_path, None, "no organizer key id is pinned"),
    "pin-malformed": lambda tmp, org: (
        org.public_path,
        "not-hex",
        "pinned organizer key id is malformed",
    ),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_armor(public_key: crypto.PublicKey) -> str:
    raw = public_key.to_bytes()[:-40]
    return crypto._armor(crypto.PUBLIC_ARMOR, raw, [])


@pytest.fixture(params=sorted(KEY_PROBLEMS))
def broken_key_app(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    organizer: KeyFiles,
    settings: Settings,
    make_app: Callable[[Settings], Flask],
    caplog: pytest.LogCaptureFixture,
) -> tuple[Flask, str]:
    """An app whose organizer key is unusable in one way, and the reason the log must give."""
    caplog.set_level(logging.DEBUG)
    path, pin, reason = KEY_PROBLEMS[request.param](tmp_path, organizer)
    broken = dataclasses.replace(settings, organizer_public_key_path=path, organizer_key_id=pin)
    return make_app(broken), reason


def test_a_broken_organizer_key_closes_the_form_and_stores_nothing(
    broken_key_app: tuple[Flask, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Given an organizer key that is missing, malformed, not the pinned one, or unpinned,
    when a witness opens the form, then the "not accepting" page answers with 503;
    when a witness sends a report anyway (with a valid form token), the same page answers,
    nothing is stored, and the log says why without quoting anything the witness wrote.
    """
    app, reason = broken_key_app
    client = app.test_client()

    page = client.get("/report")

    html = page.get_data(as_text=True)
    assert page.status_code == 503
    assert NOT_ACCEPTING in html
    assert 'name="narrative"' not in html, "a form that cannot be sealed must not be shown"
    assert quick_exit_href(html)
    assert "no-store" in page.headers["Cache-Control"]
    assert reason in caplog.text
    assert "503" in caplog.text

    sent = _distinctive_form({"contact": unique("CONTACT"), "occurred_on": "2011-11-11"})
    caplog.clear()
    response = client.post(
        "/report", data={"csrf_token": csrf_token_without_form(app, client), **sent}
    )

    assert response.status_code == 503
    assert NOT_ACCEPTING in response.text
    assert stored_rows(app) == NOTHING_STORED
    assert reason in caplog.text
    logged = caplog.text + "".join(repr(record.args) for record in caplog.records)
    for name in TEXT_FIELDS:
        assert str(sent[name]).split(" ")[0] not in logged, f"{name} reached the log"
    assert "2011-11-11" not in logged


def test_a_key_that_breaks_after_the_form_was_opened_closes_the_form_and_reopens_when_fixed(
    tmp_path: Path,
    organizer: KeyFiles,
    settings: Settings,
    make_app: Callable[[Settings], Flask],
) -> None:
    """Given a witness who opened the form while the key was fine,
    when the key file disappears before the form is sent,
    then the report is refused with 503 and nothing is stored;
    and when the key file is restored, the form works again without a restart.
    """
    key_path = tmp_path / "organizer.pub"
    key_path.write_text(organizer.public_path.read_text())
    app = make_app(dataclasses.replace(settings, organizer_public_key_path=key_path))
    client = app.test_client()
    token = csrf_token(client)

    key_path.unlink()
    refused = client.post("/report", data={"csrf_token": token, **report_form_data()})

    assert refused.status_code == 503
    assert NOT_ACCEPTING in refused.text
    assert stored_rows(app) == NOTHING_STORED

    key_path.write_text(organizer.public_path.read_text())
    assert client.get("/report").status_code == 200
    assert submit_report(client).status_code == 200
    assert stored_rows(app)["reports"] == 1


# --------------------------------------------------------------------------- database errors


def test_a_failed_commit_shows_not_saved_and_keeps_the_text(
    app: Flask,
    client: FlaskClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given a database that refuses the commit,
    when a witness files a report,
    then the form comes back with 503 and the "not saved" message and the witness's text,
    nothing of the report is stored, and the log does not quote the witness.
    """
    sent = _distinctive_form({})
    token = csrf_token(client)

    def refuse() -> None:
        raise sa.exc.OperationalError("COMMIT", {}, Exception("database is locked"))

    monkeypatch.setattr(db.session, "commit", refuse)
    response = client.post("/report", data={"csrf_token": token, **sent})
    monkeypatch.undo()

    html = response.get_data(as_text=True)
    assert response.status_code == 503
    assert NOT_SAVED in html
    assert "Nothing was stored." in html
    _assert_input_kept(html, sent, bad_field="")
    assert "receipt-code" not in html
    assert stored_rows(app) == NOTHING_STORED
    assert "could not be saved" in caplog.text
    assert str(sent["place_detail"]) not in caplog.text


def test_a_wrap_the_database_refuses_leaves_no_report_behind(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a database in which the report row can be written but its wrap cannot
    (the wrap's recipient key is missing, a foreign-key violation),
    when a witness files a report,
    then the report row written earlier in the same transaction is rolled back too.
    """
    monkeypatch.setattr(report_service, "register_recipient", lambda *args, **kwargs: None)

    response = submit_report(client)

    assert response.status_code == 503
    assert NOT_SAVED in response.text
    assert stored_rows(app) == NOTHING_STORED


def test_a_duplicate_receipt_is_not_saved_and_the_first_report_is_untouched(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed = "ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2345"
    monkeypatch.setattr(crypto, "new_receipt", lambda: fixed)
    assert submit_report(client).status_code == 200

    second = submit_report(client, narrative=unique("SECOND"))

    assert second.status_code == 503
    assert NOT_SAVED in second.text
    assert stored_rows(app) == {"reports": 1, "wraps": 1, "recipient_keys": 1}


# --------------------------------------------------------------------------- every witness page


@pytest.fixture
def witness_pages(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[[str], dict[str, TestResponse]]:
    """Render every page a witness can meet, in one language (``en``, ``ru`` or ``sr``)."""

    @app.get("/__test/bad-request")
    def bad_request() -> None:
        abort(400)

    def render(lang: str) -> dict[str, TestResponse]:
        pages: dict[str, TestResponse] = {}
        pages["form"] = client.get(f"/report?lang={lang}")
        pages["invalid form (400)"] = client.post(
            "/report",
            data={
                "csrf_token": csrf_token(client),
                **report_form_data(
                    category="coup",
                    occurred_on="2999-01-01",
                    city="tbilisi",
                    place_detail="a\x00b",
                    narrative="x" * 20001,
                    consent_contact=None,
                ),
            },
        )
        pages["empty form (400)"] = client.post(
            "/report",
            data={
                "csrf_token": csrf_token(client),
                **report_form_data(category="", occurred_on="", country="", narrative=""),
            },
        )
        pages["unreadable text (400)"] = post_raw(
            client,
            urlencode(
                {"csrf_token": csrf_token(client), **report_form_data(targeted_person=None)}
            ).encode()
            + b"&targeted_person=%FF",
        )
        pages["receipt"] = submit_report(client)
        pages["csrf (400)"] = client.post("/report", data=report_form_data())
        pages["bad request (400)"] = client.get("/__test/bad-request")
        pages["not found (404)"] = client.get("/no-such-page")
        with monkeypatch.context() as patch:
            for limit in ("MAX_CONTENT_LENGTH", "MAX_FORM_MEMORY_SIZE"):
                patch.setitem(app.config, limit, 64 * 1024)  # the 413 page, cheaply
            pages["too large (413)"] = client.post("/report", data={"narrative": "z" * 65 * 1024})
        with monkeypatch.context() as patch:
            patch.setattr(
                db.session,
                "commit",
                lambda: (_ for _ in ()).throw(sa.exc.OperationalError("COMMIT", {}, None)),
            )
            pages["not saved (503)"] = submit_report(client)
        with monkeypatch.context() as patch:
            patch.setitem(
                app.extensions,
                "incidents.keyring",
                KeyringCache(tmp_path / "absent.pub", pinned_key_id="00" * 16),
            )
            pages["not accepting (503)"] = client.get("/report")
        return pages

    return render


EXPECTED_STATUS = {
    "form": 200,
    "invalid form (400)": 400,
    "empty form (400)": 400,
    "unreadable text (400)": 400,
    "receipt": 200,
    "csrf (400)": 400,
    "bad request (400)": 400,
    "not found (404)": 404,
    "too large (413)": 413,
    "not saved (503)": 503,
    "not accepting (503)": 503,
}


def test_every_witness_page_has_quick_exit_neutral_title_and_no_store(
    witness_pages: Callable[[str], dict[str, TestResponse]], settings: Settings
) -> None:
    pages = witness_pages("en")

    assert {name: page.status_code for name, page in pages.items()} == EXPECTED_STATUS
    titles = set()
    for name, page in pages.items():
        html = page.get_data(as_text=True)
        assert quick_exit_href(html) == settings.quick_exit_url, name
        assert "no-store" in page.headers["Cache-Control"], name
        assert "unsafe-inline" not in page.headers["Content-Security-Policy"], name
        assert html_lang(html) == "en", name
        titles.add(title_of(html))
    assert len(titles) == 1, f"titles differ between pages: {titles}"
    title = titles.pop().lower()
    assert title
    assert not [word for word in REVEALING_WORDS if word in title], title


@pytest.mark.parametrize("lang", ["ru", "sr"])
def test_titles_stay_neutral_and_identical_in_every_language(
    witness_pages: Callable[[str], dict[str, TestResponse]], lang: str
) -> None:
    pages = witness_pages(lang)

    titles = {title_of(page.get_data(as_text=True)) for page in pages.values()}
    assert len(titles) == 1, f"titles differ between pages: {titles}"
    title = titles.pop().lower()
    assert not [word for word in REVEALING_WORDS if word in title], title
    for name, page in pages.items():
        assert quick_exit_href(page.get_data(as_text=True)), name


def test_pages_show_no_exception_details_or_input(
    witness_pages: Callable[[str], dict[str, TestResponse]],
) -> None:
    pages = witness_pages("en")

    for name in ("csrf (400)", "not saved (503)", "not accepting (503)", "too large (413)"):
        html = pages[name].get_data(as_text=True)
        assert "Traceback" not in html, name
        assert "OperationalError" not in html, name
        assert "absent.pub" not in html, name
        assert "CSRF session token" not in html, name


# --------------------------------------------------------------------------- languages


@pytest.mark.parametrize(("code", "lang"), [("ru", "ru"), ("sr", "sr-Latn"), ("en", "en")])
def test_the_language_parameter_sets_html_lang_and_sticks(
    client: FlaskClient, code: str, lang: str
) -> None:
    chosen = client.get(f"/report?lang={code}")
    later = client.get("/report")
    error_page = client.get("/no-such-page")

    assert chosen.status_code == later.status_code == 200
    assert html_lang(chosen.text) == lang
    assert html_lang(later.text) == lang
    assert html_lang(error_page.text) == lang


def test_an_unknown_language_falls_back_without_error(client: FlaskClient) -> None:
    response = client.get("/report?lang=xx")

    assert response.status_code == 200
    assert html_lang(response.text) == "en"


def test_the_browser_language_is_used_until_one_is_chosen(client: FlaskClient) -> None:
    by_header = client.get("/report", headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    chosen = client.get("/report?lang=en", headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    later = client.get("/report", headers={"Accept-Language": "ru-RU,ru;q=0.9"})

    assert html_lang(by_header.text) == "ru"
    assert html_lang(chosen.text) == "en"
    assert html_lang(later.text) == "en"


def test_language_links_are_plain_links_that_switch_the_language(client: FlaskClient) -> None:
    """Given the form in English,
    when the witness follows each language link (a plain <a href>, no JavaScript),
    then the page comes back in that language and the choice is remembered.
    """
    html = client.get("/report?lang=en").text
    links = dict(
        re.findall(r'<a class="language" lang="([^"]+)" hreflang="[^"]+" href="([^"]+)"', html)
    )
    assert set(links) == {"ru", "sr-Latn"}
    assert '<span class="language current" lang="en"' in html

    for lang, href in links.items():
        followed = client.get(href.replace("&amp;", "&"))
        assert followed.status_code == 200
        assert html_lang(followed.text) == lang
        assert html_lang(client.get("/report").text) == lang
        other_links = re.findall(r'<a class="language" lang="([^"]+)"', followed.text)
        assert lang not in other_links
        assert "en" in other_links


def test_language_links_on_a_rejected_form_lead_back_to_the_form(client: FlaskClient) -> None:
    response = client.post(
        "/report", data={"csrf_token": csrf_token(client), **report_form_data(narrative="")}
    )

    hrefs = re.findall(r'<a class="language"[^>]* href="([^"]+)"', response.text)
    assert hrefs
    for href in hrefs:
        assert client.get(href.replace("&amp;", "&")).status_code == 200


# --------------------------------------------------------------------------- translations

LOCALES = {"ru": "ru", "sr": "sr_Latn"}


def _catalog(locale: str) -> Catalog:
    path = TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as handle:
        return read_po(handle, locale=locale)


def _template_catalog() -> Catalog:
    with (TRANSLATIONS / "messages.pot").open("rb") as handle:
        return read_po(handle)


def _message_ids(catalog: Catalog) -> list[str]:
    ids: list[str] = []
    for message in catalog:
        if not message.id:
            continue
        ids.extend(message.id if isinstance(message.id, tuple) else [message.id])
    return ids


@pytest.mark.parametrize("locale", sorted(LOCALES.values()))
def test_every_catalog_message_is_translated(locale: str) -> None:
    catalog = _catalog(locale)
    source_ids = set(_message_ids(_template_catalog()))

    missing = []
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.fuzzy or not all(s and s.strip() for s in strings):
            missing.append(message.id)
    assert set(_message_ids(catalog)) >= source_ids, "catalog lags behind messages.pot"
    assert not missing, f"{len(missing)} untranslated in {locale}, e.g. {missing[:5]}"


_PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")
LONGEST_UI_TEXT = 2000  # longer text nodes are the witness's own input echoed back


def _sources_shown_in_english(catalog: Catalog) -> list[str]:
    """Source strings whose translation differs from the English (plural forms included)."""
    sources = []
    for message in catalog:
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for source in ids:
            if any(s and s.strip() == source.strip() for s in strings):
                continue  # a proper noun spelled the same in both languages ("Bar", "Budva")
            sources.append(" ".join(source.split()))
    return sources


def _untranslated_on_page(html: str, catalog: Catalog) -> list[str]:
    """English source strings shown on a page although the catalog has a different translation.

    A text node (or label attribute) that equals a source string counts, and so does one that
    contains a source string of 15 characters or more; placeholders match a short value.
    """
    texts = [text for text in page_texts(html) if len(text) <= LONGEST_UI_TEXT]
    exact_texts = set(texts)
    found = []
    for source in _sources_shown_in_english(catalog):
        if _PLACEHOLDER.search(source):
            parts = [re.escape(part) for part in _PLACEHOLDER.split(source)]
            regex = re.compile(r"[^<>]{1,40}?".join(parts))
            matches = any(
                regex.fullmatch(text) or (len(source) >= 15 and regex.search(text))
                for text in texts
            )
        else:
            matches = source in exact_texts or (
                len(source) >= 15 and any(source in text for text in texts)
            )
        if matches:
            found.append(source)
    return found


def test_the_untranslated_check_finds_english_on_english_pages(
    witness_pages: Callable[[str], dict[str, TestResponse]],
) -> None:
    """The page check below must not pass on any output: on English pages it finds English."""
    pages = witness_pages("en")
    catalog = _catalog("ru")
    for message in catalog:
        message.string = ""  # pretend nothing is translated

    for name, page in pages.items():
        assert _untranslated_on_page(page.get_data(as_text=True), catalog), name
    form = _untranslated_on_page(pages["form"].get_data(as_text=True), catalog)
    assert "Describe what happened" in form
    assert "Serbia" in form
    errors = _untranslated_on_page(pages["invalid form (400)"].get_data(as_text=True), catalog)
    assert [message for message in errors if "%(max)d" in message]


@pytest.mark.parametrize("code", sorted(LOCALES))
def test_every_intake_page_is_fully_translated(
    witness_pages: Callable[[str], dict[str, TestResponse]], code: str
) -> None:
    """Given the pages a witness can meet (form, errors, receipt, 400/404/413/503),
    when they are rendered in Russian or Serbian,
    then no English source string of the catalog appears on them.
    """
    catalog = _catalog(LOCALES[code])

    pages = witness_pages(code)

    untranslated = {
        name: found
        for name, page in pages.items()
        if (found := _untranslated_on_page(page.get_data(as_text=True), catalog))
    }
    assert not untranslated, f"untranslated strings on {code} pages: {untranslated}"
