"""What the desk seals to: only recipients it can vouch for, whatever the server lists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Flask

from incidents import crypto
from incidents.bundle import b64
from incidents.db import db
from incidents.models import Note, User
from incidents.services import api_tokens, cases
from tests.conftest import KeyFiles
from tests.desk.conftest import Desk, key_files
from tests.factories import make_report, make_user, make_volunteer_key


def token_for(app: Flask, user_id: int) -> str:
    """A fresh API token."""
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        return api_tokens.issue_token(user, label="test").secret


def note_wrap_key_ids(app: Flask) -> set[str]:
    """Key ids the stored note is wrapped to."""
    from incidents.models import EnvelopeWrap

    with app.app_context():
        note = db.session.query(Note).one()
        rows = db.session.query(EnvelopeWrap).filter_by(envelope_id=note.id).all()
        return {row.key_id for row in rows}


def test_organizer_desk_seals_to_a_volunteer_only_after_the_fingerprint_check(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk]
) -> None:
    # Given a case assigned to a volunteer whose fingerprint was not yet confirmed on the desk
    report_id = make_report(app)
    boss = make_user(app, role="organizer")
    helper = make_user(app, role="volunteer")
    helper_key = make_volunteer_key(app, helper, approved_by=boss)
    with app.app_context():
        user = db.session.get(User, boss.id)
        assert user is not None
        cases.assign_report(report_id, volunteer_id=helper.id, organizer=user)
    desk = make_desk(organizer)
    desk.unlock(token=token_for(app, boss.id))
    desk.post("/sync")

    # When the organizer writes a note
    desk.post(f"/cases/{report_id}/notes", {"text": "first note"})

    # Then it is sealed to the organizer only
    assert note_wrap_key_ids(app) == {organizer.public_key.key_id_hex}
    assert helper_key.key_id.hex() not in note_wrap_key_ids(app)


def test_volunteer_desk_refuses_an_organizer_key_it_does_not_know(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], tmp_path: Path
) -> None:
    # Given a volunteer's desk that synced once (pinning the organizer key)
    report_id = make_report(app)
    boss = make_user(app, role="organizer")
    helper = make_user(app, role="volunteer")
    helper_key = make_volunteer_key(app, helper, approved_by=boss)
    with app.app_context():
        user = db.session.get(User, boss.id)
        assert user is not None
        cases.assign_report(report_id, volunteer_id=helper.id, organizer=user)
    desk = make_desk(key_files(tmp_path / "helper", "helper", helper_key), online=False)
    desk.unlock()
    state = desk.app.extensions["incidents.desk"]
    from incidents.desk.sync import store_snapshot
    from incidents.keyring import Keyring
    from incidents.services.bundles import case_bundle

    with app.app_context():
        from incidents.models import Report

        report = db.session.get(Report, report_id)
        assert report is not None
        bundle = case_bundle(
            report, key_id=helper_key.key_id.hex(), keyring=Keyring(organizer=organizer.public_key)
        )
    store_snapshot(
        state.cache,
        [bundle],
        volunteers=[],
        role="volunteer",
        issued_on=None,
        organizer_key_id=organizer.public_key.key_id_hex,
    )

    # When the server later lists a different "organizer" key for the case
    intruder = crypto.PrivateKey.generate().public_key()
    for entry in bundle["recipients"]:
        if entry["role"] == "organizer":
            entry.update(
                key_id=intruder.key_id_hex,
                public_key=b64(intruder.to_bytes()),
                fingerprint=intruder.fingerprint,
            )
    store_snapshot(
        state.cache,
        [bundle],
        volunteers=[],
        role="volunteer",
        issued_on=None,
        organizer_key_id=intruder.key_id_hex,
    )
    response = desk.post(f"/cases/{report_id}/notes", {"text": "for the organizer only"})

    # Then nothing is sealed or queued, and the desk asks to compare the new fingerprint
    assert response.status_code == 302
    assert state.cache.pending_count() == 0
    page = desk.browser.get("/").get_data(as_text=True)
    assert intruder.fingerprint in page
    assert "trust the new organizer key" in page


def test_fingerprints_shown_are_worked_out_on_the_desk(tmp_path: Path) -> None:
    # Given a server that lists an attacker's key under a volunteer's name and real fingerprint,
    # and another entry whose key does not hash to its key id
    from incidents.desk.cache import DeskCache
    from incidents.desk.sync import store_snapshot, volunteers

    real = crypto.PrivateKey.generate().public_key()
    attacker = crypto.PrivateKey.generate().public_key()
    cache = DeskCache(tmp_path / "cache", key_id="00" * 16)
    listed = {
        "key_id": attacker.key_id_hex,
        "public_key": b64(attacker.to_bytes()),
        "fingerprint": real.fingerprint,
        "role": "volunteer",
        "username": "trusted-colleague",
        "user_id": "7",
    }
    mismatched = {**listed, "key_id": real.key_id_hex}
    bundle = {
        "report_id": "5b2f4c1e-9a0d-4f3e-8b6a-2c1d0e9f8a7b",
        "shell": {"received_on": "2026-11-25"},
        "recipients": [listed, mismatched],
    }

    # When the desk stores what the server sent
    store_snapshot(
        cache, [bundle], volunteers=[listed, mismatched], role="organizer", issued_on=None
    )

    # Then only the consistent entry is kept, with the attacker key's own fingerprint
    (stored,) = cache.cases()
    assert [entry["fingerprint"] for entry in stored["recipients"]] == [attacker.fingerprint]
    assert [entry["fingerprint"] for entry in volunteers(cache)] == [attacker.fingerprint]
