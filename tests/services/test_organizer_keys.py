"""Organizer key rotation (incidents.services.organizer_keys) and the keyring in force.

A rotation is checked against the raw tables: after it, every wrap of every report and envelope
opens with the new key, none is addressed to the old key, and the pin has moved. The desk's
part (unwrapping with the old key, wrapping to the new one) is done here with the crypto module,
as a desk does it. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from incidents import crypto
from incidents.appstate import current_keyring, current_settings
from incidents.bundle import b64, unb64
from incidents.config import Settings
from incidents.db import db
from incidents.keyring import Keyring
from incidents.models import AuditEvent, RecipientKey, SiteSetting, User
from incidents.services import api_tokens, bundles, cases, demo, followup, organizer_keys
from incidents.services.errors import KeyUnavailableError
from incidents.services.followup import ADDITION_FIELD, REPLY_FIELD
from incidents.services.organizer_keys import RotationError
from incidents.services.reports import register_recipient
from tests.conftest import KeyFiles
from tests.factories import (
    StaffAccount,
    csrf_token,
    grant_for,
    make_filed_report,
    make_reply,
    make_user,
    make_volunteer_key,
    receipt_from,
    report_form_data,
)

SYNTHETIC_REPORTS = 300
NOT_PROVEN = "The desk could not prove it holds both keys."


# --------------------------------------------------------------------------- the desk's part


def user_of(account: StaffAccount) -> User:
    """The account's row in the current app context."""
    user = db.session.get(User, account.id)
    assert user is not None
    return user


def challenge_for(app: Flask, account: StaffAccount, new: crypto.PublicKey) -> Any:
    """Ask the server for possession challenges for the current and the new key."""
    with app.app_context():
        return organizer_keys.issue_challenge(
            new,
            keyring=current_keyring(),
            actor=user_of(account),
            pin_secret=app.extensions["incidents.settings"].pin_key,
        )


def answer(challenge: Any, *, current: crypto.PrivateKey, new: crypto.PrivateKey) -> dict[str, str]:
    """What a desk holding both private keys answers."""
    return {
        "current": crypto.answer_possession_challenge(challenge.current, private_key=current),
        "new": crypto.answer_possession_challenge(challenge.new, private_key=new),
    }


def start(app: Flask, account: StaffAccount, answers: dict[str, str]) -> str:
    """Send the answers; returns the incoming key id."""
    with app.app_context():
        return organizer_keys.start_rotation(
            answers,
            keyring=current_keyring(),
            actor=user_of(account),
            pin_secret=current_settings().pin_key,
        )


def begin(
    app: Flask, account: StaffAccount, *, current: crypto.PrivateKey, new: crypto.PrivateKey
) -> str:
    """Challenge, answer and start a rotation from ``current`` to ``new``."""
    challenge = challenge_for(app, account, new.public_key())
    return start(app, account, answer(challenge, current=current, new=new))


def pending(app: Flask, *, limit: int = organizer_keys.PAGE_SIZE) -> tuple[list[Any], int]:
    """A page of wraps still to move, and how many remain."""
    with app.app_context():
        return organizer_keys.pending_wraps(current_keyring(), limit=limit)


def rewrap(page: list[dict[str, str]], *, old: crypto.PrivateKey, new: crypto.PublicKey) -> list:
    """The desk unwraps each pending wrap with the old key and wraps it to the new one."""
    items = []
    for item in page:
        envelope_id = uuid.UUID(item["envelope_id"])
        data_key = crypto.unwrap_data_key(
            unb64(item["wrap"]), report_id=envelope_id, private_key=old
        )
        items.append(
            {
                "report_id": item["report_id"],
                "envelope_id": item["envelope_id"],
                "wrap": b64(crypto.wrap_data_key(data_key, report_id=envelope_id, recipient=new)),
            }
        )
    return items


def store(app: Flask, account: StaffAccount, items: list[dict[str, str]]) -> int:
    """Upload one batch of wraps to the new key."""
    with app.app_context():
        return organizer_keys.store_wraps(items, keyring=current_keyring(), actor=user_of(account))


def rewrap_all(
    app: Flask, account: StaffAccount, *, old: crypto.PrivateKey, new: crypto.PrivateKey
) -> int:
    """Move every pending wrap, a page at a time; returns how many pages it took."""
    pages = 0
    while True:
        page, _remaining = pending(app)
        if not page:
            return pages
        store(app, account, rewrap(page, old=old, new=new.public_key()))
        pages += 1


def finish(app: Flask, account: StaffAccount) -> str:
    """Ask the server to move the pin."""
    with app.app_context():
        settings = current_settings()
        return organizer_keys.finish_rotation(
            keyring=current_keyring(),
            actor=user_of(account),
            configured_pin=settings.organizer_key_id,
            pin_secret=settings.pin_key,
        )


def rotate(
    app: Flask, account: StaffAccount, *, old: crypto.PrivateKey, new: crypto.PrivateKey
) -> None:
    """A whole rotation from ``old`` to ``new``."""
    begin(app, account, current=old, new=new)
    rewrap_all(app, account, old=old, new=new)
    finish(app, account)


def keyring_of(app: Flask) -> Keyring:
    """The keyring in force for ``app``."""
    with app.app_context():
        return current_keyring()


# --------------------------------------------------------------------------- raw tables


def raw(app: Flask, query: str) -> list[tuple[Any, ...]]:
    """Rows of a raw SQL query, with ids as UUIDs and blobs as bytes."""
    with app.app_context():
        rows = db.session.execute(sa.text(query)).all()

    def clean(value: Any) -> Any:
        return bytes(value) if isinstance(value, memoryview | bytearray) else value

    return [tuple(clean(value) for value in row) for row in rows]


def as_uuid(value: Any) -> uuid.UUID:
    """A UUID from what the database returned (a UUID on PostgreSQL, hex text on SQLite)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def opens_with(blob: bytes, *, envelope_id: uuid.UUID, key: crypto.PrivateKey) -> bytes | None:
    """The data key a wrap yields for ``key``, or None if it does not open."""
    try:
        return crypto.unwrap_data_key(blob, report_id=envelope_id, private_key=key)
    except crypto.CryptoError:
        return None


def add_information(app: Flask, receipt: str, text: str) -> uuid.UUID:
    """The witness adds text through the follow-up service (sealed to the keyring in force)."""
    with app.app_context():
        settings = current_settings()
        case = followup.find_case(receipt, receipt_secret=settings.receipt_key)
        return followup.add_information(
            case,
            text=text,
            uploads=None,
            keyring=current_keyring(),
            received_on=datetime.now(UTC).date(),
            instance_path=settings.instance_path,
        )


def witness_files(app: Flask) -> tuple[uuid.UUID, str]:
    """A witness files a report through the form; returns (id, receipt)."""
    witness = app.test_client()
    response = witness.post(
        "/report", data={"csrf_token": csrf_token(witness), **report_form_data()}
    )
    assert response.status_code == 200
    receipt = receipt_from(response)
    with app.app_context():
        found = followup.find_case(receipt, receipt_secret=current_settings().receipt_key)
        return found.report.id, receipt


def wrapped_to(app: Flask, report_id: uuid.UUID) -> set[str]:
    """Key ids the report's data key is wrapped to (raw table)."""
    return {
        str(key_id)
        for found, key_id in raw(app, "SELECT report_id, key_id FROM wraps")
        if as_uuid(found) == report_id
    }


def envelope_wrapped_to(app: Flask, envelope_id: uuid.UUID) -> set[str]:
    """Key ids an envelope's data key is wrapped to (raw table)."""
    return {
        str(key_id)
        for found, key_id in raw(app, "SELECT envelope_id, key_id FROM envelope_wraps")
        if as_uuid(found) == envelope_id
    }


def setting(app: Flask, key: str) -> str | None:
    """A site setting's value."""
    with app.app_context():
        row = db.session.get(SiteSetting, key)
        return row.value if row else None


def audit_actions(app: Flask) -> list[str]:
    """Every audited action, oldest first."""
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.seq)))


# --------------------------------------------------------------------------- the whole rotation


def test_a_rotation_over_hundreds_of_reports_can_be_interrupted_and_leaves_only_the_new_key(
    app: Flask, organizer: KeyFiles
) -> None:
    old, new = organizer.private_key, crypto.PrivateKey.generate()
    old_id, new_id = old.key_id.hex(), new.key_id.hex()
    chief = make_user(app, role="organizer")

    # Given: 300 synthetic reports and four real ones, two with additions, two with replies
    with app.app_context():
        settings = current_settings()
        stored = demo.seed_reports(
            SYNTHETIC_REPORTS,
            keyring=current_keyring(),
            receipt_secret=settings.receipt_key,
            today=datetime.now(UTC).date(),
            seed=7,
        )
    assert stored == SYNTHETIC_REPORTS
    filed = [make_filed_report(app) for _ in range(4)]
    additions = {
        add_information(app, filed[0].receipt, "addition zero"): "addition zero",
        add_information(app, filed[1].receipt, "addition one"): "addition one",
    }
    replies = {
        make_reply(
            app,
            filed[1].report_id,
            receipt=filed[1].receipt,
            body="reply one",
            organizer_key=organizer.public_key,
        ): "reply one",
        make_reply(
            app,
            filed[2].report_id,
            receipt=filed[2].receipt,
            body="reply two",
            organizer_key=organizer.public_key,
        ): "reply two",
    }

    # And: one report granted to a volunteer
    volunteer = make_user(app, role="volunteer")
    volunteer_key = make_volunteer_key(app, volunteer, approved_by=chief)
    with app.app_context():
        cases.assign_report(filed[3].report_id, volunteer_id=volunteer.id, organizer=user_of(chief))
    blob = grant_for(
        app, filed[3].report_id, organizer_key=old, recipient=volunteer_key.public_key()
    )
    with app.app_context():
        cases.record_grant(filed[3].report_id, blob, actor=user_of(chief))
    total = SYNTHETIC_REPORTS + len(filed) + len(additions) + len(replies)

    # When: the organizer's desk proves it holds both keys
    assert begin(app, chief, current=old, new=new) == new_id

    # Then: the new key is incoming, every existing wrap to the old key waits to be moved
    keyring = keyring_of(app)
    assert (keyring.organizer.key_id_hex, keyring.incoming) == (old_id, new.public_key())
    assert pending(app, limit=0)[1] == total
    assert "organizer_key.rotation_start" in audit_actions(app)

    # And: a report and an addition that arrive during the rotation are wrapped to both keys
    during_id, during_receipt = witness_files(app)
    assert wrapped_to(app, during_id) == {old_id, new_id}
    during_addition = add_information(app, during_receipt, "addition during")
    assert envelope_wrapped_to(app, during_addition) == {old_id, new_id}
    assert pending(app, limit=0)[1] == total

    # When: the desk stores one batch and is interrupted
    first_page, _ = pending(app)
    first_batch = rewrap(first_page, old=old, new=new.public_key())
    assert store(app, chief, first_batch) == organizer_keys.PAGE_SIZE
    left = total - organizer_keys.PAGE_SIZE

    # Then: finishing is refused while wraps remain, and nothing moved or was deleted
    with pytest.raises(RotationError) as refused:
        finish(app, chief)
    assert str(refused.value) == f"{left} wraps still need the new key; run the rotation again."
    assert pending(app, limit=0)[1] == left
    keyring = keyring_of(app)
    assert (keyring.organizer.key_id_hex, keyring.incoming) == (old_id, new.public_key())
    assert setting(app, organizer_keys.MOVED_PIN) is None
    old_wraps = [row for row in raw(app, "SELECT key_id FROM wraps") if row[0] == old_id]
    assert len(old_wraps) == SYNTHETIC_REPORTS + len(filed) + 1

    # When: the desk sends its first batch again (it lost the answer), then the rest
    assert store(app, chief, first_batch) == organizer_keys.PAGE_SIZE
    assert pending(app, limit=0)[1] == left
    assert rewrap_all(app, chief, old=old, new=new) == 1
    assert finish(app, chief) == new_id

    # Then: the pin moved: the keyring in force is the new key alone, the old key is retired
    keyring = keyring_of(app)
    assert (keyring.organizer, keyring.incoming) == (new.public_key(), None)
    assert moved_pin(app) == {"from": old_id, "to": new_id}
    assert setting(app, organizer_keys.INCOMING) is None
    with app.app_context():
        old_row = db.session.get(RecipientKey, old_id)
        assert old_row is not None
        assert old_row.is_retired
        with pytest.raises(bundles.DeskKeyError):
            bundles.check_desk_key(user_of(chief), old_id, keyring=current_keyring())
        assert bundles.check_desk_key(user_of(chief), new_id, keyring=current_keyring()) == new_id

    # And: no wrap of any report or envelope is addressed to the old key any more
    wraps = raw(app, "SELECT report_id, key_id, blob FROM wraps")
    envelope_wraps = raw(app, "SELECT envelope_id, report_id, key_id, blob FROM envelope_wraps")
    assert old_id not in {row[1] for row in wraps}
    assert old_id not in {row[2] for row in envelope_wraps}

    # And: the old key opens none of the stored wraps
    assert all(opens_with(row[2], envelope_id=as_uuid(row[0]), key=old) is None for row in wraps)
    assert all(
        opens_with(row[3], envelope_id=as_uuid(row[0]), key=old) is None for row in envelope_wraps
    )

    # And: every report has a wrap to the new key that opens its sealed fields
    new_wraps = {as_uuid(row[0]): row[2] for row in wraps if row[1] == new_id}
    reports = raw(app, "SELECT id, narrative_sealed, place_detail_sealed FROM reports")
    assert len(reports) == SYNTHETIC_REPORTS + len(filed) + 1
    assert set(new_wraps) == {as_uuid(row[0]) for row in reports}
    for report_id, narrative, place in reports:
        report_id = as_uuid(report_id)
        data_key = opens_with(new_wraps[report_id], envelope_id=report_id, key=new)
        assert data_key is not None, report_id
        for name, blob in (("narrative", narrative), ("place_detail", place)):
            assert crypto.open_field(blob, data_key=data_key, report_id=report_id, name=name)

    # And: every addition and reply has a wrap to the new key that opens it
    new_envelope_wraps = {as_uuid(row[0]): row[3] for row in envelope_wraps if row[2] == new_id}
    opened = {}
    for table, column, field in (
        ("additions", "text_sealed", ADDITION_FIELD),
        ("messages", "body_sealed", REPLY_FIELD),
    ):
        for envelope_id, sealed in raw(app, f"SELECT id, {column} FROM {table}"):
            envelope_id = as_uuid(envelope_id)
            data_key = opens_with(new_envelope_wraps[envelope_id], envelope_id=envelope_id, key=new)
            assert data_key is not None
            opened[envelope_id] = crypto.open_field(
                sealed, data_key=data_key, report_id=envelope_id, name=field
            )
    assert opened == {**additions, **replies, during_addition: "addition during"}

    # And: the volunteer's grant and the witness's replies were left alone
    assert wrapped_to(app, filed[3].report_id) == {new_id, volunteer_key.key_id.hex()}
    with app.app_context():
        case = followup.find_case(filed[1].receipt, receipt_secret=current_settings().receipt_key)
        assert [reply.body for reply in followup.replies_for(case)] == ["reply one"]

    # And: a report filed now is wrapped to the new key only
    after_id, _receipt = witness_files(app)
    assert wrapped_to(app, after_id) == {new_id}


# --------------------------------------------------------------------------- proof of possession


@pytest.mark.parametrize(
    "desk",
    [
        "holds only the new key",
        "holds only the current key",
        "swaps the answers",
        "is another organizer",
    ],
)
def test_a_challenge_answered_without_both_keys_is_refused_and_changes_nothing(
    app: Flask, organizer: KeyFiles, desk: str
) -> None:
    # Given: an organizer asks to rotate to a new key
    chief, other = make_user(app, role="organizer"), make_user(app, role="organizer")
    current, new = organizer.private_key, crypto.PrivateKey.generate()
    challenge = challenge_for(app, chief, new.public_key())
    right = answer(challenge, current=current, new=new)
    impostor = crypto.PrivateKey.generate()
    for blob in (challenge.current, challenge.new):
        with pytest.raises(crypto.DecryptionError):
            crypto.answer_possession_challenge(blob, private_key=impostor)

    # When: the desk answers without holding both keys (or someone else answers)
    if desk == "holds only the new key":
        answers, actor = {"current": right["new"], "new": right["new"]}, chief
    elif desk == "holds only the current key":
        answers, actor = {"current": right["current"], "new": right["current"]}, chief
    elif desk == "swaps the answers":
        answers, actor = {"current": right["new"], "new": right["current"]}, chief
    else:
        answers, actor = right, other
    before = audit_actions(app)
    with pytest.raises(RotationError) as refused:
        start(app, actor, answers)

    # Then: it is refused; no key is incoming or registered, and new reports get the old key only
    assert str(refused.value) == NOT_PROVEN
    assert keyring_of(app).incoming is None
    assert setting(app, organizer_keys.INCOMING) is None
    with app.app_context():
        assert db.session.get(RecipientKey, new.key_id.hex()) is None
    assert audit_actions(app) == before
    report_id, _receipt = witness_files(app)
    assert wrapped_to(app, report_id) == {current.key_id.hex()}

    # And: the challenge is spent: even the right answers need a new one now
    with pytest.raises(RotationError) as again:
        start(app, chief, right)
    assert str(again.value) == "Ask for a new challenge first."


def test_the_right_answers_to_a_fresh_challenge_start_the_rotation_after_a_failure(
    app: Flask, organizer: KeyFiles
) -> None:
    chief = make_user(app, role="organizer")
    new = crypto.PrivateKey.generate()
    challenge_for(app, chief, new.public_key())
    with pytest.raises(RotationError):
        start(app, chief, {"current": "0" * 64, "new": "0" * 64})

    assert begin(app, chief, current=organizer.private_key, new=new) == new.key_id.hex()
    assert keyring_of(app).incoming == new.public_key()


def test_a_rotation_cannot_target_the_current_key_nor_overlap_another(
    app: Flask, organizer: KeyFiles
) -> None:
    chief = make_user(app, role="organizer")
    volunteer = make_user(app, role="volunteer")
    first, second = crypto.PrivateKey.generate(), crypto.PrivateKey.generate()

    with pytest.raises(RotationError) as same:
        challenge_for(app, chief, organizer.public_key)
    with pytest.raises(RotationError) as not_organizer:
        challenge_for(app, volunteer, first.public_key())
    begin(app, chief, current=organizer.private_key, new=first)
    with pytest.raises(RotationError) as overlapping:
        challenge_for(app, chief, second.public_key())

    assert str(same.value) == "The new key is the current organizer key."
    assert str(not_organizer.value) == "Only organizers can rotate the organizer key."
    assert str(overlapping.value) == "Another key rotation is already under way; finish it first."
    assert keyring_of(app).incoming == first.public_key()


# --------------------------------------------------------------------------- re-wrapping


def test_wraps_not_addressed_to_the_new_key_or_to_nothing_the_old_key_opens_are_refused(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: a rotation under way over two reports
    chief = make_user(app, role="organizer")
    for _ in range(2):
        make_filed_report(app)
    new = crypto.PrivateKey.generate()
    begin(app, chief, current=organizer.private_key, new=new)
    page, _ = pending(app)
    good = rewrap(page, old=organizer.private_key, new=new.public_key())
    stranger = crypto.PrivateKey.generate().public_key()
    to_stranger = rewrap(page[:1], old=organizer.private_key, new=stranger)
    unknown = {**good[0], "report_id": str(uuid.uuid4()), "envelope_id": str(uuid.uuid4())}

    # When / Then: each bad batch (with a good wrap first) is refused and stores nothing
    for bad, message in (
        (to_stranger[0], "A wrap is not addressed to the new organizer key."),
        (unknown, "A wrap names something the old key does not open."),
    ):
        with pytest.raises(RotationError) as refused:
            store(app, chief, [good[1], bad])
        assert str(refused.value) == message
        assert pending(app, limit=0)[1] == 2
    assert store(app, chief, good) == 2
    assert pending(app, limit=0)[1] == 0


def test_finishing_without_a_rotation_is_refused(app: Flask) -> None:
    chief = make_user(app, role="organizer")
    make_filed_report(app)

    with pytest.raises(RotationError) as refused:
        finish(app, chief)

    assert str(refused.value) == "No key rotation is under way."


# --------------------------------------------------------------------------- the pin


def pinned_app(
    make_app: Callable[[Settings], Flask], settings: Settings, key: crypto.PublicKey, folder: Path
) -> Flask:
    """An application on the same database whose configuration pins ``key``."""
    path = folder / f"{key.key_id_hex}.pub"
    path.write_text(key.to_armor())
    return make_app(
        dataclasses.replace(
            settings, organizer_public_key_path=path, organizer_key_id=key.key_id_hex
        )
    )


def moved_pin(app: Flask) -> dict[str, str]:
    """The moved-pin record without its MAC (which must be there)."""
    record = json.loads(setting(app, organizer_keys.MOVED_PIN) or "{}")
    assert len(record.pop("mac", "")) == 64
    return record


def closed(application: Flask) -> bool:
    """True if the keyring is refused and the witness form answers 503."""
    with application.app_context():
        try:
            current_keyring()
        except KeyUnavailableError:
            refused = True
        else:
            refused = False
    return refused and application.test_client().get("/report").status_code == 503


def test_the_keyring_fails_closed_when_the_configuration_pins_neither_end_of_the_moved_pin(
    app: Flask,
    organizer: KeyFiles,
    settings: Settings,
    make_app: Callable[[Settings], Flask],
    tmp_path: Path,
) -> None:
    # Given: a rotation from the configured key to a second one
    chief = make_user(app, role="organizer")
    second = crypto.PrivateKey.generate()
    rotate(app, chief, old=organizer.private_key, new=second)
    assert moved_pin(app) == {"from": organizer.public_key.key_id_hex, "to": second.key_id.hex()}

    # When: a deployment on this database pins a key the rotation neither started from nor
    # moved to
    unrelated = pinned_app(make_app, settings, crypto.PrivateKey.generate().public_key(), tmp_path)

    # Then: it fails closed: no keyring, the witness form and the API answer 503
    assert closed(unrelated)
    with unrelated.app_context():
        token = api_tokens.issue_token(user_of(chief), label="desk").secret
    api = unrelated.test_client().get(
        "/api/v1/session",
        headers={"Authorization": f"Bearer {token}", "X-Incidents-Key-Id": second.key_id.hex()},
    )
    assert api.status_code == 503
    assert api.get_json() == {
        "error": "unavailable",
        "message": "the server's organizer key is unavailable",
    }

    # And: where the configured pin is the origin or the target, the second key is in force
    assert keyring_of(app).organizer == second.public_key()
    updated = pinned_app(make_app, settings, second.public_key(), tmp_path)
    assert keyring_of(updated).organizer == second.public_key()
    assert updated.test_client().get("/report").status_code == 200


@pytest.mark.parametrize(
    "tampering",
    [
        "moved pin redirected to another key",
        "moved pin made without the pin secret",
        "moved pin checked with another pin secret",
        "moved pin that is not JSON",
        "incoming key written into the database",
    ],
)
def test_rotation_records_written_without_the_pin_secret_close_the_register(
    app: Flask,
    organizer: KeyFiles,
    settings: Settings,
    make_app: Callable[[Settings], Flask],
    tampering: str,
) -> None:
    # Given: a completed rotation (or none), and an attacker's key registered as an organizer key
    chief = make_user(app, role="organizer")
    second = crypto.PrivateKey.generate()
    attacker = crypto.PrivateKey.generate().public_key()
    if tampering.startswith("moved pin"):
        rotate(app, chief, old=organizer.private_key, new=second)
    with app.app_context():
        register_recipient(attacker, role="organizer", today=datetime.now(UTC).date())
        db.session.commit()

    # When: someone with write access to the database (but not the pin secret) alters the records
    checked_by = app
    record = json.loads(setting(app, organizer_keys.MOVED_PIN) or "{}")
    if tampering == "moved pin redirected to another key":
        record["to"] = attacker.key_id_hex
        key, value = organizer_keys.MOVED_PIN, json.dumps(record)
    elif tampering == "moved pin made without the pin secret":
        record["mac"] = "0" * 64
        key, value = organizer_keys.MOVED_PIN, json.dumps(record)
    elif tampering == "moved pin checked with another pin secret":
        key, value = organizer_keys.MOVED_PIN, json.dumps(record)
        checked_by = make_app(dataclasses.replace(settings, pin_secret="another secret " * 4))
    elif tampering == "moved pin that is not JSON":
        key, value = organizer_keys.MOVED_PIN, "to:" + attacker.key_id_hex
    else:
        key = organizer_keys.INCOMING
        value = json.dumps({"key_id": attacker.key_id_hex, "mac": "0" * 64})
    with app.app_context():
        row = db.session.get(SiteSetting, key)
        if row is None:
            db.session.add(SiteSetting(key=key, value=value))
        else:
            row.value = value
        db.session.commit()

    # Then: the register closes rather than seal reports to a key nobody vouched for
    assert closed(checked_by)


def test_two_rotations_in_a_row_keep_the_configured_pin_as_origin(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: the configuration still pins the first organizer key
    chief = make_user(app, role="organizer")
    report_id = make_filed_report(app).report_id
    second, third = crypto.PrivateKey.generate(), crypto.PrivateKey.generate()

    # When: the key is rotated twice
    rotate(app, chief, old=organizer.private_key, new=second)
    rotate(app, chief, old=second, new=third)

    # Then: the third key is in force and the only one the report is wrapped to
    assert keyring_of(app).organizer == third.public_key()
    assert moved_pin(app) == {"from": organizer.public_key.key_id_hex, "to": third.key_id.hex()}
    assert wrapped_to(app, report_id) == {third.key_id.hex()}
    assert app.test_client().get("/report").status_code == 200


def test_a_second_rotation_after_the_configuration_was_updated_keeps_the_register_open(
    app: Flask,
    organizer: KeyFiles,
    settings: Settings,
    make_app: Callable[[Settings], Flask],
    tmp_path: Path,
) -> None:
    # Given: a first rotation, after which the deployment pins the new key in its configuration
    chief = make_user(app, role="organizer")
    report_id = make_filed_report(app).report_id
    second, third = crypto.PrivateKey.generate(), crypto.PrivateKey.generate()
    rotate(app, chief, old=organizer.private_key, new=second)
    updated = pinned_app(make_app, settings, second.public_key(), tmp_path)
    assert keyring_of(updated).organizer == second.public_key()

    # When: the organizers rotate again, from the configured key to a third one
    rotate(updated, chief, old=second, new=third)

    # Then: the third key is in force, the pin records the configured key as its origin, and
    # the witness form stays open
    assert keyring_of(updated).organizer == third.public_key()
    assert moved_pin(updated) == {"from": second.key_id.hex(), "to": third.key_id.hex()}
    assert updated.test_client().get("/report").status_code == 200
    assert wrapped_to(app, report_id) == {third.key_id.hex()}


def test_answers_read_from_the_database_do_not_start_a_rotation(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: an organizer account (its token or session stolen) asks for a challenge to a key
    # the attacker made, and the attacker can read the database but holds no organizer key
    chief = make_user(app, role="organizer")
    attacker = crypto.PrivateKey.generate()
    challenge_for(app, chief, attacker.public_key())
    ((stored,),) = raw(
        app, f"SELECT value FROM site_settings WHERE key = '{organizer_keys.CHALLENGE}'"
    )
    copied = json.loads(stored)

    # When: the attacker sends the values found in the database as the answers
    try:
        start(app, chief, {"current": copied.get("current", ""), "new": copied.get("new", "")})
    except RotationError:
        started = False
    else:
        started = True

    # Then: the rotation must not start: the attacker's key must not receive new reports
    assert not started
    assert keyring_of(app).incoming is None


def test_a_challenge_written_into_the_database_does_not_start_a_rotation(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: an attacker with database write access and an organizer's session stores a
    # challenge whose answers they chose, for a key of their own
    chief = make_user(app, role="organizer")
    attacker = crypto.PrivateKey.generate()
    challenge_for(app, chief, attacker.public_key())
    ((stored,),) = raw(
        app, f"SELECT value FROM site_settings WHERE key = '{organizer_keys.CHALLENGE}'"
    )
    forged = json.loads(stored)
    forged.update(current=hashlib.sha256(b"chosen").hexdigest(), new=forged["current"])
    with app.app_context():
        db.session.execute(
            sa.text("UPDATE site_settings SET value = :value WHERE key = :key"),
            {"value": json.dumps(forged), "key": organizer_keys.CHALLENGE},
        )
        db.session.commit()

    # When: they answer their own challenge
    with pytest.raises(RotationError):
        start(app, chief, {"current": "chosen", "new": "chosen"})

    # Then: no rotation started
    assert keyring_of(app).incoming is None


def test_a_swapped_public_key_of_the_incoming_key_closes_the_register(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: a rotation under way to a new organizer key
    chief = make_user(app, role="organizer")
    new = crypto.PrivateKey.generate()
    begin(app, chief, current=organizer.private_key, new=new)
    assert keyring_of(app).incoming == new.public_key()

    # When: someone replaces the stored public key bytes of that key id with their own key
    attacker = crypto.PrivateKey.generate().public_key()
    with app.app_context():
        db.session.execute(
            sa.text("UPDATE recipient_keys SET public_key = :key WHERE key_id = :id"),
            {"key": attacker.to_bytes(), "id": new.key_id.hex()},
        )
        db.session.commit()

    # Then: the server refuses to seal to it: the witness form closes (fail closed)
    assert closed(app)
