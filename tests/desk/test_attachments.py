"""Attachments on the desk: decrypted in memory, verified, a clean working copy for images,
and re-encrypted (new ids, new keys) when the organizer rotates the case."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from incidents.db import db
from incidents.models import Attachment, User
from incidents.services import api_tokens
from tests.conftest import KeyFiles
from tests.desk.conftest import Desk
from tests.factories import jpeg_with_gps, make_user
from tests.intake.test_attachments import post_report


def organizer_desk(app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk]) -> Desk:
    """An unlocked, synced organizer desk."""
    boss = make_user(app, role="organizer")
    with app.app_context():
        user = db.session.get(User, boss.id)
        assert user is not None
        token = api_tokens.issue_token(user, label="test").secret
    desk = make_desk(organizer)
    desk.unlock(token=token)
    desk.post("/sync")
    return desk


def test_desk_serves_the_verified_original_and_a_clean_working_copy(
    app: Flask, client: FlaskClient, organizer: KeyFiles, make_desk: Callable[..., Desk]
) -> None:
    # Given a report filed with a photo carrying GPS and a camera serial
    photo = jpeg_with_gps(serial="SN-DESK-4242")
    assert post_report(client, [(photo, "photo.jpg")]).status_code == 200
    desk = organizer_desk(app, organizer, make_desk)
    (bundle,) = desk.app.extensions["incidents.desk"].cache.cases()
    (entry,) = bundle["attachments"]
    url = f"/cases/{bundle['report_id']}/attachments/{entry['id']}"

    # When the organizer downloads the original and the working copy
    original = desk.browser.get(url)
    working = desk.browser.get(url + "?copy=working")

    # Then the original is byte-identical (hash verified) and the copy has no metadata
    assert original.status_code == 200
    assert original.data == photo
    assert original.headers["Cache-Control"].startswith("no-store")
    assert working.status_code == 200
    assert b"SN-DESK-4242" not in working.data
    with Image.open(io.BytesIO(working.data)) as image:
        assert not image.getexif()
    assert "photo.jpg" in working.headers["Content-Disposition"]


def test_rotation_reencrypts_attachments_under_new_ids(
    app: Flask, client: FlaskClient, organizer: KeyFiles, make_desk: Callable[..., Desk]
) -> None:
    # Given a report with a photo, opened on the organizer's desk
    photo = jpeg_with_gps(serial="SN-ROTATE-1")
    post_report(client, [(photo, "photo.jpg")])
    desk = organizer_desk(app, organizer, make_desk)
    (bundle,) = desk.app.extensions["incidents.desk"].cache.cases()
    (old_entry,) = bundle["attachments"]

    # When the organizer rotates the case's keys
    desk.post(f"/cases/{bundle['report_id']}/revoke", {"rotate": "yes"})

    # Then the attachment has a new id, the old ciphertext file is gone, and it still opens
    (fresh,) = desk.app.extensions["incidents.desk"].cache.cases()
    (new_entry,) = fresh["attachments"]
    assert new_entry["id"] != old_entry["id"]
    with app.app_context():
        assert db.session.get(Attachment, uuid.UUID(old_entry["id"])) is None
    folder = app.extensions["incidents.settings"].instance_path / "attachments"
    assert not (folder / uuid.UUID(old_entry["id"]).hex).exists()
    assert (folder / uuid.UUID(new_entry["id"]).hex).exists()
    served = desk.browser.get(f"/cases/{fresh['report_id']}/attachments/{new_entry['id']}")
    assert served.data == photo
