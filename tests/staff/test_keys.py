"""Volunteer keys (incidents.services.recipients through the staff views).

A volunteer uploads the public key file their desk made; an organizer compares fingerprints and
approves it. Anything that is not a fresh X-Wing public key of a volunteer is refused with a
message and stores nothing, and only an approved key that is not retired can ever receive a case.
"""

from __future__ import annotations

import io
import json
import secrets
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from incidents import crypto
from incidents.db import db
from incidents.models import Assignment, AuditEvent, RecipientKey, User, Wrap
from incidents.services import cases
from incidents.services.recipients import MAX_KEY_FILE_BYTES
from tests.conftest import TEST_KDF, KeyFiles
from tests.factories import (
    StaffAccount,
    flashed,
    grant_for,
    login,
    make_report,
    make_user,
    make_volunteer_key,
    page_csrf_token,
    use_fast_password_hashing,
)

NOT_A_KEY_FILE = (
    "This is not a public key file of the register (use the .pub file from 'keys init')."
)


@pytest.fixture(autouse=True)
def _fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_password_hashing(monkeypatch)


def logged_in(app: Flask, role: str) -> tuple[StaffAccount, FlaskClient]:
    """A new account of ``role`` and a client logged in as it."""
    account = make_user(app, role=role)
    client = app.test_client()
    assert login(client, account).status_code == 302
    return account, client


def armor_of(private_key: crypto.PrivateKey) -> bytes:
    """The public key file the desk writes for ``private_key``."""
    return private_key.public_key().to_armor().encode("ascii")


def upload(client: FlaskClient, data: bytes, filename: str = "my.pub") -> TestResponse:
    """Upload a key file on "My key" and follow the redirect back to it."""
    token = page_csrf_token(client, "/staff/keys")
    return client.post(
        "/staff/keys",
        data={"csrf_token": token, "key_file": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
        follow_redirects=True,
    )


def press(client: FlaskClient, action: str, key_id: str) -> TestResponse:
    """Press "approve" or "retire" for a key on the keys page."""
    token = page_csrf_token(client, "/staff/keys")
    return client.post(
        f"/staff/keys/{key_id}/{action}", data={"csrf_token": token}, follow_redirects=True
    )


def key_rows(app: Flask) -> dict[str, dict[str, Any]]:
    """Every stored recipient key by id: owner, role, approval and retirement."""
    with app.app_context():
        return {
            row.key_id: {
                "owner_id": row.owner_id,
                "role": row.role,
                "approved_by_id": row.approved_by_id,
                "is_approved": row.is_approved,
                "is_retired": row.is_retired,
            }
            for row in db.session.scalars(select(RecipientKey)).all()
        }


def audit_actions(app: Flask, prefix: str) -> list[tuple[str, str, str]]:
    """(actor, action, target) of audit events whose action starts with ``prefix``."""
    with app.app_context():
        rows = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action.startswith(prefix)).order_by(AuditEvent.seq)
        ).all()
        return [(row.actor, row.action, row.target) for row in rows]


def key_state_on_page(response: TestResponse, fingerprint: str) -> str:
    """The state column of the row showing ``fingerprint`` on the keys page."""
    page = response.get_data(as_text=True)
    cell = f'<code class="fingerprint">{fingerprint}</code>'
    assert cell in page, "the key is not listed"
    row = page.split(cell, 1)[1].split("</tr>", 1)[0]
    for state in ("awaiting approval", "approved", "retired"):
        if state in row:
            return state
    return "?"


# --------------------------------------------------------------------------- upload and approval


def test_uploaded_key_awaits_approval_and_both_sides_see_its_fingerprint(app: Flask) -> None:
    # Given: a volunteer with the public key file from their desk
    volunteer, volunteer_client = logged_in(app, "volunteer")
    organizer, organizer_client = logged_in(app, "organizer")
    private_key = crypto.PrivateKey.generate()
    public_key = private_key.public_key()

    # When: they upload it on "My key"
    response = upload(volunteer_client, armor_of(private_key))

    # Then: the page confirms it with the fingerprint to read out, and lists it as awaiting
    assert flashed(response) == [
        f"Key registered. Read its fingerprint to an organizer: {public_key.fingerprint}"
    ]
    assert key_state_on_page(response, public_key.fingerprint) == "awaiting approval"
    assert key_rows(app) == {
        public_key.key_id_hex: {
            "owner_id": volunteer.id,
            "role": "volunteer",
            "approved_by_id": None,
            "is_approved": False,
            "is_retired": False,
        }
    }
    assert audit_actions(app, "key.") == [
        (volunteer.username, "key.register", public_key.key_id_hex)
    ]

    # And: the organizer sees it under "Volunteer keys" with its owner and an approve button
    page = organizer_client.get("/staff/keys")
    assert key_state_on_page(page, public_key.fingerprint) == "awaiting approval"
    cell = f'<code class="fingerprint">{public_key.fingerprint}</code>'
    row = page.get_data(as_text=True).split(cell, 1)[0].rsplit("<tr>", 1)[1]
    assert f"<td>{volunteer.username}</td>" in row
    assert f"/staff/keys/{public_key.key_id_hex}/approve" in page.get_data(as_text=True)

    # When: the organizer approves it after comparing the fingerprint
    approved = press(organizer_client, "approve", public_key.key_id_hex)

    # Then: it is approved by them, on record, and shown as approved to both
    assert flashed(approved) == ["Saved."]
    assert key_rows(app)[public_key.key_id_hex]["approved_by_id"] == organizer.id
    assert key_rows(app)[public_key.key_id_hex]["is_approved"] is True
    assert audit_actions(app, "key.approve") == [
        (organizer.username, "key.approve", public_key.key_id_hex)
    ]
    assert key_state_on_page(approved, public_key.fingerprint) == "approved"
    mine = volunteer_client.get("/staff/keys")
    assert key_state_on_page(mine, public_key.fingerprint) == "approved"


def x25519_key_file() -> bytes:
    return armor_of(crypto.PrivateKey.generate(suite=crypto.SUITE_X25519))


def private_key_file() -> bytes:
    text = crypto.encrypt_private_key(
        crypto.PrivateKey.generate(), passphrase="a passphrase", kdf=TEST_KDF
    )
    return text.encode("ascii")


def damaged_key_file() -> bytes:
    """A real public key file with one line of its base64 body missing."""
    lines = armor_of(crypto.PrivateKey.generate()).decode("ascii").splitlines()
    del lines[8]
    return ("\n".join(lines) + "\n").encode("ascii")


def huge_key_file() -> bytes:
    armor = armor_of(crypto.PrivateKey.generate())
    return armor + b"\n" + b"A" * (MAX_KEY_FILE_BYTES * 8)


BAD_FILES = {
    "random text": (lambda: b"hello, this is my key\n", NOT_A_KEY_FILE),
    "empty file": (lambda: b"", NOT_A_KEY_FILE),
    "binary garbage": (lambda: secrets.token_bytes(1216), NOT_A_KEY_FILE),
    "private key file": (private_key_file, NOT_A_KEY_FILE),
    "damaged key file": (damaged_key_file, NOT_A_KEY_FILE),
    "huge file": (huge_key_file, "This file is far too large to be a public key file."),
    "X25519 key": (
        x25519_key_file,
        "This key uses another suite; volunteer keys must be X-Wing (ML-KEM-768 + X25519).",
    ),
}


def test_bad_key_files_are_refused_with_a_message_and_nothing_is_stored(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: a volunteer, and the organizer key already on record (a report was filed)
    make_report(app)
    _volunteer, client = logged_in(app, "volunteer")
    before = key_rows(app)
    files = {name: make() for name, (make, _message) in BAD_FILES.items()}
    files["organizer's key"] = organizer.public_key.to_armor().encode("ascii")
    expected = {name: [message] for name, (_make, message) in BAD_FILES.items()}
    expected["organizer's key"] = ["This is the organizers' key, not a personal volunteer key."]

    # When: they upload each bad file
    messages = {name: flashed(upload(client, data)) for name, data in files.items()}

    # Then: each gets its clear message, and no key was stored
    assert messages == expected
    assert key_rows(app) == before
    assert [row["role"] for row in before.values()] == ["organizer"]
    assert audit_actions(app, "key.") == []

    # And: sending no file at all is refused too
    token = page_csrf_token(client, "/staff/keys")
    response = client.post("/staff/keys", data={"csrf_token": token}, follow_redirects=True)
    assert flashed(response) == ["Choose the public key file (.pub) made by your desk."]
    assert key_rows(app) == before


def test_organizer_key_is_refused_even_before_any_report_exists(
    app: Flask, organizer: KeyFiles
) -> None:
    _volunteer, client = logged_in(app, "volunteer")

    response = upload(client, organizer.public_key.to_armor().encode("ascii"))

    assert flashed(response) == ["This is the organizers' key, not a personal volunteer key."]
    assert key_rows(app) == {}


def test_an_already_registered_key_is_refused_for_its_owner_and_for_others(app: Flask) -> None:
    # Given: a volunteer registered a key
    volunteer, client = logged_in(app, "volunteer")
    _other, other_client = logged_in(app, "volunteer")
    armor = armor_of(crypto.PrivateKey.generate())
    assert len(flashed(upload(client, armor))) == 1
    before = key_rows(app)

    # When: they, or another volunteer, upload the same key again
    again = upload(client, armor)
    stolen = upload(other_client, armor)

    # Then: both are refused and the key still belongs to the first volunteer only
    assert flashed(again) == ["This key is already registered."]
    assert flashed(stolen) == ["This key is already registered."]
    assert key_rows(app) == before
    assert [row["owner_id"] for row in before.values()] == [volunteer.id]


def test_only_volunteers_upload_and_only_organizers_approve(app: Flask) -> None:
    volunteer, volunteer_client = logged_in(app, "volunteer")
    _organizer, organizer_client = logged_in(app, "organizer")
    _ngo, ngo_client = logged_in(app, "ngo")
    key = make_volunteer_key(app, volunteer).public_key().key_id_hex
    armor = armor_of(crypto.PrivateKey.generate())
    token = page_csrf_token(organizer_client, "/staff/keys")
    upload_data = {"csrf_token": token, "key_file": (io.BytesIO(armor), "my.pub")}

    assert organizer_client.post("/staff/keys", data=upload_data).status_code == 403
    assert ngo_client.get("/staff/keys").status_code == 403
    volunteer_token = page_csrf_token(volunteer_client, "/staff/keys")
    refused = volunteer_client.post(
        f"/staff/keys/{key}/approve", data={"csrf_token": volunteer_token}
    )
    assert refused.status_code == 403
    assert key_rows(app)[key]["is_approved"] is False
    assert len(key_rows(app)) == 1


def test_approving_a_new_key_retires_the_volunteers_old_one(app: Flask) -> None:
    # Given: a volunteer whose first key is approved, and who registers a second one
    organizer, organizer_client = logged_in(app, "organizer")
    volunteer, volunteer_client = logged_in(app, "volunteer")
    first = make_volunteer_key(app, volunteer, approved_by=organizer).public_key()
    second = crypto.PrivateKey.generate().public_key()
    upload(volunteer_client, second.to_armor().encode("ascii"))

    # Then: until the second is approved, the first stays the active key
    assert key_rows(app)[first.key_id_hex]["is_retired"] is False
    with app.app_context():
        assert [user.id for user in cases.eligible_volunteers()] == [volunteer.id]

    # When: the organizer approves the second key
    response = press(organizer_client, "approve", second.key_id_hex)

    # Then: the second is approved and the first retired, both on record
    assert flashed(response) == ["Saved."]
    rows = key_rows(app)
    assert (rows[first.key_id_hex]["is_retired"], rows[second.key_id_hex]["is_approved"]) == (
        True,
        True,
    )
    assert rows[second.key_id_hex]["is_retired"] is False
    assert audit_actions(app, "key.")[-2:] == [
        (organizer.username, "key.retire", first.key_id_hex),
        (organizer.username, "key.approve", second.key_id_hex),
    ]
    assert key_state_on_page(response, first.fingerprint) == "retired"
    assert key_state_on_page(response, second.fingerprint) == "approved"

    # And: an approved key cannot be approved again, a retired or unknown one not at all
    assert flashed(press(organizer_client, "approve", second.key_id_hex)) == [
        "This key is already approved."
    ]
    assert flashed(press(organizer_client, "approve", first.key_id_hex)) == [
        "This key was retired."
    ]
    assert flashed(press(organizer_client, "approve", "0" * 32)) == ["No such volunteer key."]
    assert key_rows(app)[first.key_id_hex]["is_approved"] is True  # approved once, now retired
    assert key_rows(app)[first.key_id_hex]["is_retired"] is True


def test_retiring_is_for_the_owner_and_organizers_only(app: Flask, organizer: KeyFiles) -> None:
    # Given: two volunteers with approved keys, and the organizer key on record
    organizer_account, organizer_client = logged_in(app, "organizer")
    alice, alice_client = logged_in(app, "volunteer")
    bob, bob_client = logged_in(app, "volunteer")
    alice_public = make_volunteer_key(app, alice, approved_by=organizer_account).public_key()
    alice_key = alice_public.key_id_hex
    bob_key = make_volunteer_key(app, bob, approved_by=organizer_account).key_id.hex()
    make_report(app)
    organizer_key = organizer.public_key.key_id_hex

    # When: Bob tries to retire Alice's key, and anyone tries to retire the organizer key
    by_bob = press(bob_client, "retire", alice_key)
    organizer_key_by_bob = press(bob_client, "retire", organizer_key)
    organizer_key_by_organizer = press(organizer_client, "retire", organizer_key)

    # Then: each is refused as if the key did not exist, and nothing changed
    assert flashed(by_bob) == ["No such volunteer key."]
    assert flashed(organizer_key_by_bob) == ["No such volunteer key."]
    assert flashed(organizer_key_by_organizer) == ["No such volunteer key."]
    assert not any(row["is_retired"] for row in key_rows(app).values())
    bobs_page = bob_client.get("/staff/keys").get_data(as_text=True)
    assert alice_public.fingerprint not in bobs_page, "a volunteer sees only their own keys"
    assert alice_key not in bobs_page

    # When: Alice retires her own key and the organizer retires Bob's
    by_alice = press(alice_client, "retire", alice_key)
    by_organizer = press(organizer_client, "retire", bob_key)

    # Then: both are retired and on record
    assert (flashed(by_alice), flashed(by_organizer)) == (["Saved."], ["Saved."])
    rows = key_rows(app)
    assert (rows[alice_key]["is_retired"], rows[bob_key]["is_retired"]) == (True, True)
    assert rows[organizer_key]["is_retired"] is False
    assert audit_actions(app, "key.retire") == [
        (alice.username, "key.retire", alice_key),
        (organizer_account.username, "key.retire", bob_key),
    ]


# --------------------------------------------------------------------------- keys and cases


def assign(client: FlaskClient, report_id: uuid.UUID, volunteer: StaffAccount) -> TestResponse:
    """The organizer picks a volunteer on the report page and presses "Assign"."""
    token = page_csrf_token(client, f"/staff/reports/{report_id}")
    return client.post(
        f"/staff/reports/{report_id}/assign",
        data={"csrf_token": token, "volunteer_id": str(volunteer.id)},
        follow_redirects=True,
    )


def upload_grant(client: FlaskClient, report_id: uuid.UUID, blob: bytes) -> TestResponse:
    """Record a key grant file on the report page."""
    token = page_csrf_token(client, f"/staff/reports/{report_id}")
    return client.post(
        f"/staff/reports/{report_id}/grants",
        data={"csrf_token": token, "grant_file": (io.BytesIO(blob), "grant.bin")},
        content_type="multipart/form-data",
        follow_redirects=True,
    )


def counts(app: Flask) -> dict[str, int]:
    """Rows of assignments and wraps, and "case." audit events."""
    with app.app_context():
        count = db.session.scalar
        return {
            "assignments": count(select(func.count()).select_from(Assignment)) or 0,
            "wraps": count(select(func.count()).select_from(Wrap)) or 0,
            "case events": count(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action.startswith("case."))
            )
            or 0,
        }


def test_an_unapproved_or_retired_key_never_receives_a_case(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: a volunteer whose only key awaits approval, and two reports
    organizer_account, client = logged_in(app, "organizer")
    volunteer = make_user(app, role="volunteer")
    pending = make_volunteer_key(app, volunteer).public_key()
    report, other_report = make_report(app), make_report(app)
    before = counts(app)

    # When: the organizer tries to assign the report to them, or to record a grant to that key
    refused_assignment = assign(client, report, volunteer)
    grant = grant_for(app, report, organizer_key=organizer.private_key, recipient=pending)
    refused_grant = upload_grant(client, report, grant)

    # Then: both are refused and nothing is stored
    assert flashed(refused_assignment) == ["Choose a legal-aid volunteer with an approved key."]
    assert flashed(refused_grant) == ["The grant is addressed to a key that is not approved."]
    assert counts(app) == before
    assert f'<option value="{volunteer.id}"' not in refused_assignment.get_data(as_text=True)
    with app.app_context(), pytest.raises(cases.CaseError, match="no approved key"):
        cases.assign_report(
            report,
            volunteer_id=volunteer.id,
            organizer=db.session.get(User, organizer_account.id),
        )

    # Given: the volunteer gets an approved key, is assigned, and then a new key awaits approval
    approved_key = make_volunteer_key(app, volunteer, approved_by=organizer_account)
    assert flashed(assign(client, report, volunteer)) == ["Saved."]
    newer = make_volunteer_key(app, volunteer).public_key()
    assigned = counts(app)

    # When: a grant to the pending key is recorded
    to_pending = grant_for(app, report, organizer_key=organizer.private_key, recipient=newer)

    # Then: it is refused although its owner is assigned
    assert flashed(upload_grant(client, report, to_pending)) == [
        "The grant is addressed to a key that is not approved."
    ]
    assert counts(app) == assigned

    # When: the volunteer retires their approved key
    volunteer_client = app.test_client()
    assert login(volunteer_client, volunteer).status_code == 302
    assert flashed(press(volunteer_client, "retire", approved_key.key_id.hex())) == ["Saved."]

    # Then: a grant to the retired key and a new assignment are both refused
    to_retired = grant_for(
        app, report, organizer_key=organizer.private_key, recipient=approved_key.public_key()
    )
    assert flashed(upload_grant(client, report, to_retired)) == [
        "The grant is addressed to a key that is not approved."
    ]
    assert flashed(assign(client, other_report, volunteer)) == [
        "Choose a legal-aid volunteer with an approved key."
    ]
    assert counts(app) == assigned
    with app.app_context():
        events = db.session.scalars(
            select(AuditEvent.details).where(AuditEvent.action == "case.grant")
        ).all()
    assert [json.loads(details) for details in events] == []


def test_retiring_a_key_deletes_every_wrap_addressed_to_it(app: Flask, organizer: KeyFiles) -> None:
    # Given: a volunteer granted a case (a report wrap and an envelope wrap to their key)
    from incidents.db import db
    from incidents.models import EnvelopeWrap, User, Wrap
    from incidents.services import recipients
    from tests.factories import grant_for, make_report

    boss_account, _client = logged_in(app, "organizer")
    volunteer, _volunteer_client = logged_in(app, "volunteer")
    volunteer_key = make_volunteer_key(app, volunteer, approved_by=boss_account)
    key_id = volunteer_key.key_id.hex()
    report_id = make_report(app)
    with app.app_context():
        boss = db.session.get(User, boss_account.id)
        assert boss is not None
        cases.assign_report(report_id, volunteer_id=volunteer.id, organizer=boss)
    blob = grant_for(
        app, report_id, organizer_key=organizer.private_key, recipient=volunteer_key.public_key()
    )
    with app.app_context():
        boss = db.session.get(User, boss_account.id)
        assert boss is not None
        cases.record_grant(report_id, blob, actor=boss)
        envelope = crypto.wrap_data_key(
            crypto.new_data_key(), report_id=report_id, recipient=volunteer_key.public_key()
        )
        db.session.add(
            EnvelopeWrap(envelope_id=report_id, key_id=key_id, report_id=report_id, blob=envelope)
        )
        db.session.commit()
        assert db.session.query(Wrap).filter_by(key_id=key_id).count() == 1

        # When: the organizer retires the key
        recipients.retire_key(key_id, actor=boss)

        # Then: no wrap of any kind is addressed to it any more
        assert db.session.query(Wrap).filter_by(key_id=key_id).count() == 0
        assert db.session.query(EnvelopeWrap).filter_by(key_id=key_id).count() == 0
