"""The server's organizer keyring: load, validate and pin the public key; reload when it changes.

Every problem must raise ``KeyUnavailableError`` with a reason a deployer can act on (the
witness form then answers 503, DESIGN S7); a key that is not the pinned one is never used.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from incidents import crypto
from incidents.keyring import Keyring, KeyringCache, load_keyring
from incidents.services.errors import KeyUnavailableError
from tests.conftest import KeyFiles


def armored(payload: bytes) -> str:
    """An armored public key file around arbitrary bytes."""
    return crypto._armor(crypto.PUBLIC_ARMOR, payload, ["Comment: test"])


def write(path: Path, text: str, *, stamp: int) -> Path:
    """Write a key file and give it a distinct modification time (no reliance on the clock)."""
    path.write_text(text)
    os.utime(path, ns=(stamp, stamp))
    return path


@pytest.fixture
def other_key() -> crypto.PublicKey:
    """A valid public key that is not the organizer's."""
    return crypto.PrivateKey.generate().public_key()


def test_the_pinned_key_loads(organizer: KeyFiles) -> None:
    keyring = load_keyring(organizer.public_path, pinned_key_id=organizer.public_key.key_id_hex)

    assert keyring.organizer == organizer.public_key
    assert keyring.recipients == (organizer.public_key,)


@pytest.mark.parametrize(
    "written_pin",
    [
        lambda key_id: key_id.upper(),
        lambda key_id: ":".join(key_id[i : i + 2] for i in range(0, 32, 2)),
        lambda key_id: " ".join(key_id[i : i + 4] for i in range(0, 32, 4)),
    ],
    ids=["upper-case", "colons", "groups"],
)
def test_the_pin_may_be_written_with_separators_and_any_case(
    organizer: KeyFiles, written_pin: object
) -> None:
    assert callable(written_pin)
    pin = written_pin(organizer.public_key.key_id_hex)

    keyring = load_keyring(organizer.public_path, pinned_key_id=pin)

    assert keyring.organizer.key_id == organizer.public_key.key_id


@pytest.mark.parametrize("pin", [None, ""])
def test_no_pin_is_refused(organizer: KeyFiles, pin: str | None) -> None:
    with pytest.raises(KeyUnavailableError, match="INCIDENTS_ORGANIZER_KEY_ID"):
        load_keyring(organizer.public_path, pinned_key_id=pin)


@pytest.mark.parametrize("pin", ["xyz", "00" * 15, "00" * 17, "g" * 32, "0" * 31])
def test_a_malformed_pin_is_refused(organizer: KeyFiles, pin: str) -> None:
    with pytest.raises(KeyUnavailableError, match="malformed"):
        load_keyring(organizer.public_path, pinned_key_id=pin)


def test_a_key_that_is_not_the_pinned_one_is_refused(
    organizer: KeyFiles, other_key: crypto.PublicKey, tmp_path: Path
) -> None:
    path = write(tmp_path / "org.pub", other_key.to_armor(), stamp=1)

    with pytest.raises(KeyUnavailableError, match="is not the pinned key") as raised:
        load_keyring(path, pinned_key_id=organizer.public_key.key_id_hex)

    assert other_key.key_id_hex in str(raised.value)
    assert organizer.public_key.key_id_hex in str(raised.value)


def test_a_missing_key_file_is_refused(organizer: KeyFiles, tmp_path: Path) -> None:
    with pytest.raises(KeyUnavailableError, match="does not exist"):
        load_keyring(tmp_path / "absent.pub", pinned_key_id=organizer.public_key.key_id_hex)


def test_a_directory_instead_of_a_key_file_is_refused(organizer: KeyFiles, tmp_path: Path) -> None:
    with pytest.raises(KeyUnavailableError, match="unreadable"):
        load_keyring(tmp_path, pinned_key_id=organizer.public_key.key_id_hex)


def test_a_binary_key_file_is_refused(organizer: KeyFiles, tmp_path: Path) -> None:
    path = tmp_path / "org.pub"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")

    with pytest.raises(KeyUnavailableError, match="unreadable"):
        load_keyring(path, pinned_key_id=organizer.public_key.key_id_hex)


def _replace(data: bytes, index: int, value: int) -> bytes:
    changed = bytearray(data)
    changed[index] = value
    return bytes(changed)


INVALID_FILES = {
    "empty": lambda key: "",
    "not-armored": lambda key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI me@laptop\n",
    "private-key-armor": lambda key: key.to_armor().replace("PUBLIC", "PRIVATE"),
    "no-blank-line": lambda key: key.to_armor().replace("\n\n", "\n"),
    "bad-base64": lambda key: key.to_armor().replace("\n\n", "\n\n!!!!"),
    "wrong-magic": lambda key: armored(b"XXXX" + key.to_bytes()[4:]),
    "wrong-version": lambda key: armored(_replace(key.to_bytes(), 4, 2)),
    "wrong-suite": lambda key: armored(_replace(key.to_bytes(), 5, 9)),
    "x25519-suite-with-xwing-bytes": lambda key: armored(_replace(key.to_bytes(), 5, 2)),
    "truncated": lambda key: armored(key.to_bytes()[:-1]),
    "extended": lambda key: armored(key.to_bytes() + b"\x00"),
    "header-only": lambda key: armored(key.to_bytes()[:6]),
}


@pytest.mark.parametrize("kind", sorted(INVALID_FILES))
def test_an_invalid_key_file_is_refused_with_a_reason(
    organizer: KeyFiles, tmp_path: Path, kind: str
) -> None:
    path = write(tmp_path / "org.pub", INVALID_FILES[kind](organizer.public_key), stamp=1)

    with pytest.raises(KeyUnavailableError) as raised:
        load_keyring(path, pinned_key_id=organizer.public_key.key_id_hex)

    message = str(raised.value)
    assert str(path) in message
    assert "is invalid" in message
    assert len(message.split(": ", 1)[1]) > 5, "the reason after the path says what is wrong"


def test_wrong_suite_bytes_name_the_suite(organizer: KeyFiles, tmp_path: Path) -> None:
    path = write(tmp_path / "org.pub", INVALID_FILES["wrong-suite"](organizer.public_key), stamp=1)

    with pytest.raises(KeyUnavailableError, match="unsupported suite 9"):
        load_keyring(path, pinned_key_id=organizer.public_key.key_id_hex)


# --------------------------------------------------------------------------- the cache


def test_the_cache_returns_the_same_keyring_while_the_file_is_unchanged(
    organizer: KeyFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "org.pub", organizer.public_path.read_text(), stamp=10**18)
    cache = KeyringCache(path, pinned_key_id=organizer.public_key.key_id_hex)
    first = cache.get()
    loads: list[Path] = []
    monkeypatch.setattr(
        "incidents.keyring.load_keyring",
        lambda p, **kw: loads.append(p) or Keyring(organizer=organizer.public_key),
    )

    assert cache.get() is first
    assert loads == [], "an unchanged file is not parsed again"


def test_the_cache_picks_up_a_replaced_key_file_without_restart(
    organizer: KeyFiles, other_key: crypto.PublicKey, tmp_path: Path
) -> None:
    """Given a cache pinned to the organizer key whose file holds another key (503),
    when the right key is written over the file,
    then the next lookup returns the organizer key; and when the wrong key comes back,
    the cache refuses again.
    """
    path = write(tmp_path / "org.pub", other_key.to_armor(), stamp=10**18)
    cache = KeyringCache(path, pinned_key_id=organizer.public_key.key_id_hex)
    with pytest.raises(KeyUnavailableError, match="not the pinned key"):
        cache.get()

    write(path, organizer.public_key.to_armor(), stamp=10**18 + 1)
    assert cache.get().organizer == organizer.public_key

    write(path, other_key.to_armor(), stamp=10**18 + 2)
    with pytest.raises(KeyUnavailableError, match="not the pinned key"):
        cache.get()


def test_the_cache_recovers_when_a_missing_key_file_appears(
    organizer: KeyFiles, tmp_path: Path
) -> None:
    path = tmp_path / "org.pub"
    cache = KeyringCache(path, pinned_key_id=organizer.public_key.key_id_hex)
    with pytest.raises(KeyUnavailableError, match="does not exist"):
        cache.get()
    with pytest.raises(KeyUnavailableError, match="does not exist"):
        cache.get()  # the failure is remembered too, and still reported

    write(path, organizer.public_key.to_armor(), stamp=10**18)

    assert cache.get().organizer == organizer.public_key


def test_the_cache_fails_closed_when_the_key_file_is_removed_or_broken(
    organizer: KeyFiles, tmp_path: Path
) -> None:
    path = write(tmp_path / "org.pub", organizer.public_key.to_armor(), stamp=10**18)
    cache = KeyringCache(path, pinned_key_id=organizer.public_key.key_id_hex)
    assert cache.get().organizer == organizer.public_key

    path.unlink()
    with pytest.raises(KeyUnavailableError, match="does not exist"):
        cache.get()

    write(path, "garbage\n", stamp=10**18 + 1)
    with pytest.raises(KeyUnavailableError, match="is invalid"):
        cache.get()

    write(path, organizer.public_key.to_armor(), stamp=10**18 + 2)
    assert cache.get().organizer == organizer.public_key


def test_the_cache_never_accepts_an_unpinned_key(organizer: KeyFiles, tmp_path: Path) -> None:
    path = write(tmp_path / "org.pub", organizer.public_key.to_armor(), stamp=10**18)
    cache = KeyringCache(path, pinned_key_id=None)

    with pytest.raises(KeyUnavailableError, match="no organizer key id is pinned"):
        cache.get()
