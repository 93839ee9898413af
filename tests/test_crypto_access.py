"""Volunteers see only their cases, and the reason is cryptographic.

The server's filters (assignments, bundles for one key) are bookkeeping. These tests ignore them:
they read the raw tables (reports, wraps, additions, messages, notes, envelope_wraps) as someone
holding a copy of the database would, and try every stored wrap with each volunteer's private
key. A key opens exactly the reports and envelopes that were wrapped to it, and no data key it
obtains opens anything else. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from incidents import crypto
from incidents.appstate import current_keyring, current_settings
from incidents.db import db
from incidents.models import EnvelopeWrap, RecipientKey, User, Wrap
from incidents.services import cases, desk_outputs, followup, recipients
from tests.conftest import KeyFiles
from tests.factories import (
    StaffAccount,
    make_filed_report,
    make_reply,
    make_user,
    make_volunteer_key,
)

FIELDS = {"additions": "text", "messages": "body", "notes": "body"}


def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def as_uuid(value: Any) -> uuid.UUID:
    """A UUID from what the database returned (a UUID on PostgreSQL, hex text on SQLite)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def raw(app: Flask, query: str) -> list[tuple[Any, ...]]:
    """Rows of a raw SQL query, blobs as bytes."""
    with app.app_context():
        rows = db.session.execute(sa.text(query)).all()
    return [
        tuple(bytes(value) if isinstance(value, memoryview | bytearray) else value for value in row)
        for row in rows
    ]


def apply_as(app: Flask, account: StaffAccount, outputs: dict[str, Any]) -> None:
    """Apply desk outputs as ``account``."""
    with app.app_context():
        user = db.session.get(User, account.id)
        assert user is not None
        desk_outputs.apply_outputs(
            outputs,
            user=user,
            keyring=current_keyring(),
            instance_path=current_settings().instance_path,
        )


def full_grant(
    app: Flask, report_id: uuid.UUID, *, organizer_key: crypto.PrivateKey, to: crypto.PublicKey
) -> dict[str, Any]:
    """The organizer's desk wraps the report key and every envelope key of the case to ``to``."""
    organizer_id = organizer_key.key_id.hex()
    with app.app_context():
        wrap = db.session.get(Wrap, (report_id, organizer_id))
        assert wrap is not None
        report_key = crypto.unwrap_data_key(
            wrap.blob, report_id=report_id, private_key=organizer_key
        )
        envelopes = {}
        for row in db.session.scalars(
            sa.select(EnvelopeWrap).where(
                EnvelopeWrap.report_id == report_id, EnvelopeWrap.key_id == organizer_id
            )
        ):
            key = crypto.unwrap_data_key(
                row.blob, report_id=row.envelope_id, private_key=organizer_key
            )
            envelopes[str(row.envelope_id)] = b64(
                crypto.wrap_data_key(key, report_id=row.envelope_id, recipient=to)
            )
    return {
        "report_id": str(report_id),
        "wrap": b64(crypto.wrap_data_key(report_key, report_id=report_id, recipient=to)),
        "envelopes": envelopes,
    }


def add_information(app: Flask, receipt: str, text: str) -> uuid.UUID:
    """The witness adds text to their report."""
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


def unwrap(blob: bytes, envelope_id: uuid.UUID, key: crypto.PrivateKey) -> bytes | None:
    """The data key ``blob`` yields for ``key`` when bound to ``envelope_id``, else None."""
    try:
        return crypto.unwrap_data_key(blob, report_id=envelope_id, private_key=key)
    except crypto.CryptoError:
        return None


def open_text(blob: bytes, *, keys: Iterable[bytes], envelope_id: uuid.UUID, name: str) -> list:
    """The texts that any of ``keys`` opens ``blob`` to (empty if none does)."""
    texts = []
    for data_key in keys:
        try:
            texts.append(
                crypto.open_field(blob, data_key=data_key, report_id=envelope_id, name=name)
            )
        except crypto.CryptoError:
            continue
    return texts


def what_a_key_opens(app: Flask, key: crypto.PrivateKey) -> dict[str, dict[uuid.UUID, str]]:
    """Everything ``key`` opens in the raw tables, trying every stored wrap against every
    report and envelope (a wrap moved to another row must not help either)."""
    wrap_blobs = [row[0] for row in raw(app, "SELECT blob FROM wraps")]
    wrap_blobs += [row[0] for row in raw(app, "SELECT blob FROM envelope_wraps")]
    reports = {
        as_uuid(report_id): blob
        for report_id, blob in raw(app, "SELECT id, narrative_sealed FROM reports")
    }
    envelopes = {}
    for table, field in FIELDS.items():
        column = "text_sealed" if table == "additions" else "body_sealed"
        for envelope_id, blob in raw(app, f"SELECT id, {column} FROM {table}"):
            envelopes[as_uuid(envelope_id)] = (blob, field)

    data_keys: dict[uuid.UUID, bytes] = {}
    for envelope_id in [*reports, *envelopes]:
        for blob in wrap_blobs:
            data_key = unwrap(blob, envelope_id, key)
            if data_key is not None:
                data_keys[envelope_id] = data_key
    everything = list(data_keys.values())

    opened: dict[str, dict[uuid.UUID, str]] = {"reports": {}, "envelopes": {}}
    for report_id, blob in reports.items():
        texts = open_text(blob, keys=everything, envelope_id=report_id, name="narrative")
        assert len(texts) <= 1
        if texts:
            opened["reports"][report_id] = texts[0]
    for envelope_id, (blob, field) in envelopes.items():
        texts = open_text(blob, keys=everything, envelope_id=envelope_id, name=field)
        assert len(texts) <= 1
        if texts:
            opened["envelopes"][envelope_id] = texts[0]
    # a data key that was obtained opens only its own report or envelope
    assert set(opened["reports"]) | set(opened["envelopes"]) == set(data_keys)
    return opened


@pytest.fixture
def register(app: Flask, organizer: KeyFiles) -> dict[str, Any]:
    """Six reports; volunteers "A" and "B" each granted some, "C" assigned one but never
    granted; additions, a reply and notes on some of them."""
    chief = make_user(app, role="organizer")
    people = {name: make_user(app, role="volunteer") for name in "ABC"}
    keys = {
        name: make_volunteer_key(app, account, approved_by=chief)
        for name, account in people.items()
    }
    filed = [make_filed_report(app, narrative=f"Report number {n}.") for n in range(6)]
    ids = [item.report_id for item in filed]
    texts: dict[uuid.UUID, str] = {rid: f"Report number {n}." for n, rid in enumerate(ids)}

    # additions on reports 0, 2, 4 and 5, and a reply on report 1, before any grant
    for number in (0, 2, 4, 5):
        text = f"Addition to report {number}."
        texts[add_information(app, filed[number].receipt, text)] = text
    reply = make_reply(
        app,
        ids[1],
        receipt=filed[1].receipt,
        body="Reply on report 1.",
        organizer_key=organizer.public_key,
    )
    texts[reply] = "Reply on report 1."

    # A works 0, 1, 4; B works 2, 3, 4; C is assigned 5 but gets no grant
    assignments = {"A": (0, 1, 4), "B": (2, 3, 4), "C": (5,)}
    with app.app_context():
        organizer_row = db.session.get(User, chief.id)
        assert organizer_row is not None
        for name, numbers in assignments.items():
            for number in numbers:
                cases.assign_report(
                    ids[number], volunteer_id=people[name].id, organizer=organizer_row
                )
    apply_as(
        app,
        chief,
        {
            "grants": [
                full_grant(
                    app,
                    ids[number],
                    organizer_key=organizer.private_key,
                    to=keys[name].public_key(),
                )
                for name in "AB"
                for number in assignments[name]
            ]
        },
    )

    # A writes a note on report 4 for the organizer and for A only
    note_id = uuid.uuid4()
    sealed = crypto.seal_report(
        {"body": "A's own note on report 4."},
        report_id=note_id,
        recipients=[organizer.public_key, keys["A"].public_key()],
    )
    apply_as(
        app,
        people["A"],
        {
            "notes": [
                {
                    "report_id": str(ids[4]),
                    "id": str(note_id),
                    "sealed": b64(sealed.fields["body"]),
                    "wraps": {key_id.hex(): b64(blob) for key_id, blob in sealed.wraps.items()},
                }
            ]
        },
    )
    texts[note_id] = "A's own note on report 4."

    envelope_of = {
        number: next(
            envelope_id
            for envelope_id, text in texts.items()
            if text == f"Addition to report {number}."
        )
        for number in (0, 2, 4, 5)
    }
    return {
        "ids": ids,
        "keys": keys,
        "texts": texts,
        "envelope_of": envelope_of,
        "reply": reply,
        "note": note_id,
        "people": people,
        "chief": chief,
    }


def test_each_volunteer_key_opens_exactly_the_reports_wrapped_to_it(
    app: Flask, register: dict[str, Any]
) -> None:
    # Given: the register above, read straight from its tables
    ids, keys, texts = register["ids"], register["keys"], register["texts"]

    # When: each volunteer's private key is tried on every stored wrap and sealed value
    opened = {name: what_a_key_opens(app, key) for name, key in keys.items()}

    # Then: A opens reports 0, 1 and 4, B opens 2, 3 and 4, C (assigned, not granted) nothing
    assert opened["A"]["reports"] == {ids[n]: texts[ids[n]] for n in (0, 1, 4)}
    assert opened["B"]["reports"] == {ids[n]: texts[ids[n]] for n in (2, 3, 4)}
    assert opened["C"] == {"reports": {}, "envelopes": {}}


def test_each_volunteer_key_opens_exactly_the_envelopes_wrapped_to_it(
    app: Flask, register: dict[str, Any]
) -> None:
    keys, texts, envelope_of = register["keys"], register["texts"], register["envelope_of"]

    opened = {name: what_a_key_opens(app, key)["envelopes"] for name, key in keys.items()}

    # A: the additions to its reports 0 and 4, the reply on report 1 and its own note
    expected_a = [envelope_of[0], envelope_of[4], register["reply"], register["note"]]
    assert opened["A"] == {envelope_id: texts[envelope_id] for envelope_id in expected_a}
    # B: the additions to its reports 2 and 4, but not A's note on the report they share
    expected_b = [envelope_of[2], envelope_of[4]]
    assert opened["B"] == {envelope_id: texts[envelope_id] for envelope_id in expected_b}
    assert opened["C"] == {}


def test_the_organizer_key_opens_everything_and_wraps_name_their_recipients(
    app: Flask, organizer: KeyFiles, register: dict[str, Any]
) -> None:
    opened = what_a_key_opens(app, organizer.private_key)

    assert opened["reports"] == {rid: register["texts"][rid] for rid in register["ids"]}
    assert set(opened["envelopes"].values()) == {
        text
        for envelope_id, text in register["texts"].items()
        if envelope_id not in register["ids"]
    }
    # every stored wrap names the key that opens it; none names a volunteer without a grant
    named = {str(row[0]) for row in raw(app, "SELECT key_id FROM wraps")}
    named |= {str(row[0]) for row in raw(app, "SELECT key_id FROM envelope_wraps")}
    keys = register["keys"]
    assert keys["A"].key_id.hex() in named
    assert keys["B"].key_id.hex() in named
    assert keys["C"].key_id.hex() not in named


def test_revoking_a_volunteer_removes_what_their_key_could_open(
    app: Flask, register: dict[str, Any]
) -> None:
    # Given: B can open reports 2, 3 and 4
    ids, keys = register["ids"], register["keys"]
    assert set(what_a_key_opens(app, keys["B"])["reports"]) == {ids[2], ids[3], ids[4]}

    # When: the organizer takes report 4 back from B
    with app.app_context():
        organizer = db.session.get(User, register["chief"].id)
        assert organizer is not None
        cases.unassign_report(ids[4], volunteer_id=register["people"]["B"].id, organizer=organizer)

    # Then: B's key opens nothing of report 4 in the tables any more, and A's still does
    after = what_a_key_opens(app, keys["B"])
    assert set(after["reports"]) == {ids[2], ids[3]}
    assert set(after["envelopes"]) == {register["envelope_of"][2]}
    assert ids[4] in what_a_key_opens(app, keys["A"])["reports"]


def test_a_retired_volunteer_key_opens_nothing_in_the_tables(
    app: Flask, register: dict[str, Any]
) -> None:
    # Given: A's key opens reports 0, 1 and 4
    ids, keys = register["ids"], register["keys"]
    assert set(what_a_key_opens(app, keys["A"])["reports"]) == {ids[0], ids[1], ids[4]}

    # When: A's laptop is lost and the organizer retires A's key
    with app.app_context():
        organizer = db.session.get(User, register["chief"].id)
        assert organizer is not None
        recipients.retire_key(keys["A"].key_id.hex(), actor=organizer)

    # Then: whoever holds that key (and a copy of the database) opens nothing
    assert what_a_key_opens(app, keys["A"]) == {"reports": {}, "envelopes": {}}
    assert set(what_a_key_opens(app, keys["B"])["reports"]) == {ids[2], ids[3], ids[4]}


def test_a_key_retired_by_approving_the_volunteers_new_key_opens_nothing_in_the_tables(
    app: Flask, register: dict[str, Any]
) -> None:
    # Given: A's key opens reports 0, 1 and 4
    ids, keys = register["ids"], register["keys"]
    assert set(what_a_key_opens(app, keys["A"])["reports"]) == {ids[0], ids[1], ids[4]}

    # When: A registers a new key (the old laptop is gone) and the organizer approves it, which
    # retires the old key
    make_volunteer_key(app, register["people"]["A"], approved_by=register["chief"])
    with app.app_context():
        old = db.session.get(RecipientKey, keys["A"].key_id.hex())
        assert old is not None
        assert old.is_retired

    # Then: the retired key should open nothing, as after an explicit retirement
    assert what_a_key_opens(app, keys["A"]) == {"reports": {}, "envelopes": {}}
