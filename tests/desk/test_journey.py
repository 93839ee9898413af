"""The desk's main journey against the test server: grant, read, note, reply, revoke."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from incidents import crypto
from incidents.db import db
from incidents.models import Note, User
from incidents.services import api_tokens, cases, followup
from tests.conftest import KeyFiles
from tests.desk.conftest import Desk, key_files
from tests.factories import make_filed_report, make_user, make_volunteer_key


def issue_token(app: Flask, user_id: int) -> str:
    """A fresh API token for the user."""
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        return api_tokens.issue_token(user, label="test").secret


def test_organizer_grants_volunteer_reads_writes_and_loses_access(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], tmp_path: Path
) -> None:
    # Given a filed report, an organizer and a volunteer with an approved key, assigned
    filed = make_filed_report(app, narrative="The unique phrase quokka-harbour-17.")
    boss = make_user(app, role="organizer")
    helper = make_user(app, role="volunteer")
    volunteer_key = make_volunteer_key(app, helper, approved_by=boss)
    with app.app_context():
        organizer_user = db.session.get(User, boss.id)
        assert organizer_user is not None
        cases.assign_report(filed.report_id, volunteer_id=helper.id, organizer=organizer_user)
    boss_desk = make_desk(organizer, name="boss")
    helper_files = key_files(tmp_path / "helper-key", "helper", volunteer_key)
    helper_desk = make_desk(helper_files, name="helper")
    report = str(filed.report_id)

    # When the organizer unlocks, syncs and grants the case
    boss_desk.unlock(token=issue_token(app, boss.id))
    assert boss_desk.post("/sync").status_code == 302
    page = boss_desk.browser.get(f"/cases/{report}").get_data(as_text=True)
    assert "quokka-harbour-17" in page
    with app.app_context():
        key_id = volunteer_key.key_id.hex()
    refused = boss_desk.post(f"/cases/{report}/grant", {"key_id": key_id})
    assert refused.status_code == 302
    boss_desk.post(f"/cases/{report}/grant", {"key_id": key_id, "fingerprint_checked": "yes"})

    # Then the volunteer's desk opens it, writes a note and a reply
    helper_desk.unlock(token=issue_token(app, helper.id))
    helper_desk.post("/sync")
    page = helper_desk.browser.get(f"/cases/{report}").get_data(as_text=True)
    assert "quokka-harbour-17" in page
    helper_desk.post(f"/cases/{report}/notes", {"text": "Note: call the lawyer wombat-3."})
    helper_desk.post(f"/cases/{report}/replies", {"text": "We are on it, numbat-9."})
    page = helper_desk.browser.get(f"/cases/{report}").get_data(as_text=True)
    assert "wombat-3" in page
    assert "numbat-9" in page
    with app.app_context():
        assert db.session.query(Note).count() == 1
        witness = followup.find_case(
            filed.receipt, receipt_secret=app.extensions["incidents.settings"].receipt_key
        )
        assert [reply.body for reply in followup.replies_for(witness)] == [
            "We are on it, numbat-9."
        ]

    # And the organizer's desk reads the note after a sync
    boss_desk.post("/sync")
    assert "wombat-3" in boss_desk.browser.get(f"/cases/{report}").get_data(as_text=True)

    # When the organizer revokes and rotates
    boss_desk.post(f"/cases/{report}/revoke", {"user_id": str(helper.id), "rotate": "yes"})

    # Then after the next sync the volunteer's desk has no such case
    helper_desk.post("/sync")
    assert helper_desk.browser.get(f"/cases/{report}").status_code == 404
    # and the organizer still reads everything, including the note and the reply
    boss_desk.post("/sync")
    page = boss_desk.browser.get(f"/cases/{report}").get_data(as_text=True)
    assert "quokka-harbour-17" in page
    assert "wombat-3" in page
    with app.app_context():
        witness = followup.find_case(
            filed.receipt, receipt_secret=app.extensions["incidents.settings"].receipt_key
        )
        assert [reply.body for reply in followup.replies_for(witness)] == [
            "We are on it, numbat-9."
        ]
    assert uuid.UUID(report)
    assert crypto.FORMAT_VERSION == 1
