"""Smoke test of the staff login (the full suites are in the other modules of this package)."""

from flask import Flask
from flask.testing import FlaskClient

from tests.factories import login, make_user


def test_organizer_logs_in_with_password_and_totp(app: Flask, client: FlaskClient) -> None:
    organizer = make_user(app, role="organizer")
    response = login(client, organizer)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/staff/reports")
    assert client.get("/staff/reports").status_code == 200
