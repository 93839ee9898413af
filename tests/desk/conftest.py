"""Desk fixtures: a desk app wired to the test server through the Flask test client."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from incidents import crypto
from incidents.db import db
from incidents.desk import DeskSettings, create_desk_app
from incidents.desk.client import Answer, NetworkError
from incidents.desk.session import DeskSession
from incidents.models import User
from incidents.services import api_tokens
from tests.conftest import TEST_KDF, KeyFiles


class FlaskTransport:
    """Send the desk's API calls to the server app's test client (optionally failing)."""

    def __init__(self, server: FlaskClient) -> None:
        """Wrap ``server``; ``fail_after`` makes the n-th following call raise NetworkError.

        With ``lose_answer`` set, that failing call first reaches the server and only its
        answer is lost (once; later calls fail before reaching the server).
        """
        self.server = server
        self.calls: list[str] = []
        self.fail_after: int | None = None
        self.lose_answer = False

    def request(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None
    ) -> Answer:
        """Forward the request, or simulate a broken connection."""
        if self.fail_after is not None:
            if self.fail_after == 0:
                if self.lose_answer:
                    self.lose_answer = False
                    self.calls.append(f"{method} {path}")
                    self.server.open(path, method=method, headers=headers, data=body)
                raise NetworkError("connection reset (simulated)")
            self.fail_after -= 1
        self.calls.append(f"{method} {path}")
        response = self.server.open(path, method=method, headers=headers, data=body)
        return Answer(response.status_code, response.get_data())


@dataclass
class Desk:
    """A desk app, its browser, its transport and its key."""

    app: Flask
    browser: FlaskClient
    transport: FlaskTransport
    key: KeyFiles
    cache_dir: Path

    def csrf(self, url: str = "/") -> str:
        """The CSRF token of a desk page."""
        page = self.browser.get(url).get_data(as_text=True)
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match, f"no CSRF token on {url}"
        return match.group(1)

    def unlock(self, *, token: str = "", passphrase: str | None = None) -> object:
        """Unlock through the form."""
        data = {
            "csrf_token": self.csrf("/unlock"),
            "passphrase": self.key.passphrase if passphrase is None else passphrase,
            "token": token,
        }
        return self.browser.post("/unlock", data=data)

    def post(self, url: str, data: dict[str, object] | None = None, **kwargs: object) -> object:
        """POST a desk form with its CSRF token."""
        return self.browser.post(url, data={"csrf_token": self.csrf(), **(data or {})}, **kwargs)

    @property
    def state(self) -> DeskSession:
        """The running desk's state (key, token, cache, jobs)."""
        desk: DeskSession = self.app.extensions["incidents.desk"]
        return desk

    def snapshot(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The cached cases and the outbox, to compare before and after a failure."""
        _ids, outbox = self.state.cache.outputs()
        return self.state.cache.cases(), outbox


def issue_token(app: Flask, user_id: int) -> api_tokens.NewToken:
    """A fresh API token for the user (its secret and its id)."""
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        return api_tokens.issue_token(user, label="desk test")


def key_files(directory: Path, name: str, private_key: crypto.PrivateKey) -> KeyFiles:
    """Write ``private_key`` as a key file with the test passphrase."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    private_path.write_text(
        crypto.encrypt_private_key(private_key, passphrase="desk test passphrase", kdf=TEST_KDF)
    )
    public_path.write_text(private_key.public_key().to_armor())
    return KeyFiles(
        private_key, private_key.public_key(), private_path, public_path, "desk test passphrase"
    )


@pytest.fixture
def make_desk(app: Flask, tmp_path: Path) -> Callable[..., Desk]:
    """Build desks that talk to ``app`` (one per key)."""

    def build(key: KeyFiles, *, online: bool = True, name: str = "desk") -> Desk:
        transport = FlaskTransport(app.test_client())
        settings = DeskSettings(
            key_path=key.private_path,
            server_url="https://server.test" if online else None,
            cache_dir=tmp_path / f"{name}-cache",
            transport_factory=lambda _url: transport,
        )
        desk_app = create_desk_app(settings)
        desk_app.config["TESTING"] = True
        browser = desk_app.test_client()
        browser.environ_base["HTTP_HOST"] = "127.0.0.1:5001"
        return Desk(desk_app, browser, transport, key, settings.cache_dir)

    return build
