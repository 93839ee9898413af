"""The public timeline: shown only when an organizer publishes an approved P1 export."""

from __future__ import annotations

import re
import uuid
from datetime import date

import pytest
from flask import Flask

from incidents.db import db
from incidents.models import User
from incidents.services import export_requests, timeline_page
from tests.factories import make_report, make_user


def approved_p1(app: Flask, *, by_country: bool = False) -> tuple[uuid.UUID, User]:
    """An NGO's P1 request for 2025, approved by an organizer (the export really runs)."""
    organizer_account = make_user(app, role="organizer")
    ngo_account = make_user(app, role="ngo")
    for _ in range(12):
        make_report(app, occurred_on=date(2025, 5, 14), category="surveillance")
    settings = app.extensions["incidents.settings"]
    with app.app_context():
        ngo = db.session.get(User, ngo_account.id)
        organizer = db.session.get(User, organizer_account.id)
        assert ngo is not None
        assert organizer is not None
        request = export_requests.request_export(
            ngo, product="P1", first="2025Q1", last="2025Q4", by_country=by_country,
            language="en", today=date(2026, 2, 1),
        )  # fmt: skip
        export_requests.approve(
            request.id, organizer=organizer, instance_path=settings.instance_path,
            epsilon=export_requests.Decimal("1"), yearly_cap=export_requests.Decimal("4"),
            contributions=3, today=date(2026, 2, 1),
        )  # fmt: skip
        return request.id, organizer


def test_nothing_is_shown_until_an_organizer_publishes(app: Flask) -> None:
    approved_p1(app)
    response = app.test_client().get("/timeline")
    assert response.status_code == 404
    assert "No statistics are published" in response.get_data(as_text=True)


def test_a_published_p1_series_is_drawn_without_script_and_tabulated(app: Flask) -> None:
    request_id, organizer = approved_p1(app)
    with app.app_context():
        timeline_page.publish(
            request_id,
            organizer=db.session.merge(organizer),
            instance_path=app.extensions["incidents.settings"].instance_path,
        )

    page = app.test_client().get("/timeline").get_data(as_text=True)

    assert "<svg" in page
    assert "<script" not in page.split("</head>")[1]
    assert " style=" not in page
    quarters = re.findall(r'<td class="nowrap">(2025Q\d)</td>', page)
    assert quarters == ["2025Q1", "2025Q2", "2025Q3", "2025Q4"]
    assert "chart-band" in page


def test_only_an_approved_p1_export_without_countries_can_be_published(app: Flask) -> None:
    request_id, organizer = approved_p1(app, by_country=True)
    with app.app_context(), pytest.raises(timeline_page.TimelineError):
        timeline_page.publish(
            request_id,
            organizer=db.session.merge(organizer),
            instance_path=app.extensions["incidents.settings"].instance_path,
        )


def test_a_published_quarter_never_changes(app: Flask) -> None:
    """Given 2025 shown on the timeline, when a newer export of the same quarters is published,
    then the page keeps the first numbers (no averaging of several noisy releases)."""
    settings = app.extensions["incidents.settings"]
    first_id, organizer = approved_p1(app)
    second_id, _ = approved_p1(app)
    with app.app_context():
        added = timeline_page.publish(
            first_id, organizer=db.session.merge(organizer), instance_path=settings.instance_path
        )
        assert added == ["2025Q1", "2025Q2", "2025Q3", "2025Q4"]
        before = timeline_page.load()
        again = timeline_page.publish(
            second_id, organizer=db.session.merge(organizer), instance_path=settings.instance_path
        )
        after = timeline_page.load()
    assert again == []
    assert before == after
