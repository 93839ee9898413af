"""A note sealed wrongly (by mistake or by an infiltrated volunteer) must not lock the case
away from the organizer, nor hold an organizer key rotation back forever."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from incidents import crypto
from incidents.bundle import b64
from incidents.db import db
from incidents.desk.client import ServerClient
from incidents.desk.rotation import rotate_organizer_key
from incidents.models import Note, User, Wrap
from incidents.services import cases, desk_outputs
from incidents.services.casefile import open_case
from tests.conftest import KeyFiles
from tests.desk.conftest import Desk, FlaskTransport
from tests.desk.test_outbox import unlocked_organizer_desk
from tests.factories import make_report, make_user, make_volunteer_key


def post_bogus_note(app: Flask, organizer: KeyFiles) -> uuid.UUID:
    """A volunteer assigned to a new report stores a note whose organizer wrap has the right
    header and a zeroed body; returns the report id."""
    report_id = make_report(app, narrative="the case must stay readable")
    boss = make_user(app, role="organizer")
    helper = make_user(app, role="volunteer")
    helper_key = make_volunteer_key(app, helper, approved_by=boss)
    note_id = uuid.uuid4()
    data_key = crypto.new_data_key()
    real = crypto.wrap_data_key(data_key, report_id=note_id, recipient=organizer.public_key)
    bogus = real[:18] + bytes(len(real) - 18)
    with app.app_context():
        boss_row = db.session.get(User, boss.id)
        helper_row = db.session.get(User, helper.id)
        assert boss_row is not None
        assert helper_row is not None
        cases.assign_report(report_id, volunteer_id=helper.id, organizer=boss_row)
        item = {
            "id": str(note_id),
            "report_id": str(report_id),
            "sealed": b64(
                crypto.seal_field("x", data_key=data_key, report_id=note_id, name="body")
            ),
            "wraps": {
                organizer.public_key.key_id_hex: b64(bogus),
                helper_key.key_id.hex(): b64(
                    crypto.wrap_data_key(
                        data_key, report_id=note_id, recipient=helper_key.public_key()
                    )
                ),
            },
        }
        desk_outputs.apply_outputs(
            {"notes": [item]},
            user=helper_row,
            keyring=app.extensions["incidents.keyring"].get(),
            instance_path=app.extensions["incidents.settings"].instance_path,
        )
    return report_id


def test_a_bogus_note_leaves_the_case_readable_and_a_rotation_removes_it(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk]
) -> None:
    # Given a case with a note whose organizer wrap is garbage
    report_id = post_bogus_note(app, organizer)
    desk = unlocked_organizer_desk(app, organizer, make_desk)

    # When the organizer opens the case
    page = desk.browser.get(f"/cases/{report_id}").get_data(as_text=True)

    # Then the witness's text is there, with a warning about the one unreadable item
    assert "the case must stay readable" in page
    assert "could not be opened with your key" in page

    # And rotating the case's keys removes the bogus note and keeps the case readable
    desk.post(f"/cases/{report_id}/revoke", {"rotate": "yes"})
    with app.app_context():
        assert db.session.query(Note).filter_by(report_id=report_id).count() == 0
        opened = open_case(report_id, private_key=organizer.private_key)
        assert opened.sealed["narrative"] == "the case must stay readable"


def test_a_bogus_note_does_not_block_an_organizer_key_rotation(
    app: Flask, organizer: KeyFiles, tmp_path: Path
) -> None:
    # Given a bogus note and an organizer with a token
    report_id = post_bogus_note(app, organizer)
    chief = make_user(app, role="organizer")
    from incidents.services import api_tokens

    with app.app_context():
        user = db.session.get(User, chief.id)
        assert user is not None
        token = api_tokens.issue_token(user, label="t").secret
    transport = FlaskTransport(app.test_client())
    new = crypto.PrivateKey.generate()

    def make_client(key_id: str) -> ServerClient:
        """A desk client presenting ``key_id`` and holding that key (it proves it)."""
        holder = organizer.private_key if key_id == organizer.public_key.key_id_hex else new
        return ServerClient(transport, token=token, key_id=key_id, private_key=holder)

    # When the organizer rotates the organizer key
    result = rotate_organizer_key(make_client, old=organizer.private_key, new=new)

    # Then it finishes, and the report opens with the new key
    assert result.organizer_key_id == new.key_id.hex()
    with app.app_context():
        assert {row.key_id for row in db.session.query(Wrap).filter_by(report_id=report_id)} == {
            new.key_id.hex()
        }
        assert open_case(report_id, private_key=new).sealed["narrative"].startswith("the case")
