"""The desk when things go wrong: unlock errors, binding and locking, bundle files, broken syncs.

Each failure must end with one clear message and leave the desk's cache, its outbox and the
server as they were (or, for a lost answer, as a rerun can finish). Every test that talks to the
server runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import html
import io
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import werkzeug.serving
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner
from werkzeug.test import TestResponse

from incidents import crypto
from incidents.appstate import current_keyring
from incidents.bundle import OUTPUTS_FORMAT, load_file
from incidents.db import db
from incidents.desk import DeskSettings, DeskStartError, create_desk_app, session, work
from incidents.desk.session import TOKEN_META
from incidents.models import ApiToken, Note, User, Wrap
from incidents.services import api_tokens, bundles, casefile, cases, desk_outputs
from tests.conftest import KeyFiles
from tests.desk.conftest import Desk, issue_token, key_files
from tests.factories import (
    StaffAccount,
    grant_for,
    make_filed_report,
    make_user,
    make_volunteer_key,
    use_fast_password_hashing,
)

WRONG_PASSPHRASE = "Wrong passphrase, or the key file was altered."
NOT_REGISTERED = (
    "This key is not registered on the server for your account. "
    "Check that you started the desk with your own key file."
)
TOKEN_REFUSED = (
    "The server refused the API token (expired, revoked or mistyped). "
    "Make a new one on your account page and unlock the desk with it."
)
UNREACHABLE = "The server could not be reached. Nothing was lost; try again later."
BAD_BUNDLE = "This is not a case bundle for your key, or it was altered. Nothing was changed."
NOT_A_KEY = "is not a private key file of the incident register"
LOOPBACK_ONLY = "the desk only listens on this computer (127.0.0.1)"


@pytest.fixture(autouse=True)
def _fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_password_hashing(monkeypatch)


@pytest.fixture
def no_desk_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``flask desk`` that got past its checks would serve forever: make that a failure."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        pytest.fail("the desk started serving although it should have refused to start")

    monkeypatch.setattr(werkzeug.serving, "run_simple", refuse)
    monkeypatch.setattr(werkzeug.serving, "make_server", refuse)
    monkeypatch.setattr(Flask, "run", refuse)


# --------------------------------------------------------------------------- helpers


def redirects_to_unlock(response: TestResponse) -> bool:
    """True if the response sends the browser to the unlock page."""
    return response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/unlock"


def assert_one_line_error(result: Result, fragment: str) -> None:
    """A non-zero exit, one ``Error:`` line containing ``fragment``, and no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert fragment in errors[0], errors[0]


def user_row(account: StaffAccount) -> User:
    """The account's row (inside an app context)."""
    user = db.session.get(User, account.id)
    assert user is not None
    return user


def note_count(app: Flask) -> int:
    """How many notes the server stores."""
    with app.app_context():
        return int(db.session.scalar(sa.select(sa.func.count()).select_from(Note)) or 0)


def error_alerts(response: object) -> list[str]:
    """The text of the error alerts on the page a response ended on."""
    assert isinstance(response, TestResponse)
    found = re.findall(
        r'<div class="alert alert-error"[^>]*>(.*?)</div>', response.get_data(as_text=True), re.S
    )
    return [html.unescape(re.sub(r"<[^>]+>", "", text)).strip() for text in found]


@dataclass
class Team:
    """An organizer and a volunteer with an approved key, both with desk tokens."""

    boss: StaffAccount
    helper: StaffAccount
    helper_key: KeyFiles
    boss_token: str
    helper_token: str


@pytest.fixture
def team(app: Flask, tmp_path: Path) -> Team:
    """An organizer and an approved volunteer, each with an API token."""
    boss = make_user(app, role="organizer")
    helper = make_user(app, role="volunteer")
    volunteer_key = make_volunteer_key(app, helper, approved_by=boss)
    return Team(
        boss=boss,
        helper=helper,
        helper_key=key_files(tmp_path / "helper-key", "helper", volunteer_key),
        boss_token=issue_token(app, boss.id).secret,
        helper_token=issue_token(app, helper.id).secret,
    )


def assign_and_grant(app: Flask, report_id: uuid.UUID, team: Team, organizer: KeyFiles) -> None:
    """Assign the report to the team's volunteer and store the organizer's grant to their key."""
    with app.app_context():
        boss = user_row(team.boss)
        cases.assign_report(report_id, volunteer_id=team.helper.id, organizer=boss)
    blob = grant_for(
        app,
        report_id,
        organizer_key=organizer.private_key,
        recipient=team.helper_key.public_key,
    )
    with app.app_context():
        cases.record_grant(report_id, blob, actor=user_row(team.boss))


# --------------------------------------------------------------------------- unlock errors


def test_wrong_passphrase_is_refused_with_one_message_and_changes_nothing(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], team: Team
) -> None:
    desk = make_desk(organizer)

    response = desk.unlock(token=team.boss_token, passphrase="not the passphrase at all")

    assert response.status_code == 400
    assert error_alerts(response) == [WRONG_PASSPHRASE]
    assert desk.state.private_key is None
    assert desk.state.token is None
    assert desk.state.cache.get_meta(TOKEN_META) is None, "the typed token must not be saved"
    assert desk.transport.calls == [], "nothing may reach the server"
    assert redirects_to_unlock(desk.browser.get("/"))


@pytest.mark.parametrize(
    "content",
    [b"hello, I am a shopping list\n", bytes(range(256)), "public key"],
    ids=["text", "binary", "public-key-file"],
)
def test_a_file_that_is_not_a_private_key_stops_the_desk(
    tmp_path: Path, organizer: KeyFiles, content: bytes | str
) -> None:
    path = tmp_path / "notakey.txt"
    path.write_bytes(organizer.public_path.read_bytes() if content == "public key" else content)
    cache = tmp_path / "cache"
    settings = DeskSettings(key_path=path, server_url=None, cache_dir=cache)

    with pytest.raises(DeskStartError) as raised:
        create_desk_app(settings)

    assert str(raised.value) == f"{path} {NOT_A_KEY}"
    assert not cache.exists(), "a desk that does not start creates no cache"


def test_flask_desk_with_a_file_that_is_not_a_key_prints_one_line(
    runner: FlaskCliRunner, tmp_path: Path, no_desk_server: None
) -> None:
    path = tmp_path / "notakey.txt"
    path.write_text("hello, I am a shopping list\n")

    result = runner.invoke(args=["desk", "--key", str(path), "--cache", str(tmp_path / "cache")])

    assert_one_line_error(result, NOT_A_KEY)
    assert not (tmp_path / "cache").exists()


def test_a_key_not_registered_on_the_server_locks_the_desk_again(
    app: Flask, make_desk: Callable[..., Desk], team: Team, tmp_path: Path
) -> None:
    # Given a volunteer with an approved key, whose desk was started with another, fresh key
    stray = key_files(tmp_path / "stray", "stray", crypto.PrivateKey.generate())
    desk = make_desk(stray, name="stray")

    # When they unlock it with their valid token
    response = desk.unlock(token=team.helper_token)

    # Then the page says the key is not registered, and the desk is locked again
    assert response.status_code == 302
    page = desk.browser.get("/", follow_redirects=True)
    assert page.request.path == "/unlock"
    assert error_alerts(page) == [NOT_REGISTERED]
    assert desk.state.private_key is None
    assert redirects_to_unlock(desk.browser.get("/"))
    assert desk.state.cache.cases() == []
    assert desk.transport.calls == ["GET /api/v1/session"]


@pytest.mark.parametrize("failure", ["expired", "revoked"])
def test_a_refused_token_at_sync_is_forgotten_and_the_cache_kept(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], failure: str
) -> None:
    # Given an organizer desk that synced one case with a valid token
    boss = make_user(app, role="organizer")
    token = issue_token(app, boss.id)
    make_filed_report(app)
    desk = make_desk(organizer)
    desk.unlock(token=token.secret)
    desk.post("/sync")
    assert desk.state.cache.get_meta(TOKEN_META) is not None
    before = desk.snapshot()
    assert len(before[0]) == 1

    # When the token expires or is revoked, and the server meanwhile has a second case
    with app.app_context():
        if failure == "expired":
            row = db.session.get(ApiToken, token.id)
            assert row is not None
            row.expires_on = datetime.now(UTC).date() - timedelta(days=1)
            db.session.commit()
        else:
            api_tokens.revoke_token(token.id, user=user_row(boss))
    make_filed_report(app)
    response = desk.post("/sync", follow_redirects=True)

    # Then one clear message, the saved token is forgotten and the cache is as it was
    assert error_alerts(response) == [TOKEN_REFUSED]
    assert desk.state.cache.get_meta(TOKEN_META) is None
    assert desk.state.token is None
    assert desk.snapshot() == before


# --------------------------------------------------------------------------- binding and locking


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "192.168.1.10", "::", "desk.example.org"],  # noqa: S104 (all refused)
)
def test_the_desk_refuses_to_listen_beyond_this_computer(
    tmp_path: Path, organizer: KeyFiles, host: str
) -> None:
    settings = DeskSettings(
        key_path=organizer.private_path, server_url=None, cache_dir=tmp_path / "c", host=host
    )

    with pytest.raises(DeskStartError) as raised:
        create_desk_app(settings)

    assert str(raised.value) == f"{LOOPBACK_ONLY}; refusing {host}"
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_the_desk_starts_on_loopback_addresses(
    tmp_path: Path, organizer: KeyFiles, host: str
) -> None:
    settings = DeskSettings(
        key_path=organizer.private_path, server_url=None, cache_dir=tmp_path / "c", host=host
    )

    desk = create_desk_app(settings)

    assert desk.extensions["incidents.desk"].key_id == organizer.public_key.key_id_hex


def test_flask_desk_on_all_interfaces_is_refused(
    runner: FlaskCliRunner, organizer: KeyFiles, tmp_path: Path, no_desk_server: None
) -> None:
    args = ["desk", "--key", str(organizer.private_path), "--cache", str(tmp_path / "cache")]

    result = runner.invoke(args=[*args, "--host", "0.0.0.0"])  # noqa: S104 (refused)

    assert_one_line_error(result, f"{LOOPBACK_ONLY}; refusing 0.0.0.0")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5001", "10.0.0.7:5001"])
def test_requests_naming_another_host_are_refused(
    organizer: KeyFiles, make_desk: Callable[..., Desk], team: Team, host: str
) -> None:
    # Given a locked desk whose forms are not CSRF-checked, so that only the host check refuses
    desk = make_desk(organizer)
    desk.app.config["WTF_CSRF_ENABLED"] = False
    foreign = {"Host": host}
    unlock_form = {"passphrase": organizer.passphrase, "token": team.boss_token}

    # When a page under another host name (DNS rebinding) asks for it or tries to unlock it
    # Then it is refused and the desk stays locked
    assert desk.browser.get("/unlock", headers=foreign).status_code == 400
    assert desk.browser.post("/unlock", data=unlock_form, headers=foreign).status_code == 400
    assert desk.state.private_key is None
    assert desk.transport.calls == []
    # while this computer's own names are served
    for name in ("127.0.0.1:5001", "localhost:5001", "[::1]:5001"):
        assert desk.browser.get("/unlock", headers={"Host": name}).status_code == 200

    # And once unlocked, even the unlocking browser's cookie does not open it under that host
    assert desk.browser.post("/unlock", data=unlock_form).status_code == 302
    cookie = desk.browser.get_cookie("desk_key")
    assert cookie is not None
    with_cookie = {**foreign, "Cookie": f"desk_key={cookie.value}"}
    assert desk.browser.get("/", headers=with_cookie).status_code == 400
    assert desk.browser.get("/", headers={"Cookie": f"desk_key={cookie.value}"}).status_code == 200


def test_a_second_browser_cannot_use_the_unlocked_desk(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], team: Team
) -> None:
    # Given a desk unlocked and synced in one browser
    filed = make_filed_report(app, narrative="The phrase tapir-lagoon-41 is sealed.")
    desk = make_desk(organizer)
    desk.unlock(token=team.boss_token)
    desk.post("/sync")
    case_url = f"/cases/{filed.report_id}"
    assert "tapir-lagoon-41" in desk.browser.get(case_url).get_data(as_text=True)

    # When another browser (no cookie, or a made-up one) asks for the cases
    other = desk.app.test_client()
    forged = desk.app.test_client()
    forged.set_cookie("desk_key", "made-up-value")

    # Then it is sent to the unlock page and sees no case content
    for browser in (other, forged):
        for url in ("/", case_url, "/outputs", "/grants"):
            response = browser.get(url)
            assert redirects_to_unlock(response), url
            assert "tapir-lagoon-41" not in response.get_data(as_text=True)
    # while the first browser still works
    assert "tapir-lagoon-41" in desk.browser.get(case_url).get_data(as_text=True)


def test_lock_drops_the_key_and_the_token(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], team: Team
) -> None:
    filed = make_filed_report(app)
    desk = make_desk(organizer)
    desk.unlock(token=team.boss_token)
    desk.post("/sync")

    response = desk.post("/lock")

    assert redirects_to_unlock(response)
    assert desk.state.private_key is None
    assert desk.state.token is None
    assert redirects_to_unlock(desk.browser.get("/"))
    assert redirects_to_unlock(desk.browser.get(f"/cases/{filed.report_id}"))


class FakeMonotonic:
    """Stands in for the ``time`` module of ``incidents.desk.session``."""

    def __init__(self) -> None:
        """Start at an arbitrary instant."""
        self.now = 1000.0

    def monotonic(self) -> float:
        """The fake clock."""
        return self.now


def test_the_desk_locks_itself_after_idle_time(
    app: Flask,
    organizer: KeyFiles,
    make_desk: Callable[..., Desk],
    team: Team,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a desk that locks after 60 idle seconds, on a clock the test moves
    clock = FakeMonotonic()
    monkeypatch.setattr(session, "time", clock)
    desk = make_desk(organizer)
    desk.state.settings.idle_seconds = 60
    desk.unlock(token=team.boss_token)
    assert desk.browser.get("/").status_code == 200

    # When requests keep coming within the limit, the desk stays open
    clock.now += 59
    assert desk.browser.get("/").status_code == 200
    clock.now += 59
    assert desk.browser.get("/").status_code == 200

    # When it then stays idle for longer than the limit
    clock.now += 61
    response = desk.browser.get("/")

    # Then the next request is sent to unlock, and the key is gone
    assert redirects_to_unlock(response)
    assert desk.state.private_key is None
    assert desk.state.token is None


# --------------------------------------------------------------------------- bundle files


def download_bundle(app: Flask, account: StaffAccount) -> bytes:
    """The bundle file the server's Desk page would hand ``account``."""
    with app.app_context():
        return bundles.bundle_file(user_row(account), keyring=current_keyring())


def import_bundle(desk: Desk, data: bytes) -> TestResponse:
    """Upload a bundle file into the desk and follow to the case list."""
    response = desk.post(
        "/import",
        {"bundle": (io.BytesIO(data), "cases.json")},
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    assert isinstance(response, TestResponse)
    return response


def tampered(data: bytes) -> bytes:
    """The bundle file with one character of a sealed narrative changed."""
    match = re.search(rb'"narrative": "([A-Za-z0-9+/]{40})', data)
    assert match, "no sealed narrative in the bundle file"
    position = match.start(1) + 20
    replacement = b"B" if data[position : position + 1] != b"B" else b"C"
    return data[:position] + replacement + data[position + 1 :]


def test_air_gapped_volunteer_works_from_bundle_and_outputs_files(
    app: Flask,
    organizer: KeyFiles,
    make_desk: Callable[..., Desk],
    team: Team,
) -> None:
    # Given a case assigned and granted to the volunteer, and their desk without a server
    filed = make_filed_report(app, narrative="The phrase okapi-meadow-29 is sealed.")
    assign_and_grant(app, filed.report_id, team, organizer)
    desk = make_desk(team.helper_key, online=False, name="airgap")
    unlocked = desk.unlock()
    assert unlocked.status_code == 302
    assert desk.state.token is None

    # When the volunteer loads the bundle file downloaded from the server
    page = import_bundle(desk, download_bundle(app, team.helper))

    # Then the case opens on the desk
    assert error_alerts(page) == []
    assert [bundle["report_id"] for bundle in desk.state.cache.cases()] == [str(filed.report_id)]
    case_url = f"/cases/{filed.report_id}"
    assert "okapi-meadow-29" in desk.browser.get(case_url).get_data(as_text=True)

    # When they write a note and download the outputs file
    desk.post(f"{case_url}/notes", {"text": "Offline note: the phrase ibis-quarry-55."})
    assert desk.state.cache.pending_count() == 1
    outputs = desk.browser.get("/outputs")

    # Then the file is an outputs file for their key, holding the sealed note only
    assert outputs.status_code == 200
    assert outputs.headers["Content-Disposition"].startswith("attachment;")
    assert b"ibis-quarry-55" not in outputs.data
    body = load_file(
        outputs.data, kind=OUTPUTS_FORMAT, key_id=team.helper_key.public_key.key_id_hex
    )
    assert len(body["notes"]) == 1

    # When the server applies it twice (the volunteer uploaded it twice)
    with app.app_context():
        settings = app.extensions["incidents.settings"]
        first = desk_outputs.apply_outputs(
            body,
            user=user_row(team.helper),
            keyring=current_keyring(),
            instance_path=settings.instance_path,
        )
        second = desk_outputs.apply_outputs(
            body,
            user=user_row(team.helper),
            keyring=current_keyring(),
            instance_path=settings.instance_path,
        )

    # Then the note is stored once and the organizer's key opens it
    assert (first.notes, first.skipped) == (1, 0)
    assert (second.notes, second.skipped) == (0, 1)
    assert note_count(app) == 1
    with app.app_context():
        opened = casefile.open_case(filed.report_id, private_key=organizer.private_key)
    assert [note.body for note in opened.notes] == ["Offline note: the phrase ibis-quarry-55."]


def test_a_tampered_bundle_file_is_refused_and_the_cache_kept(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], team: Team
) -> None:
    # Given an air-gapped desk that loaded one case
    first = make_filed_report(app)
    assign_and_grant(app, first.report_id, team, organizer)
    desk = make_desk(team.helper_key, online=False, name="airgap")
    desk.unlock()
    import_bundle(desk, download_bundle(app, team.helper))
    before = desk.snapshot()
    raw_before = desk.state.cache.path.read_bytes()
    assert len(before[0]) == 1

    # When a newer bundle file (two cases) arrives with one character changed
    second = make_filed_report(app)
    assign_and_grant(app, second.report_id, team, organizer)
    good = download_bundle(app, team.helper)
    page = import_bundle(desk, tampered(good))

    # Then it is refused with one message and the cache file is untouched
    assert error_alerts(page) == [BAD_BUNDLE]
    assert desk.snapshot() == before
    assert desk.state.cache.path.read_bytes() == raw_before
    # and the same file unaltered loads (so it was the change that was refused)
    assert error_alerts(import_bundle(desk, good)) == []
    assert len(desk.state.cache.cases()) == 2


def test_a_bundle_file_for_another_key_is_refused_and_the_cache_kept(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], team: Team
) -> None:
    # Given an air-gapped volunteer desk that loaded its case
    filed = make_filed_report(app)
    assign_and_grant(app, filed.report_id, team, organizer)
    desk = make_desk(team.helper_key, online=False, name="airgap")
    desk.unlock()
    import_bundle(desk, download_bundle(app, team.helper))
    make_filed_report(app)
    before = desk.snapshot()
    raw_before = desk.state.cache.path.read_bytes()

    # When the organizer's bundle file (addressed to the organizer key) is loaded into it
    page = import_bundle(desk, download_bundle(app, team.boss))

    # Then it is refused and nothing changed
    assert error_alerts(page) == [BAD_BUNDLE]
    assert desk.snapshot() == before
    assert desk.state.cache.path.read_bytes() == raw_before


# --------------------------------------------------------------------------- broken syncs


@dataclass
class PendingNote:
    """An organizer desk with one synced case and one note still in its outbox."""

    desk: Desk
    report_id: uuid.UUID
    text: str


@pytest.fixture
def pending_note(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk], team: Team
) -> Iterator[PendingNote]:
    """A note written while the server could not be reached, then a new case on the server."""
    filed = make_filed_report(app)
    desk = make_desk(organizer)
    desk.unlock(token=team.boss_token)
    desk.post("/sync")
    # The desk proved its key earlier (as on its first change), so the faults below hit the
    # outputs themselves rather than the challenge that precedes the first change.
    state = desk.state
    assert state.token is not None
    assert state.private_key is not None
    server = state.settings.client(
        token=state.token, key_id=state.key_id, private_key=state.private_key
    )
    assert server is not None
    server.prove()
    text = "Pending note with the phrase marmot-delta-62."
    desk.transport.fail_after = 0
    written = desk.post(f"/cases/{filed.report_id}/notes", {"text": text}, follow_redirects=True)
    assert error_alerts(written) == [UNREACHABLE]
    desk.transport.fail_after = None
    assert desk.state.cache.pending_count() == 1
    assert note_count(app) == 0
    make_filed_report(app)  # news that only a finished sync brings
    return PendingNote(desk, filed.report_id, text)


def assert_sync_finishes(app: Flask, pending: PendingNote, *, posts: int) -> None:
    """Sync again: the note is on the server once, the outbox empty, the cache refreshed."""
    desk = pending.desk
    response = desk.post("/sync", follow_redirects=True)
    assert error_alerts(response) == []
    assert desk.transport.calls.count("POST /api/v1/outputs") == posts
    assert note_count(app) == 1
    assert desk.state.cache.pending_count() == 0
    cached = desk.state.cache.cases()
    assert len(cached) == 2
    mine = desk.state.cache.case(str(pending.report_id))
    assert mine is not None
    assert len(mine["notes"]) == 1
    page = desk.browser.get(f"/cases/{pending.report_id}").get_data(as_text=True)
    assert "marmot-delta-62" in page


def test_sync_whose_outputs_answer_is_lost_keeps_the_note_and_finishes_later(
    app: Flask, pending_note: PendingNote
) -> None:
    # Given a desk with a pending note, and a second case on the server
    desk = pending_note.desk
    before = desk.snapshot()
    assert len(before[0]) == 1
    assert len(before[1]["notes"]) == 1

    # When the outputs reach the server but its answer is lost
    desk.transport.fail_after = 0
    desk.transport.lose_answer = True
    response = desk.post("/sync", follow_redirects=True)

    # Then the desk says so, keeps the note in its outbox and its cache as it was
    assert error_alerts(response) == [UNREACHABLE]
    assert desk.transport.calls[-1] == "POST /api/v1/outputs"
    assert note_count(app) == 1, "the server did store the note"
    assert desk.snapshot() == before

    # When the connection is back and the desk syncs again
    desk.transport.fail_after = None

    # Then the note is stored exactly once, the outbox is empty and the cache refreshed
    assert_sync_finishes(app, pending_note, posts=2)


def test_sync_broken_during_the_pull_keeps_the_cache_and_finishes_later(
    app: Flask, pending_note: PendingNote
) -> None:
    # Given a desk with a pending note, and a second case on the server
    desk = pending_note.desk
    cases_before, _outbox = desk.snapshot()

    # When the outputs are stored and answered, but the connection breaks while fetching cases
    desk.transport.fail_after = 2
    response = desk.post("/sync", follow_redirects=True)

    # Then the desk says so; the server confirmed the note, so it left the outbox; the cached
    # cases are as they were
    assert error_alerts(response) == [UNREACHABLE]
    assert desk.transport.calls[-2:] == ["POST /api/v1/outputs", "GET /api/v1/session"]
    assert note_count(app) == 1
    assert desk.state.cache.pending_count() == 0
    assert desk.state.cache.cases() == cases_before

    # When it syncs again, everything arrives and nothing is stored twice
    desk.transport.fail_after = None
    assert_sync_finishes(app, pending_note, posts=1)


def test_sync_failing_before_the_outputs_are_sent_stores_nothing(
    app: Flask, pending_note: PendingNote
) -> None:
    desk = pending_note.desk
    before = desk.snapshot()
    calls = list(desk.transport.calls)

    desk.transport.fail_after = 0
    response = desk.post("/sync", follow_redirects=True)

    assert error_alerts(response) == [UNREACHABLE]
    assert desk.transport.calls == calls, "nothing reached the server"
    assert note_count(app) == 0
    assert desk.snapshot() == before
    desk.transport.fail_after = None
    assert_sync_finishes(app, pending_note, posts=1)


# --------------------------------------------------------------------------- bulk grant


def test_bulk_grant_shows_progress_and_grants_every_case(
    app: Flask,
    organizer: KeyFiles,
    make_desk: Callable[..., Desk],
    team: Team,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 30 reports assigned to one volunteer, and the organizer's desk synced
    report_ids = [
        make_filed_report(
            app, narrative=f"Bulk case with the phrase gecko-{n:02d}-fjord."
        ).report_id
        for n in range(30)
    ]
    with app.app_context():
        boss = user_row(team.boss)
        for report_id in report_ids:
            cases.assign_report(report_id, volunteer_id=team.helper.id, organizer=boss)
    desk = make_desk(organizer)
    desk.unlock(token=team.boss_token)
    desk.post("/sync")
    # the background job waits at its first case until the test has seen the running page
    gate = threading.Event()
    real_grant_case = work.grant_case

    def gated_grant_case(*args: object, **kwargs: object) -> object:
        gate.wait(timeout=30)
        return real_grant_case(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(work, "grant_case", gated_grant_case)
    threads_before = set(threading.enumerate())

    # When the organizer grants all of them at once
    response = desk.post(
        "/grants",
        {
            "key_id": team.helper_key.public_key.key_id_hex,
            "fingerprint_checked": "yes",
            "report_id": [str(report_id) for report_id in report_ids],
        },
    )

    # Then the browser goes to a progress page that refreshes itself while the job runs
    assert response.status_code == 302
    job_url = urlsplit(response.headers["Location"]).path
    job_id = job_url.rsplit("/", 1)[1]
    assert job_url == f"/jobs/{job_id}"
    running = desk.browser.get(job_url).get_data(as_text=True)
    assert '<progress max="30" value="0">' in running
    assert '<meta http-equiv="refresh"' in running
    job = desk.state.jobs[job_id]
    assert not job.finished

    # When the job is let go and its thread ends
    gate.set()
    workers = [thread for thread in threading.enumerate() if thread not in threads_before]
    assert workers, "the bulk grant runs in a background thread"
    for worker in workers:
        worker.join(timeout=60)
        assert not worker.is_alive()

    # Then the page shows all 30 done and stops refreshing
    finished = desk.browser.get(job_url).get_data(as_text=True)
    assert '<progress max="30" value="30">' in finished
    assert "http-equiv" not in finished
    assert "Finished." in finished
    assert (job.finished, job.done, job.failed, job.message) == (True, 30, 0, "")
    assert desk.state.cache.pending_count() == 0
    with app.app_context():
        granted = db.session.scalars(
            sa.select(Wrap.report_id).where(Wrap.key_id == team.helper_key.public_key.key_id_hex)
        ).all()
    assert set(granted) == set(report_ids)

    # And the volunteer's desk opens every one of them after a sync
    helper_desk = make_desk(team.helper_key, name="helper")
    helper_desk.unlock(token=team.helper_token)
    helper_desk.post("/sync")
    for n, report_id in enumerate(report_ids):
        page = helper_desk.browser.get(f"/cases/{report_id}").get_data(as_text=True)
        assert f"gecko-{n:02d}-fjord" in page, report_id
