"""Desk outputs (incidents.services.desk_outputs): grants, notes, replies, statuses, rotations.

Every output here is made with real cryptography, as a desk makes it: fields sealed under fresh
data keys, data keys wrapped to the organizer key, to volunteers' keys and to the witness key
derived from the receipt. A batch is one transaction and may be sent again. Every test runs on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from incidents import crypto
from incidents.appstate import current_keyring, current_settings
from incidents.bundle import BundleError, sealed_digest
from incidents.db import Base, db
from incidents.models import (
    SEALED_FIELDS,
    Addition,
    Attachment,
    AuditEvent,
    EnvelopeWrap,
    Message,
    Note,
    Report,
    StatusChange,
    User,
    Wrap,
)
from incidents.services import bundles, casefile, cases, desk_outputs, followup
from incidents.services.attachments import META_FLOOR, meta_field_name
from incidents.services.desk_outputs import VOLUNTEER_TRANSITIONS, OutputError, OutputSummary
from incidents.services.errors import DomainError, NoWrapForKeyError
from incidents.services.followup import ADDITION_FIELD, NOTE_FIELD, REPLY_FIELD
from incidents.uploads import PARTIAL_DIRECTORY, attachment_directory
from tests.conftest import KeyFiles
from tests.factories import (
    StaffAccount,
    csrf_token,
    jpeg_with_gps,
    make_filed_report,
    make_user,
    make_volunteer_key,
    minimal_pdf,
    receipt_from,
    report_form_data,
)

NARRATIVE = "Two men followed me from the rally."
ENVELOPE_FIELDS = {"additions": ADDITION_FIELD, "replies": REPLY_FIELD, "notes": NOTE_FIELD}


# --------------------------------------------------------------------------- the case


@dataclass(frozen=True)
class Case:
    """A report assigned to a volunteer with an approved key (not granted yet)."""

    report_id: uuid.UUID
    receipt: str
    organizer: StaffAccount
    volunteer: StaffAccount
    volunteer_key: crypto.PrivateKey


def new_volunteer(app: Flask, organizer: StaffAccount) -> tuple[StaffAccount, crypto.PrivateKey]:
    """A volunteer with an approved key."""
    account = make_user(app, role="volunteer")
    return account, make_volunteer_key(app, account, approved_by=organizer)


def assign(app: Flask, report_id: uuid.UUID, volunteer: StaffAccount, by: StaffAccount) -> None:
    """The organizer assigns the report to the volunteer."""
    with app.app_context():
        organizer = db.session.get(User, by.id)
        assert organizer is not None
        cases.assign_report(report_id, volunteer_id=volunteer.id, organizer=organizer)


@pytest.fixture
def case(app: Flask) -> Case:
    """A filed report assigned to a volunteer."""
    filed = make_filed_report(app)
    organizer = make_user(app, role="organizer")
    volunteer, key = new_volunteer(app, organizer)
    assign(app, filed.report_id, volunteer, organizer)
    return Case(filed.report_id, filed.receipt, organizer, volunteer, key)


# --------------------------------------------------------------------------- applying outputs


def apply(app: Flask, account: StaffAccount, outputs: dict[str, Any]) -> OutputSummary:
    """Apply a batch as ``account`` would upload it."""
    with app.app_context():
        user = db.session.get(User, account.id)
        assert user is not None
        return desk_outputs.apply_outputs(
            outputs,
            user=user,
            keyring=current_keyring(),
            instance_path=current_settings().instance_path,
        )


def refusal(app: Flask, account: StaffAccount, outputs: dict[str, Any]) -> str:
    """Apply a batch that must be refused (OutputError, or CaseError for grants); return the
    refusal's message."""
    with pytest.raises(DomainError) as raised:
        apply(app, account, outputs)
    return str(raised.value)


def counts(summary: OutputSummary) -> dict[str, int]:
    """The counts of a summary."""
    return summary.to_dict()


def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Bytes of base64 text."""
    return base64.b64decode(text)


def row_counts(app: Flask) -> dict[str, int]:
    """Rows in every table of the schema."""
    with app.app_context():
        return {
            table.name: db.session.scalar(sa.select(sa.func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def files_under(app: Flask) -> list[str]:
    """Every file below the attachment folder (``partial/`` included)."""
    with app.app_context():
        directory = attachment_directory(current_settings().instance_path)
    if not directory.exists():
        return []
    return sorted(
        str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()
    )


def report_status(app: Flask, report_id: uuid.UUID) -> str:
    """The stored status of a report."""
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report is not None
        return report.status


def witness_public(app: Flask, report_id: uuid.UUID) -> crypto.PublicKey:
    """The witness public key stored with the report."""
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report is not None
        return crypto.PublicKey.from_bytes(report.witness_public_key)


# --------------------------------------------------------------------------- desk-made items


def envelope(
    report_id: uuid.UUID,
    text: str,
    *,
    recipients: list[crypto.PublicKey],
    envelope_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """A note or reply sealed on a desk under its own data key, wrapped to ``recipients``."""
    envelope_id = envelope_id or uuid.uuid4()
    data_key = crypto.new_data_key()
    return {
        "report_id": str(report_id),
        "id": str(envelope_id),
        "sealed": b64(
            crypto.seal_field(text, data_key=data_key, report_id=envelope_id, name=NOTE_FIELD)
        ),
        "wraps": {
            key.key_id_hex: b64(
                crypto.wrap_data_key(data_key, report_id=envelope_id, recipient=key)
            )
            for key in recipients
        },
    }


def grant(
    app: Flask,
    report_id: uuid.UUID,
    *,
    organizer_key: crypto.PrivateKey,
    to: crypto.PublicKey,
    with_envelopes: bool = True,
) -> dict[str, Any]:
    """The organizer's desk unwraps the report key (and every envelope key) and wraps them to
    ``to``."""
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report is not None
        bundle = bundles.case_bundle(report, key_id=organizer_key.key_id.hex(), keyring=None)
    keys = casefile.bundle_data_keys(bundle, private_key=organizer_key)
    envelopes = {
        str(envelope_id): b64(crypto.wrap_data_key(key, report_id=envelope_id, recipient=to))
        for envelope_id, key in keys.items()
        if envelope_id != report_id and with_envelopes
    }
    return {
        "report_id": str(report_id),
        "wrap": b64(crypto.wrap_data_key(keys[report_id], report_id=report_id, recipient=to)),
        "envelopes": envelopes,
    }


def rotation(
    app: Flask,
    report_id: uuid.UUID,
    *,
    organizer_key: crypto.PrivateKey,
    recipients: list[crypto.PublicKey],
) -> dict[str, Any]:
    """What the organizer's desk sends to rotate a case key.

    The desk opens the bundle with the organizer key and re-seals every field, addition, reply
    and note under fresh data keys wrapped to ``recipients`` (and, for replies, to the witness
    key); each attachment is decrypted and encrypted again under a new id with the new key of
    its envelope (``replaces`` names the old id).
    """
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report is not None
        bundle = bundles.case_bundle(report, key_id=organizer_key.key_id.hex(), keyring=None)
        directory = attachment_directory(current_settings().instance_path)
        stored_files = {
            entry["id"]: (directory / uuid.UUID(entry["id"]).hex).read_bytes()
            for entry in bundle["attachments"]
        }
    old = casefile.bundle_data_keys(bundle, private_key=organizer_key)
    new = {envelope_id: crypto.new_data_key() for envelope_id in old}
    witness = crypto.PublicKey.from_bytes(unb64(bundle["witness_public_key"]))

    def wraps(envelope_id: uuid.UUID, keys: list[crypto.PublicKey]) -> dict[str, str]:
        return {
            key.key_id_hex: b64(
                crypto.wrap_data_key(new[envelope_id], report_id=envelope_id, recipient=key)
            )
            for key in keys
        }

    def reseal(blob: str, envelope_id: uuid.UUID, name: str) -> str:
        text = crypto.open_field(
            unb64(blob), data_key=old[envelope_id], report_id=envelope_id, name=name
        )
        return b64(
            crypto.seal_field(text, data_key=new[envelope_id], report_id=envelope_id, name=name)
        )

    envelopes = []
    for kind, name in ENVELOPE_FIELDS.items():
        for entry in bundle[kind]:
            envelope_id = uuid.UUID(entry["id"])
            extra = [witness] if kind == "replies" else []
            envelopes.append(
                {
                    "id": entry["id"],
                    "sealed": reseal(entry["sealed"], envelope_id, name),
                    "wraps": wraps(envelope_id, [*recipients, *extra]),
                }
            )
    attachments = []
    for entry in bundle["attachments"]:
        old_id, envelope_id = uuid.UUID(entry["id"]), uuid.UUID(entry["envelope_id"])
        meta = crypto.open_bytes(
            unb64(entry["meta"]),
            data_key=old[envelope_id],
            report_id=envelope_id,
            name=meta_field_name(old_id),
        )
        plain = io.BytesIO()
        crypto.open_stream(
            io.BytesIO(stored_files[entry["id"]]),
            key=crypto.attachment_key(old[envelope_id], attachment_id=old_id),
            sink=plain,
            size=json.loads(meta)["size"],
        )
        new_id = uuid.uuid4()
        sink = io.BytesIO()
        sealer = crypto.StreamSealer(
            crypto.attachment_key(new[envelope_id], attachment_id=new_id), sink=sink
        )
        sealer.write(plain.getvalue())
        sealer.finish()
        attachments.append(
            {
                "id": str(new_id),
                "replaces": str(old_id),
                "data": b64(sink.getvalue()),
                "meta": b64(
                    crypto.seal_bytes(
                        meta,
                        data_key=new[envelope_id],
                        report_id=envelope_id,
                        name=meta_field_name(new_id),
                        floor=META_FLOOR,
                    )
                ),
            }
        )
    return {
        "report_id": str(report_id),
        "base": sealed_digest(bundle["sealed"]),
        "sealed": {name: reseal(blob, report_id, name) for name, blob in bundle["sealed"].items()},
        "wraps": wraps(report_id, recipients),
        "envelopes": envelopes,
        "attachments": attachments,
    }


# --------------------------------------------------------------------------- witness actions


def witness_files(app: Flask, files: list[tuple[bytes, str]]) -> tuple[uuid.UUID, str]:
    """A witness files a report with attachments through the form; returns (id, receipt)."""
    witness = app.test_client()
    data: dict[str, Any] = {
        "csrf_token": csrf_token(witness, "/report"),
        **report_form_data(),
        "attachments": [(io.BytesIO(body), name) for body, name in files],
    }
    response = witness.post("/report", data=data, content_type="multipart/form-data")
    assert response.status_code == 200
    receipt = receipt_from(response)
    with app.app_context():
        found = followup.find_case(receipt, receipt_secret=current_settings().receipt_key)
        return found.report.id, receipt


def witness_adds(app: Flask, receipt: str, text: str, files: list[tuple[bytes, str]]) -> None:
    """The witness adds text and files through the follow-up form."""
    witness = app.test_client()
    data: dict[str, Any] = {
        "csrf_token": csrf_token(witness, "/followup"),
        "receipt": receipt,
        "text": text,
        "attachments": [(io.BytesIO(body), name) for body, name in files],
    }
    response = witness.post("/followup/add", data=data, content_type="multipart/form-data")
    assert response.status_code == 200


def witness_reads(app: Flask, receipt: str) -> list[str]:
    """The replies the witness sees with the receipt (decrypted with the derived witness key)."""
    with app.app_context():
        found = followup.find_case(receipt, receipt_secret=current_settings().receipt_key)
        return [reply.body for reply in followup.replies_for(found)]


# --------------------------------------------------------------------------- notes


def test_a_note_is_stored_sealed_and_opens_for_the_organizer_and_the_volunteer(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    # Given: the case is granted to the volunteer
    apply(
        app,
        case.organizer,
        {
            "grants": [
                grant(
                    app,
                    case.report_id,
                    organizer_key=organizer.private_key,
                    to=case.volunteer_key.public_key(),
                )
            ]
        },
    )
    text = f"Called the witness, NOTE-{secrets.token_hex(6)}."

    # When: the volunteer's desk uploads a note sealed to the organizer and to itself
    item = envelope(
        case.report_id, text, recipients=[organizer.public_key, case.volunteer_key.public_key()]
    )
    summary = apply(app, case.volunteer, {"notes": [item]})

    # Then: one note is stored, as ciphertext only, with exactly those two wraps
    assert counts(summary)["notes"] == 1
    with app.app_context():
        row = db.session.scalars(sa.select(Note)).one()
        wrapped_to = set(
            db.session.scalars(
                sa.select(EnvelopeWrap.key_id).where(EnvelopeWrap.envelope_id == row.id)
            )
        )
        assert (row.id, row.report_id, row.seq, row.author_id) == (
            uuid.UUID(item["id"]),
            case.report_id,
            1,
            case.volunteer.id,
        )
        assert text.encode() not in row.body_sealed
        assert text.split(", ")[1].encode() not in row.body_sealed
    assert wrapped_to == {organizer.public_key.key_id_hex, case.volunteer_key.key_id.hex()}

    # And: both keys open it, signed with the volunteer's name
    today = datetime.now(UTC).date().isoformat()
    with app.app_context():
        for key in (organizer.private_key, case.volunteer_key):
            notes = casefile.open_case(case.report_id, private_key=key).notes
            assert notes == [casefile.OpenedNote(1, today, case.volunteer.username, text)]


def test_a_note_not_readable_by_the_organizer_is_refused(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    before = row_counts(app)
    item = envelope(case.report_id, "only for me", recipients=[case.volunteer_key.public_key()])

    message = refusal(app, case.volunteer, {"notes": [item]})

    assert message == "A sealed note or reply must be readable by the organizer."
    assert row_counts(app) == before


def test_a_wrap_filed_under_another_key_id_is_refused(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    # Given: a note whose volunteer entry actually holds a second wrap to the organizer key
    item = envelope(case.report_id, "swapped", recipients=[organizer.public_key])
    item["wraps"][case.volunteer_key.key_id.hex()] = item["wraps"][organizer.public_key.key_id_hex]
    before = row_counts(app)

    # When / Then: it is refused because the wrap's header names another key
    message = refusal(app, case.volunteer, {"notes": [item]})

    assert message == "A wrap does not match the key it is filed under."
    assert row_counts(app) == before


@pytest.mark.parametrize("recipient", ["unassigned volunteer", "unapproved key", "witness key"])
def test_a_note_wrapped_to_a_key_that_may_not_read_the_case_is_refused(
    app: Flask, case: Case, organizer: KeyFiles, recipient: str
) -> None:
    # Given: a key that is not the organizer's nor an assigned volunteer's approved key
    if recipient == "unassigned volunteer":
        stranger = new_volunteer(app, case.organizer)[1].public_key()
    elif recipient == "unapproved key":
        stranger = make_volunteer_key(app, make_user(app, role="volunteer")).public_key()
    else:
        stranger = witness_public(app, case.report_id)
    before = row_counts(app)

    # When: a note is also wrapped to it
    item = envelope(case.report_id, "psst", recipients=[organizer.public_key, stranger])
    message = refusal(app, case.volunteer, {"notes": [item]})

    # Then: the note is refused and nothing is stored
    assert message == "A wrap is addressed to a key that may not read this case."
    assert row_counts(app) == before


def test_a_note_on_a_case_the_volunteer_does_not_work_is_refused(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    other = make_filed_report(app).report_id
    item = envelope(other, "not mine", recipients=[organizer.public_key])

    assert refusal(app, case.volunteer, {"notes": [item]}) == (
        "A desk output concerns a case you cannot work."
    )
    assert row_counts(app)["notes"] == 0


# --------------------------------------------------------------------------- replies


def test_a_reply_must_be_wrapped_to_the_witness_key_and_the_witness_reads_it(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    # Given: a reply sealed to the organizer only
    text = f"We will call you on Monday, REPLY-{secrets.token_hex(4)}."
    unreadable = envelope(case.report_id, text, recipients=[organizer.public_key])

    # When / Then: it is refused
    message = refusal(app, case.organizer, {"replies": [unreadable]})
    assert message == "A sealed note or reply must be readable by the organizer."
    assert row_counts(app)["messages"] == 0

    # When: the reply is also wrapped to the witness key (derived from the receipt on the desk)
    witness_key = crypto.derive_witness_secrets(case.receipt).witness_key
    assert witness_key.public_key() == witness_public(app, case.report_id)
    item = envelope(
        case.report_id, text, recipients=[organizer.public_key, witness_key.public_key()]
    )
    summary = apply(app, case.organizer, {"replies": [item]})

    # Then: it is stored, and the key derived from the receipt opens the stored ciphertext
    assert counts(summary)["replies"] == 1
    reply_id = uuid.UUID(item["id"])
    with app.app_context():
        message_row = db.session.get(Message, reply_id)
        wrap = db.session.get(EnvelopeWrap, (reply_id, witness_key.key_id.hex()))
        assert message_row is not None
        assert wrap is not None
        opened = crypto.open_report(
            {REPLY_FIELD: message_row.body_sealed},
            report_id=reply_id,
            wrap=wrap.blob,
            private_key=witness_key,
        )
    assert opened == {REPLY_FIELD: text}

    # And: the witness sees it on their return visit
    assert witness_reads(app, case.receipt) == [text]


def test_a_reply_wrapped_to_another_witness_is_refused(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    other_witness = crypto.derive_witness_secrets(crypto.new_receipt()).witness_key.public_key()
    item = envelope(case.report_id, "hello", recipients=[organizer.public_key, other_witness])

    message = refusal(app, case.organizer, {"replies": [item]})

    assert message == "A wrap is addressed to a key that may not read this case."
    assert witness_reads(app, case.receipt) == []


# --------------------------------------------------------------------------- grants


def test_a_grant_with_envelope_wraps_opens_the_whole_case_to_the_volunteer(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    # Given: the case has an addition from the witness, a reply and a note, none for the
    # volunteer yet
    addition = f"ADDITION-{secrets.token_hex(4)}"
    witness_adds(app, case.receipt, addition, [])
    reply, note = f"REPLY-{secrets.token_hex(4)}", f"NOTE-{secrets.token_hex(4)}"
    witness_key = witness_public(app, case.report_id)
    apply(
        app,
        case.organizer,
        {
            "replies": [
                envelope(case.report_id, reply, recipients=[organizer.public_key, witness_key])
            ],
            "notes": [envelope(case.report_id, note, recipients=[organizer.public_key])],
        },
    )
    with app.app_context(), pytest.raises(NoWrapForKeyError):
        casefile.open_case(case.report_id, private_key=case.volunteer_key)

    # When: the organizer grants only the report key
    to = case.volunteer_key.public_key()
    only_report = grant(
        app, case.report_id, organizer_key=organizer.private_key, to=to, with_envelopes=False
    )
    assert counts(apply(app, case.organizer, {"grants": [only_report]}))["grants"] == 1

    # Then: the volunteer opens the report, but nothing sealed under the envelopes' own keys
    with app.app_context():
        partial = casefile.open_case(case.report_id, private_key=case.volunteer_key)
    assert partial.sealed["narrative"] == NARRATIVE
    assert (partial.additions, partial.replies, partial.notes) == ([], [], [])

    # When: the organizer grants again with the envelope wraps
    full = grant(app, case.report_id, organizer_key=organizer.private_key, to=to)
    assert len(full["envelopes"]) == 3
    assert counts(apply(app, case.organizer, {"grants": [full]}))["grants"] == 1

    # Then: the volunteer opens the addition, the reply and the note too
    with app.app_context():
        opened = casefile.open_case(case.report_id, private_key=case.volunteer_key)
        wraps_to_volunteer = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(EnvelopeWrap)
            .where(EnvelopeWrap.key_id == to.key_id_hex)
        )
    assert [item.text for item in opened.additions] == [addition]
    assert [item.body for item in opened.replies] == [reply]
    assert [item.body for item in opened.notes] == [note]
    assert wraps_to_volunteer == 3


def test_a_grant_is_refused_when_its_envelope_wraps_name_another_key_or_case(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    # Given: a case with an addition, and another report with an addition of its own
    witness_adds(app, case.receipt, "first", [])
    other = make_filed_report(app)
    witness_adds(app, other.receipt, "second", [])
    to = case.volunteer_key.public_key()
    good = grant(app, case.report_id, organizer_key=organizer.private_key, to=to)
    ((addition_id, addition_wrap),) = good["envelopes"].items()
    foreign = grant(app, other.report_id, organizer_key=organizer.private_key, to=to)
    ((foreign_id, foreign_wrap),) = foreign["envelopes"].items()
    mixed_key = {
        **good,
        "envelopes": {
            addition_id: b64(
                crypto.wrap_data_key(
                    crypto.new_data_key(),
                    report_id=uuid.UUID(addition_id),
                    recipient=organizer.public_key,
                )
            )
        },
    }
    other_case = {**good, "envelopes": {addition_id: addition_wrap, foreign_id: foreign_wrap}}
    before = row_counts(app)

    # When / Then: each is refused, and no wrap is stored
    assert refusal(app, case.organizer, {"grants": [mixed_key]}) == (
        "The grant's wraps are addressed to different keys."
    )
    assert refusal(app, case.organizer, {"grants": [other_case]}) == (
        "The grant names something that is not part of this report."
    )
    assert row_counts(app) == before


def test_only_organizers_grant_and_only_to_assigned_volunteers(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    stranger = new_volunteer(app, case.organizer)[1].public_key()
    to_stranger = grant(app, case.report_id, organizer_key=organizer.private_key, to=stranger)
    to_volunteer = grant(
        app,
        case.report_id,
        organizer_key=organizer.private_key,
        to=case.volunteer_key.public_key(),
    )

    assert refusal(app, case.organizer, {"grants": [to_stranger]}) == (
        "The key's owner is not assigned to this report."
    )
    assert refusal(app, case.volunteer, {"grants": [to_volunteer]}) == (
        "Only organizers can grant cases or rotate their keys."
    )
    assert row_counts(app)["wraps"] == 1  # the organizer's own


# --------------------------------------------------------------------------- statuses

ALLOWED = sorted((start, to) for start, targets in VOLUNTEER_TRANSITIONS.items() for to in targets)
FORBIDDEN = [
    ("assigned", "triaged"),
    ("assigned", "rejected"),
    ("assigned", "new"),
    ("in_progress", "assigned"),
    ("in_progress", "triaged"),
    ("closed", "rejected"),
    ("closed", "assigned"),
]


def set_stored_status(app: Flask, report_id: uuid.UUID, status: str) -> None:
    """Write a status straight to the report row."""
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report is not None
        report.status = status
        db.session.commit()


def test_the_volunteer_transition_table_is_the_expected_one() -> None:
    assert ALLOWED == [
        ("assigned", "closed"),
        ("assigned", "in_progress"),
        ("closed", "in_progress"),
        ("in_progress", "closed"),
    ]


@pytest.mark.parametrize(("start", "to"), ALLOWED)
def test_a_volunteer_makes_the_status_changes_of_their_table(
    app: Flask, case: Case, start: str, to: str
) -> None:
    set_stored_status(app, case.report_id, start)

    summary = apply(
        app,
        case.volunteer,
        {
            "statuses": [
                {"report_id": str(case.report_id), "from": start, "to": to, "reason": "spoke"},
            ]
        },
    )

    assert counts(summary)["statuses"] == 1
    assert report_status(app, case.report_id) == to
    with app.app_context():
        change = db.session.scalars(
            sa.select(StatusChange).order_by(StatusChange.id.desc()).limit(1)
        ).one()
        assert (change.old_status, change.new_status, change.actor_id, change.reason) == (
            start,
            to,
            case.volunteer.id,
            "spoke",
        )


@pytest.mark.parametrize(("start", "to"), FORBIDDEN)
def test_a_volunteer_cannot_make_other_status_changes(
    app: Flask, case: Case, start: str, to: str
) -> None:
    set_stored_status(app, case.report_id, start)
    before = row_counts(app)

    message = refusal(
        app,
        case.volunteer,
        {"statuses": [{"report_id": str(case.report_id), "from": start, "to": to}]},
    )

    assert message == "The case's status changed meanwhile; sync and try again."
    assert report_status(app, case.report_id) == start
    assert row_counts(app) == before


def test_a_status_change_made_from_an_older_status_is_refused(app: Flask, case: Case) -> None:
    # Given: the case was closed meanwhile
    set_stored_status(app, case.report_id, "closed")
    before = row_counts(app)

    # When: a desk that still saw it "assigned" moves it to "in progress"
    message = refusal(
        app,
        case.volunteer,
        {
            "statuses": [
                {"report_id": str(case.report_id), "from": "assigned", "to": "in_progress"},
            ]
        },
    )

    # Then: it is refused although "closed" to "in progress" is allowed, and nothing changes
    assert message == "The case's status changed meanwhile; sync and try again."
    assert report_status(app, case.report_id) == "closed"
    assert row_counts(app) == before


def test_a_status_the_case_already_has_is_skipped_without_a_history_entry(
    app: Flask, case: Case
) -> None:
    assert report_status(app, case.report_id) == "assigned"
    before = row_counts(app)

    summary = apply(
        app,
        case.volunteer,
        {
            "statuses": [
                {"report_id": str(case.report_id), "from": "assigned", "to": "assigned"},
            ]
        },
    )

    assert (counts(summary)["statuses"], counts(summary)["skipped"]) == (0, 1)
    assert row_counts(app) == before


# --------------------------------------------------------------------------- one transaction


@pytest.mark.parametrize("last", ["refused status", "malformed base64", "stale rotation"])
def test_a_batch_whose_last_item_is_bad_stores_nothing(
    app: Flask, case: Case, organizer: KeyFiles, last: str
) -> None:
    # Given: a batch of good outputs of every kind, whose very last item is bad
    witness = witness_public(app, case.report_id)
    to = case.volunteer_key.public_key()
    batch: dict[str, Any] = {
        "grants": [grant(app, case.report_id, organizer_key=organizer.private_key, to=to)],
        "notes": [envelope(case.report_id, "a note", recipients=[organizer.public_key, to])],
        "replies": [
            envelope(case.report_id, "a reply", recipients=[organizer.public_key, witness])
        ],
        "statuses": [{"report_id": str(case.report_id), "from": "assigned", "to": "in_progress"}],
    }
    if last == "refused status":
        batch["statuses"].append(
            {"report_id": str(case.report_id), "from": "in_progress", "to": "rejected"}
        )
        expected: type[Exception] = OutputError
    elif last == "malformed base64":
        bad = envelope(case.report_id, "broken", recipients=[organizer.public_key, witness])
        bad["sealed"] = "***not base64***"
        batch["replies"].append(bad)
        batch["statuses"] = []
        expected = BundleError
    else:
        # built before the batch's note and reply exist, so it misses them
        batch["rotations"] = [
            rotation(
                app,
                case.report_id,
                organizer_key=organizer.private_key,
                recipients=[organizer.public_key],
            )
        ]
        expected = OutputError
    before, status_before = row_counts(app), report_status(app, case.report_id)

    # When: the desk sends it
    with pytest.raises(expected):
        apply(app, case.organizer, batch)

    # Then: nothing of it was stored: no row in any table changed count, the status is the same
    assert row_counts(app) == before
    assert report_status(app, case.report_id) == status_before
    with app.app_context():
        assert db.session.get(Wrap, (case.report_id, to.key_id_hex)) is None


def test_a_rotation_refused_after_writing_a_file_leaves_no_file_behind(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: a report with two attachments, and a rotation whose second file is truncated
    report_id, _receipt = witness_files(
        app, [(minimal_pdf("one"), "a.pdf"), (minimal_pdf("two"), "b.pdf")]
    )
    chief = make_user(app, role="organizer")
    item = rotation(
        app, report_id, organizer_key=organizer.private_key, recipients=[organizer.public_key]
    )
    item["attachments"][1]["data"] = b64(unb64(item["attachments"][1]["data"])[:-1])
    before_rows, before_files = row_counts(app), files_under(app)

    # When: it is sent
    message = refusal(app, chief, {"rotations": [item]})

    # Then: it is refused; the first file written for it is gone, the old files are untouched
    assert message == "The case changed meanwhile; sync and try again."
    assert files_under(app) == before_files
    assert len(before_files) == 2
    assert row_counts(app) == before_rows
    with app.app_context():
        assert casefile.open_case(report_id, private_key=organizer.private_key).attachments


# --------------------------------------------------------------------------- idempotency


def test_sending_the_same_batch_twice_stores_each_note_and_reply_once(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    # Given: a batch with a grant, a note, a reply and a status change
    witness = witness_public(app, case.report_id)
    to = case.volunteer_key.public_key()
    batch = {
        "grants": [grant(app, case.report_id, organizer_key=organizer.private_key, to=to)],
        "notes": [envelope(case.report_id, "the note", recipients=[organizer.public_key, to])],
        "replies": [
            envelope(case.report_id, "the reply", recipients=[organizer.public_key, witness])
        ],
        "statuses": [{"report_id": str(case.report_id), "from": "assigned", "to": "in_progress"}],
    }

    # When: the desk sends it, loses the answer, and sends it again
    first = apply(app, case.organizer, batch)
    after_first = row_counts(app)
    second = apply(app, case.organizer, batch)

    # Then: the second time nothing new is stored (the grant replaces the same wrap)
    assert counts(first) == {
        "grants": 1,
        "notes": 1,
        "replies": 1,
        "statuses": 1,
        "rotations": 0,
        "skipped": 0,
    }
    assert counts(second) == {
        "grants": 1,
        "notes": 0,
        "replies": 0,
        "statuses": 0,
        "rotations": 0,
        "skipped": 3,
    }
    after_second = row_counts(app)
    assert {
        name: after_second[name]
        for name in ("notes", "messages", "envelope_wraps", "wraps", "status_changes")
    } == {
        name: after_first[name]
        for name in ("notes", "messages", "envelope_wraps", "wraps", "status_changes")
    }
    assert (after_first["notes"], after_first["messages"]) == (1, 1)
    with app.app_context():
        opened = casefile.open_case(case.report_id, private_key=case.volunteer_key)
    assert [note.body for note in opened.notes] == ["the note"]
    assert witness_reads(app, case.receipt) == ["the reply"]


def test_a_note_id_reused_on_another_case_is_refused(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    # Given: a stored note
    item = envelope(case.report_id, "first", recipients=[organizer.public_key])
    apply(app, case.organizer, {"notes": [item]})
    other = make_filed_report(app).report_id

    # When: a note with the same id arrives for another case
    reused = envelope(
        other, "second", recipients=[organizer.public_key], envelope_id=uuid.UUID(item["id"])
    )

    # Then: it is refused rather than skipped as "already stored"
    assert refusal(app, case.organizer, {"notes": [reused]}) == (
        "A desk output concerns a case you cannot work."
    )


@pytest.mark.parametrize("clash", ["the report", "an addition", "a reply"])
def test_a_note_whose_id_is_already_used_in_the_case_is_refused(
    app: Flask, case: Case, organizer: KeyFiles, clash: str
) -> None:
    # Given: a case with an addition and a reply
    witness_adds(app, case.receipt, "the addition", [])
    witness = witness_public(app, case.report_id)
    reply = envelope(case.report_id, "the reply", recipients=[organizer.public_key, witness])
    apply(app, case.organizer, {"replies": [reply]})
    with app.app_context():
        addition_id = db.session.scalars(sa.select(Addition.id)).one()
    taken = {
        "the report": case.report_id,
        "an addition": addition_id,
        "a reply": uuid.UUID(reply["id"]),
    }[clash]

    before = row_counts(app)

    # When: a volunteer's desk sends a note whose id is already taken in the case
    item = envelope(case.report_id, "clash", recipients=[organizer.public_key], envelope_id=taken)
    message = refusal(app, case.volunteer, {"notes": [item]})

    # Then: it is refused (a note under the report's id would replace the report's data key
    # when the case is opened), nothing is stored, and the case still opens in full
    assert message == "A note or reply reuses the id of something else."
    assert row_counts(app) == before
    with app.app_context():
        opened = casefile.open_case(case.report_id, private_key=organizer.private_key)
    assert opened.sealed["narrative"] == NARRATIVE
    assert [item.text for item in opened.additions] == ["the addition"]
    assert [item.body for item in opened.replies] == ["the reply"]
    assert opened.notes == []


# --------------------------------------------------------------------------- rotation


def raw_blobs(app: Flask, report_id: uuid.UUID) -> dict[str, Any]:
    """The stored ciphertext of a case, read straight from the tables."""
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report is not None
        rows: dict[str, Any] = {
            "fields": {name: getattr(report, f"{name}_sealed") for name in SEALED_FIELDS},
            "wraps": {
                row.key_id: row.blob
                for row in db.session.scalars(sa.select(Wrap).where(Wrap.report_id == report_id))
            },
            "envelope_wraps": {
                (row.envelope_id, row.key_id): row.blob
                for row in db.session.scalars(
                    sa.select(EnvelopeWrap).where(EnvelopeWrap.report_id == report_id)
                )
            },
            "envelopes": {},
            "attachments": {},
        }
        for model, column, field in (
            (Addition, "text_sealed", ADDITION_FIELD),
            (Message, "body_sealed", REPLY_FIELD),
            (Note, "body_sealed", NOTE_FIELD),
        ):
            for row in db.session.scalars(sa.select(model).where(model.report_id == report_id)):
                rows["envelopes"][row.id] = (getattr(row, column), field)
        for row in db.session.scalars(
            sa.select(Attachment).where(Attachment.report_id == report_id)
        ):
            rows["attachments"][row.id] = (row.envelope_id, row.meta_sealed)
        return rows


def opens(blob: bytes, *, data_key: bytes, envelope_id: uuid.UUID, name: str) -> bool:
    """True if ``data_key`` opens the sealed blob."""
    try:
        crypto.open_bytes(blob, data_key=data_key, report_id=envelope_id, name=name)
    except crypto.CryptoError:
        return False
    return True


def volunteer_keys_of(
    app: Flask, report_id: uuid.UUID, key: crypto.PrivateKey
) -> dict[uuid.UUID, bytes]:
    """Every data key of the case that ``key`` can unwrap now (what a volunteer's desk keeps)."""
    with app.app_context():
        report = db.session.get(Report, report_id)
        assert report is not None
        bundle = bundles.case_bundle(report, key_id=key.key_id.hex(), keyring=None)
    return casefile.bundle_data_keys(bundle, private_key=key)


def test_rotating_a_case_key_locks_out_the_old_keys_and_a_revoked_volunteer(
    app: Flask, organizer: KeyFiles
) -> None:
    # Given: a report with an attachment, an addition with a photo, a reply and a note
    pdf, photo = minimal_pdf("summons"), jpeg_with_gps()
    report_id, receipt = witness_files(app, [(pdf, "summons.pdf")])
    addition = f"ADDITION-{secrets.token_hex(4)}"
    witness_adds(app, receipt, addition, [(photo, "car.jpg")])
    chief = make_user(app, role="organizer")
    leaving, leaving_key = new_volunteer(app, chief)
    staying, staying_key = new_volunteer(app, chief)
    for volunteer in (leaving, staying):
        assign(app, report_id, volunteer, chief)
    reply, note = f"REPLY-{secrets.token_hex(4)}", f"NOTE-{secrets.token_hex(4)}"
    witness = witness_public(app, report_id)
    apply(
        app,
        chief,
        {
            "replies": [envelope(report_id, reply, recipients=[organizer.public_key, witness])],
            "notes": [envelope(report_id, note, recipients=[organizer.public_key])],
        },
    )

    # And: both volunteers were granted everything; the one leaving kept every data key
    apply(
        app,
        chief,
        {
            "grants": [
                grant(app, report_id, organizer_key=organizer.private_key, to=key.public_key())
                for key in (leaving_key, staying_key)
            ]
        },
    )
    kept = volunteer_keys_of(app, report_id, leaving_key)
    assert len(kept) == 4  # the report, the addition, the reply and the note
    before = raw_blobs(app, report_id)
    old_files = files_under(app)
    assert len(before["attachments"]) == 2

    # And: the organizer takes the case back from the leaving volunteer
    with app.app_context():
        by = db.session.get(User, chief.id)
        assert by is not None
        cases.unassign_report(report_id, volunteer_id=leaving.id, organizer=by)

    # When: the organizer's desk rotates the case key for the remaining recipients
    item = rotation(
        app,
        report_id,
        organizer_key=organizer.private_key,
        recipients=[organizer.public_key, staying_key.public_key()],
    )
    summary = apply(app, chief, {"rotations": [item]})

    # Then: the rotation is applied
    assert counts(summary)["rotations"] == 1
    after = raw_blobs(app, report_id)

    # And: the old report key opens none of the stored fields; the new organizer wrap does
    old_key = kept[report_id]
    new_key = crypto.unwrap_data_key(
        after["wraps"][organizer.public_key.key_id_hex],
        report_id=report_id,
        private_key=organizer.private_key,
    )
    assert new_key != old_key
    for name, blob in after["fields"].items():
        assert blob != before["fields"][name]
        assert not opens(blob, data_key=old_key, envelope_id=report_id, name=name), name
        assert opens(blob, data_key=new_key, envelope_id=report_id, name=name), name

    # And: no old envelope key opens its addition, reply or note any more
    assert set(after["envelopes"]) == set(before["envelopes"])
    for envelope_id, (blob, field) in after["envelopes"].items():
        assert not opens(blob, data_key=kept[envelope_id], envelope_id=envelope_id, name=field)

    # And: the attachments have new ids, the old keys open neither their metadata nor files
    assert set(after["attachments"]).isdisjoint(before["attachments"])
    assert len(after["attachments"]) == 2
    with app.app_context():
        directory = attachment_directory(current_settings().instance_path)
    for attachment_id, (envelope_id, meta) in after["attachments"].items():
        old_envelope_key = kept[envelope_id]
        assert not opens(
            meta,
            data_key=old_envelope_key,
            envelope_id=envelope_id,
            name=meta_field_name(attachment_id),
        )
        with (
            (directory / attachment_id.hex).open("rb") as source,
            pytest.raises(crypto.DecryptionError),
        ):
            crypto.open_stream(
                source,
                key=crypto.attachment_key(old_envelope_key, attachment_id=attachment_id),
                sink=io.BytesIO(),
                size=1,
            )

    # And: the old files are gone, the new ones are in place, nothing is left half-written
    new_files = files_under(app)
    assert sorted(uuid.UUID(name).hex for name in new_files) == sorted(
        attachment_id.hex for attachment_id in after["attachments"]
    )
    assert set(new_files).isdisjoint(old_files)
    assert not any(name.startswith(PARTIAL_DIRECTORY) for name in new_files)

    # And: the wraps are to the organizer and the staying volunteer (and the witness for the
    # reply), none to the leaving volunteer
    leaving_id = leaving_key.key_id.hex()
    expected = {organizer.public_key.key_id_hex, staying_key.key_id.hex()}
    assert set(after["wraps"]) == expected
    by_envelope: dict[uuid.UUID, set[str]] = {}
    for envelope_id, key_id in after["envelope_wraps"]:
        by_envelope.setdefault(envelope_id, set()).add(key_id)
    assert sorted(map(sorted, by_envelope.values())) == sorted(
        [sorted(expected), sorted(expected), sorted(expected | {witness.key_id_hex})]
    )
    assert leaving_id not in str(after["envelope_wraps"])

    # And: the organizer and the staying volunteer open the whole case, the files verified
    with app.app_context():
        instance = current_settings().instance_path
        for key in (organizer.private_key, staying_key):
            opened = casefile.open_case(report_id, private_key=key)
            assert opened.sealed["narrative"] == report_form_data()["narrative"]
            assert [item.text for item in opened.additions] == [addition]
            assert [item.body for item in opened.replies] == [reply]
            assert [item.body for item in opened.notes] == [note]
            assert [item.name for item in opened.attachments] == ["summons.pdf", "car.jpg"]
            for seq, original in ((1, pdf), (2, photo)):
                _meta, content = casefile.open_attachment_bytes(
                    report_id, seq, private_key=key, instance_path=instance
                )
                assert content == original

        # And: the leaving volunteer's key opens nothing of it
        with pytest.raises(NoWrapForKeyError):
            casefile.open_case(report_id, private_key=leaving_key)

    # And: the witness still reads the reply with the receipt
    assert witness_reads(app, receipt) == [reply]

    # When: the desk, having lost the answer, sends the rotation again
    again = apply(app, chief, {"rotations": [item]})

    # Then: it is skipped and nothing changes
    assert counts(again) == {
        "grants": 0,
        "notes": 0,
        "replies": 0,
        "statuses": 0,
        "rotations": 0,
        "skipped": 1,
    }
    assert raw_blobs(app, report_id) == after
    assert files_under(app) == new_files


def test_a_rotation_that_misses_an_envelope_is_refused(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    # Given: a rotation built before the volunteer added a note
    item = rotation(
        app,
        case.report_id,
        organizer_key=organizer.private_key,
        recipients=[organizer.public_key],
    )
    apply(
        app,
        case.volunteer,
        {
            "notes": [
                envelope(case.report_id, "late", recipients=[organizer.public_key]),
            ]
        },
    )
    before = raw_blobs(app, case.report_id)

    # When / Then: the rotation is refused and the case is untouched
    assert refusal(app, case.organizer, {"rotations": [item]}) == (
        "The case changed meanwhile; sync and try again."
    )
    assert raw_blobs(app, case.report_id) == before


def test_a_rotation_must_keep_the_organizer_and_only_assigned_keys(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    stranger = new_volunteer(app, case.organizer)[1].public_key()
    without_organizer = rotation(
        app,
        case.report_id,
        organizer_key=organizer.private_key,
        recipients=[case.volunteer_key.public_key()],
    )
    with_stranger = rotation(
        app,
        case.report_id,
        organizer_key=organizer.private_key,
        recipients=[organizer.public_key, stranger],
    )
    before = raw_blobs(app, case.report_id)

    assert refusal(app, case.organizer, {"rotations": [without_organizer]}) == (
        "A sealed note or reply must be readable by the organizer."
    )
    assert refusal(app, case.organizer, {"rotations": [with_stranger]}) == (
        "A wrap is addressed to a key that may not read this case."
    )
    assert refusal(app, case.volunteer, {"rotations": [with_stranger]}) == (
        "Only organizers can grant cases or rotate their keys."
    )
    assert raw_blobs(app, case.report_id) == before


def test_a_rotation_of_a_case_without_attachments_sent_twice_is_skipped(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    item = rotation(
        app,
        case.report_id,
        organizer_key=organizer.private_key,
        recipients=[organizer.public_key],
    )
    assert counts(apply(app, case.organizer, {"rotations": [item]}))["rotations"] == 1

    after = raw_blobs(app, case.report_id)
    with app.app_context():
        audited = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "case.rotate")
        )

    again = apply(app, case.organizer, {"rotations": [item]})

    assert (counts(again)["rotations"], counts(again)["skipped"]) == (0, 1)
    assert raw_blobs(app, case.report_id) == after
    with app.app_context():
        assert audited == 1
        assert audited == db.session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "case.rotate")
        )


def test_a_rotation_made_from_older_ciphertext_is_refused(
    app: Flask, case: Case, organizer: KeyFiles
) -> None:
    # Given: two desks built rotations from the same bundle; the first one was applied
    first, second = (
        rotation(
            app,
            case.report_id,
            organizer_key=organizer.private_key,
            recipients=[organizer.public_key],
        )
        for _ in range(2)
    )
    apply(app, case.organizer, {"rotations": [first]})
    before = raw_blobs(app, case.report_id)

    # When / Then: the second, made from the ciphertext that is gone now, is refused
    assert refusal(app, case.organizer, {"rotations": [second]}) == (
        "The case changed meanwhile; sync and try again."
    )
    assert raw_blobs(app, case.report_id) == before
    with app.app_context():
        opened = casefile.open_case(case.report_id, private_key=organizer.private_key)
    assert opened.sealed["narrative"] == NARRATIVE


def test_attachment_files_of_a_refused_batch_never_reach_the_final_folder(
    app: Flask, organizer: KeyFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: a good rotation of a case with a file, in a batch the database then refuses
    report_id, _receipt = witness_files(app, [(minimal_pdf(), "a.pdf")])
    chief = make_user(app, role="organizer")
    item = rotation(
        app, report_id, organizer_key=organizer.private_key, recipients=[organizer.public_key]
    )
    before = files_under(app)

    def failing_commit() -> None:
        raise RuntimeError("database went away")

    with app.app_context():
        monkeypatch.setattr(db.session, "commit", failing_commit)
        user = db.session.get(User, chief.id)
        assert user is not None
        with pytest.raises(RuntimeError):
            desk_outputs.apply_outputs(
                {"rotations": [item]},
                user=user,
                keyring=current_keyring(),
                instance_path=current_settings().instance_path,
            )
        monkeypatch.undo()

    # Then: the file written for the rotation is deleted, the stored one is untouched
    assert files_under(app) == before
    with app.app_context():
        _meta, content = casefile.open_attachment_bytes(
            report_id,
            1,
            private_key=organizer.private_key,
            instance_path=Path(current_settings().instance_path),
        )
    assert content == minimal_pdf()
