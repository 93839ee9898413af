"""The desk's outbox: one refused change does not hold back the others, and emptying the list
after an outputs file removes only what that file contained."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from incidents.db import db
from incidents.desk import work
from incidents.desk.sync import clear_exported, export_outputs, push
from incidents.models import Note, Report, User
from incidents.services import api_tokens
from tests.conftest import KeyFiles
from tests.desk.conftest import Desk
from tests.factories import make_report, make_user


def unlocked_organizer_desk(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], *, online: bool = True
) -> Desk:
    """An organizer desk, unlocked and synced (when online)."""
    boss = make_user(app, role="organizer")
    with app.app_context():
        user = db.session.get(User, boss.id)
        assert user is not None
        token = api_tokens.issue_token(user, label="test").secret
    desk = make_desk(organizer, online=online)
    desk.unlock(token=token)
    if online:
        desk.post("/sync")
    return desk


def test_a_refused_change_is_dropped_and_the_rest_is_stored(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk]
) -> None:
    # Given a case whose status changes on the server after the desk synced
    report_id = make_report(app)
    desk = unlocked_organizer_desk(app, organizer, make_desk)
    state = desk.app.extensions["incidents.desk"]
    (bundle,) = state.cache.cases()
    with app.app_context():
        row = db.session.get(Report, report_id)
        assert row is not None
        row.status = "rejected"
        db.session.commit()

    # When the desk sends a stale status change and a note in one outbox
    state.cache.add_output("statuses", work.status_change(bundle, "triaged"))
    state.cache.add_output("notes", work.seal_note(bundle, "kept despite the refusal"))
    server = state.settings.client(
        token=state.token, key_id=state.key_id, private_key=state.private_key
    )
    result = push(state.cache, server)

    # Then the note is stored, the stale change is dropped, and the outbox is empty
    assert (result.sent, result.refused) == (1, 1)
    assert "changed meanwhile" in result.reasons[0]
    assert state.cache.pending_count() == 0
    with app.app_context():
        assert db.session.query(Note).count() == 1
        row = db.session.get(Report, report_id)
        assert row is not None
        assert row.status == "rejected"


def test_emptying_the_list_removes_only_what_the_file_held(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk]
) -> None:
    # Given an outputs file downloaded with one note, and a second note written afterwards
    make_report(app)
    desk = unlocked_organizer_desk(app, organizer, make_desk)
    state = desk.app.extensions["incidents.desk"]
    (bundle,) = state.cache.cases()
    state.cache.add_output("notes", work.seal_note(bundle, "in the file"))
    export_outputs(state.cache, private_key=state.private_key)
    state.cache.add_output("notes", work.seal_note(bundle, "written later"))

    # When the list is emptied after uploading the file
    removed = clear_exported(state.cache)

    # Then only the first note is gone from the outbox
    assert removed == 1
    assert state.cache.pending_count() == 1
