"""The witness's return visit: receipt entry, status, replies, additions, consent, deletion.

Every test runs on SQLite and on PostgreSQL. "Nothing stored" is checked by counting the rows
of every table of the schema, and "not in the database" by reading every value of every row.
Replies are sealed here with the crypto module, as a desk would seal them.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from limits import parse_many
from werkzeug.test import TestResponse

from incidents import crypto
from incidents.db import Base, db
from incidents.extensions import limiter
from incidents.intake import views
from incidents.models import (
    Addition,
    Attachment,
    AuditEvent,
    EnvelopeWrap,
    Message,
    Report,
    User,
    Wrap,
)
from incidents.services import casefile, cases, followup
from incidents.services.errors import DomainError
from incidents.uploads import PARTIAL_DIRECTORY, attachment_directory
from tests.conftest import KeyFiles
from tests.factories import (
    StaffAccount,
    csrf_token,
    grant_for,
    jpeg_with_gps,
    make_filed_report,
    make_reply,
    make_user,
    make_volunteer_key,
    minimal_pdf,
    receipt_from,
    report_form_data,
    seal_reply,
)

RECEIVED = "Received. It has not been given to a legal-aid volunteer yet."
WORKING = "A legal-aid volunteer is looking at it."
CLOSED = "Closed."
NOT_FOUND = "No report was found for this code."
EMPTY_ADDITION = "Write something or choose a file to add."
ADDED = "Your information was added and encrypted."
CSRF_HEADING = "The form expired"
TOO_MANY = "Too many attempts"
# The smallest budget of failed receipts the app allows (in its shortest window).
FAILURE_LIMIT = min(limit.amount for limit in parse_many(views.FOLLOWUP_FAILURE_LIMIT))
# A receipt with every symbol a witness may mistype: 0 and 1, and letters that have Cyrillic
# look-alikes (A B E K M H P C T X Y 3).
CONFUSABLE_RECEIPT = "0A1B-E0K1-MHPC-TXY3-1010-ABEK-MHPC"
LATIN_TO_CYRILLIC = str.maketrans(
    {
        "A": "А", "B": "В", "E": "Е", "K": "К", "M": "М", "H": "Н", "P": "Р",
        "C": "С", "T": "Т", "X": "Х", "Y": "У", "3": "З", "0": "О",
    }
)  # fmt: skip
_CSRF_VALUE = re.compile(r'(name="csrf_token" type="hidden" value=")[^"]+(")')


# --------------------------------------------------------------------------- helpers


def token(client: FlaskClient) -> str:
    """A CSRF token of the witness's session (taken from the receipt entry page)."""
    return csrf_token(client, "/followup")


def open_case(client: FlaskClient, receipt: str, *, csrf: str | None = None) -> TestResponse:
    """Type a receipt on /followup and send it (with ``csrf``, without loading the page)."""
    return client.post("/followup", data={"csrf_token": csrf or token(client), "receipt": receipt})


def act(
    client: FlaskClient,
    action: str,
    receipt: str,
    *,
    with_token: bool = True,
    csrf: str | None = None,
    files: list[tuple[bytes, str]] | None = None,
    **fields: Any,
) -> TestResponse:
    """Send one of the case page's forms (add, consent, delete) as a browser would."""
    data: dict[str, Any] = {"receipt": receipt, **fields}
    if with_token:
        data["csrf_token"] = csrf or token(client)
    if action == "add":
        data["attachments"] = [(io.BytesIO(body), name) for body, name in files or []]
        return client.post("/followup/add", data=data, content_type="multipart/form-data")
    return client.post(f"/followup/{action}", data=data)


def row_counts(app: Flask) -> dict[str, int]:
    """Rows in every table of the schema."""
    with app.app_context():
        counts = {
            table.name: db.session.scalar(sa.select(sa.func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }
        db.session.remove()
    return counts


def database_values(app: Flask) -> Iterator[bytes]:
    """Every stored value of every row, as bytes (text as UTF-8)."""
    with app.app_context():
        for table in Base.metadata.sorted_tables:
            for row in db.session.execute(sa.select(table)).all():
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        yield bytes(value)
                    elif value is not None:
                        yield str(value).encode("utf-8")
        db.session.remove()


def stored_anywhere(app: Flask, needle: str) -> bool:
    """True if ``needle`` (UTF-8) is part of any value in the database."""
    raw = needle.encode("utf-8")
    return any(raw in value for value in database_values(app))


def status_text(response: TestResponse) -> str:
    """The plain-words status on a case page."""
    match = re.search(r'<p class="status-plain">\s*(.*?)\s*</p>', response.text, re.S)
    assert match, "no status on the page"
    return match.group(1).strip()


def reply_bodies(response: TestResponse) -> list[str]:
    """The reply texts shown on a case page (still HTML-escaped)."""
    return re.findall(r'<div class="reply-body">(.*?)</div>', response.text, re.S)


def without_csrf(page: str) -> str:
    """The page with its CSRF token values blanked (they differ per session and request)."""
    return _CSRF_VALUE.sub(r"\1\2", page)


def attachment_files(app: Flask) -> list[str]:
    """Names of the stored ciphertext files (and of anything left in partial/)."""
    directory = attachment_directory(app.extensions["incidents.settings"].instance_path)
    if not directory.exists():
        return []
    return sorted(
        str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file()
    )


def audit_events(app: Flask, action: str) -> list[AuditEvent]:
    """Audit events of one action, oldest first (detached copies)."""
    with app.app_context():
        events = db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        ).all()
        db.session.expunge_all()
        return list(events)


def report_row(app: Flask, report_id: uuid.UUID) -> Report:
    """The stored report (detached)."""
    with app.app_context():
        row = db.session.get(Report, report_id)
        assert row is not None
        db.session.expunge(row)
        return row


@pytest.fixture
def filed(app: Flask) -> tuple[uuid.UUID, str]:
    """A report filed through the service: (id, receipt)."""
    result = make_filed_report(app)
    return result.report_id, result.receipt


@pytest.fixture
def confusable(app: Flask, monkeypatch: pytest.MonkeyPatch) -> tuple[uuid.UUID, str]:
    """A report whose receipt has every confusable symbol."""
    monkeypatch.setattr(crypto, "new_receipt", lambda: CONFUSABLE_RECEIPT)
    result = make_filed_report(app)
    assert result.receipt == CONFUSABLE_RECEIPT
    return result.report_id, result.receipt


# --------------------------------------------------------------------------- (a) receipt entry


TYPINGS = {
    "exact": lambda r: r,
    "lowercase": str.lower,
    "spaces": lambda r: r.replace("-", " "),
    "no dashes": lambda r: r.replace("-", ""),
    "padded lowercase": lambda r: f"  {r.lower().replace('-', '')}  ",
    "non-breaking spaces": lambda r: r.replace("-", "\u00a0"),
    "en dashes": lambda r: r.replace("-", "\u2013"),
    "O for 0": lambda r: r.replace("0", "O"),
    "o for 0": lambda r: r.replace("0", "o"),
    "I for 1": lambda r: r.replace("1", "I"),
    "l for 1": lambda r: r.replace("1", "l"),
    "L for 1": lambda r: r.replace("1", "L"),
    "Cyrillic look-alikes": lambda r: r.translate(LATIN_TO_CYRILLIC),
    "Cyrillic lowercase": lambda r: r.translate(LATIN_TO_CYRILLIC).lower(),
}


def test_the_receipt_opens_the_case_however_it_is_typed(
    client: FlaskClient, confusable: tuple[uuid.UUID, str]
) -> None:
    # Given: a report whose receipt has 0, 1 and letters with Cyrillic look-alikes
    _report_id, receipt = confusable
    not_opened = []
    for name, typed in TYPINGS.items():
        entered = typed(receipt)
        assert name == "exact" or entered != receipt, name

        # When: the witness types it this way
        response = open_case(client, entered)

        # Then: the case page opens
        if response.status_code != 200 or status_text(response) != RECEIVED:
            not_opened.append((name, entered, response.status_code))
    assert not_opened == []


MALFORMED = [
    "hello",
    "0A1B-E0K1-MHPC-TXY3-1010-ABEK-MHP",  # one symbol short
    "0A1B-E0K1-MHPC-TXY3-1010-ABEK-MHPCX",  # one symbol too many
    "0A1B-E0K1-MHPC-TXY3-1010-ABEK-MHP*",  # a symbol outside the alphabet
    "0A1B-E0K1-MHPC-TXY3-1010-ABEK-MHPЖ",  # a Cyrillic letter without a Latin twin
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "\x00\x01\x02",
    "%s%s%s%n",
    "x" * 100,
]


def test_wrong_and_malformed_receipts_get_the_same_page(
    app: Flask, client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    # Given: a stored report, and the page a well-formed but wrong receipt gets
    before = row_counts(app)
    typed_wrong = crypto.new_receipt()
    wrong = open_case(client, typed_wrong)
    assert wrong.status_code == 404
    assert NOT_FOUND in wrong.text
    assert typed_wrong not in wrong.text
    assert typed_wrong.replace("-", "") not in wrong.text
    different = []
    for typed in MALFORMED:
        # When: the witness sends something that is not a receipt
        malformed = open_case(client, typed)

        # Then: the same status, headers and page, byte for byte (apart from the CSRF token)
        if (
            malformed.status_code != 404
            or without_csrf(malformed.text) != without_csrf(wrong.text)
            or sorted(malformed.headers.items()) != sorted(wrong.headers.items())
        ):
            different.append((typed, malformed.status_code))
        assert "Traceback" not in malformed.text
    assert different == []

    # And: no table of the schema gained a row
    assert row_counts(app) == before


def test_a_wrong_and_a_malformed_receipt_cost_the_same_derivation_and_lookup(
    app: Flask, client: FlaskClient, filed: tuple[uuid.UUID, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given: counters of key derivations and of queries on the reports table
    derivations: list[str] = []
    real_derive = crypto.derive_witness_secrets

    def counting_derive(receipt: str) -> crypto.WitnessSecrets:
        derived = real_derive(receipt)  # text that is not a receipt fails before any HKDF
        derivations.append(receipt)
        return derived

    monkeypatch.setattr(crypto, "derive_witness_secrets", counting_derive)
    lookups: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if re.search(r"\bFROM reports\b", statement):
            lookups.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", on_execute)
    try:
        costs = []
        for typed in (crypto.new_receipt(), "not a receipt", filed[1]):
            derivations.clear()
            lookups.clear()
            open_case(client, typed)
            costs.append((len(derivations), len(lookups)))
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_execute)

    # Then: a wrong, a malformed and a right receipt each cost one derivation and one lookup
    wrong, malformed, right = costs
    assert wrong == malformed == (1, 1)
    assert right[0] == 1


def test_an_empty_receipt_is_asked_for_again_without_a_lookup(
    app: Flask, client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    before = row_counts(app)

    response = open_case(client, "")

    assert response.status_code == 400
    assert "Please type your receipt code." in response.text
    assert NOT_FOUND not in response.text
    assert "Traceback" not in response.text
    assert row_counts(app) == before


def test_case_actions_with_a_wrong_receipt_get_the_not_found_page_and_change_nothing(
    app: Flask, client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    before = row_counts(app)
    attempts = {
        "add": {"text": "more", "files": [(minimal_pdf(), "summons.pdf")]},
        "consent": {"withdraw_statistics": "y", "withdraw_contact": "y"},
        "delete": {"confirm": "y"},
    }
    for action, fields in attempts.items():
        response = act(client, action, crypto.new_receipt(), **fields)
        assert response.status_code == 404, action
        assert NOT_FOUND in response.text
    assert row_counts(app) == before
    assert attachment_files(app) == []
    row = report_row(app, filed[0])
    assert (row.consent_statistics, row.consent_contact) == (True, True)


# The limiter's counters do not depend on the database: these run on SQLite only.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_repeated_failures_are_limited_for_everyone_and_no_address_is_kept(
    app: Flask, client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    # Given: the limit of failed receipts is used up
    csrf = token(client)
    for _ in range(FAILURE_LIMIT):
        assert open_case(client, crypto.new_receipt(), csrf=csrf).status_code == 404

    # When: one more attempt comes, from this browser and from another one with the right code
    limited = open_case(client, crypto.new_receipt(), csrf=csrf)
    other = app.test_client()
    limited_right = open_case(other, filed[1])

    # Then: both are refused with the translated 429 page, without a traceback
    assert limited.status_code == 429
    assert TOO_MANY in limited.text
    assert "Traceback" not in limited.text
    assert limited_right.status_code == 429

    # And: the rate-limit storage keys hold no client address
    storage_keys = json.dumps(sorted(map(str, limiter.storage.storage)))  # type: ignore[attr-defined]
    assert "127.0.0.1" not in storage_keys
    assert "localhost" not in storage_keys


# The limiter's counters do not depend on the database: these run on SQLite only.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_successful_lookups_do_not_count_towards_the_limit(
    client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    # Given: all but one failure of the limit are used
    csrf = token(client)
    for _ in range(FAILURE_LIMIT - 1):
        assert open_case(client, crypto.new_receipt(), csrf=csrf).status_code == 404

    # When: the witness opens the case many times with the right receipt
    for _ in range(10):
        assert open_case(client, filed[1], csrf=csrf).status_code == 200

    # Then: one more failure is still answered, and only the one after it is refused
    assert open_case(client, crypto.new_receipt(), csrf=csrf).status_code == 404
    assert open_case(client, crypto.new_receipt(), csrf=csrf).status_code == 429
    assert open_case(client, filed[1], csrf=csrf).status_code == 429


# The limiter's counters do not depend on the database: these run on SQLite only.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_failures_on_every_follow_up_form_share_one_counter(
    client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    # Given: failures spread over the four follow-up forms, up to the limit
    csrf = token(client)
    actions = ["open", "add", "consent", "delete"]
    for attempt in range(FAILURE_LIMIT):
        action = actions[attempt % len(actions)]
        wrong = crypto.new_receipt()
        response = (
            open_case(client, wrong, csrf=csrf)
            if action == "open"
            else act(client, action, wrong, csrf=csrf)
        )
        assert response.status_code == 404, action

    # Then: the next failure is refused on every one of them
    assert open_case(client, crypto.new_receipt(), csrf=csrf).status_code == 429
    for action in actions[1:]:
        assert act(client, action, crypto.new_receipt(), csrf=csrf).status_code == 429, action


# --------------------------------------------------------------------------- (b) status


PLAIN_WORDS = {
    "new": RECEIVED,
    "triaged": RECEIVED,
    "duplicate": RECEIVED,
    "assigned": WORKING,
    "in_progress": WORKING,
    "closed": CLOSED,
    "rejected": CLOSED,
}


def test_the_status_is_told_in_plain_words(app: Flask, client: FlaskClient) -> None:
    # Given: one report in each status
    receipts = {status: make_filed_report(app, status=status).receipt for status in PLAIN_WORDS}

    # When: each witness comes back
    shown = {}
    for status, receipt in receipts.items():
        response = open_case(client, receipt)
        assert response.status_code == 200
        shown[status] = status_text(response)

    # Then: each sees the plain words for it
    assert shown == PLAIN_WORDS


def test_the_case_page_shows_the_consents_but_no_sealed_content_and_is_not_cached(
    app: Flask, client: FlaskClient
) -> None:
    phrase = f"NARRATIVE-{secrets.token_hex(4)}"
    filed = make_filed_report(
        app, narrative=phrase, place_detail=phrase, consent_statistics=True, consent_contact=False
    )
    response = open_case(client, filed.receipt)
    assert "Counted in anonymous statistics: <strong>yes</strong>" in response.text
    assert "A legal-aid volunteer may contact you: <strong>no</strong>" in response.text
    assert phrase not in response.text
    assert "no-store" in response.headers["Cache-Control"]


# --------------------------------------------------------------------------- (c) replies


def test_a_reply_sealed_to_the_witness_key_is_shown_and_never_stored_in_clear(
    app: Flask, client: FlaskClient, organizer: KeyFiles, filed: tuple[uuid.UUID, str]
) -> None:
    # Given: a desk sealed a reply to the witness key and the organizer key
    report_id, receipt = filed
    body = f"We can help with your case, REPLY-{secrets.token_hex(4)}."
    make_reply(app, report_id, receipt=receipt, body=body, organizer_key=organizer.public_key)

    # When: the witness comes back with the receipt
    response = open_case(client, receipt)

    # Then: the reply is on the page in clear, and nowhere in the database
    assert reply_bodies(response) == [body]
    assert "No replies yet." not in response.text
    assert not stored_anywhere(app, body)
    assert not stored_anywhere(app, body.split(",")[1].strip())


def test_replies_are_shown_in_order_escaped_and_a_tampered_one_is_skipped(
    app: Flask, client: FlaskClient, organizer: KeyFiles, filed: tuple[uuid.UUID, str]
) -> None:
    # Given: four replies, the first of which was damaged in the database
    report_id, receipt = filed
    bodies = ["will be damaged", "First reply.", "<b>Second</b> reply & more", "Third reply."]
    for body in bodies:
        make_reply(app, report_id, receipt=receipt, body=body, organizer_key=organizer.public_key)
    with app.app_context():
        first = db.session.scalars(
            sa.select(Message).where(Message.report_id == report_id).order_by(Message.seq)
        ).first()
        assert first is not None
        damaged = bytearray(first.body_sealed)
        damaged[-1] ^= 0x01
        first.body_sealed = bytes(damaged)
        db.session.commit()

    # When: the witness opens the case
    response = open_case(client, receipt)

    # Then: the intact replies show in order, as text, and the damaged one is left out
    assert response.status_code == 200
    assert reply_bodies(response) == [
        "First reply.",
        "&lt;b&gt;Second&lt;/b&gt; reply &amp; more",
        "Third reply.",
    ]


def test_a_reply_not_sealed_to_this_witness_is_refused_and_never_shown(
    app: Flask, client: FlaskClient, organizer: KeyFiles, filed: tuple[uuid.UUID, str]
) -> None:
    # Given: a reply a desk sealed to the organizer key only
    report_id, receipt = filed
    body = f"organizer-only note {secrets.token_hex(4)}"
    message_id, sealed, wraps = seal_reply(body, receipt=None, organizer_key=organizer.public_key)

    # Then: the service refuses to store it as a reply to the witness
    with app.app_context(), pytest.raises(DomainError):
        followup.store_reply(
            report_id,
            message_id=message_id,
            body_sealed=sealed,
            wraps=wraps,
            author_id=None,
            created_on=report_row(app, report_id).received_on,
        )

    # And: even stored directly, the witness's page does not show it
    with app.app_context():
        db.session.add(
            Message(
                id=message_id,
                report_id=report_id,
                seq=1,
                created_on=report_row(app, report_id).received_on,
                body_sealed=sealed,
            )
        )
        for key_id, blob in wraps.items():
            db.session.add(
                EnvelopeWrap(envelope_id=message_id, key_id=key_id, report_id=report_id, blob=blob)
            )
        db.session.commit()
    response = open_case(client, receipt)
    assert response.status_code == 200
    assert reply_bodies(response) == []
    assert body not in response.text
    assert "No replies yet." in response.text

    # And: a reply sealed to another report's witness is refused for this report too
    other = make_filed_report(app)
    message_id, sealed, wraps = seal_reply(
        "for someone else", receipt=other.receipt, organizer_key=organizer.public_key
    )
    with app.app_context(), pytest.raises(DomainError):
        followup.store_reply(
            report_id,
            message_id=message_id,
            body_sealed=sealed,
            wraps=wraps,
            author_id=None,
            created_on=report_row(app, report_id).received_on,
        )
    assert reply_bodies(open_case(client, other.receipt)) == []


# --------------------------------------------------------------------------- (d) add information


@pytest.fixture
def granted(
    app: Flask, organizer: KeyFiles, filed: tuple[uuid.UUID, str]
) -> tuple[crypto.PrivateKey, StaffAccount]:
    """A volunteer with an approved key, assigned to the report and granted its key."""
    report_id, _receipt = filed
    organizer_account = make_user(app, role="organizer")
    volunteer = make_user(app, role="volunteer")
    volunteer_key = make_volunteer_key(app, volunteer, approved_by=organizer_account)
    grant = grant_for(
        app, report_id, organizer_key=organizer.private_key, recipient=volunteer_key.public_key()
    )
    with app.app_context():
        organizer_row = db.session.get(User, organizer_account.id)
        assert organizer_row is not None
        cases.assign_report(report_id, volunteer_id=volunteer.id, organizer=organizer_row)
        cases.record_grant(report_id, grant, actor=organizer_row)
    return volunteer_key, volunteer


def test_text_is_added_sealed_to_the_organizer_and_the_granted_volunteer(
    app: Flask,
    client: FlaskClient,
    organizer: KeyFiles,
    filed: tuple[uuid.UUID, str],
    granted: tuple[crypto.PrivateKey, StaffAccount],
) -> None:
    # Given: a report whose key was granted to a volunteer
    report_id, receipt = filed
    volunteer_key, _volunteer = granted
    text = f"I remembered the car: ADDITION-{secrets.token_hex(4)}"

    # When: the witness adds text
    response = act(client, "add", receipt, text=text)

    # Then: the page confirms it, and the text is not stored in clear
    assert response.status_code == 200
    assert ADDED in response.text
    assert not stored_anywhere(app, text)

    # And: the addition has its own data key, wrapped to exactly the organizer and the volunteer
    with app.app_context():
        addition = db.session.scalars(sa.select(Addition)).one()
        wrapped_to = set(
            db.session.scalars(
                sa.select(EnvelopeWrap.key_id).where(EnvelopeWrap.envelope_id == addition.id)
            ).all()
        )
        assert addition.id != report_id
        addition_key = casefile.envelope_data_key(addition.id, private_key=organizer.private_key)
        report_key = casefile.report_data_key(report_id, private_key=organizer.private_key)
        assert addition_key is not None
        assert addition_key != report_key
    assert wrapped_to == {organizer.public_key.key_id_hex, volunteer_key.key_id.hex()}

    # And: the volunteer's own key opens it in the case file
    with app.app_context():
        for key in (volunteer_key, organizer.private_key):
            case = casefile.open_case(report_id, private_key=key)
            assert [a.text for a in case.additions] == [text]


def test_files_only_are_added_with_their_metadata_sealed_in_the_addition(
    app: Flask,
    client: FlaskClient,
    organizer: KeyFiles,
    filed: tuple[uuid.UUID, str],
    granted: tuple[crypto.PrivateKey, StaffAccount],
) -> None:
    report_id, receipt = filed
    volunteer_key, _volunteer = granted
    photo, pdf = jpeg_with_gps(), minimal_pdf()

    response = act(client, "add", receipt, files=[(photo, "car.jpg"), (pdf, "summons.pdf")])

    assert response.status_code == 200
    assert ADDED in response.text
    with app.app_context():
        addition = db.session.scalars(sa.select(Addition)).one()
        rows = db.session.scalars(sa.select(Attachment).order_by(Attachment.seq)).all()
        assert [row.envelope_id for row in rows] == [addition.id, addition.id]
        case = casefile.open_case(report_id, private_key=volunteer_key)
    assert [a.text for a in case.additions] == [""]
    assert [(a.seq, a.name, a.type, a.size) for a in case.attachments] == [
        (1, "car.jpg", "image/jpeg", len(photo)),
        (2, "summons.pdf", "application/pdf", len(pdf)),
    ]
    assert len(attachment_files(app)) == 2


def test_text_and_files_together_make_one_addition(
    app: Flask, client: FlaskClient, organizer: KeyFiles, filed: tuple[uuid.UUID, str]
) -> None:
    report_id, receipt = filed
    text = "The summons is attached."

    response = act(client, "add", receipt, text=text, files=[(minimal_pdf(), "summons.pdf")])

    assert response.status_code == 200
    with app.app_context():
        case = casefile.open_case(report_id, private_key=organizer.private_key)
        (addition,) = db.session.scalars(sa.select(Addition)).all()
        (attachment,) = db.session.scalars(sa.select(Attachment)).all()
        assert attachment.envelope_id == addition.id
    assert [a.text for a in case.additions] == [text]
    assert [a.name for a in case.attachments] == ["summons.pdf"]


def test_an_empty_addition_gets_a_message_and_nothing_is_stored(
    app: Flask, client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    before = row_counts(app)
    # Nothing; only whitespace; the empty nameless part a browser sends when no file is chosen
    for fields in ({}, {"text": "   \n\t  "}, {"files": [(b"", "")]}):
        response = act(client, "add", filed[1], **fields)
        assert response.status_code == 400
        assert EMPTY_ADDITION in response.text
    assert row_counts(app) == before
    assert attachment_files(app) == []


def test_additions_appear_in_the_order_they_were_sent(
    app: Flask, client: FlaskClient, organizer: KeyFiles, filed: tuple[uuid.UUID, str]
) -> None:
    report_id, receipt = filed
    texts = ["first addition", "second addition", "third addition"]
    for text in texts:
        assert act(client, "add", receipt, text=text).status_code == 200

    with app.app_context():
        case = casefile.open_case(report_id, private_key=organizer.private_key)
    assert [a.text for a in case.additions] == texts
    assert [a.seq for a in case.additions] == [1, 2, 3]


def test_an_addition_with_a_refused_file_keeps_the_text_and_stores_nothing(
    app: Flask, client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    before = row_counts(app)
    text = f"kept text {secrets.token_hex(3)}"

    response = act(
        client, "add", filed[1], text=text, files=[(b"<!doctype html><p>hi", "photo.jpg")]
    )

    assert response.status_code == 400
    assert "photo.jpg is not a kind of file we accept." in response.text
    assert text in response.text
    assert row_counts(app) == before
    assert attachment_files(app) == []


# --------------------------------------------------------------------------- (e) consent


@pytest.mark.parametrize(
    ("fields", "statistics", "contact", "details"),
    [
        ({"withdraw_statistics": "y"}, False, True, {"statistics": True}),
        ({"withdraw_contact": "y"}, True, False, {"contact": True}),
        (
            {"withdraw_statistics": "y", "withdraw_contact": "y"},
            False,
            False,
            {"statistics": True, "contact": True},
        ),
    ],
    ids=["statistics", "contact", "both"],
)
def test_withdrawing_consent_updates_the_shell_and_audits_without_identity(
    app: Flask,
    client: FlaskClient,
    filed: tuple[uuid.UUID, str],
    fields: dict[str, str],
    statistics: bool,
    contact: bool,
    details: dict[str, bool],
) -> None:
    report_id, receipt = filed

    response = act(client, "consent", receipt, **fields)

    # Then: the shell changed and the page says so
    assert response.status_code == 200
    assert "Your choice was saved." in response.text
    row = report_row(app, report_id)
    assert (row.consent_statistics, row.consent_contact) == (statistics, contact)
    yes_no = {True: "yes", False: "no"}
    assert (
        f"Counted in anonymous statistics: <strong>{yes_no[statistics]}</strong>" in response.text
    )

    # And: one audit event records what was withdrawn, and nothing about the witness
    (event,) = audit_events(app, "report.consent_withdrawn")
    assert (event.actor, event.target) == ("witness", str(report_id))
    assert json.loads(event.details) == details
    witness = crypto.derive_witness_secrets(receipt)
    identity = [
        receipt,
        crypto.normalize_receipt(receipt),
        row.witness_lookup_hash.hex(),
        witness.witness_key.key_id.hex(),
        "127.0.0.1",
    ]
    recorded = " ".join([event.actor, event.target, event.details])
    assert not [value for value in identity if value in recorded]


def test_sending_the_consent_form_without_a_box_changes_and_records_nothing(
    app: Flask, client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    before = row_counts(app)
    response = act(client, "consent", filed[1])
    assert response.status_code == 200
    assert row_counts(app) == before
    assert audit_events(app, "report.consent_withdrawn") == []


def test_withdrawing_again_records_nothing_more_and_the_form_goes_away(
    app: Flask, client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    act(client, "consent", filed[1], withdraw_statistics="y")
    act(client, "consent", filed[1], withdraw_statistics="y")
    assert len(audit_events(app, "report.consent_withdrawn")) == 1

    response = act(client, "consent", filed[1], withdraw_contact="y")

    assert len(audit_events(app, "report.consent_withdrawn")) == 2
    assert 'action="/followup/consent"' not in response.text


# --------------------------------------------------------------------------- (f) deletion


@pytest.fixture
def full_case(
    app: Flask, client: FlaskClient, organizer: KeyFiles
) -> tuple[uuid.UUID, str, StaffAccount]:
    """A report filed with a photo, granted to a volunteer, with an addition (text and PDF) and
    a reply: every kind of row and file a report can have."""
    token_value = csrf_token(client)
    response = client.post(
        "/report",
        data={
            "csrf_token": token_value,
            **report_form_data(),
            "attachments": [(io.BytesIO(jpeg_with_gps()), "photo.jpg")],
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.text
    receipt = receipt_from(response)
    with app.app_context():
        report_id = db.session.scalars(sa.select(Report.id)).one()
    organizer_account = make_user(app, role="organizer")
    volunteer = make_user(app, role="volunteer")
    volunteer_key = make_volunteer_key(app, volunteer, approved_by=organizer_account)
    grant = grant_for(
        app, report_id, organizer_key=organizer.private_key, recipient=volunteer_key.public_key()
    )
    with app.app_context():
        organizer_row = db.session.get(User, organizer_account.id)
        assert organizer_row is not None
        cases.assign_report(report_id, volunteer_id=volunteer.id, organizer=organizer_row)
        cases.record_grant(report_id, grant, actor=organizer_row)
    added = act(client, "add", receipt, text="more", files=[(minimal_pdf(), "summons.pdf")])
    assert added.status_code == 200
    make_reply(app, report_id, receipt=receipt, body="a reply", organizer_key=organizer.public_key)
    return report_id, receipt, volunteer


def rows_of_report(app: Flask, report_id: uuid.UUID) -> dict[str, int]:
    """Rows that belong to one report, per table."""
    with app.app_context():
        counts = {
            model.__tablename__: db.session.scalar(
                sa.select(sa.func.count()).select_from(model).where(model.report_id == report_id)
            )
            or 0
            for model in (Wrap, Addition, EnvelopeWrap, Attachment, Message)
        }
        counts["reports"] = db.session.scalar(
            sa.select(sa.func.count()).select_from(Report).where(Report.id == report_id)
        )
        db.session.remove()
    return counts


def test_deleting_without_the_confirmation_box_deletes_nothing(
    app: Flask, client: FlaskClient, full_case: tuple[uuid.UUID, str, StaffAccount]
) -> None:
    _report_id, receipt, _volunteer = full_case
    before, files_before = row_counts(app), attachment_files(app)

    response = act(client, "delete", receipt)

    assert response.status_code == 400
    assert "Tick the box to confirm." in response.text
    assert row_counts(app) == before
    assert attachment_files(app) == files_before
    assert open_case(client, receipt).status_code == 200


def test_deleting_shreds_the_report_and_leaves_one_audit_event(
    app: Flask, client: FlaskClient, full_case: tuple[uuid.UUID, str, StaffAccount]
) -> None:
    # Given: a report with wraps, an addition, envelope wraps, attachments, a reply and files
    report_id, receipt, _volunteer = full_case
    before = rows_of_report(app, report_id)
    assert all(before.values()), before
    assert len(attachment_files(app)) == 2

    # When: the witness confirms the deletion
    response = act(client, "delete", receipt, confirm="y")

    # Then: the deleted page, and every row and file of the report is gone
    assert response.status_code == 200
    assert "Your report was deleted" in response.text
    assert rows_of_report(app, report_id) == dict.fromkeys(before, 0)
    assert attachment_files(app) == []
    counts = row_counts(app)
    assert counts["assignments"] == 0
    assert counts["status_changes"] == 0

    # And: one audit event without content remains
    (event,) = audit_events(app, "report.deleted_by_witness")
    assert (event.actor, event.target, json.loads(event.details)) == (
        "witness",
        str(report_id),
        {},
    )

    # And: the receipt no longer finds anything
    again = open_case(client, receipt)
    assert again.status_code == 404
    assert NOT_FOUND in again.text


def test_after_deletion_no_row_but_the_audit_log_names_the_report(
    app: Flask, client: FlaskClient, full_case: tuple[uuid.UUID, str, StaffAccount]
) -> None:
    report_id, receipt, _volunteer = full_case
    with app.app_context():
        lookup_hash = db.session.get(Report, report_id).witness_lookup_hash  # type: ignore[union-attr]
        db.session.remove()

    act(client, "delete", receipt, confirm="y")

    forms = {str(report_id).encode(), report_id.hex.encode(), report_id.bytes, lookup_hash}
    with app.app_context():
        for table in Base.metadata.sorted_tables:
            if table.name == "audit_events":
                continue
            for row in db.session.execute(sa.select(table)).all():
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    assert not any(form in raw for form in forms), table.name


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_after_deletion_the_sqlite_files_hold_no_wrap_or_sealed_value_of_the_report(
    app: Flask, client: FlaskClient, full_case: tuple[uuid.UUID, str, StaffAccount]
) -> None:
    """Crypto-shredding holds on disk: neither the database file nor its WAL keeps the old
    page versions with the deleted wraps (which the organizer key could still open)."""
    # Given: every ciphertext blob of the report, as stored
    report_id, receipt, _volunteer = full_case
    with app.app_context():
        blobs = [w.blob for w in db.session.scalars(sa.select(Wrap)).all()]
        blobs += [w.blob for w in db.session.scalars(sa.select(EnvelopeWrap)).all()]
        blobs += [a.text_sealed for a in db.session.scalars(sa.select(Addition)).all()]
        blobs += [m.body_sealed for m in db.session.scalars(sa.select(Message)).all()]
        blobs += [a.meta_sealed for a in db.session.scalars(sa.select(Attachment)).all()]
        report = db.session.get(Report, report_id)
        assert report is not None
        blobs += list(report.sealed_fields().values())
        database = Path(sa.make_url(str(db.engine.url)).database or "")
        db.session.remove()
    assert len(blobs) >= 12

    # When: the witness deletes the report
    assert act(client, "delete", receipt, confirm="y").status_code == 200

    # Then: no blob is left in the database file or the WAL, while the app still runs
    raw = b"".join(
        path.read_bytes()
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"))
        if path.exists()
    )
    assert [blob[:48].hex() for blob in blobs if blob[2:50] in raw] == []


# --------------------------------------------------------------------------- (g) CSRF


def test_every_follow_up_post_needs_the_csrf_token(
    app: Flask, client: FlaskClient, filed: tuple[uuid.UUID, str]
) -> None:
    # Given: the witness's session has a real token, and a stored report
    report_id, receipt = filed
    token(client)
    before = row_counts(app)
    instance = app.extensions["incidents.settings"].instance_path
    accepted = []
    for path in ("/followup", "/followup/add", "/followup/consent", "/followup/delete"):
        for token_value in (None, "forged", ""):
            data: dict[str, Any] = {
                "receipt": receipt,
                "text": "added without a token",
                "withdraw_statistics": "y",
                "withdraw_contact": "y",
                "confirm": "y",
                "attachments": [(io.BytesIO(minimal_pdf()), "summons.pdf")],
            }
            if token_value is not None:
                data["csrf_token"] = token_value

            # When: a form is sent without a valid token
            response = client.post(path, data=data, content_type="multipart/form-data")

            # Then: it is refused with the expired-form page
            if response.status_code != 400 or CSRF_HEADING not in response.text:
                accepted.append((path, token_value, response.status_code))
    assert accepted == []

    # And: nothing changed, and no partial file is left
    assert row_counts(app) == before
    assert attachment_files(app) == []
    assert not list((attachment_directory(instance) / PARTIAL_DIRECTORY).glob("*"))
    row = report_row(app, report_id)
    assert (row.consent_statistics, row.consent_contact) == (True, True)
