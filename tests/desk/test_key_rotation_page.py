"""Rotating the organizer key from the organizer's desk, with a progress page."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from incidents import crypto
from incidents.db import db
from incidents.models import User, Wrap
from incidents.services import api_tokens
from incidents.services.casefile import open_case
from tests.conftest import KeyFiles
from tests.desk.conftest import Desk, key_files
from tests.factories import make_report, make_user


def test_the_organizer_rotates_the_key_from_the_desk(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], tmp_path: Path
) -> None:
    # Given reports sealed to the organizer key, and a new key file on this computer
    reports = [make_report(app, narrative=f"report {n}") for n in range(5)]
    boss = make_user(app, role="organizer")
    with app.app_context():
        user = db.session.get(User, boss.id)
        assert user is not None
        token = api_tokens.issue_token(user, label="test").secret
    new_key = crypto.PrivateKey.generate()
    new_files = key_files(tmp_path / "new-key", "organizer-new", new_key)
    desk = make_desk(organizer)
    desk.unlock(token=token)
    desk.post("/sync")

    # When the organizer gives a wrong passphrase, then the right one
    refused = desk.post(
        "/organizer-key",
        {"new_key_path": str(new_files.private_path), "passphrase": "wrong"},
        follow_redirects=True,
    )
    assert "Wrong passphrase" in refused.get_data(as_text=True)
    started = desk.post(
        "/organizer-key",
        {"new_key_path": str(new_files.private_path), "passphrase": new_files.passphrase},
    )
    assert started.status_code == 302
    for thread in threading.enumerate():
        if thread.name == "desk-rotation":
            thread.join(timeout=120)
    page = desk.browser.get(started.headers["Location"]).get_data(as_text=True)

    # Then the page says it finished with the new pin, and every report opens with the new key
    assert new_key.key_id.hex() in page
    with app.app_context():
        assert {row.key_id for row in db.session.query(Wrap).all()} == {new_key.key_id.hex()}
        for report_id in reports:
            assert (
                open_case(report_id, private_key=new_key).sealed["narrative"].startswith("report ")
            )
