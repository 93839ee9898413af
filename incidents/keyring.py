"""The server's view of recipient keys: load, validate and pin the organizer public key.

Fail closed (DESIGN S7): any problem with the organizer key raises ``KeyUnavailableError`` and
the witness form answers 503. The file is re-read when it changes, so replacing a key needs no
restart, and a key that does not match the configured pin is never used.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from incidents import crypto
from incidents.services.errors import KeyUnavailableError


@dataclass(frozen=True)
class Keyring:
    """Public keys every new report is sealed to: the pinned organizer key, and while the
    organizers rotate their key, the new key as well (``incoming``)."""

    organizer: crypto.PublicKey
    incoming: crypto.PublicKey | None = None

    @property
    def recipients(self) -> tuple[crypto.PublicKey, ...]:
        """Keys that receive a wrap of every new report."""
        if self.incoming is None:
            return (self.organizer,)
        return (self.organizer, self.incoming)


def load_keyring(path: Path, *, pinned_key_id: str | None) -> Keyring:
    """Read the organizer public key and check it against the pin; raise KeyUnavailableError."""
    if not pinned_key_id:
        raise KeyUnavailableError("no organizer key id is pinned (INCIDENTS_ORGANIZER_KEY_ID)")
    try:
        pin = crypto.parse_key_id(pinned_key_id)
    except crypto.FormatError as exc:
        raise KeyUnavailableError(f"the pinned organizer key id is malformed: {exc}") from exc
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise KeyUnavailableError(f"organizer public key file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyUnavailableError(f"organizer public key file {path} is unreadable") from exc
    try:
        public_key = crypto.PublicKey.from_armor(text)
    except crypto.FormatError as exc:
        raise KeyUnavailableError(f"organizer public key file {path} is invalid: {exc}") from exc
    if public_key.key_id != pin:
        raise KeyUnavailableError(
            f"organizer public key {public_key.key_id_hex} in {path} is not the pinned key "
            f"{pin.hex()}"
        )
    return Keyring(organizer=public_key)


class KeyringCache:
    """Reload the keyring only when the key file changes; remember the last failure too."""

    def __init__(self, path: Path, *, pinned_key_id: str | None) -> None:
        """Prepare a cache for the key file at ``path`` checked against ``pinned_key_id``."""
        self._path = path
        self._pin = pinned_key_id
        self._lock = threading.Lock()
        self._stamp: tuple[int, ...] | None = None
        self._result: Keyring | str | None = None

    def get(self) -> Keyring:
        """Return the current keyring or raise KeyUnavailableError."""
        stamp = self._file_stamp()
        with self._lock:
            if self._result is None or stamp != self._stamp:
                try:
                    self._result = load_keyring(self._path, pinned_key_id=self._pin)
                except KeyUnavailableError as exc:
                    self._result = str(exc)
                self._stamp = stamp
            result = self._result
        if isinstance(result, str):
            # A new exception each time: re-raising one cached object would chain every refused
            # request's frames (and the form data in them) onto its traceback.
            raise KeyUnavailableError(result)
        return result

    def _file_stamp(self) -> tuple[int, ...] | None:
        """Identify the key file's current version by its stat data (None if unreadable)."""
        # A replaced file of the same size within one timestamp tick still differs in inode or
        # change time (public key files of one suite all have the same size).
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_size)
