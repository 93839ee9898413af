"""Plain factory functions for tests: form data, CSRF tokens, staff accounts, reports, grants."""

from __future__ import annotations

import base64
import html
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyotp
import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from incidents import crypto

if TYPE_CHECKING:
    from incidents.services.reports import FiledReport

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
    return make_filed_report(app, received_on=received_on, status=status, **overrides).report_id


def make_filed_report(
    app: Flask,
    *,
    received_on: date | None = None,
    status: str = "new",
    **overrides: Any,
) -> FiledReport:
    """Like ``make_report``, but return the id and the receipt the witness was shown."""
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
        return filed


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


# --------------------------------------------------------------------------- desk key proofs


def prove_token(
    client: FlaskClient, *, secret: str, private_key: crypto.PrivateKey, key_id: str | None = None
) -> list[TestResponse]:
    """Prove, as a desk does before its changes, that the token's desk holds ``private_key``.

    The desk asks for a challenge sealed to its key (``POST /api/v1/proof``), opens it with the
    private key and sends the answer back (``POST /api/v1/proof/answer``); the server then lets
    the token make changes for 30 minutes. Returns both answers (for header checks).
    """
    headers = {
        "Authorization": f"Bearer {secret}",
        "X-Incidents-Key-Id": private_key.key_id.hex() if key_id is None else key_id,
    }
    asked = client.post("/api/v1/proof", headers=headers, json={})
    assert asked.status_code == 200, asked.get_data(as_text=True)
    challenge = base64.b64decode(asked.get_json()["challenge"])
    answer = crypto.answer_possession_challenge(challenge, private_key=private_key)
    answered = client.post("/api/v1/proof/answer", headers=headers, json={"answer": answer})
    assert answered.status_code == 200, answered.get_data(as_text=True)
    assert answered.get_json() == {"proven": True}
    return [asked, answered]


def answer_bundle_challenge(data: bytes, private_key: crypto.PrivateKey) -> str:
    """What a desk that loaded the bundle file ``data`` puts as "proof" in its outputs file."""
    from incidents.bundle import BUNDLE_FORMAT, load_file

    body = load_file(data, kind=BUNDLE_FORMAT, key_id=private_key.key_id.hex())
    challenge = base64.b64decode(body["proof_challenge"])
    return crypto.answer_possession_challenge(challenge, private_key=private_key)


def download_bundle_file(client: FlaskClient) -> bytes:
    """Press "Download my case bundle" on the staff Desk page; return the bundle file."""
    token = page_csrf_token(client, "/staff/desk")
    response = client.post("/staff/desk/bundle", data={"csrf_token": token})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data()


def bundle_file_proof(client: FlaskClient, private_key: crypto.PrivateKey) -> str:
    """The proof for an outputs file: a fresh bundle file downloaded on the staff Desk page by
    the logged-in ``client``, its challenge answered with the desk's ``private_key``."""
    return answer_bundle_challenge(download_bundle_file(client), private_key)


# --------------------------------------------------------------------------- witness follow-up


def seal_reply(
    body: str,
    *,
    receipt: str | None,
    organizer_key: crypto.PublicKey,
    message_id: uuid.UUID | None = None,
) -> tuple[uuid.UUID, bytes, dict[str, bytes]]:
    """What a desk makes for a reply: (message id, sealed body, wraps by key id hex).

    The reply is wrapped to the organizer key and, unless ``receipt`` is None, to the witness
    key derived from the receipt.
    """
    from incidents.services.followup import REPLY_FIELD

    envelope_id = message_id or uuid.uuid4()
    recipients = [organizer_key]
    if receipt is not None:
        recipients.append(crypto.derive_witness_secrets(receipt).witness_key.public_key())
    sealed = crypto.seal_report({REPLY_FIELD: body}, report_id=envelope_id, recipients=recipients)
    wraps = {key_id.hex(): blob for key_id, blob in sealed.wraps.items()}
    return envelope_id, sealed.fields[REPLY_FIELD], wraps


def make_reply(
    app: Flask,
    report_id: uuid.UUID,
    *,
    receipt: str,
    body: str,
    organizer_key: crypto.PublicKey,
    written_on: date | None = None,
) -> uuid.UUID:
    """Store a reply sealed to the witness and organizer keys, as a desk uploads it."""
    from incidents.services import followup

    message_id, body_sealed, wraps = seal_reply(body, receipt=receipt, organizer_key=organizer_key)
    with app.app_context():
        followup.store_reply(
            report_id,
            message_id=message_id,
            body_sealed=body_sealed,
            wraps=wraps,
            author_id=None,
            created_on=written_on or datetime.now(UTC).date(),
        )
    return message_id


# --------------------------------------------------------------------------- evidence files

GPS_IFD = 0x8825  # 34853, GPSInfo
GPS_POSITION = {1: "N", 2: (44.0, 48.0, 57.0), 3: "E", 4: (20.0, 27.0, 44.0)}


def jpeg_with_gps(
    *, size: tuple[int, int] = (64, 48), comment: str = "", serial: str = "SN-TEST-0001"
) -> bytes:
    """A real JPEG whose EXIF holds a GPS position, a camera make and serial, and a comment."""
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "ExampleCam"  # Make
    exif[0xA431] = serial  # BodySerialNumber
    exif[GPS_IFD] = GPS_POSITION
    if comment:
        exif[0x010E] = comment  # ImageDescription
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="JPEG", exif=exif, quality=80)
    return out.getvalue()


def minimal_pdf(text: str = "evidence") -> bytes:
    """A small valid one-page PDF whose page shows ``text`` (ASCII)."""
    stream = f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
