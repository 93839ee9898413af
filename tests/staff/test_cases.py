"""Assignment, key grants and revocation (incidents.services.cases through the staff views).

Assignment is bookkeeping; access is cryptographic. The grants recorded here are real wraps made
as the organizer's desk makes them (the report key unwrapped with the organizer's private key and
wrapped to the volunteer's approved key), and the tests open the stored report with the
volunteer's private key to prove that the grant, and only the grant, gives access.
"""

from __future__ import annotations

import base64
import io
import json
import re
import secrets
import uuid
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from incidents import crypto
from incidents.db import db
from incidents.models import Assignment, AuditEvent, Report, StatusChange, User, Wrap
from incidents.services import cases, recipients
from incidents.services.casefile import open_case
from incidents.services.errors import NoWrapForKeyError
from tests.conftest import KeyFiles
from tests.factories import (
    StaffAccount,
    flashed,
    grant_for,
    login,
    make_report,
    make_user,
    make_volunteer_key,
    page_csrf_token,
    report_form_data,
    submit_report,
    use_fast_password_hashing,
)

NO_ELIGIBLE_VOLUNTEER = "Choose a legal-aid volunteer with an approved key."
ACCESS_CELL = re.compile(r"<td>(awaiting key grant|ready to open on your desk)</td>")


@pytest.fixture(autouse=True)
def _fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_password_hashing(monkeypatch)


@pytest.fixture
def organizer_account(app: Flask, client: FlaskClient) -> StaffAccount:
    """An organizer, logged in on ``client``."""
    account = make_user(app, role="organizer")
    assert login(client, account).status_code == 302
    return account


def logged_in_client(app: Flask, account: StaffAccount) -> FlaskClient:
    """A new client logged in as ``account``."""
    other = app.test_client()
    assert login(other, account).status_code == 302
    return other


def assign(client: FlaskClient, report_id: uuid.UUID, volunteer_id: int) -> TestResponse:
    """The organizer picks a volunteer on the report page and presses "Assign"."""
    token = page_csrf_token(client, f"/staff/reports/{report_id}")
    return client.post(
        f"/staff/reports/{report_id}/assign",
        data={"csrf_token": token, "volunteer_id": str(volunteer_id)},
        follow_redirects=True,
    )


def upload_grant(client: FlaskClient, report_id: uuid.UUID, content: bytes) -> TestResponse:
    """Record a key grant file through the endpoint the desk uses (multipart upload)."""
    token = page_csrf_token(client, f"/staff/reports/{report_id}")
    return client.post(
        f"/staff/reports/{report_id}/grants",
        data={"csrf_token": token, "grant_file": (io.BytesIO(content), "grant.wrap")},
        content_type="multipart/form-data",
        follow_redirects=True,
    )


def revoke(client: FlaskClient, report_id: uuid.UUID, volunteer_id: int) -> TestResponse:
    """The organizer presses "Remove and revoke" next to a volunteer."""
    token = page_csrf_token(client, f"/staff/reports/{report_id}")
    return client.post(
        f"/staff/reports/{report_id}/unassign",
        data={"csrf_token": token, "volunteer_id": str(volunteer_id)},
        follow_redirects=True,
    )


def stored(app: Flask) -> dict[str, Any]:
    """Assignments and wraps by their keys, and the number of "case." audit events."""
    with app.app_context():
        assignments = db.session.scalars(select(Assignment)).all()
        wraps = db.session.scalars(select(Wrap)).all()
        events = db.session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action.startswith("case."))
        )
        return {
            "assignments": sorted((str(a.report_id), a.user_id) for a in assignments),
            "wraps": sorted((str(w.report_id), w.key_id) for w in wraps),
            "case events": events,
        }


def status_of(app: Flask, report_id: uuid.UUID) -> str:
    """The stored status of a report."""
    with app.app_context():
        row = db.session.get(Report, report_id)
        assert row is not None
        return row.status


def audit_details(app: Flask, action: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(actor, target, details) of every audit event of one action, oldest first."""
    with app.app_context():
        rows = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        ).all()
        return [(row.actor, row.target, json.loads(row.details)) for row in rows]


def access_on_cases_page(response: TestResponse) -> list[str]:
    """The "Access" column of every row of "My cases"."""
    return ACCESS_CELL.findall(response.get_data(as_text=True))


# --------------------------------------------------------------------------- assignment


def test_only_an_active_volunteer_with_an_approved_key_can_be_assigned(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    # Given: staff who cannot take a case, and one volunteer who can
    organizer = organizer_account
    no_key = make_user(app, role="volunteer")
    pending_key = make_user(app, role="volunteer")
    make_volunteer_key(app, pending_key)
    retired_key = make_user(app, role="volunteer")
    retired = make_volunteer_key(app, retired_key, approved_by=organizer)
    disabled = make_user(app, role="volunteer", active=False)
    make_volunteer_key(app, disabled, approved_by=organizer)
    ngo = make_user(app, role="ngo")
    other_organizer = make_user(app, role="organizer")
    eligible = make_user(app, role="volunteer")
    make_volunteer_key(app, eligible, approved_by=organizer)
    with app.app_context():
        owner = db.session.get(User, retired_key.id)
        assert owner is not None
        recipients.retire_key(retired.key_id.hex(), actor=owner)
    report = make_report(app)
    refused = {
        "no key": no_key.id,
        "key awaiting approval": pending_key.id,
        "retired key": retired_key.id,
        "disabled account": disabled.id,
        "NGO": ngo.id,
        "organizer": other_organizer.id,
        "nobody": 99_999,
    }

    # When: the organizer opens the report, and tries to assign each of them
    page = client.get(f"/staff/reports/{report}").get_data(as_text=True)
    messages = {name: flashed(assign(client, report, user_id)) for name, user_id in refused.items()}

    # Then: only the eligible volunteer is offered, every other attempt is refused, nothing stored
    assert re.findall(r'<option value="(\d+)"', page.split('name="volunteer_id"', 1)[1]) == [
        str(eligible.id)
    ]
    assert messages == {name: [NO_ELIGIBLE_VOLUNTEER] for name in refused}
    assert stored(app)["assignments"] == []
    assert status_of(app, report) == "new"

    # And: the service refuses them too, whatever the form offered
    with app.app_context():
        actor = db.session.get(User, organizer.id)
        service_messages = {}
        for name, user_id in refused.items():
            with pytest.raises(cases.CaseError) as refusal:
                cases.assign_report(report, volunteer_id=user_id, organizer=actor)
            service_messages[name] = str(refusal.value)
            db.session.rollback()
    assert set(service_messages.values()) == {
        "Choose an active legal-aid volunteer.",
        "This volunteer has no approved key yet.",
    }
    assert stored(app)["assignments"] == []

    # When: the organizer assigns the eligible volunteer
    assert flashed(assign(client, report, eligible.id)) == ["Saved."]

    # Then: the assignment is stored, on record, and cannot be made twice
    assert stored(app)["assignments"] == [(str(report), eligible.id)]
    assert audit_details(app, "case.assign") == [
        (organizer.username, str(report), {"volunteer": eligible.username})
    ]
    page = client.get(f"/staff/reports/{report}").get_data(as_text=True)
    assert f'<option value="{eligible.id}"' not in page  # no longer offered
    assert flashed(assign(client, report, eligible.id)) == [NO_ELIGIBLE_VOLUNTEER]
    assert len(stored(app)["assignments"]) == 1


STATUS_AFTER_ASSIGNMENT = {
    "new": "assigned",
    "triaged": "assigned",
    "assigned": "assigned",
    "in_progress": "in_progress",
    "closed": None,
    "duplicate": None,
    "rejected": None,
}
"""What assigning a report in each status leads to (None: refused until it is reopened)."""


def test_assigning_moves_new_and_triaged_reports_to_assigned(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    # Given: a volunteer with an approved key, and a report in each status
    volunteer = make_user(app, role="volunteer")
    make_volunteer_key(app, volunteer, approved_by=organizer_account)
    reports = {status: make_report(app, status=status) for status in STATUS_AFTER_ASSIGNMENT}

    # When: the organizer assigns each report to the volunteer
    messages = {
        status: flashed(assign(client, rid, volunteer.id)) for status, rid in reports.items()
    }

    # Then: new and triaged reports become assigned, others keep their status or are refused
    assert messages == {
        status: ["Saved."] if after else ["Reopen the report before assigning it."]
        for status, after in STATUS_AFTER_ASSIGNMENT.items()
    }
    assert {status: status_of(app, rid) for status, rid in reports.items()} == {
        status: after or status for status, after in STATUS_AFTER_ASSIGNMENT.items()
    }
    assert sorted(stored(app)["assignments"]) == sorted(
        (str(reports[status]), volunteer.id)
        for status, after in STATUS_AFTER_ASSIGNMENT.items()
        if after
    )

    # And: each move is in the report's history and the audit log, by the organizer
    with app.app_context():
        changes = db.session.scalars(select(StatusChange).order_by(StatusChange.id)).all()
        history = [(c.report_id, c.old_status, c.new_status, c.actor_id) for c in changes]
    assert history == [
        (reports["new"], "new", "assigned", organizer_account.id),
        (reports["triaged"], "triaged", "assigned", organizer_account.id),
    ]
    assert [(t, d) for _a, t, d in audit_details(app, "report.status")] == [
        (str(reports["new"]), {"from": "new", "to": "assigned"}),
        (str(reports["triaged"]), {"from": "triaged", "to": "assigned"}),
    ]


# --------------------------------------------------------------------------- grants


def test_a_real_key_grant_gives_the_volunteer_cryptographic_access(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount, organizer: KeyFiles
) -> None:
    # Given: two reports filed through the witness form, both assigned to a volunteer
    witness = app.test_client()
    phrases = [f"HERON-{secrets.token_hex(5)}" for _ in range(2)]
    for phrase in phrases:
        assert submit_report(witness, narrative=f"I saw {phrase}").status_code == 200
    with app.app_context():
        by_narrative = {
            open_case(rid, private_key=organizer.private_key).sealed["narrative"]: rid
            for rid in db.session.scalars(select(Report.id)).all()
        }
    raw_report, base64_report = (by_narrative[f"I saw {phrase}"] for phrase in phrases)
    volunteer = make_user(app, role="volunteer")
    volunteer_key = make_volunteer_key(app, volunteer, approved_by=organizer_account)
    volunteer_client = logged_in_client(app, volunteer)
    for report_id in (raw_report, base64_report):
        assert flashed(assign(client, report_id, volunteer.id)) == ["Saved."]

    # Then: until a grant is recorded, both sides see "awaiting key grant"
    report_page = client.get(f"/staff/reports/{raw_report}").get_data(as_text=True)
    assert "<strong>awaiting key grant</strong>" in report_page
    assert "key granted" not in report_page
    assert volunteer_key.public_key().fingerprint in report_page
    cases_page = volunteer_client.get("/staff/cases")
    assert access_on_cases_page(cases_page) == ["awaiting key grant", "awaiting key grant"]
    with app.app_context(), pytest.raises(NoWrapForKeyError):
        open_case(raw_report, private_key=volunteer_key)

    # When: the organizer's desk re-wraps each report key to the volunteer's key, and the grant
    # files are recorded: one as raw bytes, one as base64 text
    raw_grant = grant_for(
        app, raw_report, organizer_key=organizer.private_key, recipient=volunteer_key.public_key()
    )
    text_grant = grant_for(
        app,
        base64_report,
        organizer_key=organizer.private_key,
        recipient=volunteer_key.public_key(),
    )
    first = upload_grant(client, raw_report, raw_grant)
    second = upload_grant(client, base64_report, base64.b64encode(text_grant) + b"\n")

    # Then: both are stored as wraps for (report, volunteer key id), and on record
    assert (flashed(first), flashed(second)) == (["Saved."], ["Saved."])
    key_id = volunteer_key.key_id.hex()
    with app.app_context():
        raw_wrap = db.session.get(Wrap, (raw_report, key_id))
        text_wrap = db.session.get(Wrap, (base64_report, key_id))
        assert raw_wrap is not None
        assert text_wrap is not None
        assert (raw_wrap.blob, text_wrap.blob) == (raw_grant, text_grant)
    assert sorted(target for _a, target, _d in audit_details(app, "case.grant")) == sorted(
        [str(raw_report), str(base64_report)]
    )
    assert {d["key_id"] for _a, _t, d in audit_details(app, "case.grant")} == {key_id}

    # And: both pages now say the key was granted
    assert "<td>key granted</td>" in first.get_data(as_text=True)
    assert "awaiting key grant" not in first.get_data(as_text=True)
    cases_page = volunteer_client.get("/staff/cases")
    assert access_on_cases_page(cases_page) == ["ready to open on your desk"] * 2

    # And: the volunteer's private key opens the stored sealed fields with the stored wrap
    with app.app_context():
        for report_id, phrase in zip((raw_report, base64_report), phrases, strict=True):
            row = db.session.get(Report, report_id)
            wrap = db.session.get(Wrap, (report_id, key_id))
            assert row is not None
            assert wrap is not None
            values = crypto.open_report(
                row.sealed_fields(), report_id=report_id, wrap=wrap.blob, private_key=volunteer_key
            )
            assert values["narrative"] == f"I saw {phrase}"
            assert values["contact"] == report_form_data()["contact"]

    # And: a wrap recorded for one report does not open another (the HPKE info binds the id)
    with app.app_context():
        other = db.session.get(Report, base64_report)
        assert other is not None
        with pytest.raises(crypto.DecryptionError):
            crypto.open_report(
                other.sealed_fields(),
                report_id=base64_report,
                wrap=raw_grant,
                private_key=volunteer_key,
            )


def wrong_version(blob: bytes) -> bytes:
    return bytes([0x7F]) + blob[1:]


def wrong_suite(blob: bytes) -> bytes:
    return blob[:1] + bytes([0x09]) + blob[2:]


def test_bad_grants_are_refused_and_nothing_is_stored(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount, organizer: KeyFiles
) -> None:
    # Given: a report assigned to a volunteer with an approved key, who also registered a newer
    # key (awaiting approval); and another volunteer, approved but not on this report
    report = make_report(app)
    assigned = make_user(app, role="volunteer")
    assigned_key = make_volunteer_key(app, assigned, approved_by=organizer_account)
    assert flashed(assign(client, report, assigned.id)) == ["Saved."]
    pending_key = make_volunteer_key(app, assigned)
    outsider = make_user(app, role="volunteer")
    outsider_key = make_volunteer_key(app, outsider, approved_by=organizer_account)
    other_report = make_report(app)

    def grant_to(key: crypto.PrivateKey | crypto.PublicKey, report_id: uuid.UUID = report) -> bytes:
        public = key.public_key() if isinstance(key, crypto.PrivateKey) else key
        return grant_for(app, report_id, organizer_key=organizer.private_key, recipient=public)

    good = grant_to(assigned_key)
    unknown_key = crypto.PrivateKey.generate()
    attempts = {
        "owner not assigned": (
            grant_to(outsider_key),
            "The key's owner is not assigned to this report.",
        ),
        "key awaiting approval": (
            grant_to(pending_key),
            "The grant is addressed to a key that is not approved.",
        ),
        "organizer key": (
            grant_to(organizer.public_key),
            "The grant is addressed to a key that is not a volunteer key.",
        ),
        "unregistered key": (
            grant_to(unknown_key),
            "The grant is addressed to a key that is not a volunteer key.",
        ),
        "garbage bytes": (secrets.token_bytes(1200), "This is not a key grant of the register."),
        "garbage text": (b"not a grant at all\n", "This is not a key grant of the register."),
        "empty file": (b"", "This is not a key grant of the register."),
        "wrong version byte": (wrong_version(good), "This is not a key grant of the register."),
        "wrong suite byte": (wrong_suite(good), "This is not a key grant of the register."),
        "header only": (good[:10], "This is not a key grant of the register."),
        "right key, report without assignment": (
            grant_to(assigned_key, other_report),
            "The key's owner is not assigned to this report.",
        ),
    }
    before = stored(app)

    # When: each is uploaded as a grant file (the last one for the report it was made for)
    messages = {}
    for name, (content, _message) in attempts.items():
        target = other_report if name.endswith("without assignment") else report
        messages[name] = flashed(upload_grant(client, target, content))

    # Then: each is refused with its reason, and no wrap or audit event was stored
    assert messages == {name: [message] for name, (_content, message) in attempts.items()}
    assert stored(app) == before

    # And: sending no file at all is refused with a message
    token = page_csrf_token(client, f"/staff/reports/{report}")
    response = client.post(
        f"/staff/reports/{report}/grants", data={"csrf_token": token}, follow_redirects=True
    )
    assert flashed(response) == ["Choose the key grant file produced by the desk."]
    assert stored(app) == before


# --------------------------------------------------------------------------- what volunteers see


def test_a_volunteer_sees_only_their_own_cases_and_no_triage_page(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    # Given: reports received on distinct days, assigned to two volunteers or to nobody
    volunteer = make_user(app, role="volunteer")
    colleague = make_user(app, role="volunteer")
    for account in (volunteer, colleague):
        make_volunteer_key(app, account, approved_by=organizer_account)
    mine = make_report(app, received_on=date(2025, 2, 3), category="detention")
    theirs = make_report(app, received_on=date(2025, 2, 11))
    shared = make_report(app, received_on=date(2025, 2, 17), category="surveillance")
    unassigned = make_report(app, received_on=date(2025, 2, 25))
    for report_id, account in ((mine, volunteer), (theirs, colleague)):
        assert flashed(assign(client, report_id, account.id)) == ["Saved."]
    for account in (volunteer, colleague):
        assert flashed(assign(client, shared, account.id)) == ["Saved."]
    volunteer_client = logged_in_client(app, volunteer)

    # When: the volunteer opens "My cases"
    page = volunteer_client.get("/staff/cases").get_data(as_text=True)

    # Then: their two reports are there (newest first) with shell and status, the others are not
    assert re.findall(r'title="([0-9a-f-]{36})"', page) == [str(shared), str(mine)]
    assert "2025-02-03" in page
    assert "2025-02-17" in page
    assert "Detention" in page
    assert "Surveillance" in page
    assert "Assigned" in page
    for hidden in (theirs, unassigned):
        assert str(hidden) not in page
    assert "2025-02-11" not in page
    assert "2025-02-25" not in page

    # And: every organizer page, even about their own case, is refused
    token = page_csrf_token(volunteer_client, "/staff/cases")
    forbidden_gets = [
        "/staff/reports",
        f"/staff/reports/{mine}",
        f"/staff/reports/{theirs}",
        "/staff/users",
        "/staff/audit",
        "/exports",
    ]
    forbidden_posts = [f"/staff/reports/{mine}/{action}" for action in ("status", "grants")]
    statuses = {url: volunteer_client.get(url).status_code for url in forbidden_gets}
    statuses.update(
        {
            url: volunteer_client.post(url, data={"csrf_token": token}).status_code
            for url in forbidden_posts
        }
    )
    assert statuses == dict.fromkeys([*forbidden_gets, *forbidden_posts], 403)


def test_remove_and_revoke_deletes_the_assignment_and_the_volunteers_wrap(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount, organizer: KeyFiles
) -> None:
    # Given: a report assigned to a volunteer whose key grant is recorded
    report = make_report(app)
    volunteer = make_user(app, role="volunteer")
    volunteer_key = make_volunteer_key(app, volunteer, approved_by=organizer_account)
    assert flashed(assign(client, report, volunteer.id)) == ["Saved."]
    grant = grant_for(
        app, report, organizer_key=organizer.private_key, recipient=volunteer_key.public_key()
    )
    assert flashed(upload_grant(client, report, grant)) == ["Saved."]
    volunteer_client = logged_in_client(app, volunteer)
    assert str(report) in volunteer_client.get("/staff/cases").get_data(as_text=True)
    organizer_wrap = (str(report), organizer.private_key.key_id.hex())
    volunteer_wrap = (str(report), volunteer_key.key_id.hex())
    assert stored(app)["wraps"] == sorted([organizer_wrap, volunteer_wrap])

    # When: the organizer presses "Remove and revoke"
    response = revoke(client, report, volunteer.id)

    # Then: the assignment and the volunteer's wrap are gone; the organizer's wrap stays
    assert flashed(response) == ["Saved."]
    after = stored(app)
    assert after["assignments"] == []
    assert after["wraps"] == [organizer_wrap]
    assert audit_details(app, "case.revoke") == [
        (
            organizer_account.username,
            str(report),
            {"volunteer": volunteer.username, "wraps_deleted": 1, "envelope_wraps_deleted": 0},
        )
    ]
    assert status_of(app, report) == "triaged"
    assert "Nobody is assigned yet." in response.get_data(as_text=True)

    # And: the volunteer no longer sees the case, and their key no longer opens it on the server
    cases_page = volunteer_client.get("/staff/cases").get_data(as_text=True)
    assert str(report) not in cases_page
    assert "No cases are assigned to you." in cases_page
    with app.app_context(), pytest.raises(NoWrapForKeyError):
        open_case(report, private_key=volunteer_key)

    # And: the old grant cannot be recorded again, and revoking twice is refused
    assert flashed(upload_grant(client, report, grant)) == [
        "The key's owner is not assigned to this report."
    ]
    assert flashed(revoke(client, report, volunteer.id)) == [
        "This volunteer is not assigned to the report."
    ]
    assert stored(app)["wraps"] == [organizer_wrap]


def test_an_ngo_sees_only_the_exports_page(app: Flask, organizer: KeyFiles) -> None:
    ngo = make_user(app, role="ngo")
    report = make_report(app)
    ngo_client = app.test_client()

    response = login(ngo_client, ngo)

    assert response.status_code == 302
    assert response.headers["Location"].endswith("/exports")
    assert ngo_client.get("/exports").status_code == 200
    token = page_csrf_token(ngo_client, "/exports")
    gets = [
        "/staff/reports",
        f"/staff/reports/{report}",
        "/staff/cases",
        "/staff/keys",
        "/staff/users",
        "/staff/audit",
    ]
    posts = [
        f"/staff/reports/{report}/assign",
        f"/staff/reports/{report}/grants",
        "/staff/keys",
        "/staff/users/invite",
    ]
    statuses = {f"GET {url}": ngo_client.get(url).status_code for url in gets}
    statuses.update(
        {
            f"POST {url}": ngo_client.post(url, data={"csrf_token": token}).status_code
            for url in posts
        }
    )
    assert statuses == dict.fromkeys(statuses, 403)
    nav = ngo_client.get("/exports").get_data(as_text=True).split('class="staff-nav"', 1)[1]
    assert "/staff/reports" not in nav.split("</nav>", 1)[0]


def test_revoking_also_takes_back_the_witnesss_later_additions(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount, organizer: KeyFiles
) -> None:
    """Given a volunteer holding a grant, and an addition the witness made afterwards (wrapped
    to that volunteer too), when the organizer revokes the volunteer, then their key opens
    neither the report nor the addition any more."""
    from incidents.models import EnvelopeWrap
    from incidents.services import followup
    from tests.factories import make_filed_report

    filed = make_filed_report(app)
    report = filed.report_id
    volunteer = make_user(app, role="volunteer")
    volunteer_key = make_volunteer_key(app, volunteer, approved_by=organizer_account)
    assert flashed(assign(client, report, volunteer.id)) == ["Saved."]
    grant = grant_for(
        app, report, organizer_key=organizer.private_key, recipient=volunteer_key.public_key()
    )
    assert flashed(upload_grant(client, report, grant)) == ["Saved."]
    with app.app_context():
        case = followup.find_case(
            filed.receipt, receipt_secret=app.extensions["incidents.settings"].receipt_key
        )
        addition_id = followup.add_information(
            case,
            text="They came back to my flat.",
            uploads=None,
            keyring=app.extensions["incidents.keyring"].get(),
            received_on=date(2025, 3, 20),
            instance_path=app.extensions["incidents.settings"].instance_path,
        )
        wrapped_to = {row.key_id for row in db.session.scalars(select(EnvelopeWrap)).all()}
    assert volunteer_key.key_id.hex() in wrapped_to

    revoke(client, report, volunteer.id)

    with app.app_context():
        remaining = {row.key_id for row in db.session.scalars(select(EnvelopeWrap)).all()}
        assert remaining == {organizer.private_key.key_id.hex()}
        assert envelope_key_or_none(addition_id, volunteer_key) is None
        assert envelope_key_or_none(addition_id, organizer.private_key) is not None


def envelope_key_or_none(envelope_id: uuid.UUID, key: crypto.PrivateKey) -> bytes | None:
    """The envelope's data key for ``key``, or None when no wrap is addressed to it."""
    from incidents.services.casefile import envelope_data_key

    return envelope_data_key(envelope_id, private_key=key)
