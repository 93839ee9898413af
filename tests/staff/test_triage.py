"""Triage on the clear shell (incidents.services.triage through the staff views).

The organizer lists, filters and pages through reports, changes their status along the
transition table, corrects the category and period, and links duplicates. Nothing here may ever
show a sealed field: a report filed through the witness form with unique phrases is looked for
on every staff page.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from incidents import vocabulary
from incidents.db import db
from incidents.models import AuditEvent, Report, StatusChange
from incidents.services.triage import TRANSITIONS
from tests.factories import (
    StaffAccount,
    flashed,
    login,
    make_report,
    make_user,
    make_volunteer_key,
    page_csrf_token,
    submit_report,
    use_fast_password_hashing,
)

ROW_LINK = re.compile(r'<td[^>]*><a href="/staff/reports/([0-9a-f-]{36})">')
STATUS_OPTIONS = re.compile(r'<select id="status" name="status">(.*?)</select>', re.S)
PERIOD_MESSAGE = "Write a period as 2025-W07 (ISO week) or 2025-03 (month)."


@pytest.fixture(autouse=True)
def _fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fast_password_hashing(monkeypatch)


@pytest.fixture
def organizer_account(app: Flask, client: FlaskClient) -> StaffAccount:
    """An organizer, logged in on ``client``."""
    account = make_user(app, role="organizer")
    assert login(client, account).status_code == 302
    return account


def listed(client: FlaskClient, query: str = "") -> list[str]:
    """Report ids in the order the triage list shows them (one page)."""
    response = client.get(f"/staff/reports{query}")
    assert response.status_code == 200
    return ROW_LINK.findall(response.get_data(as_text=True))


def report_row(app: Flask, report_id: uuid.UUID) -> Report:
    """The stored report (detached copy of its clear columns)."""
    with app.app_context():
        row = db.session.get(Report, report_id)
        assert row is not None
        db.session.expunge(row)
        return row


def set_status_in_database(app: Flask, report_id: uuid.UUID, status: str) -> None:
    """Put a report into ``status`` without going through triage (test setup only)."""
    with app.app_context():
        row = db.session.get(Report, report_id)
        assert row is not None
        row.status = status
        db.session.commit()


def audit_events(app: Flask, action: str) -> list[dict[str, Any]]:
    """Audit events of one action, oldest first, with their details decoded."""
    with app.app_context():
        rows = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        ).all()
        return [
            {"actor": row.actor, "target": row.target, "details": json.loads(row.details)}
            for row in rows
        ]


def post_form(
    client: FlaskClient,
    report_id: uuid.UUID,
    action: str,
    data: dict[str, str],
    *,
    token: str | None = None,
) -> TestResponse:
    """POST one of the report page's forms (with a CSRF token) and follow the redirect."""
    token = token or page_csrf_token(client, f"/staff/reports/{report_id}")
    return client.post(
        f"/staff/reports/{report_id}/{action}",
        data={"csrf_token": token, **data},
        follow_redirects=True,
    )


# --------------------------------------------------------------------------- list


def test_list_is_newest_received_first_and_paginated_by_25(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    # Given: 27 reports received on 27 different days (filed in a shuffled order)
    days = [date(2025, 1, 1) + timedelta(days=n) for n in range(27)]
    order = list(range(27))
    secrets.SystemRandom().shuffle(order)
    by_day = {days[n]: str(make_report(app, received_on=days[n])) for n in order}
    newest_first = [by_day[day] for day in sorted(days, reverse=True)]

    # When: the organizer opens the list and its second page
    first = client.get("/staff/reports")
    second_page = listed(client, "?page=2")

    # Then: 25 newest first on page 1, the 2 oldest on page 2, with working page links
    page = first.get_data(as_text=True)
    assert ROW_LINK.findall(page) == newest_first[:25]
    assert second_page == newest_first[25:]
    assert "27 reports" in page
    assert "Page 1 of 2" in page
    assert 'href="/staff/reports?page=2"' in page
    assert listed(client, "?page=99") == newest_first[25:], "a page past the end shows the last"
    assert listed(client, "?page=-3") == newest_first[:25]

    # And: the page links keep the filters
    filtered = client.get("/staff/reports?category=threat&period=2025").get_data(as_text=True)
    assert "/staff/reports?page=2&amp;category=threat&amp;period=2025" in filtered


SPECS: dict[str, dict[str, Any]] = {
    "threat-belgrade-W11": {
        "status": "new",
        "category": "threat",
        "occurred_on": date(2025, 3, 12),
        "date_precision": "day",
        "country": "RS",
        "city": "belgrade",
        "consent_statistics": True,
        "consent_contact": True,
    },
    "surveillance-novi-sad-march": {
        "status": "triaged",
        "category": "surveillance",
        "occurred_on": date(2025, 3, 20),
        "date_precision": "month",
        "country": "RS",
        "city": "novi_sad",
        "consent_statistics": False,
        "consent_contact": True,
    },
    "detention-budva-2024": {
        "status": "rejected",
        "category": "detention",
        "occurred_on": date(2024, 11, 5),
        "date_precision": "month",
        "country": "ME",
        "city": "budva",
        "consent_statistics": True,
        "consent_contact": False,
    },
    "threat-tbilisi-W02": {
        "status": "new",
        "category": "threat",
        "occurred_on": date(2025, 1, 8),
        "date_precision": "week",
        "country": "GE",
        "city": "tbilisi",
        "consent_statistics": False,
        "consent_contact": False,
    },
    "threat-belgrade-may": {
        "status": "closed",
        "category": "threat",
        "occurred_on": date(2025, 5, 2),
        "date_precision": "estimate",
        "country": "RS",
        "city": "belgrade",
        "consent_statistics": True,
        "consent_contact": False,
    },
    "threat-other-place": {
        "status": "new",
        "category": "threat",
        "occurred_on": date(2025, 3, 14),
        "date_precision": "day",
        "country": "ME",
        "city": "other",
        "consent_statistics": True,
        "consent_contact": True,
    },
}

FILTERS: dict[str, set[str]] = {
    "": set(SPECS),
    "?status=triaged": {"surveillance-novi-sad-march"},
    "?status=new": {"threat-belgrade-W11", "threat-tbilisi-W02", "threat-other-place"},
    "?category=detention": {"detention-budva-2024"},
    "?category=threat": {
        "threat-belgrade-W11",
        "threat-tbilisi-W02",
        "threat-belgrade-may",
        "threat-other-place",
    },
    "?period=2024": {"detention-budva-2024"},
    "?period=2025": set(SPECS) - {"detention-budva-2024"},
    "?period=2025-03": {"surveillance-novi-sad-march"},
    "?period=2025-W11": {"threat-belgrade-W11", "threat-other-place"},
    "?period=2025-W02": {"threat-tbilisi-W02"},
    "?period=2025-05": {"threat-belgrade-may"},
    "?country=RS": {
        "threat-belgrade-W11",
        "surveillance-novi-sad-march",
        "threat-belgrade-may",
    },
    "?country=ME": {"detention-budva-2024", "threat-other-place"},
    "?city=belgrade": {"threat-belgrade-W11", "threat-belgrade-may"},
    "?city=budva": {"detention-budva-2024"},
    "?statistics=yes": {
        "threat-belgrade-W11",
        "detention-budva-2024",
        "threat-belgrade-may",
        "threat-other-place",
    },
    "?statistics=no": {"surveillance-novi-sad-march", "threat-tbilisi-W02"},
    "?contact=yes": {
        "threat-belgrade-W11",
        "surveillance-novi-sad-march",
        "threat-other-place",
    },
    "?contact=no": {"detention-budva-2024", "threat-tbilisi-W02", "threat-belgrade-may"},
    "?category=threat&country=RS&statistics=yes": {
        "threat-belgrade-W11",
        "threat-belgrade-may",
    },
    "?period=2025&contact=no&status=new": {"threat-tbilisi-W02"},
    "?category=assault": set(),
    # Values that are not in the vocabulary or not a period are ignored, never an error.
    "?status=bogus&category=%27%3B--&country=XX&statistics=maybe": set(SPECS),
    "?period=2025-03-14%25": set(SPECS),
}


def test_each_filter_shows_matching_reports_and_excludes_the_others(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    # Given: six reports that differ in status, category, period, place and consents
    ids = {}
    for name, spec in SPECS.items():
        fields = {key: value for key, value in spec.items() if key != "status"}
        ids[name] = str(make_report(app, status=spec["status"], **fields))
    names = {report_id: name for name, report_id in ids.items()}
    periods = {name: report_row(app, uuid.UUID(ids[name])).occurred_period for name in SPECS}
    assert periods["threat-belgrade-W11"] == "2025-W11"
    assert periods["surveillance-novi-sad-march"] == "2025-03"

    # When: the organizer applies each filter
    shown = {query: {names[i] for i in listed(client, query)} for query in FILTERS}

    # Then: each shows exactly the reports that match it
    assert shown == FILTERS


# --------------------------------------------------------------------------- status


def status_options(response: TestResponse) -> list[str]:
    """The statuses the report page offers in its status form."""
    match = STATUS_OPTIONS.search(response.get_data(as_text=True))
    return re.findall(r'<option value="([a-z_]+)"', match.group(1)) if match else []


def test_assigned_and_duplicate_are_never_a_manual_target() -> None:
    targets = set().union(*TRANSITIONS.values())
    assert "assigned" not in targets
    assert "duplicate" not in targets
    assert set(TRANSITIONS) == vocabulary.STATUS_CODES


def test_manual_status_changes_follow_the_transition_table(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    # Given: a report, and every (current status, requested status) pair
    report_id = make_report(app)
    statuses = sorted(vocabulary.STATUS_CODES)
    accepted: dict[tuple[str, str], bool] = {}
    offered: dict[str, list[str]] = {}
    problems: list[str] = []
    token = page_csrf_token(client, f"/staff/reports/{report_id}")

    for old in statuses:
        set_status_in_database(app, report_id, old)
        offered[old] = status_options(client.get(f"/staff/reports/{report_id}"))
        for new in statuses:
            set_status_in_database(app, report_id, old)
            reason = f"because {old} to {new}"

            # When: the organizer asks for the change with a reason
            data = {"csrf_token": token, "status": new, "reason": reason}
            client.post(f"/staff/reports/{report_id}/status", data=data)
            messages = flashed(client.get("/exports"))  # a light page that shows the messages

            # Then: it is stored (with its reason) exactly when the table allows it
            with app.app_context():
                change = db.session.scalars(
                    select(StatusChange).where(StatusChange.reason == reason)
                ).first()
            status_now = report_row(app, report_id).status
            accepted[(old, new)] = change is not None
            if change is not None:
                if (change.old_status, change.new_status, status_now) != (old, new, new):
                    stored = f"{change.old_status}->{change.new_status}"
                    problems.append(f"{old}->{new}: stored {stored}, status now {status_now}")
                if messages != ["Saved."]:
                    problems.append(f"{old}->{new}: accepted, but the page says {messages}")
            elif status_now != old or messages != [
                "This status change is not allowed from the report's current status."
            ]:
                problems.append(f"{old}->{new}: refused as {messages}, status {status_now}")

    assert problems == []
    assert accepted == {(old, new): new in TRANSITIONS[old] for old in statuses for new in statuses}
    assert offered == {old: sorted(TRANSITIONS[old]) for old in statuses}

    # And: the report's history shows each change with its reason
    history = client.get(f"/staff/reports/{report_id}").get_data(as_text=True)
    for old, new in accepted:
        assert (f"— because {old} to {new}" in history) is accepted[(old, new)]

    # And: every accepted change is one "report.status" audit event naming both statuses
    events = audit_events(app, "report.status")
    allowed = [(old, new) for old in statuses for new in statuses if new in TRANSITIONS[old]]
    assert [(e["details"]["from"], e["details"]["to"]) for e in events] == allowed
    assert {e["target"] for e in events} == {str(report_id)}
    assert {e["actor"] for e in events} == {organizer_account.username}


def test_status_change_with_an_overlong_reason_or_unknown_status_changes_nothing(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    report_id = make_report(app)

    too_long = post_form(client, report_id, "status", {"status": "triaged", "reason": "x" * 501})
    unknown = post_form(client, report_id, "status", {"status": "archived", "reason": ""})

    assert any("500" in message for message in flashed(too_long)), flashed(too_long)
    assert flashed(unknown) != []
    assert report_row(app, report_id).status == "new"
    assert audit_events(app, "report.status") == []


# --------------------------------------------------------------------------- corrections


VALID_PERIODS = ("2025-W07", "2025-03", "2024-12", "2026-W53", "2025-W01", " 2025-W52 ")
INVALID_PERIODS = (
    "2025-3",
    "2025-13",
    "2025-00",
    "2025-W00",
    "2025-W54",
    "2025-W53",  # 2025 has 52 ISO weeks
    "2025-w07",
    "2025-03-14",
    "March 2025",
    "25-03",
    "",
    "2025-W07'--",
)


def test_valid_corrections_are_saved_and_audited(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    # Given: a threat report of ISO week 2024-W23
    report_id = make_report(app, category="threat", occurred_on=date(2024, 6, 3))
    token = page_csrf_token(client, f"/staff/reports/{report_id}")
    category, period_before = "threat", "2024-W23"
    expected_events = []

    for n, period in enumerate(VALID_PERIODS):
        # When: the organizer corrects category and period
        new_category = ("surveillance", "detention")[n % 2]
        data = {"category": new_category, "occurred_period": period}
        response = post_form(client, report_id, "correct", data, token=token)

        # Then: both are saved and the change is one "report.correct" event
        assert flashed(response) == ["Saved."], period
        row = report_row(app, report_id)
        assert (row.category, row.occurred_period) == (new_category, period.strip())
        expected_events.append(
            {
                "actor": organizer_account.username,
                "target": str(report_id),
                "details": {
                    "category_from": category,
                    "category_to": new_category,
                    "period_from": period_before,
                    "period_to": period.strip(),
                },
            }
        )
        category, period_before = new_category, period.strip()
    assert audit_events(app, "report.correct") == expected_events

    # And: saving the same values again changes nothing and records nothing
    data = {"category": category, "occurred_period": period_before}
    assert flashed(post_form(client, report_id, "correct", data, token=token)) == ["Saved."]
    assert len(audit_events(app, "report.correct")) == len(VALID_PERIODS)


def test_invalid_periods_are_refused_with_a_message_and_nothing_changes(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    report_id = make_report(app, category="threat", occurred_on=date(2025, 3, 14))
    token = page_csrf_token(client, f"/staff/reports/{report_id}")

    messages = {
        period: flashed(
            post_form(
                client,
                report_id,
                "correct",
                {"category": "surveillance", "occurred_period": period},
                token=token,
            )
        )
        for period in INVALID_PERIODS
    }

    expected = {period: [PERIOD_MESSAGE] for period in INVALID_PERIODS}
    expected[""] = ["This field is required."]
    assert messages == expected
    row = report_row(app, report_id)
    assert (row.category, row.occurred_period) == ("threat", "2025-W11")
    assert audit_events(app, "report.correct") == []


def test_unknown_category_is_refused_and_nothing_changes(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    report_id = make_report(app, category="threat", occurred_on=date(2025, 3, 14))

    response = post_form(
        client, report_id, "correct", {"category": "espionage", "occurred_period": "2025-03"}
    )

    assert flashed(response) == ["Not a valid choice."]
    row = report_row(app, report_id)
    assert (row.category, row.occurred_period) == ("threat", "2025-W11")
    assert audit_events(app, "report.correct") == []


# --------------------------------------------------------------------------- duplicates


def suggestion_ids(client: FlaskClient, report_id: uuid.UUID) -> list[str]:
    """Ids the report page suggests as possible duplicates (with a link button each)."""
    page = client.get(f"/staff/reports/{report_id}").get_data(as_text=True)
    section = page.split("Possible duplicates", 1)[1]
    return re.findall(r'name="original_id" value="([0-9a-f-]{36})"', section)


def test_duplicates_are_suggested_from_the_shell_and_can_be_linked(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    # Given: an original, a report with the same shell, and near misses on each shell field
    same = {"category": "threat", "occurred_on": date(2025, 3, 12), "country": "RS"}
    original = make_report(app, received_on=date(2025, 3, 13), city="belgrade", **same)
    report = make_report(app, received_on=date(2025, 3, 15), city="belgrade", **same)
    misses = [
        make_report(app, city="novi_sad", **same),
        make_report(app, city="belgrade", **{**same, "category": "surveillance"}),
        make_report(app, city="belgrade", **{**same, "occurred_on": date(2025, 3, 20)}),
        make_report(app, city="belgrade", **{**same, "date_precision": "month"}),
        make_report(app, city="other", **{**same, "country": "ME"}),
    ]
    make_report(app, city="other", **{**same, "country": "GE"})

    # When: the organizer opens the report
    suggested = suggestion_ids(client, report)

    # Then: only the report with the same category, period and place is suggested
    assert suggested == [str(original)]
    assert not {str(miss) for miss in misses} & set(suggested)

    # When: they link it as a duplicate
    response = post_form(client, report, "duplicate", {"original_id": str(original)})

    # Then: it points to the original, has status "duplicate", and the change is on record
    assert flashed(response) == ["Saved."]
    row = report_row(app, report)
    assert (row.duplicate_of, row.status) == (original, "duplicate")
    assert f'href="/staff/reports/{original}"' in response.get_data(as_text=True)
    assert f"duplicate of {original}" in response.get_data(as_text=True)
    (event,) = audit_events(app, "report.status")
    assert event["target"] == str(report)
    assert event["details"] == {"from": "new", "to": "duplicate"}

    # And: a duplicate is no longer suggested for the original
    assert suggestion_ids(client, original) == []


def test_a_report_cannot_duplicate_itself_a_duplicate_or_an_unknown_report(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    original = make_report(app)
    duplicate = make_report(app)
    third = make_report(app)
    linked = post_form(client, duplicate, "duplicate", {"original_id": str(original)})
    assert flashed(linked) == ["Saved."]

    attempts = {
        "itself": post_form(client, third, "duplicate", {"original_id": str(third)}),
        "a duplicate": post_form(client, third, "duplicate", {"original_id": str(duplicate)}),
        "unknown": post_form(client, third, "duplicate", {"original_id": str(uuid.uuid4())}),
    }

    assert flashed(attempts["itself"]) == ["A report cannot duplicate itself."]
    assert flashed(attempts["a duplicate"]) == [
        "Link to the original report, not to another duplicate."
    ]
    assert len(flashed(attempts["unknown"])) == 1
    assert "Saved." not in flashed(attempts["unknown"])
    row = report_row(app, third)
    assert (row.duplicate_of, row.status) == (None, "new")
    token = page_csrf_token(client, f"/staff/reports/{third}")
    malformed = client.post(
        f"/staff/reports/{third}/duplicate", data={"csrf_token": token, "original_id": "x"}
    )
    assert malformed.status_code == 400
    assert len(audit_events(app, "report.status")) == 1


# --------------------------------------------------------------------------- unknown reports


def test_unknown_report_is_404_on_every_report_route(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    make_report(app)
    unknown = uuid.uuid4()
    token = page_csrf_token(client, "/staff/reports")

    assert client.get(f"/staff/reports/{unknown}").status_code == 404
    assert client.get("/staff/reports/not-a-uuid").status_code == 404
    for action in ("status", "correct", "duplicate", "assign", "unassign"):
        response = client.post(f"/staff/reports/{unknown}/{action}", data={"csrf_token": token})
        assert response.status_code == 404, action
    grant = client.post(
        f"/staff/reports/{unknown}/grants",
        data={"csrf_token": token},
        content_type="multipart/form-data",
    )
    assert grant.status_code == 404


# --------------------------------------------------------------------------- sealed content


def staff_pages(report_id: str) -> Iterator[str]:
    """Every page an organizer can open that could show something about the report."""
    yield "/staff/reports"
    yield f"/staff/reports?period={date.today().year}"
    yield f"/staff/reports/{report_id}"
    yield "/staff/audit"
    yield "/staff/keys"
    yield "/staff/users"
    yield "/staff/account"
    yield "/exports"


def test_no_staff_page_shows_sealed_content(
    app: Flask, client: FlaskClient, organizer_account: StaffAccount
) -> None:
    # Given: a witness filed a report through the form with a unique phrase in every sealed field
    phrase = f"OSPREY-{secrets.token_hex(6)}"
    sealed = {
        "occurred_on": "2024-02-29",
        "place_detail": f"yard {phrase}-place",
        "narrative": f"They filmed me at {phrase}-narrative.",
        "targeted_person": f"brother {phrase}-person",
        "perpetrator_description": f"grey coat {phrase}-perpetrator",
        "contact": f"signal: {phrase}-contact",
    }
    witness = app.test_client()
    assert submit_report(witness, **sealed).status_code == 200
    (report_id,) = listed(client)

    # And: it is assigned to a volunteer, triaged, corrected and linked as far as possible
    volunteer = make_user(app, role="volunteer")
    make_volunteer_key(app, volunteer, approved_by=organizer_account)
    report = uuid.UUID(report_id)
    post_form(client, report, "assign", {"volunteer_id": str(volunteer.id)})
    post_form(client, report, "status", {"status": "in_progress", "reason": "working"})
    post_form(client, report, "correct", {"category": "threat", "occurred_period": "2024-03"})
    volunteer_client = app.test_client()
    assert login(volunteer_client, volunteer).status_code == 302

    # When: the organizer and the volunteer open every staff page they can
    pages = {url: client.get(url) for url in staff_pages(report_id)}
    pages.update({f"volunteer {url}": volunteer_client.get(url) for url in ("/staff/cases",)})
    pages["volunteer /staff/keys"] = volunteer_client.get("/staff/keys")

    # Then: every page works, and none contains a sealed value
    assert {url: response.status_code for url, response in pages.items()} == dict.fromkeys(
        pages, 200
    )
    assert report_id in pages[f"/staff/reports/{report_id}"].get_data(as_text=True)
    leaks = [
        f"{name} on {url}"
        for url, response in pages.items()
        for name, value in sealed.items()
        if value in response.get_data(as_text=True)
    ]
    assert leaks == []
    assert phrase not in "".join(r.get_data(as_text=True) for r in pages.values())
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Report)) == 1
