"""The ``desk`` command really serves the desk (Flask ignores app.run() inside a command)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import werkzeug.serving
from flask.testing import FlaskCliRunner
from werkzeug.test import Client

from tests.conftest import KeyFiles


def test_desk_command_serves_the_desk_on_loopback(
    runner: FlaskCliRunner, organizer: KeyFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: dict[str, Any] = {}

    class FakeServer:
        """Records what would be served instead of listening."""

        def serve_forever(self) -> None:
            served["forever"] = True

        def server_close(self) -> None:
            served["closed"] = True

    def fake_make_server(host: str, port: int, application: Any, **options: Any) -> FakeServer:
        served.update(host=host, port=port, app=application, options=options)
        return FakeServer()

    monkeypatch.setattr(werkzeug.serving, "make_server", fake_make_server)
    result = runner.invoke(
        args=[
            "desk",
            "--key",
            str(organizer.private_path),
            "--server",
            "https://register.example",
            "--cache",
            str(tmp_path / "cache"),
            "--port",
            "5099",
        ]
    )
    assert result.exit_code == 0, result.output
    assert served["host"] == "127.0.0.1"
    assert served["port"] == 5099
    (url,) = re.findall(r"http://127\.0\.0\.1:5099(/[\w-]+)/", result.output)
    browser = Client(served["app"])
    assert browser.get("/", headers={"Host": "127.0.0.1:5099"}).status_code == 404
    unlock = browser.get(f"{url}/", headers={"Host": "127.0.0.1:5099"})
    assert unlock.status_code == 302
    assert unlock.headers["Location"].endswith(f"{url}/unlock")
    assert served["options"]["threaded"] is True
    assert served["forever"]
    assert served["closed"]
    assert organizer.public_key.key_id_hex in result.output


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.org"])  # noqa: S104
def test_desk_command_refuses_other_addresses(
    runner: FlaskCliRunner,
    organizer: KeyFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
) -> None:
    monkeypatch.setattr(werkzeug.serving, "make_server", lambda *a, **k: pytest.fail("served"))
    result = runner.invoke(
        args=[
            *("desk", "--key", str(organizer.private_path), "--host", host),
            *("--cache", str(tmp_path / "cache")),
        ]
    )
    assert result.exit_code != 0
    assert "only listens on this computer" in result.output


@pytest.mark.parametrize(
    ("server", "accepted"),
    [
        ("https://register.example", True),
        ("http://127.0.0.1:5000", True),
        ("http://localhost:5000", True),
        ("http://register.example", False),
        ("ftp://register.example", False),
    ],
)
def test_the_desk_sends_its_token_in_clear_only_to_this_computer(
    organizer: KeyFiles, tmp_path: Path, server: str, accepted: bool
) -> None:
    from incidents.desk import DeskSettings, DeskStartError, create_desk_app

    settings = DeskSettings(
        key_path=organizer.private_path, server_url=server, cache_dir=tmp_path / "cache"
    )
    if accepted:
        assert create_desk_app(settings).name == "incidents.desk"
    else:
        with pytest.raises(DeskStartError, match="https://"):
            create_desk_app(settings)


def test_the_unlock_cookie_is_only_sent_under_the_desks_secret_path(
    organizer: KeyFiles, tmp_path: Path
) -> None:
    from incidents.desk import DeskSettings, create_desk_app, mount_under_secret_path

    desk = create_desk_app(
        DeskSettings(key_path=organizer.private_path, server_url=None, cache_dir=tmp_path / "c")
    )
    prefix, application = mount_under_secret_path(desk)
    browser = Client(application)
    host = {"Host": "127.0.0.1:5001"}
    page = browser.get(f"{prefix}/unlock", headers=host).get_data(as_text=True)
    (csrf,) = re.findall(r'name="csrf_token" value="([^"]+)"', page)
    unlocked = browser.post(
        f"{prefix}/unlock",
        headers=host,
        data={"csrf_token": csrf, "passphrase": organizer.passphrase},
    )
    assert unlocked.status_code == 302
    cookies = unlocked.headers.getlist("Set-Cookie")
    assert any(c.startswith("desk_key=") and f"Path={prefix}/" in c for c in cookies)
    assert all("Path=/;" not in c and not c.endswith("Path=/") for c in cookies)
