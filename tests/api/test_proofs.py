"""Desks prove they hold their private key before the server accepts changes from them
(incidents.services.desk_proofs, through incidents.api.views and the staff Desk page).

A token (or a logged-in browser) alone must not be enough to store notes, replies, grants,
status changes, revocations or key rotation steps. Online, the desk answers a challenge sealed to
its key and its token is then proven for 30 minutes; offline, the outputs file carries the answer
to the challenge of the last bundle file downloaded. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from incidents import crypto
from incidents.bundle import BUNDLE_FORMAT, OUTPUTS_FORMAT, dump_file, load_file
from incidents.clock import as_utc
from incidents.db import Base, db
from incidents.desk.rotation import rewrap
from incidents.models import ApiToken, Note, Report, User
from incidents.services import desk_proofs
from tests.api.test_views import (
    Desk,
    assign,
    call,
    grant_item,
    note_item,
    prove,
    token_for,
    volunteer_desk,
)
from tests.conftest import KeyFiles
from tests.factories import (
    StaffAccount,
    answer_bundle_challenge,
    bundle_file_proof,
    download_bundle_file,
    flashed,
    login,
    make_filed_report,
    make_user,
    page_csrf_token,
    use_fast_password_hashing,
)
from tests.staff.test_desk_pages import outputs_file, sealed_note, stored_counts

NOT_PROVEN = "The desk must prove it holds its key first."
WRONG_ANSWER = "The desk could not prove it holds its key."
NO_FILE_PROOF = (
    "The outputs file does not answer the challenge of your last case bundle. Download a fresh "
    "case bundle, load it on the desk, and export the changes again."
)
BAD_FILE_PROOF = (
    "The outputs file does not prove the desk holds its key. Download a fresh case bundle, "
    "load it on the desk, and export the changes again."
)
EMPTY_BATCH = {
    "grants": 0,
    "notes": 0,
    "replies": 0,
    "statuses": 0,
    "rotations": 0,
    "skipped": 0,
}


@pytest.fixture(autouse=True)
def _fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_password_hashing(monkeypatch)


@pytest.fixture
def chief(app: Flask, organizer: KeyFiles) -> Desk:
    """The organizer's desk, holding the organizer private key (its token not proven yet)."""
    account = make_user(app, role="organizer")
    return Desk(account, token_for(app, account), organizer.private_key)


# --------------------------------------------------------------------------- helpers


def another_token(app: Flask, desk: Desk) -> Desk:
    """The same account and key with a second, fresh token (another desk of the same user)."""
    return Desk(desk.account, token_for(app, desk.account), desk.key)


def ask_challenge(client: FlaskClient, desk: Desk, *, key_id: str | None = None) -> bytes:
    """POST /api/v1/proof as ``desk``: the challenge sealed to its key."""
    response = call(client, desk, "/api/v1/proof", method="POST", key_id=key_id, body={})
    assert response.status_code == 200, response.get_json()
    return base64.b64decode(response.get_json()["challenge"])


def send_answer(client: FlaskClient, desk: Desk, answer: str) -> TestResponse:
    """POST /api/v1/proof/answer as ``desk``."""
    return call(client, desk, "/api/v1/proof/answer", method="POST", body={"answer": answer})


def answer_with(challenge: bytes, key: crypto.PrivateKey) -> str:
    """What a desk holding ``key`` answers."""
    return crypto.answer_possession_challenge(challenge, private_key=key)


def post_outputs(client: FlaskClient, desk: Desk, body: dict[str, Any]) -> TestResponse:
    """POST /api/v1/outputs as ``desk``."""
    return call(client, desk, "/api/v1/outputs", method="POST", body=body)


def assert_not_proven(response: TestResponse, message: str = NOT_PROVEN) -> None:
    """403 with the "proof" error."""
    assert response.status_code == 403
    assert response.get_json() == {"error": "proof", "message": message}


def token_row(app: Flask, desk: Desk) -> ApiToken:
    """The row of the desk's token."""
    digest = hashlib.sha256(desk.secret.encode()).digest()
    with app.app_context():
        row = db.session.scalars(sa.select(ApiToken).where(ApiToken.token_hash == digest)).one()
        db.session.expunge(row)
        return row


def database_state(app: Flask) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table as text, except when a token was last used (a first use of
    the day is recorded even for a refused request)."""
    state: dict[str, list[tuple[str, ...]]] = {}
    with app.app_context():
        for table in Base.metadata.sorted_tables:
            columns = [
                column
                for column in table.columns
                if (table.name, column.name) != ("api_tokens", "last_used_on")
            ]
            rows = db.session.execute(sa.select(*columns).order_by(*table.primary_key.columns))
            state[table.name] = [tuple(str(value) for value in row) for row in rows]
        db.session.remove()
    return state


def at(monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    """Set the clock of the proofs service to ``moment``."""
    monkeypatch.setattr(desk_proofs, "now", lambda: moment)


def b64(data: bytes) -> str:
    """Standard base64 text, as the API uses."""
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- a token alone


@dataclass
class Change:
    """A change a desk sends: who sends it, where, and what the server answers once proven."""

    desk: Desk
    path: str
    body: dict[str, Any]
    accepted: dict[str, Any]


def rotation_under_way(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles, new: crypto.PrivateKey
) -> tuple[Desk, list[dict[str, Any]], list[dict[str, Any]]]:
    """The organizer's other desk (proven) starts a rotation to ``new`` over a report and a note
    sealed wrongly; returns that desk, the wraps to store and the wrap that does not open."""
    setup = another_token(app, chief)
    prove(client, setup)
    report_id = make_filed_report(app).report_id
    note = note_item(report_id, "sealed wrongly", recipients=[organizer.public_key])
    real = base64.b64decode(note["wraps"][organizer.public_key.key_id_hex])
    note["wraps"][organizer.public_key.key_id_hex] = b64(real[:18] + bytes(len(real) - 18))
    assert post_outputs(client, setup, {"notes": [note]}).get_json()["notes"] == 1
    body = {"public_key": b64(new.public_key().to_bytes())}
    challenge = call(client, setup, "/api/v1/organizer-key/challenge", method="POST", body=body)
    answers = {
        "current": answer_with(base64.b64decode(challenge.get_json()["current"]), chief.key),
        "new": answer_with(base64.b64decode(challenge.get_json()["new"]), new),
    }
    started = call(client, setup, "/api/v1/organizer-key/start", method="POST", body=answers)
    assert started.status_code == 200, started.get_json()
    page = call(client, setup, "/api/v1/organizer-key/pending?limit=100").get_json()["wraps"]
    unreadable = [item for item in page if item["envelope_id"] == note["id"]]
    readable = [
        rewrap(item, old=chief.key, new=new.public_key())
        for item in page
        if item["envelope_id"] != note["id"]
    ]
    assert (len(readable), len(unreadable)) == (1, 1)
    return setup, readable, unreadable


def make_change(
    kind: str, app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> Change:
    """Given: the world a change of ``kind`` needs; returns the change, not sent yet."""
    if kind.startswith("rotation"):
        new = crypto.PrivateKey.generate()
        setup, readable, unreadable = rotation_under_way(app, client, chief, organizer, new)
        if kind == "rotation wraps":
            return Change(chief, "/api/v1/organizer-key/wraps", {"wraps": readable}, {"stored": 1})
        if kind == "rotation unreadable":
            return Change(
                chief,
                "/api/v1/organizer-key/unreadable",
                {"wraps": unreadable},
                {"discarded": 1},
            )
        # finish: the other desk moved every wrap already; only the last step is left
        for step, items in (("wraps", readable), ("unreadable", unreadable)):
            path = f"/api/v1/organizer-key/{step}"
            moved = call(client, setup, path, method="POST", body={"wraps": items})
            assert moved.status_code == 200, moved.get_json()
        return Change(
            chief, "/api/v1/organizer-key/finish", {}, {"organizer_key_id": new.key_id.hex()}
        )
    report_id = make_filed_report(app).report_id
    helper = volunteer_desk(app, chief)
    assign(app, report_id, helper, chief)
    publics = [organizer.public_key, helper.key.public_key()]
    if kind == "volunteer note":
        body = {"notes": [note_item(report_id, "a note", recipients=publics)]}
        return Change(helper, "/api/v1/outputs", body, {**EMPTY_BATCH, "notes": 1})
    if kind == "volunteer status":
        status = {"report_id": str(report_id), "from": "assigned", "to": "in_progress"}
        body = {"statuses": [{**status, "reason": "called"}]}
        return Change(helper, "/api/v1/outputs", body, {**EMPTY_BATCH, "statuses": 1})
    if kind == "organizer grant":
        grant = grant_item(
            app, report_id, organizer_key=organizer.private_key, to=helper.key.public_key()
        )
        return Change(chief, "/api/v1/outputs", {"grants": [grant]}, {**EMPTY_BATCH, "grants": 1})
    assert kind == "organizer revoke"
    return Change(
        chief,
        f"/api/v1/cases/{report_id}/revoke",
        {"user_id": helper.account.id},
        {"revoked": True},
    )


@pytest.mark.parametrize(
    "kind",
    [
        "volunteer note",
        "volunteer status",
        "organizer grant",
        "organizer revoke",
        "rotation wraps",
        "rotation unreadable",
        "rotation finish",
    ],
)
def test_a_token_alone_cannot_make_changes(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles, kind: str
) -> None:
    # Given: a change the desk's user may make, and a token whose desk has not proven its key
    change = make_change(kind, app, client, chief, organizer)
    before = database_state(app)

    # When: the token sends it
    refused = call(client, change.desk, change.path, method="POST", body=change.body)

    # Then: it is refused with the "proof" error, and nothing changed
    assert_not_proven(refused)
    assert database_state(app) == before

    # When: the desk proves it holds its key and sends the same change again
    prove(client, change.desk)
    accepted = call(client, change.desk, change.path, method="POST", body=change.body)

    # Then: it is accepted (the missing proof was the only obstacle)
    assert accepted.status_code == 200, accepted.get_json()
    assert accepted.get_json() == change.accepted


def test_reading_needs_no_proof(app: Flask, client: FlaskClient, chief: Desk) -> None:
    # A desk that has not proven its key still reads (everything it gets is sealed to its key)
    report_id = make_filed_report(app).report_id

    statuses = [
        call(client, chief, path).status_code
        for path in (
            "/api/v1/session",
            "/api/v1/cases",
            f"/api/v1/cases/{report_id}",
            "/api/v1/volunteers",
        )
    ]

    assert statuses == [200, 200, 200, 200]
    assert token_row(app, chief).proven_until is None


def test_a_proof_is_for_one_token_not_for_the_account(
    app: Flask, client: FlaskClient, chief: Desk
) -> None:
    # Given: two tokens of one organizer (two desks), only the first proven
    second = another_token(app, chief)
    prove(client, chief)

    # When / Then: the first may make changes, the second may not
    assert post_outputs(client, chief, {}).get_json() == EMPTY_BATCH
    assert_not_proven(post_outputs(client, second, {}))


# --------------------------------------------------------------------------- answers


def test_a_wrong_answer_is_refused_and_a_challenge_is_answered_once(
    app: Flask, client: FlaskClient, chief: Desk
) -> None:
    # An answer without any challenge is refused
    assert_not_proven(send_answer(client, chief, "0" * 64), WRONG_ANSWER)

    # Given: a challenge; the server keeps only the SHA-256 of the expected answer, bound to
    # the key the challenge was sealed to
    challenge = ask_challenge(client, chief)
    right = answer_with(challenge, chief.key)
    row = token_row(app, chief)
    bound = f"{chief.key.key_id.hex()}:{right}"
    assert row.proof_hash == hashlib.sha256(bound.encode()).hexdigest()
    assert row.proven_until is None

    # When: the desk sends a wrong answer, then the right one to the same challenge
    wrong = send_answer(client, chief, "0" * 64)
    late = send_answer(client, chief, right)

    # Then: both are refused (the wrong attempt used the challenge up) and nothing is proven
    assert_not_proven(wrong, WRONG_ANSWER)
    assert_not_proven(late, WRONG_ANSWER)
    assert token_row(app, chief).proof_hash is None
    assert_not_proven(post_outputs(client, chief, {}))

    # When: the desk asks for a fresh challenge and answers it right
    fresh = answer_with(ask_challenge(client, chief), chief.key)
    proven = send_answer(client, chief, fresh)

    # Then: the token is proven, and the same answer cannot be sent again
    assert proven.status_code == 200
    assert proven.get_json() == {"proven": True}
    assert token_row(app, chief).proof_hash is None
    assert_not_proven(send_answer(client, chief, fresh), WRONG_ANSWER)
    assert post_outputs(client, chief, {}).status_code == 200


def test_only_the_latest_challenge_counts(app: Flask, client: FlaskClient, chief: Desk) -> None:
    # Given: two challenges asked one after the other
    first = answer_with(ask_challenge(client, chief), chief.key)
    second = answer_with(ask_challenge(client, chief), chief.key)
    assert first != second

    # When: the desk answers the first one, then the second
    stale = send_answer(client, chief, first)
    after = send_answer(client, chief, second)

    # Then: the first answer is wrong (the second challenge replaced it) and used it up
    assert_not_proven(stale, WRONG_ANSWER)
    assert_not_proven(after, WRONG_ANSWER)
    assert_not_proven(post_outputs(client, chief, {}))


@pytest.mark.parametrize("answer", [None, 42, "", ["x"]])
def test_an_answer_that_is_not_text_is_refused(
    app: Flask, client: FlaskClient, chief: Desk, answer: object
) -> None:
    ask_challenge(client, chief)

    response = call(client, chief, "/api/v1/proof/answer", method="POST", body={"answer": answer})

    assert_not_proven(response, WRONG_ANSWER)
    assert_not_proven(post_outputs(client, chief, {}))


def test_the_proof_endpoints_need_a_valid_token_and_key(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    for path in ("/api/v1/proof", "/api/v1/proof/answer"):
        no_token = client.post(path, json={"answer": "x"})
        assert no_token.status_code == 401
        assert no_token.get_json()["error"] == "token"
        other_key = crypto.PrivateKey.generate().key_id.hex()
        wrong_key = call(client, chief, path, method="POST", key_id=other_key, body={})
        assert wrong_key.status_code == 403
        assert wrong_key.get_json()["error"] == "key"
    assert token_row(app, chief).proof_hash is None


# --------------------------------------------------------------------------- lifetime


def test_a_proof_lasts_thirty_minutes(
    app: Flask, client: FlaskClient, chief: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a desk that proved its key at "10:00"
    start = datetime.now(UTC).replace(microsecond=0)
    at(monkeypatch, start)
    prove(client, chief)
    proven_until = token_row(app, chief).proven_until
    assert proven_until is not None
    assert as_utc(proven_until) == start + timedelta(minutes=30)

    # When / Then: at 10:29:59 it may still make changes
    at(monkeypatch, start + timedelta(minutes=29, seconds=59))
    assert post_outputs(client, chief, {}).status_code == 200

    # When / Then: at 10:30:01 it may not
    at(monkeypatch, start + timedelta(minutes=30, seconds=1))
    assert_not_proven(post_outputs(client, chief, {}))
    revoke = f"/api/v1/cases/{uuid.uuid4()}/revoke"
    assert_not_proven(call(client, chief, revoke, method="POST", body={"user_id": 1}))

    # When / Then: once it proves its key again, for another 30 minutes
    prove(client, chief)
    assert post_outputs(client, chief, {}).status_code == 200
    at(monkeypatch, start + timedelta(minutes=60))
    assert post_outputs(client, chief, {}).status_code == 200
    at(monkeypatch, start + timedelta(minutes=60, seconds=2))
    assert_not_proven(post_outputs(client, chief, {}))


# --------------------------------------------------------------------------- whose key


def test_a_volunteers_challenge_is_sealed_to_their_own_registered_key(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    # Given: two volunteers with approved keys
    helper, other = volunteer_desk(app, chief), volunteer_desk(app, chief)

    # When: the first volunteer's desk asks for a challenge
    challenge = ask_challenge(client, helper)

    # Then: it is sealed to their registered key; no other key opens it
    assert crypto.wrap_key_id(challenge).hex() == helper.key_id
    for stranger in (other.key, organizer.private_key, crypto.PrivateKey.generate()):
        with pytest.raises(crypto.CryptoError):
            answer_with(challenge, stranger)

    # When: someone with the volunteer's token but another key answers what they can (the
    # answer to a challenge sealed to their own key)
    own = answer_with(ask_challenge(client, other), other.key)
    refused = send_answer(client, helper, own)

    # Then: it is refused, and the token stays unproven
    assert_not_proven(refused, WRONG_ANSWER)
    assert_not_proven(post_outputs(client, helper, {}))

    # And: with the right key the volunteer's desk proves itself
    prove(client, helper)
    assert post_outputs(client, helper, {}).status_code == 200


def test_the_organizers_challenge_is_sealed_to_the_organizer_key(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    helper = volunteer_desk(app, chief)

    challenge = ask_challenge(client, chief)

    assert crypto.wrap_key_id(challenge).hex() == organizer.public_key.key_id_hex
    with pytest.raises(crypto.CryptoError):
        answer_with(challenge, helper.key)
    assert (
        send_answer(client, chief, answer_with(challenge, organizer.private_key)).status_code == 200
    )


def test_a_volunteer_cannot_ask_for_a_challenge_to_a_key_that_is_not_theirs(
    app: Flask, client: FlaskClient, chief: Desk, organizer: KeyFiles
) -> None:
    helper, other = volunteer_desk(app, chief), volunteer_desk(app, chief)

    for key_id in (organizer.public_key.key_id_hex, other.key_id):
        response = call(client, helper, "/api/v1/proof", method="POST", key_id=key_id, body={})
        assert response.status_code == 403
        assert response.get_json()["error"] == "key"
    assert token_row(app, helper).proof_hash is None


# --------------------------------------------------------------------------- the staff Desk page


@dataclass
class Uploader:
    """A volunteer logged in on the staff pages, their key and their assigned case."""

    account: StaffAccount
    client: FlaskClient
    key: crypto.PrivateKey
    report_id: uuid.UUID
    organizer: crypto.PublicKey

    def outputs(self, text: str, *, proof: str | None) -> bytes:
        """An outputs file with one note on their case, as their desk writes it."""
        note = sealed_note(
            self.report_id, text=text, recipients=[self.organizer, self.key.public_key()]
        )
        return outputs_file(self.key.public_key().key_id_hex, notes=[note], proof=proof)


@pytest.fixture
def uploader(app: Flask, chief: Desk, organizer: KeyFiles) -> Uploader:
    """A volunteer with an approved key and an assigned case, logged in (no bundle yet)."""
    helper = volunteer_desk(app, chief)
    report_id = make_filed_report(app).report_id
    assign(app, report_id, helper, chief)
    client = app.test_client()
    assert login(client, helper.account).status_code == 302
    return Uploader(helper.account, client, helper.key, report_id, organizer.public_key)


def upload(client: FlaskClient, data: bytes) -> TestResponse:
    """Upload an outputs file on the staff Desk page."""
    token = page_csrf_token(client, "/staff/desk")
    return client.post(
        "/staff/desk/outputs",
        data={"csrf_token": token, "outputs_file": (io.BytesIO(data), "outputs.json")},
        content_type="multipart/form-data",
    )


def note_count(app: Flask) -> int:
    """How many notes the server stores."""
    with app.app_context():
        return int(db.session.scalar(sa.select(sa.func.count()).select_from(Note)) or 0)


def assert_refused(app: Flask, response: TestResponse, message: str, before: Any) -> None:
    """Refused with ``message`` on the Desk page, and nothing stored."""
    assert response.status_code == 400
    assert message in flashed(response)
    assert stored_counts(app) == before


def test_an_outputs_file_without_a_proof_is_refused(app: Flask, uploader: Uploader) -> None:
    # Given: no bundle file downloaded yet; a file without proof, and one with a made-up proof
    before = stored_counts(app)

    # When / Then: both are refused, and nothing is stored
    for proof in (None, "0" * 64):
        response = upload(uploader.client, uploader.outputs("no bundle yet", proof=proof))
        assert_refused(app, response, NO_FILE_PROOF, before)

    # Given: a bundle file downloaded (its challenge on record)
    download_bundle_file(uploader.client)
    before = stored_counts(app)

    # When / Then: a file without proof is still refused
    response = upload(uploader.client, uploader.outputs("forgot the proof", proof=None))
    assert_refused(app, response, NO_FILE_PROOF, before)


@pytest.mark.parametrize("proof", ["0" * 64, "", "not even hex"])
def test_an_outputs_file_with_a_wrong_proof_is_refused(
    app: Flask, uploader: Uploader, proof: str
) -> None:
    # Given: a bundle file downloaded, and an outputs file whose proof is not its answer
    download_bundle_file(uploader.client)
    before = stored_counts(app)

    # When: it is uploaded
    response = upload(uploader.client, uploader.outputs("forged", proof=proof))

    # Then: it is refused and nothing is stored
    assert_refused(app, response, BAD_FILE_PROOF, before)
    assert note_count(app) == 0


def test_a_proof_for_an_older_bundle_is_refused_once_a_newer_one_was_downloaded(
    app: Flask, uploader: Uploader
) -> None:
    # Given: a desk that answered the challenge of a first bundle file, then a second download
    old_proof = bundle_file_proof(uploader.client, uploader.key)
    new_proof = bundle_file_proof(uploader.client, uploader.key)
    before = stored_counts(app)

    # When: the outputs file carries the answer for the first bundle
    response = upload(uploader.client, uploader.outputs("made before", proof=old_proof))

    # Then: it is refused and nothing is stored
    assert_refused(app, response, BAD_FILE_PROOF, before)
    assert note_count(app) == 0

    # And: the answer for the newest bundle file is accepted
    accepted = upload(uploader.client, uploader.outputs("made after", proof=new_proof))
    assert accepted.status_code == 302
    assert note_count(app) == 1


def test_a_proof_is_for_the_user_who_downloaded_the_bundle(
    app: Flask, uploader: Uploader, chief: Desk, organizer: KeyFiles
) -> None:
    # Given: another volunteer, assigned the same case, with a proof for their own bundle file
    other = volunteer_desk(app, chief)
    assign(app, uploader.report_id, other, chief)
    other_client = app.test_client()
    assert login(other_client, other.account).status_code == 302
    their_proof = bundle_file_proof(other_client, other.key)
    download_bundle_file(uploader.client)
    before = stored_counts(app)

    # When: the first volunteer uploads a file carrying the other volunteer's proof
    response = upload(uploader.client, uploader.outputs("borrowed proof", proof=their_proof))

    # Then: it is refused and nothing is stored
    assert_refused(app, response, BAD_FILE_PROOF, before)


def test_a_file_proof_lasts_thirty_days(
    app: Flask, uploader: Uploader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a proof for a bundle file downloaded now
    start = datetime.now(UTC)
    at(monkeypatch, start)
    proof = bundle_file_proof(uploader.client, uploader.key)

    # When / Then: 29 days later the file is accepted
    at(monkeypatch, start + timedelta(days=29))
    assert upload(uploader.client, uploader.outputs("in time", proof=proof)).status_code == 302

    # When / Then: 31 days later it is refused, and nothing more is stored
    at(monkeypatch, start + timedelta(days=31))
    before = stored_counts(app)
    late = upload(uploader.client, uploader.outputs("too late", proof=proof))
    assert_refused(app, late, BAD_FILE_PROOF, before)
    assert note_count(app) == 1


def test_a_bundle_file_carries_a_challenge_only_the_users_key_opens(
    app: Flask, uploader: Uploader, organizer: KeyFiles
) -> None:
    data = download_bundle_file(uploader.client)

    answer = answer_bundle_challenge(data, uploader.key)

    with app.app_context():
        user = db.session.get(User, uploader.account.id)
        assert user is not None
        assert user.bundle_proof is not None
        assert answer not in user.bundle_proof
        assert hashlib.sha256(answer.encode()).hexdigest() in user.bundle_proof
    assert answer.encode() not in data
    with pytest.raises(crypto.CryptoError):
        answer_bundle_challenge_with_other_key(data, uploader.key, organizer.private_key)


def answer_bundle_challenge_with_other_key(
    data: bytes, holder: crypto.PrivateKey, other: crypto.PrivateKey
) -> str:
    """Try to answer the challenge of ``holder``'s bundle file with ``other``."""
    body = load_file(data, kind=BUNDLE_FORMAT, key_id=holder.key_id.hex())
    return answer_with(base64.b64decode(body["proof_challenge"]), other)


def report_status(app: Flask, report_id: uuid.UUID) -> str:
    """The report's status on the server."""
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report is not None
        return report.status


@pytest.mark.parametrize("proof", [None, "wrong"])
def test_a_refused_upload_leaves_the_database_as_it_was(
    app: Flask, uploader: Uploader, proof: str | None
) -> None:
    # Given: a status change and a note, in a file that is right in every way but the proof
    bundle = download_bundle_file(uploader.client)
    note = sealed_note(
        uploader.report_id, text="n", recipients=[uploader.organizer, uploader.key.public_key()]
    )
    status = {
        "report_id": str(uploader.report_id),
        "from": "assigned",
        "to": "in_progress",
        "reason": "called",
    }
    body: dict[str, Any] = {
        "key_id": uploader.key.public_key().key_id_hex,
        "notes": [note],
        "statuses": [status],
    }
    if proof is not None:
        body["proof"] = "0" * 64
    before = database_state(app)

    # When: it is uploaded
    response = upload(uploader.client, dump_file(OUTPUTS_FORMAT, body))

    # Then: neither change is applied; no row changed at all
    assert response.status_code == 400
    assert (NO_FILE_PROOF if proof is None else BAD_FILE_PROOF) in flashed(response)
    assert database_state(app) == before
    assert report_status(app, uploader.report_id) == "assigned"

    # And: the same changes with the desk's answer are applied (the proof was all that lacked)
    body["proof"] = answer_bundle_challenge(bundle, uploader.key)
    assert upload(uploader.client, dump_file(OUTPUTS_FORMAT, body)).status_code == 302
    assert report_status(app, uploader.report_id) == "in_progress"
    assert note_count(app) == 1


def test_a_proof_is_for_the_key_that_answered(app: Flask, client: FlaskClient) -> None:
    # Given: a volunteer whose token was proven with their first key
    from tests.factories import make_user, make_volunteer_key, prove_token

    boss = make_user(app, role="organizer")
    helper = make_user(app, role="volunteer")
    first = make_volunteer_key(app, helper, approved_by=boss)
    with app.app_context():
        from incidents.services import api_tokens

        user = db.session.get(User, helper.id)
        assert user is not None
        secret = api_tokens.issue_token(user, label="laptop").secret
    prove_token(client, secret=secret, private_key=first)

    # When: the key is replaced by a second one, and the token presents the second key id
    second = make_volunteer_key(app, helper, approved_by=boss)
    headers = {"Authorization": f"Bearer {secret}", "X-Incidents-Key-Id": second.key_id.hex()}
    response = client.post("/api/v1/outputs", headers=headers, json={})

    # Then: the earlier proof does not count for the new key
    assert response.status_code == 403
    assert response.get_json()["error"] == "proof"
    prove_token(client, secret=secret, private_key=second)
    assert client.post("/api/v1/outputs", headers=headers, json={}).status_code == 200
