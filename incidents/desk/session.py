"""The desk's unlocked state: the private key in memory, who may use it, and for how long.

One browser unlocks the desk (passphrase, Argon2id); it receives a random cookie whose hash is
kept here, and only requests carrying it may use the key. After ``idle_seconds`` without a
request, or on "Lock", the key, the token and the decrypted-case cache are dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from incidents import crypto
from incidents.bundle import b64, unb64

if TYPE_CHECKING:
    from incidents.desk import DeskSettings
    from incidents.desk.cache import DeskCache

_UNLOCK_LOCK = threading.Lock()
TOKEN_META = "api_token_sealed"  # noqa: S105 (a setting name, not a secret)
TOKEN_FIELD = "api-token"  # noqa: S105 (a field name bound into the AAD)


@dataclass
class Job:
    """A long desk task (bulk grant) with its progress, for the progress page."""

    total: int
    done: int = 0
    failed: int = 0
    refused: int = 0
    finished: bool = False
    message: str = ""
    kind: str = "grant"
    result: str = ""


@dataclass
class DeskSession:
    """Everything the running desk knows; the private key only while unlocked."""

    settings: DeskSettings
    key_text: str
    key_id: str
    cache: DeskCache
    private_key: crypto.PrivateKey | None = None
    token: str | None = None
    browser_hash: bytes | None = None
    last_seen: float = 0.0
    jobs: dict[str, Job] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def unlock(self, passphrase: str, *, token: str) -> str:
        """Open the key file; returns the browser cookie value. Raises crypto errors.

        One unlock at a time: Argon2id with 256 MiB and several lanes per attempt must not run
        in parallel (two at once exhausted memory and hung the derivation).
        """
        with _UNLOCK_LOCK:
            private_key = crypto.decrypt_private_key(self.key_text, passphrase=passphrase)
        storage_key = crypto.desk_storage_key(private_key)
        if token:
            self.cache.set_meta(TOKEN_META, self._seal_token(token, storage_key))
        else:
            token = self._saved_token(storage_key) or ""
        cookie = secrets.token_urlsafe(32)
        with self.lock:
            self.private_key = private_key
            self.token = token or None
            self.browser_hash = hashlib.sha256(cookie.encode()).digest()
            self.last_seen = time.monotonic()
        return cookie

    def _seal_token(self, token: str, storage_key: bytes) -> str:
        """The API token sealed under the desk storage key (base64)."""
        return b64(
            crypto.seal_field(
                token, data_key=storage_key, report_id=crypto.DESK_STORAGE_ID, name=TOKEN_FIELD
            )
        )

    def _saved_token(self, storage_key: bytes) -> str | None:
        """The API token saved at an earlier unlock, if any."""
        sealed = self.cache.get_meta(TOKEN_META)
        if sealed is None:
            return None
        try:
            return crypto.open_field(
                unb64(sealed),
                data_key=storage_key,
                report_id=crypto.DESK_STORAGE_ID,
                name=TOKEN_FIELD,
            )
        except crypto.CryptoError:
            return None

    def forget_token(self) -> None:
        """Drop the saved and the in-memory API token (e.g. after the server refused it)."""
        self.cache.set_meta(TOKEN_META, None)
        with self.lock:
            self.token = None

    def lock_now(self) -> None:
        """Drop the key, the token and the browser binding."""
        with self.lock:
            self.private_key = None
            self.token = None
            self.browser_hash = None

    def expire_if_idle(self) -> bool:
        """Lock the desk if it has been idle too long; True if it is (now) locked."""
        with self.lock:
            if self.private_key is None:
                return True
            if time.monotonic() - self.last_seen > self.settings.idle_seconds:
                self.private_key = None
                self.token = None
                self.browser_hash = None
                return True
            return False

    def start_idle_watch(self, *, every: float = 15.0) -> None:
        """Check for idleness in the background, so the key leaves memory on time even when no
        request arrives."""

        def watch() -> None:
            while True:
                time.sleep(every)
                self.expire_if_idle()

        threading.Thread(target=watch, name="desk-idle-lock", daemon=True).start()

    def key_for(self, cookie: str | None) -> crypto.PrivateKey | None:
        """The unlocked key if ``cookie`` is the unlocking browser's and the desk is not idle."""
        with self.lock:
            if self.private_key is None or self.browser_hash is None or not cookie:
                return None
            presented = hashlib.sha256(cookie.encode()).digest()
            if not hmac.compare_digest(presented, self.browser_hash):
                return None
            now = time.monotonic()
            if now - self.last_seen > self.settings.idle_seconds:
                self.private_key = None
                self.token = None
                self.browser_hash = None
                return None
            self.last_seen = now
            return self.private_key

    def status(self) -> dict[str, Any]:
        """Counts for the page header."""
        return {"pending": self.cache.pending_count(), "has_token": bool(self.token)}
