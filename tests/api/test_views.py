"""The desk's JSON API (incidents.api.views): session, case bundles, attachments, volunteers,
outputs and revocation.

Every request carries a bearer token and names the key the desk holds; the server answers only
for that user's registered key, volunteers only for their own cases, and bundles carry only the
wraps addressed to the desk's key. Every answer is checked for ``Cache-Control: no-store`` and
the absence of ``Set-Cookie`` (in ``call``). Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from incidents import crypto
from incidents.appstate import current_keyring, current_settings
from incidents.db import db
from incidents.models import Attachment, EnvelopeWrap, Note, Report, User, Wrap
from incidents.services import api_tokens, casefile, cases, followup
from incidents.services.attachments import meta_field_name
from incidents.services.errors import NoWrapForKeyError
from incidents.uploads import attachment_directory
from tests.conftest import KeyFiles
from tests.factories import (
    StaffAccount,
    csrf_token,
    login,
    make_filed_report,
    make_reply,
    make_user,
    make_volunteer_key,
    minimal_pdf,
    prove_token,
    receipt_from,
    report_form_data,
    use_fast_password_hashing,
)

NARRATIVE = "Two men followed me from the rally."


@pytest.fixture(autouse=True)
def _fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_password_hashing(monkeypatch)


# --------------------------------------------------------------------------- desks and calls


@dataclass(frozen=True)
class Desk:
    """A staff member's desk: the account, its API token and the private key the desk holds."""

    account: StaffAccount
    secret: str
    key: crypto.PrivateKey

    @property
    def key_id(self) -> str:
        """Hex id of the desk's key."""
        return self.key.key_id.hex()

    def headers(self, *, key_id: str | None = None) -> dict[str, str]:
        """The headers the desk sends with every request."""
        return {
            "Authorization": f"Bearer {self.secret}",
            "X-Incidents-Key-Id": self.key_id if key_id is None else key_id,
        }


def token_for(app: Flask, account: StaffAccount) -> str:
    """A fresh API token secret for ``account``."""
    with app.app_context():
        user = db.session.get(User, account.id)
        assert user is not None
        return api_tokens.issue_token(user, label="desk").secret


def assert_uncached(response: TestResponse, path: str) -> None:
    """An API answer must be uncached and set no cookie."""
    assert "no-store" in response.headers.get("Cache-Control", ""), path
    assert "Set-Cookie" not in response.headers, path


def call(
    client: FlaskClient,
    desk: Desk,
    path: str,
    *,
    method: str = "GET",
    key_id: str | None = None,
    body: Any = None,
) -> TestResponse:
    """Call the API as ``desk``; every answer must be uncached and set no cookie."""
    response = client.open(path, method=method, headers=desk.headers(key_id=key_id), json=body)
    assert_uncached(response, path)
    return response


def prove(client: FlaskClient, desk: Desk) -> None:
    """The desk proves it holds its key (challenge and answer), as before its first change."""
    for response in prove_token(client, secret=desk.secret, private_key=desk.key):
        assert_uncached(response, "/api/v1/proof")


@pytest.fixture
def chief(app: Flask, organizer: KeyFiles) -> Desk:
    """The organizer's desk, holding the organizer private key."""
    account = make_user(app, role="organizer")
    return Desk(account, token_for(app, account), organizer.private_key)


def volunteer_desk(app: Flask, chief: Desk, *, approved: bool = True) -> Desk:
    """A volunteer with a registered key (approved by the organizer unless told otherwise)."""
    account = make_user(app, role="volunteer")
    key = make_volunteer_key(app, account, approved_by=chief.account if approved else None)
    return Desk(account, token_for(app, account), key)


def assign(app: Flask, report_id: uuid.UUID, volunteer: Desk, chief: Desk) -> None:
    """The organizer assigns the report to the volunteer (bookkeeping only, no key yet)."""
    with app.app_context():
        organizer = db.session.get(User, chief.account.id)
        assert organizer is not None
        cases.assign_report(report_id, volunteer_id=volunteer.account.id, organizer=organizer)


def add_information(app: Flask, receipt: str, text: str) -> uuid.UUID:
    """The witness adds text to their report (sealed to whoever may read the report now)."""
    with app.app_context():
        settings = current_settings()
        case = followup.find_case(receipt, receipt_secret=settings.receipt_key)
        return followup.add_information(
            case,
            text=text,
            uploads=None,
            keyring=current_keyring(),
            received_on=datetime.now(UTC).date(),
            instance_path=settings.instance_path,
        )


def grant_item(
    app: Flask, report_id: uuid.UUID, *, organizer_key: crypto.PrivateKey, to: crypto.PublicKey
) -> dict[str, Any]:
    """What the organizer's desk sends to grant a case: the report key and every envelope key
    (unwrapped with the organizer key) wrapped to ``to``."""
    organizer_id = organizer_key.key_id.hex()
    with app.app_context():
        wrap = db.session.get(Wrap, (report_id, organizer_id))
        assert wrap is not None
        envelope_wraps = db.session.scalars(
            sa.select(EnvelopeWrap).where(
                EnvelopeWrap.report_id == report_id, EnvelopeWrap.key_id == organizer_id
            )
        ).all()
        report_key = crypto.unwrap_data_key(
            wrap.blob, report_id=report_id, private_key=organizer_key
        )
        envelopes = {
            str(row.envelope_id): b64(
                crypto.wrap_data_key(
                    crypto.unwrap_data_key(
                        row.blob, report_id=row.envelope_id, private_key=organizer_key
                    ),
                    report_id=row.envelope_id,
                    recipient=to,
                )
            )
            for row in envelope_wraps
        }
    return {
        "report_id": str(report_id),
        "wrap": b64(crypto.wrap_data_key(report_key, report_id=report_id, recipient=to)),
        "envelopes": envelopes,
    }


def note_item(
    report_id: uuid.UUID, text: str, *, recipients: list[crypto.PublicKey]
) -> dict[str, Any]:
    """A note sealed on a desk under its own data key, wrapped to ``recipients``."""
    note_id = uuid.uuid4()
    sealed = crypto.seal_report({"body": text}, report_id=note_id, recipients=recipients)
    return {
        "report_id": str(report_id),
        "id": str(note_id),
        "sealed": b64(sealed.fields["body"]),
        "wraps": {key_id.hex(): b64(blob) for key_id, blob in sealed.wraps.items()},
    }


def b64(data: bytes) -> str:
    """Standard base64 text, as the API uses."""
    return base64.b64encode(data).decode("ascii")


def all_wrap_blobs(app: Flask) -> list[tuple[str, bytes]]:
    """(key id, blob) of every report wrap and envelope wrap in the database."""
    with app.app_context():
        rows = db.session.execute(sa.text("SELECT key_id, blob FROM wraps")).all()
        rows += db.session.execute(sa.text("SELECT key_id, blob FROM envelope_wraps")).all()
    return [(str(key_id), bytes(blob)) for key_id, blob in rows]


def bundle_wraps(bundle: dict[str, Any]) -> list[bytes]:
    """Every wrap a bundle carries: the report's and each addition's, reply's and note's."""
    found = [bundle["wrap"]]
    for kind in ("additions", "replies", "notes"):
        found += [entry["wrap"] for entry in bundle[kind]]
    return [base64.b64decode(text) for text in found if text is not None]


# --------------------------------------------------------------------------- session and keys


def test_the_session_says_who_the_desk_works_for(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    # Given: three reports, one of them assigned to a volunteer
    reports = [make_filed_report(app).report_id for _ in range(3)]
    volunteer = volunteer_desk(app, chief)
    assign(app, reports[1], volunteer, chief)

    # When: each desk asks who it is
    as_organizer = call(client, chief, "/api/v1/session")
    as_volunteer = call(client, volunteer, "/api/v1/session")

    # Then: each gets its own account, its key, the organizer key and how many cases it sees
    assert as_organizer.status_code == 200
    assert as_organizer.get_json() == {
        "username": chief.account.username,
        "role": "organizer",
        "key_id": organizer.public_key.key_id_hex,
        "organizer_key_id": organizer.public_key.key_id_hex,
        "incoming_key_id": None,
        "cases": 3,
    }
    assert as_volunteer.get_json() == {
        "username": volunteer.account.username,
        "role": "volunteer",
        "key_id": volunteer.key_id,
        "organizer_key_id": organizer.public_key.key_id_hex,
        "incoming_key_id": None,
        "cases": 1,
    }


@pytest.mark.parametrize(
    "presented",
    ["random key", "organizer key to a volunteer", "other volunteer's key", "retired key", "none"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/session"),
        ("GET", "/api/v1/cases"),
        ("GET", "/api/v1/cases/{report_id}"),
        ("POST", "/api/v1/outputs"),
    ],
)
def test_a_key_not_registered_for_the_user_is_refused_with_403(
    app: Flask,
    client: FlaskClient,
    chief: Desk,
    organizer: KeyFiles,
    presented: str,
    method: str,
    path: str,
) -> None:
    # Given: a case assigned to a volunteer, another volunteer, and a retired volunteer key
    report_id = make_filed_report(app).report_id
    volunteer, other = volunteer_desk(app, chief), volunteer_desk(app, chief)
    assign(app, report_id, volunteer, chief)
    for desk in (chief, volunteer):  # a proven token must not let another key in either
        prove(client, desk)
    retired = volunteer.key_id
    make_volunteer_key(app, volunteer.account, approved_by=chief.account)  # retires the first
    desk, key_id = {
        "random key": (chief, crypto.PrivateKey.generate().key_id.hex()),
        "organizer key to a volunteer": (volunteer, organizer.public_key.key_id_hex),
        "other volunteer's key": (volunteer, other.key_id),
        "retired key": (volunteer, retired),
        "none": (volunteer, ""),
    }[presented]

    # When: the desk presents that key
    response = call(
        client,
        desk,
        path.format(report_id=report_id),
        method=method,
        key_id=key_id,
        body={} if method == "POST" else None,
    )

    # Then: the server refuses with 403 and the "key" error, and sends no case
    assert response.status_code == 403
    assert response.get_json()["error"] == "key"
    assert "cases" not in response.get_json()


def test_a_volunteer_whose_key_is_not_approved_yet_is_refused(
    app: Flask, client: FlaskClient, chief: Desk
) -> None:
    volunteer = volunteer_desk(app, chief, approved=False)

    response = call(client, volunteer, "/api/v1/session")

    assert response.status_code == 403
    assert response.get_json() == {
        "error": "key",
        "message": "Your account has no approved key yet.",
    }


# --------------------------------------------------------------------------- case bundles


def test_cases_are_paged_in_id_order_with_after_and_next(
    app: Flask, client: FlaskClient, chief: Desk
) -> None:
    # Given: five reports
    expected = sorted(str(make_filed_report(app).report_id) for _ in range(5))

    # When: the desk pages through them two at a time, following "next"
    pages: list[list[str]] = []
    nexts: list[str | None] = []
    after = ""
    while True:
        query = f"?limit=2&after={after}" if after else "?limit=2"
        body = call(client, chief, f"/api/v1/cases{query}").get_json()
        pages.append([case["report_id"] for case in body["cases"]])
        nexts.append(body["next"])
        if body["next"] is None:
            break
        after = body["next"]

    # Then: each page continues after the last id of the previous one; the last has no "next"
    assert pages == [expected[0:2], expected[2:4], expected[4:5]]
    assert nexts == [expected[1], expected[3], None]

    # And: without a limit the whole list comes at once, in id order
    body = call(client, chief, "/api/v1/cases").get_json()
    assert [case["report_id"] for case in body["cases"]] == expected
    assert body["next"] is None


@pytest.mark.parametrize("query", ["?after=not-a-uuid", "?limit=many", "?after=123"])
def test_bad_paging_parameters_are_a_400(
    app: Flask, client: FlaskClient, chief: Desk, query: str
) -> None:
    make_filed_report(app)

    response = call(client, chief, f"/api/v1/cases{query}")

    assert response.status_code == 400
    assert response.get_json() == {"error": "malformed", "message": "bad paging parameters"}


def test_a_case_bundle_is_ciphertext_that_the_organizer_key_opens(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    # Given: a report with a unique phrase, an addition and a reply
    phrase = f"PHRASE-{secrets.token_hex(6)}"
    filed = make_filed_report(app, narrative=f"They said {phrase} at the door.")
    addition = f"ADDITION-{secrets.token_hex(6)}"
    reply = f"REPLY-{secrets.token_hex(6)}"
    add_information(app, filed.receipt, addition)
    make_reply(
        app,
        filed.report_id,
        receipt=filed.receipt,
        body=reply,
        organizer_key=organizer.public_key,
    )

    # When: the organizer's desk fetches the case
    response = call(client, chief, f"/api/v1/cases/{filed.report_id}")

    # Then: the answer holds no plaintext
    assert response.status_code == 200
    for secret_text in (phrase, addition, reply):
        assert secret_text not in response.text

    # And: the organizer key opens all of it
    case = casefile.open_bundle(response.get_json(), private_key=organizer.private_key)
    assert case.sealed["narrative"] == f"They said {phrase} at the door."
    assert [item.text for item in case.additions] == [addition]
    assert [item.body for item in case.replies] == [reply]
    assert case.shell.id == str(filed.report_id)


def test_an_unknown_case_is_a_404_in_json(app: Flask, client: FlaskClient, chief: Desk) -> None:
    make_filed_report(app)

    response = call(client, chief, f"/api/v1/cases/{uuid.uuid4()}")

    assert response.status_code == 404
    assert response.get_json() == {"error": "http", "message": "Not Found"}


def test_volunteers_see_only_the_cases_assigned_to_them(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    # Given: three reports; the volunteer is assigned only the second
    reports = [make_filed_report(app).report_id for _ in range(3)]
    volunteer = volunteer_desk(app, chief)
    assign(app, reports[1], volunteer, chief)

    # When: the volunteer's desk lists its cases
    listed = call(client, volunteer, "/api/v1/cases").get_json()

    # Then: only the assigned one is there
    assert [case["report_id"] for case in listed["cases"]] == [str(reports[1])]
    assert listed["next"] is None

    # And: the others answer 404, as if they did not exist
    for report_id in (reports[0], reports[2]):
        response = call(client, volunteer, f"/api/v1/cases/{report_id}")
        assert response.status_code == 404
        assert response.get_json()["error"] == "http"
    assert call(client, volunteer, f"/api/v1/cases/{reports[1]}").status_code == 200


def test_a_volunteer_bundle_carries_only_wraps_addressed_to_their_key(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    # Given: a report with an addition, a reply and a note, granted to two volunteers
    filed = make_filed_report(app)
    addition = f"ADDITION-{secrets.token_hex(4)}"
    add_information(app, filed.receipt, addition)
    reply = f"REPLY-{secrets.token_hex(4)}"
    make_reply(
        app,
        filed.report_id,
        receipt=filed.receipt,
        body=reply,
        organizer_key=organizer.public_key,
    )
    first, second = volunteer_desk(app, chief), volunteer_desk(app, chief)
    for volunteer in (first, second):
        assign(app, filed.report_id, volunteer, chief)
    note = f"NOTE-{secrets.token_hex(4)}"
    publics = [organizer.public_key, first.key.public_key(), second.key.public_key()]
    outputs = {"notes": [note_item(filed.report_id, note, recipients=publics)]}
    prove(client, chief)
    assert call(client, chief, "/api/v1/outputs", method="POST", body=outputs).status_code == 200
    grants = [
        grant_item(app, filed.report_id, organizer_key=organizer.private_key, to=v.key.public_key())
        for v in (first, second)
    ]
    response = call(client, chief, "/api/v1/outputs", method="POST", body={"grants": grants})
    assert response.status_code == 200
    assert response.get_json()["grants"] == 2

    # When: the first volunteer's desk fetches the case
    response = call(client, first, f"/api/v1/cases/{filed.report_id}")
    bundle = response.get_json()

    # Then: every wrap in it is addressed to the first volunteer's key
    carried = bundle_wraps(bundle)
    assert len(carried) == 4  # the report, the addition, the reply and the note
    assert {crypto.wrap_key_id(blob).hex() for blob in carried} == {first.key_id}

    # And: no wrap to any other key (organizer, second volunteer, witness) is in the answer
    others = [blob for key_id, blob in all_wrap_blobs(app) if key_id != first.key_id]
    # organizer and second volunteer for each of the four, and the witness for the reply
    assert len(others) == 2 * 4 + 1
    for blob in others:
        assert b64(blob) not in response.text

    # And: the volunteer's key opens the whole case
    case = casefile.open_bundle(bundle, private_key=first.key)
    assert case.sealed["narrative"] == NARRATIVE
    assert [item.text for item in case.additions] == [addition]
    assert [item.body for item in case.replies] == [reply]
    assert [(item.author, item.body) for item in case.notes] == [(chief.account.username, note)]


def witness_client_files(app: Flask, files: list[tuple[bytes, str]]) -> tuple[uuid.UUID, str]:
    """A witness files a report with attachments through the form; returns (id, receipt)."""
    witness = app.test_client()
    data: dict[str, Any] = {
        "csrf_token": csrf_token(witness, "/report"),
        **report_form_data(),
        "attachments": [(io.BytesIO(body), name) for body, name in files],
    }
    response = witness.post("/report", data=data, content_type="multipart/form-data")
    assert response.status_code == 200
    receipt = receipt_from(response)
    with app.app_context():
        case = followup.find_case(receipt, receipt_secret=current_settings().receipt_key)
        return case.report.id, receipt


def test_an_attachment_is_served_as_the_stored_ciphertext(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    # Given: a report with a PDF attachment, and another report
    marker = f"EVIDENCE{secrets.token_hex(4)}"
    pdf = minimal_pdf(marker)
    report_id, _receipt = witness_client_files(app, [(pdf, "summons.pdf")])
    other_id = make_filed_report(app).report_id
    with app.app_context():
        row = db.session.scalars(sa.select(Attachment)).one()
        attachment_id, envelope_id, size = row.id, row.envelope_id, row.padded_size
        meta_sealed = row.meta_sealed
        on_disk = (
            attachment_directory(current_settings().instance_path) / attachment_id.hex
        ).read_bytes()

    # When: the organizer's desk downloads it
    response = call(client, chief, f"/api/v1/cases/{report_id}/attachments/{attachment_id}")

    # Then: it gets exactly the ciphertext file, without the plaintext
    assert response.status_code == 200
    assert response.mimetype == "application/octet-stream"
    assert response.data == on_disk
    assert marker.encode() not in response.data
    assert len(response.data) == crypto.stream_ciphertext_length(size)

    # And: the desk decrypts it with the organizer key to the original bytes
    data_key = crypto.unwrap_data_key(
        base64.b64decode(call(client, chief, f"/api/v1/cases/{report_id}").get_json()["wrap"]),
        report_id=report_id,
        private_key=organizer.private_key,
    )
    meta = json.loads(
        crypto.open_bytes(
            meta_sealed,
            data_key=data_key,
            report_id=envelope_id,
            name=meta_field_name(attachment_id),
        )
    )
    plain = io.BytesIO()
    crypto.open_stream(
        io.BytesIO(response.data),
        key=crypto.attachment_key(data_key, attachment_id=attachment_id),
        sink=plain,
        size=meta["size"],
    )
    assert plain.getvalue() == pdf

    # And: the attachment is not served under another case, nor an unknown id
    for path in (
        f"/api/v1/cases/{other_id}/attachments/{attachment_id}",
        f"/api/v1/cases/{report_id}/attachments/{uuid.uuid4()}",
    ):
        assert call(client, chief, path).status_code == 404


def test_a_volunteer_cannot_download_attachments_of_cases_not_assigned_to_them(
    app: Flask, client: FlaskClient, chief: Desk
) -> None:
    report_id, _receipt = witness_client_files(app, [(minimal_pdf(), "a.pdf")])
    with app.app_context():
        attachment_id = db.session.scalars(sa.select(Attachment.id)).one()
    volunteer = volunteer_desk(app, chief)
    path = f"/api/v1/cases/{report_id}/attachments/{attachment_id}"

    refused = call(client, volunteer, path)
    assign(app, report_id, volunteer, chief)
    served = call(client, volunteer, path)

    assert refused.status_code == 404
    assert refused.get_json()["error"] == "http"
    assert served.status_code == 200
    assert served.mimetype == "application/octet-stream"


# --------------------------------------------------------------------------- volunteers


def test_the_volunteer_directory_lists_approved_keys_of_active_volunteers_for_organizers(
    app: Flask, client: FlaskClient, chief: Desk
) -> None:
    # Given: an approved volunteer, one awaiting approval, and a disabled one
    approved = volunteer_desk(app, chief)
    volunteer_desk(app, chief, approved=False)
    disabled = volunteer_desk(app, chief)
    with app.app_context():
        user = db.session.get(User, disabled.account.id)
        assert user is not None
        user.is_active = False
        db.session.commit()

    # When: the organizer's desk asks for the directory
    response = call(client, chief, "/api/v1/volunteers")

    # Then: only the approved, active volunteer is listed, with the key to check and wrap to
    assert response.status_code == 200
    assert response.get_json() == {
        "volunteers": [
            {
                "user_id": str(approved.account.id),
                "username": approved.account.username,
                "key_id": approved.key_id,
                "fingerprint": approved.key.public_key().fingerprint,
                "public_key": b64(approved.key.public_key().to_bytes()),
            }
        ]
    }

    # And: a volunteer's desk is refused
    refused = call(client, approved, "/api/v1/volunteers")
    assert refused.status_code == 403
    assert refused.get_json() == {"error": "role", "message": "organizers only"}


# --------------------------------------------------------------------------- outputs


def test_outputs_are_stored_and_a_resent_batch_stores_nothing_twice(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    # Given: a case assigned to a volunteer
    report_id = make_filed_report(app).report_id
    volunteer = volunteer_desk(app, chief)
    assign(app, report_id, volunteer, chief)
    text = f"NOTE-{secrets.token_hex(4)}"
    batch = {
        "notes": [
            note_item(
                report_id, text, recipients=[organizer.public_key, volunteer.key.public_key()]
            )
        ],
        "statuses": [
            {
                "report_id": str(report_id),
                "from": "assigned",
                "to": "in_progress",
                "reason": "called",
            }
        ],
    }

    # When: the volunteer's desk, having proven its key, sends a note and a status change, twice
    prove(client, volunteer)
    first = call(client, volunteer, "/api/v1/outputs", method="POST", body=batch)
    again = call(client, volunteer, "/api/v1/outputs", method="POST", body=batch)

    # Then: the first stores both, the second skips both
    assert first.status_code == 200
    assert first.get_json() == {
        "grants": 0,
        "notes": 1,
        "replies": 0,
        "statuses": 1,
        "rotations": 0,
        "skipped": 0,
    }
    assert again.status_code == 200
    assert again.get_json() == {
        "grants": 0,
        "notes": 0,
        "replies": 0,
        "statuses": 0,
        "rotations": 0,
        "skipped": 2,
    }
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Note)) == 1
        report = db.session.get(Report, report_id)
        assert report is not None
        assert report.status == "in_progress"
        assert text.encode() not in db.session.scalars(sa.select(Note.body_sealed)).one()

    # And: the organizer's desk reads the note in the case bundle
    bundle = call(client, chief, f"/api/v1/cases/{report_id}").get_json()
    case = casefile.open_bundle(bundle, private_key=organizer.private_key)
    assert [(note.author, note.body) for note in case.notes] == [(volunteer.account.username, text)]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ("not json", 400, "malformed"),
        ([1, 2], 400, "malformed"),
        ({"notes": "many"}, 400, "malformed"),
        ({"notes": [{"report_id": "x"}]}, 400, "malformed"),
    ],
)
def test_malformed_outputs_are_a_400(
    app: Flask, client: FlaskClient, chief: Desk, body: Any, status: int, error: str
) -> None:
    make_filed_report(app)
    prove(client, chief)

    if isinstance(body, str):
        response = client.post("/api/v1/outputs", headers=chief.headers(), data=body)
    else:
        response = call(client, chief, "/api/v1/outputs", method="POST", body=body)

    assert response.status_code == status
    assert response.get_json()["error"] == error


def test_outputs_a_volunteer_may_not_make_are_refused_with_409(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    # Given: a case assigned to a volunteer, and one that is not
    mine, other = make_filed_report(app).report_id, make_filed_report(app).report_id
    volunteer = volunteer_desk(app, chief)
    assign(app, mine, volunteer, chief)
    publics = [organizer.public_key, volunteer.key.public_key()]
    prove(client, volunteer)

    # When: the volunteer grants a case, or writes a note on a case that is not theirs
    grant = grant_item(
        app, mine, organizer_key=organizer.private_key, to=volunteer.key.public_key()
    )
    as_grant = call(client, volunteer, "/api/v1/outputs", method="POST", body={"grants": [grant]})
    as_note = call(
        client,
        volunteer,
        "/api/v1/outputs",
        method="POST",
        body={"notes": [note_item(other, "hello", recipients=publics)]},
    )

    # Then: both are refused with the reason, and nothing is stored
    assert as_grant.status_code == 409
    assert as_grant.get_json() == {
        "error": "refused",
        "message": "Only organizers can grant cases or rotate their keys.",
    }
    assert as_note.status_code == 409
    assert as_note.get_json()["message"] == "A desk output concerns a case you cannot work."
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Note)) == 0
        assert db.session.get(Wrap, (mine, volunteer.key_id)) is None


# --------------------------------------------------------------------------- revocation


def test_revoking_takes_the_case_and_every_wrap_away_from_the_volunteer(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    # Given: a case with an addition, granted in full to a volunteer who can open it
    filed = make_filed_report(app)
    add_information(app, filed.receipt, "more details")
    volunteer = volunteer_desk(app, chief)
    assign(app, filed.report_id, volunteer, chief)
    grant = grant_item(
        app, filed.report_id, organizer_key=organizer.private_key, to=volunteer.key.public_key()
    )
    prove(client, chief)
    granted = call(client, chief, "/api/v1/outputs", method="POST", body={"grants": [grant]})
    assert granted.get_json()["grants"] == 1
    with app.app_context():
        assert casefile.open_case(filed.report_id, private_key=volunteer.key).additions

    # When: the organizer's desk revokes it
    response = call(
        client,
        chief,
        f"/api/v1/cases/{filed.report_id}/revoke",
        method="POST",
        body={"user_id": volunteer.account.id},
    )

    # Then: the case is gone from the volunteer's desk, and so is every wrap to their key
    assert response.status_code == 200
    assert response.get_json() == {"revoked": True}
    assert call(client, volunteer, f"/api/v1/cases/{filed.report_id}").status_code == 404
    assert call(client, volunteer, "/api/v1/cases").get_json()["cases"] == []
    assert [key_id for key_id, _ in all_wrap_blobs(app) if key_id == volunteer.key_id] == []
    with app.app_context(), pytest.raises(NoWrapForKeyError):
        casefile.open_case(filed.report_id, private_key=volunteer.key)


@pytest.mark.parametrize(
    ("who", "body", "status", "error"),
    [
        ("volunteer", {"user_id": 0}, 403, "role"),
        ("organizer", {}, 400, "malformed"),
        ("organizer", {"user_id": "someone"}, 400, "malformed"),
        ("organizer", {"user_id": -1}, 409, "refused"),
    ],
)
def test_revoking_is_for_organizers_and_names_an_assigned_volunteer(
    app: Flask,
    client: FlaskClient,
    chief: Desk,
    who: str,
    body: dict[str, Any],
    status: int,
    error: str,
) -> None:
    report_id = make_filed_report(app).report_id
    volunteer = volunteer_desk(app, chief)
    assign(app, report_id, volunteer, chief)
    if body.get("user_id") == 0:
        body = {"user_id": volunteer.account.id}
    desk = volunteer if who == "volunteer" else chief
    prove(client, desk)  # so that the refusal is the role or the body speaking, not the proof

    response = call(client, desk, f"/api/v1/cases/{report_id}/revoke", method="POST", body=body)

    assert response.status_code == status
    assert response.get_json()["error"] == error
    with app.app_context():
        assert cases.is_assigned(report_id, db.session.get(User, volunteer.account.id))


# --------------------------------------------------------------------------- caching and cookies


def test_no_api_answer_is_cached_or_sets_a_cookie_even_for_a_logged_in_browser(
    app: Flask, client: FlaskClient, chief: Desk
) -> None:
    # Given: a browser that is also logged in to the staff pages (it holds a session cookie)
    report_id = make_filed_report(app).report_id
    volunteer = volunteer_desk(app, chief)
    assert login(client, chief.account).status_code == 302
    prove(client, chief)  # its answers are checked like every other one
    requests = [
        (chief, "GET", "/api/v1/session", None),
        (chief, "GET", "/api/v1/session?lang=ru", None),
        (chief, "GET", "/api/v1/cases?lang=sr", None),
        (chief, "GET", f"/api/v1/cases/{report_id}", None),
        (chief, "GET", f"/api/v1/cases/{uuid.uuid4()}", None),
        (chief, "GET", "/api/v1/volunteers", None),
        (chief, "POST", "/api/v1/outputs", {}),
        (chief, "POST", "/api/v1/outputs", []),
        (volunteer, "GET", "/api/v1/volunteers", None),
        (volunteer, "GET", f"/api/v1/cases/{report_id}", None),
    ]

    # When / Then: every answer, successful or not, is marked no-store and sets no cookie
    statuses = [
        call(client, desk, path, method=method, body=body).status_code
        for desk, method, path, body in requests
    ]
    assert statuses == [200, 200, 200, 200, 404, 200, 200, 400, 403, 404]
    bad_token = client.get("/api/v1/session", headers={"Authorization": "Bearer irt_nope"})
    assert bad_token.status_code == 401
    assert "no-store" in bad_token.headers["Cache-Control"]
    assert "Set-Cookie" not in bad_token.headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/outputs", 405),
        ("GET", "/api/v1/cases/not-a-uuid", 404),
        ("GET", "/api/v1/no-such-endpoint", 404),
    ],
)
def test_routing_errors_under_the_api_are_json_too(
    app: Flask, client: FlaskClient, chief: Desk, method: str, path: str, status: int
) -> None:
    response = call(client, chief, path, method=method)

    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert response.get_json()["error"] == "http"
