"""The desk proves it holds its key, as the server now requires before it accepts changes.

Online, the desk's client answers the server's challenge on its own when a change is refused
for want of a proof, then sends the change again. Air-gapped, the outputs file the desk exports
answers the challenge of the last bundle file it loaded, and the staff Desk page checks it.
Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.test import TestResponse

from incidents.bundle import OUTPUTS_FORMAT, load_file
from incidents.db import db
from incidents.desk import work
from incidents.desk.client import ServerClient, ServerError
from incidents.desk.sync import push
from incidents.models import Note
from incidents.services.casefile import open_case
from tests.conftest import KeyFiles
from tests.desk.conftest import Desk, key_files
from tests.desk.test_outbox import unlocked_organizer_desk
from tests.factories import (
    download_bundle_file,
    flashed,
    make_report,
    use_fast_password_hashing,
)
from tests.staff.test_desk_pages import assigned_volunteer, stored_counts, upload_outputs

BAD_FILE_PROOF = (
    "The outputs file does not prove the desk holds its key. Download a fresh case bundle, "
    "load it on the desk, and export the changes again."
)


@pytest.fixture(autouse=True)
def _fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_password_hashing(monkeypatch)


def note_count(app: Flask) -> int:
    """How many notes the server stores."""
    with app.app_context():
        return int(db.session.scalar(sa.select(sa.func.count()).select_from(Note)) or 0)


def import_bundle(desk: Desk, data: bytes) -> None:
    """Load a bundle file into the desk."""
    response = desk.post(
        "/import",
        {"bundle": (io.BytesIO(data), "cases.json")},
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    assert isinstance(response, TestResponse)
    assert response.status_code == 200


def write_note_and_export(desk: Desk, case_url: str, text: str) -> bytes:
    """Write a note on the desk and download its outputs file."""
    desk.post(f"{case_url}/notes", {"text": text})
    outputs = desk.browser.get("/outputs")
    assert isinstance(outputs, TestResponse)
    assert outputs.status_code == 200
    return outputs.get_data()


# --------------------------------------------------------------------------- air-gapped


def test_an_air_gapped_desk_proves_its_key_in_the_outputs_file(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], tmp_path: Path
) -> None:
    # Given: a volunteer with a granted case, logged in, and their desk without a server
    _, staff, private_key, mine, _ = assigned_volunteer(app, organizer)
    desk = make_desk(key_files(tmp_path / "key", "helper", private_key), online=False)
    unlocked = desk.unlock()
    assert isinstance(unlocked, TestResponse)
    assert unlocked.status_code == 302

    # When: they download their bundle file, load it on the desk, write a note and export it
    import_bundle(desk, download_bundle_file(staff))
    data = write_note_and_export(desk, f"/cases/{mine}", "Offline note: heron-basalt-17.")

    # Then: the outputs file carries a proof, and the Desk page applies it
    body = load_file(data, kind=OUTPUTS_FORMAT, key_id=private_key.public_key().key_id_hex)
    assert isinstance(body.get("proof"), str)
    response = upload_outputs(staff, data)
    assert response.status_code == 302
    assert any("notes: 1" in message for message in flashed(staff.get(response.location)))
    assert note_count(app) == 1
    with app.app_context():
        case = open_case(mine, private_key=organizer.private_key)
    assert [note.body for note in case.notes] == ["Offline note: heron-basalt-17."]


def test_outputs_of_a_desk_that_loaded_an_older_bundle_are_refused(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], tmp_path: Path
) -> None:
    # Given: a desk that loaded a bundle file, and a newer one downloaded since, not loaded yet
    _, staff, private_key, mine, _ = assigned_volunteer(app, organizer)
    desk = make_desk(key_files(tmp_path / "key", "helper", private_key), online=False)
    desk.unlock()
    import_bundle(desk, download_bundle_file(staff))
    newer = download_bundle_file(staff)
    before = stored_counts(app)

    # When: the desk exports a note and the file is uploaded
    stale = write_note_and_export(desk, f"/cases/{mine}", "Written from the older bundle.")
    response = upload_outputs(staff, stale)

    # Then: it is refused and nothing is stored
    assert response.status_code == 400
    assert BAD_FILE_PROOF in flashed(response)
    assert stored_counts(app) == before

    # When: the desk loads the newer bundle file and exports again
    import_bundle(desk, newer)
    fresh = desk.browser.get("/outputs")
    assert isinstance(fresh, TestResponse)

    # Then: the note is applied
    assert upload_outputs(staff, fresh.get_data()).status_code == 302
    assert note_count(app) == 1


# --------------------------------------------------------------------------- online


def test_an_unproven_desk_proves_its_key_on_its_first_change_then_sends_it_once(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk]
) -> None:
    # Given: an organizer's desk with a new token (never proven)
    report_id = make_report(app)
    desk = unlocked_organizer_desk(app, organizer, make_desk)
    calls = len(desk.transport.calls)

    # When: it writes its first note
    desk.post(f"/cases/{report_id}/notes", {"text": "First change of this desk."})

    # Then: the refused change made the desk answer a challenge, and the note went in once
    assert desk.transport.calls[calls:][:4] == [
        "POST /api/v1/outputs",
        "POST /api/v1/proof",
        "POST /api/v1/proof/answer",
        "POST /api/v1/outputs",
    ]
    assert note_count(app) == 1
    assert desk.state.cache.pending_count() == 0

    # When: it makes a second change within the half hour
    calls = len(desk.transport.calls)
    desk.post(f"/cases/{report_id}/notes", {"text": "Second change."})

    # Then: it is sent straight away, without a new challenge
    assert "POST /api/v1/proof" not in desk.transport.calls[calls:]
    assert note_count(app) == 2


def test_a_client_without_the_private_key_cannot_push(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk]
) -> None:
    # Given: a desk's outbox with a note, and a client that has the token but not the key
    make_report(app)
    desk = unlocked_organizer_desk(app, organizer, make_desk)
    state = desk.state
    (bundle,) = state.cache.cases()
    state.cache.add_output("notes", work.seal_note(bundle, "sent by a token thief"))
    assert state.token is not None
    thief = ServerClient(desk.transport, token=state.token, key_id=state.key_id)

    # When: it pushes the outbox
    with pytest.raises(ServerError) as refused:
        push(state.cache, thief)

    # Then: the server refuses for want of a proof, stores nothing, and the outbox keeps it
    assert (refused.value.status, refused.value.code) == (403, "proof")
    assert note_count(app) == 0
    assert state.cache.pending_count() == 1
    assert "POST /api/v1/proof" not in desk.transport.calls
