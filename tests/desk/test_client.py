"""The desk's HTTP client never follows redirects (the API token would go along)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from incidents.desk.client import ServerClient, ServerError, UrllibTransport


class Recorder(http.server.BaseHTTPRequestHandler):
    """Redirects /api/* to /elsewhere and records every request's Authorization header."""

    seen: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        """Answer with a redirect, or 200 at the redirect target."""
        Recorder.seen.append((self.path, self.headers.get("Authorization", "")))
        if self.path.startswith("/api/"):
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.end_headers()
        else:
            body = b'{"username": "attacker"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def redirecting_server() -> Iterator[str]:
    """A local HTTP server that redirects every API call."""
    Recorder.seen = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_client_does_not_follow_redirects(redirecting_server: str) -> None:
    client = ServerClient(UrllibTransport(redirecting_server), token="irt_secret", key_id="ab" * 16)
    with pytest.raises(ServerError) as raised:
        client.session()
    assert raised.value.code == "redirect"
    assert [path for path, _auth in Recorder.seen] == ["/api/v1/session"]


def test_transport_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="https://"):
        UrllibTransport("ftp://register.example")
