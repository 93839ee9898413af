"""The tamper-evident audit log (DESIGN S8): hash chain, ``audit verify``, what it never holds.

Tampering is done the way an intruder with database access would: SQL statements straight on
the ``audit_events`` table, bypassing ``audit.record``. Every edit, deletion, insertion or
reordering inside the chain is detected and the first broken event named. Removing the newest
events is not detectable from the chain alone (what is left is a valid, shorter chain); it shows
as a different head hash, which is why ``flask audit verify`` prints the head for a copy kept
elsewhere. The chain has no secret: an intruder who rewrites an event *and recomputes every
hash after it* leaves a valid chain too, again with a different head. So the head is the anchor,
and tests here tamper the way that the chain itself can catch.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, request
from flask.testing import FlaskClient, FlaskCliRunner

from incidents import audit
from incidents.db import Base, db
from incidents.models import AuditEvent, Report
from tests.factories import (
    StaffAccount,
    login,
    make_user,
    page_csrf_token,
    submit_report,
    use_fast_password_hashing,
)

EVENTS = AuditEvent.__table__


@pytest.fixture(autouse=True)
def _fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords are incidental here (tests/staff/test_auth.py covers the real cost)."""
    use_fast_password_hashing(monkeypatch)


@pytest.fixture
def chain(app: Flask) -> Iterator[list[str]]:
    """Three recorded events (seq 1, 2, 3) in an app context; yields their hashes."""
    with app.app_context():
        hashes = [
            audit.record(actor="organizer-a", action="login.success", target="organizer-a").hash,
            audit.record(
                actor="organizer-a",
                action="case.assign",
                target="6f1c1ef4-0000-4000-8000-000000000001",
                details={"volunteer": "volunteer-b"},
            ).hash,
            audit.record(actor="organizer-a", action="key.approve", target="ab" * 16).hash,
        ]
        db.session.commit()
        yield hashes
        db.session.remove()


def tamper(statement: sa.Executable, **params: Any) -> None:
    """Run one SQL statement on the database, outside the audit module, and commit."""
    db.session.execute(statement, params)
    db.session.commit()
    db.session.expire_all()


def stored_time(seq: int) -> datetime:
    """The stored time of an event, as the database hands it back."""
    value = db.session.scalar(sa.select(EVENTS.c.at).where(EVENTS.c.seq == seq))
    assert isinstance(value, datetime)
    return value


def verify_command(runner: FlaskCliRunner) -> tuple[int, str]:
    """Run ``flask audit verify``; return its exit code and everything it printed."""
    result = runner.invoke(args=["audit", "verify"])
    return result.exit_code, result.output


# --------------------------------------------------------------------------- the chain


def test_recorded_events_verify_and_each_hash_covers_the_previous(
    app: Flask, chain: list[str]
) -> None:
    report = audit.verify()
    assert report.is_intact
    assert report.checked == 3
    assert report.head_hash == chain[-1]
    events = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert [event.prev_hash for event in events] == [audit.GENESIS_HASH, chain[0], chain[1]]
    # The same event content after another predecessor hashes differently.
    second = events[1]
    fields = {
        "seq": second.seq,
        "at": second.at,
        "actor": second.actor,
        "action": second.action,
        "target": second.target,
        "details": second.details,
    }
    assert audit.event_hash(prev_hash=chain[0], **fields) == chain[1]
    assert audit.event_hash(prev_hash=audit.GENESIS_HASH, **fields) != chain[1]


def test_verify_command_reports_an_intact_chain_with_its_head(
    app: Flask, chain: list[str], runner: FlaskCliRunner
) -> None:
    code, output = verify_command(runner)
    assert code == 0
    assert f"Audit chain intact: 3 events; head {chain[-1]}" in output


@pytest.mark.parametrize(
    ("column", "forged"),
    [
        ("actor", "someone-else"),
        ("action", "login.failure"),
        ("target", "another-target"),
        ("details", json.dumps({"volunteer": "infiltrator"})),
        ("at", "an hour later"),
        ("hash", "f" * 64),
        ("prev_hash", "0" * 64),
    ],
)
def test_editing_a_stored_event_is_detected(
    app: Flask, chain: list[str], runner: FlaskCliRunner, column: str, forged: str
) -> None:
    # Given: an intact chain of three events
    assert audit.verify().is_intact
    value: object = stored_time(2) + timedelta(hours=1) if column == "at" else forged
    # When: the middle event is edited directly in the database
    tamper(sa.update(EVENTS).where(EVENTS.c.seq == 2).values({column: value}))
    # Then: the chain breaks exactly there
    report = audit.verify()
    assert report.broken_seq == 2
    assert report.checked == 1
    # And: the command fails naming that event
    code, output = verify_command(runner)
    assert code == 1
    assert "Audit chain BROKEN at event 2:" in output


def test_deleting_a_middle_event_is_detected(
    app: Flask, chain: list[str], runner: FlaskCliRunner
) -> None:
    tamper(sa.delete(EVENTS).where(EVENTS.c.seq == 2))
    report = audit.verify()
    assert report.broken_seq == 3
    assert "event 2 is missing" in report.problem
    code, output = verify_command(runner)
    assert code == 1
    assert "Audit chain BROKEN at event 3: event 2 is missing" in output


def test_deleting_the_newest_event_is_only_visible_as_a_changed_head(
    app: Flask, chain: list[str], runner: FlaskCliRunner
) -> None:
    # Limitation, documented in incidents/audit.py: what is left after cutting off the newest
    # events is a valid shorter chain. Only the head printed by the command reveals it, when
    # compared with a copy kept elsewhere (e.g. noted down after each verification).
    code, before = verify_command(runner)
    assert code == 0
    assert f"3 events; head {chain[2]}" in before
    tamper(sa.delete(EVENTS).where(EVENTS.c.seq == 3))
    code, after = verify_command(runner)
    assert code == 0
    assert f"2 events; head {chain[1]}" in after
    assert chain[2] not in after


def test_swapping_two_events_is_detected(app: Flask, chain: list[str]) -> None:
    # seq is the primary key: move through a free number, as an intruder would.
    for old, new in ((2, 99), (3, 2), (99, 3)):
        tamper(sa.update(EVENTS).where(EVENTS.c.seq == old).values(seq=new))
    report = audit.verify()
    assert report.broken_seq == 2
    assert "previous-hash" in report.problem


def test_inserting_a_well_formed_forged_event_is_detected(app: Flask, chain: list[str]) -> None:
    # The intruder knows the algorithm: the forged event is hashed correctly onto event 2, and
    # event 3 is moved to seq 4 to make room. Event 4 no longer links to what precedes it.
    tamper(sa.update(EVENTS).where(EVENTS.c.seq == 3).values(seq=4))
    at = stored_time(2)
    forged = {
        "seq": 3,
        "at": at,
        "actor": "organizer-a",
        "action": "case.revoke",
        "target": "6f1c1ef4-0000-4000-8000-000000000001",
        "details": "{}",
    }
    tamper(
        sa.insert(EVENTS).values(
            **forged,
            prev_hash=chain[1],
            hash=audit.event_hash(prev_hash=chain[1], **forged),
        )
    )
    report = audit.verify()
    assert report.broken_seq == 4
    assert report.checked == 3


def test_naive_and_aware_times_hash_identically(app: Flask) -> None:
    # SQLite hands back naive datetimes, PostgreSQL aware ones: the same instant must hash the
    # same, whatever the zone it is expressed in and below the second.
    def hashed(at: datetime) -> str:
        return audit.event_hash(
            prev_hash=audit.GENESIS_HASH,
            seq=1,
            at=at,
            actor="a",
            action="b",
            target="c",
            details="",
        )

    moment = datetime(2025, 3, 14, 12, 30, 5, tzinfo=UTC)
    variants = [
        moment,
        moment.replace(tzinfo=None),
        moment.astimezone(timezone(timedelta(hours=2))),
        moment.replace(microsecond=999_999),
    ]
    assert {hashed(at) for at in variants} == {hashed(moment)}
    assert hashed(moment + timedelta(seconds=1)) != hashed(moment)
    # And through the real database of this run (SQLite: naive, PostgreSQL: aware).
    with app.app_context():
        audit.record(actor="organizer-a", action="login.success", target="organizer-a")
        db.session.commit()
        db.session.expire_all()
        at = stored_time(1)
        assert (at.tzinfo is None) == (db.engine.dialect.name == "sqlite")
        assert audit.verify().is_intact


# --------------------------------------------------------------------------- what it never holds


def database_text(app: Flask) -> str:
    """Every value of every table (SELECT * of each), as one text; bytes decoded byte for byte."""
    parts: list[str] = []
    with app.app_context():
        for table in Base.metadata.sorted_tables:
            for row in db.session.execute(sa.select(table)):
                for value in row:
                    is_bytes = isinstance(value, bytes | bytearray | memoryview)
                    parts.append(bytes(value).decode("latin-1") if is_bytes else str(value))
        db.session.remove()
    return "\n".join(parts)


def test_database_holds_no_ip_address_user_agent_or_report_text(app: Flask) -> None:
    address, agent = "203.0.113.77", "UA-MARKER-xyz Mozilla/5.0"
    phrase = "Quokka-7319 saw the consul's driver at the bridge"
    seen: list[tuple[str | None, str | None]] = []

    @app.before_request
    def _remember_client() -> None:
        seen.append((request.remote_addr, request.user_agent.string))

    # Given: every request comes from a recognisable address and browser
    browser = app.test_client()
    browser.environ_base.update(
        REMOTE_ADDR=address, HTTP_USER_AGENT=agent, HTTP_X_FORWARDED_FOR=address
    )
    organizer = make_user(app, role="organizer")
    # When: a witness files a report, staff log in (and fail to), and work the report
    assert submit_report(browser, narrative=phrase, place_detail=phrase).status_code == 200
    failed = StaffAccount(organizer.id, organizer.username, "organizer", "wrong password!", None)
    assert login(browser, failed, code="000000").status_code == 400
    assert login(browser, organizer).status_code == 302
    with app.app_context():
        report_id = db.session.scalar(sa.select(Report.id))
    token = page_csrf_token(browser, f"/staff/reports/{report_id}")
    browser.post(
        f"/staff/reports/{report_id}/status", data={"csrf_token": token, "status": "triaged"}
    )
    assert seen
    assert all(entry == (address, agent) for entry in seen)  # the markers reached the app
    # Then: no table holds the address, the browser or the witness's words
    stored = database_text(app)
    assert "login.failure" in stored
    assert "report.status" in stored  # the search covers the audit log
    assert address not in stored
    assert "UA-MARKER" not in stored
    assert "Quokka-7319" not in stored


# --------------------------------------------------------------------------- the audit page


_ROW = re.compile(
    r"<tr>\s*<td>(\d+)</td>\s*<td[^>]*>[^<]*</td>\s*<td>([^<]*)</td>\s*<td><code>([^<]*)</code></td>"
)


def audit_rows(client: FlaskClient, query: str = "") -> list[tuple[int, str, str]]:
    """(seq, actor, action) of each row shown on /staff/audit."""
    page = client.get(f"/staff/audit{query}")
    assert page.status_code == 200
    return [(int(seq), actor, action) for seq, actor, action in _ROW.findall(page.text)]


def test_audit_page_filters_by_actor_and_action_and_shows_the_chain_state(app: Flask) -> None:
    # Given: an organizer and a volunteer have logged in, and one login failed
    organizer = make_user(app, role="organizer", username="audit-organizer")
    volunteer = make_user(app, role="volunteer", username="audit-volunteer")
    browser = app.test_client()
    assert login(browser, volunteer).status_code == 302
    assert (
        login(browser, dataclasses.replace(volunteer, password="wrong password!")).status_code
        == 400
    )
    assert login(browser, organizer).status_code == 302
    # Then: the page shows every event, newest first, and an intact chain
    everything = audit_rows(browser)
    assert [seq for seq, _, _ in everything] == sorted(
        (seq for seq, _, _ in everything), reverse=True
    )
    assert len(everything) >= 5
    page = browser.get("/staff/audit").text
    assert f"The chain of {len(everything)} events is intact." in page
    # And: filters narrow by actor and by action (prefix)
    by_actor = audit_rows(browser, "?actor=audit-volunteer")
    assert by_actor
    assert {actor for _, actor, _ in by_actor} == {"audit-volunteer"}
    logins = audit_rows(browser, "?action=login.")
    assert {action for _, _, action in logins} == {"login.success", "login.failure"}
    both = audit_rows(browser, "?actor=audit-organizer&action=login.success")
    assert [(actor, action) for _, actor, action in both] == [("audit-organizer", "login.success")]
    # When: an event is edited in the database, the page says where the chain broke
    with app.app_context():
        tamper(sa.update(EVENTS).where(EVENTS.c.seq == 2).values(actor="nobody"))
    assert "The chain is broken at event 2" in browser.get("/staff/audit").text
