"""The desk's client for the server's JSON API (``incidents.api``).

Requests carry the user's API token and the id of the key the desk holds. The transport is
pluggable: ``UrllibTransport`` talks HTTP(S) with the standard library; tests plug in the Flask
test client. Failures become ``ServerError`` (the server answered with an error) or
``NetworkError`` (no answer); both leave the desk's cache and outbox as they were.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from incidents import crypto
from incidents.bundle import b64, unb64

TIMEOUT_SECONDS = 60
_PROVING = threading.Lock()


class DeskClientError(Exception):
    """Base of the errors a sync can end with."""


class NetworkError(DeskClientError):
    """Raised when the server could not be reached or the connection broke."""


class ServerError(DeskClientError):
    """Raised when the server answered with an error; ``code`` is its machine-readable kind."""

    def __init__(self, status: int, code: str, message: str) -> None:
        """Keep the HTTP status, the error code and the server's message."""
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status and body bytes."""

    status: int
    body: bytes


class Transport(Protocol):
    """Sends one request and returns the answer (or raises NetworkError)."""

    def request(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None
    ) -> Answer:
        """Send ``method`` ``path`` (relative to the server) and return the answer."""
        ...


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it could carry the token to another host or to plain HTTP."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Return None, so that the 3xx answer itself reaches the caller."""
        return


class UrllibTransport:
    """HTTP(S) with the standard library; never follows redirects (the token would go along)."""

    def __init__(self, base_url: str) -> None:
        """Talk to the server at ``base_url`` (scheme and host, optionally a path prefix)."""
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("the server address must start with https:// or http://")
        self._base = base_url.rstrip("/")
        self._opener = urllib.request.build_opener(_RefuseRedirects)

    def request(
        self, method: str, path: str, *, headers: dict[str, str], body: bytes | None
    ) -> Answer:
        """Send the request; HTTP errors are answers, connection failures NetworkError."""
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self._base + path, data=body, method=method, headers=headers
        )
        try:
            with self._opener.open(request, timeout=TIMEOUT_SECONDS) as response:
                return Answer(response.status, response.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read())
        except (urllib.error.URLError, OSError) as exc:
            raise NetworkError(f"the server could not be reached: {exc}") from exc


class ServerClient:
    """Calls of the desk API for one user's token and one key."""

    def __init__(
        self,
        transport: Transport,
        *,
        token: str,
        key_id: str,
        private_key: crypto.PrivateKey | None = None,
    ) -> None:
        """Use ``transport`` with the API ``token``, presenting ``key_id`` as the desk's key.

        With ``private_key`` (the key ``key_id`` names), the client answers the server's
        possession challenge when a change needs it, then sends the change again.
        """
        self._transport = transport
        self._token = token
        self._key_id = key_id
        self._private_key = private_key

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """Send a JSON request and decode the JSON answer; raise ServerError on an error.

        A change refused for want of a possession proof is proven and sent once more.
        """
        try:
            return self._call_once(method, path, payload)
        except ServerError as exc:
            if exc.code != "proof" or self._private_key is None or path.startswith("/proof"):
                raise
            self.prove()
            return self._call_once(method, path, payload)

    def prove(self) -> None:
        """Answer a possession challenge with the private key (marks the token proven)."""
        if self._private_key is None:
            raise ServerError(403, "proof", "this client holds no private key")
        # The server keeps one open challenge per token: two threads of one desk (a bulk grant
        # and a note) must not interleave their challenges.
        with _PROVING:
            challenge = unb64(self._call_once("POST", "/proof", {})["challenge"])
            answer = crypto.answer_possession_challenge(challenge, private_key=self._private_key)
            self._call_once("POST", "/proof/answer", {"answer": answer})

    def _call_once(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        """One JSON request and its decoded answer; raise ServerError on an error."""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "X-Incidents-Key-Id": self._key_id,
            "Accept": "application/json",
        }
        body = None
        if payload is not None:
            body = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        answer = self._transport.request(method, "/api/v1" + path, headers=headers, body=body)
        if 300 <= answer.status < 400:
            raise ServerError(
                answer.status,
                "redirect",
                "the server answered with a redirect; check the server address (https://…)",
            )
        try:
            document = json.loads(answer.body.decode("utf-8")) if answer.body else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if answer.status >= 400:
                raise ServerError(answer.status, "http", f"HTTP {answer.status}") from exc
            raise NetworkError("the server's answer was not JSON") from exc
        if answer.status >= 400:
            code = document.get("error", "http") if isinstance(document, dict) else "http"
            message = document.get("message", "") if isinstance(document, dict) else ""
            raise ServerError(answer.status, str(code), str(message) or f"HTTP {answer.status}")
        return document

    def session(self) -> dict[str, Any]:
        """Who the token belongs to and which key ids the server expects."""
        result: dict[str, Any] = self._call("GET", "/session")
        return result

    def cases(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every case bundle the user may see, page by page."""
        after = ""
        while True:
            query = urllib.parse.urlencode({"after": after, "limit": page_size})
            page = self._call("GET", f"/cases?{query}")
            yield from page["cases"]
            if not page.get("next"):
                return
            after = page["next"]

    def case(self, report_id: str) -> dict[str, Any]:
        """One case bundle."""
        result: dict[str, Any] = self._call("GET", f"/cases/{uuid.UUID(report_id)}")
        return result

    def attachment(self, report_id: str, attachment_id: str) -> bytes:
        """The ciphertext of one attachment."""
        path = f"/api/v1/cases/{uuid.UUID(report_id)}/attachments/{uuid.UUID(attachment_id)}"
        headers = {"Authorization": f"Bearer {self._token}", "X-Incidents-Key-Id": self._key_id}
        answer = self._transport.request("GET", path, headers=headers, body=None)
        if answer.status >= 400:
            raise ServerError(answer.status, "http", f"HTTP {answer.status}")
        return answer.body

    def volunteers(self) -> list[dict[str, str]]:
        """Approved volunteer keys with fingerprints (organizers only)."""
        result: list[dict[str, str]] = self._call("GET", "/volunteers")["volunteers"]
        return result

    def send_outputs(self, outputs: dict[str, Any]) -> dict[str, int]:
        """Send a batch of desk outputs (safe to repeat)."""
        result: dict[str, int] = self._call("POST", "/outputs", outputs)
        return result

    def revoke(self, report_id: str, *, user_id: int) -> None:
        """Take a case back from a volunteer (their wraps are deleted on the server)."""
        self._call("POST", f"/cases/{uuid.UUID(report_id)}/revoke", {"user_id": user_id})

    def rotation_challenge(self, new_public_key: bytes) -> tuple[bytes, bytes]:
        """Possession challenges for the current and the new organizer key."""
        answer = self._call("POST", "/organizer-key/challenge", {"public_key": b64(new_public_key)})
        return unb64(answer["current"]), unb64(answer["new"])

    def rotation_start(self, *, current: str, new: str) -> str:
        """Answer the challenges; returns the incoming key id."""
        answer = self._call("POST", "/organizer-key/start", {"current": current, "new": new})
        return str(answer["incoming_key_id"])

    def rotation_pending(self, *, limit: int = 200) -> tuple[list[dict[str, str]], int]:
        """A page of wraps still to re-wrap, and how many remain."""
        answer = self._call("GET", f"/organizer-key/pending?limit={limit}")
        return list(answer["wraps"]), int(answer["remaining"])

    def rotation_store(self, wraps: list[dict[str, str]]) -> int:
        """Store a batch of wraps to the new key."""
        return int(self._call("POST", "/organizer-key/wraps", {"wraps": wraps})["stored"])

    def rotation_discard(self, wraps: list[dict[str, str]]) -> int:
        """Discard old-key wraps of notes or replies that the old key cannot open."""
        return int(self._call("POST", "/organizer-key/unreadable", {"wraps": wraps})["discarded"])

    def rotation_finish(self) -> str:
        """Move the pin; returns the new organizer key id."""
        return str(self._call("POST", "/organizer-key/finish", {})["organizer_key_id"])
