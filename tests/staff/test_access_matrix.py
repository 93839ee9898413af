"""The role × endpoint access matrix of every staff and exports route (DESIGN §4, issue 3).

The routes are read from ``app.url_map`` when the test runs, so a new route without a row in
``EXPECTED`` fails ``test_every_staff_route_has_an_expected_access_rule``, and a route that loses
its ``role_required`` decorator fails ``test_each_role_reaches_exactly_its_routes``. Each route is
requested as an anonymous visitor, as an organizer, a legal-aid volunteer and an NGO, and with the
stale session of an account that was disabled while logged in:

* allowed: 200, 302 or 400, never 401/403 and never a redirect to the login page;
* forbidden: 403, without any report data, and (for POST) nothing changed in the database;
* anonymous or stale session: a redirect to the login page, without data, nothing changed.

POST requests carry a valid CSRF token (taken from a page the requester can load) and form data
that would really change something if the request got through (``form_data``), so that a 403 or
a login redirect is the access check speaking, not the CSRF check or form validation.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import quote, urlsplit

import pyotp
import pytest
import sqlalchemy as sa
from flask import Flask, url_for
from flask.testing import FlaskClient
from werkzeug.routing import Rule
from werkzeug.test import TestResponse

from incidents import crypto
from incidents.db import Base, db
from incidents.models import StaffSession, User
from incidents.services import accounts, api_tokens, cases, export_requests, recipients
from tests.conftest import KeyFiles
from tests.factories import (
    STAFF_PASSWORD,
    StaffAccount,
    answer_bundle_challenge,
    grant_for,
    login,
    make_report,
    make_user,
    page_csrf_token,
    use_fast_password_hashing,
)
from tests.staff.test_desk_pages import outputs_file, sealed_note

PUBLIC = "public"
ORGANIZER = frozenset({"organizer"})
VOLUNTEER = frozenset({"volunteer"})
NGO = frozenset({"ngo"})
ALL_STAFF = frozenset({"organizer", "volunteer", "ngo"})
DESK_USERS = frozenset({"organizer", "volunteer"})

EXPECTED: dict[str, frozenset[str] | str] = {
    # Public: reachable without an account.
    "staff.login": PUBLIC,
    "staff.logout": PUBLIC,
    "staff.accept_invitation": PUBLIC,
    # Every staff member (the home page only redirects to the role's start page).
    "staff.home": ALL_STAFF,
    "staff.account": ALL_STAFF,
    "staff.change_password": ALL_STAFF,
    "staff.enroll_totp": ALL_STAFF,
    # The desk: API tokens, bundle files and uploaded outputs, for those who hold a key.
    "staff.token_create": DESK_USERS,
    "staff.token_revoke": DESK_USERS,
    "staff.desk": DESK_USERS,
    "staff.bundle_download": DESK_USERS,
    "staff.outputs_upload": DESK_USERS,
    # Organizers: accounts, triage, assignment, grants, key approval, audit log.
    "staff.users": ORGANIZER,
    "staff.invite": ORGANIZER,
    "staff.set_active": ORGANIZER,
    "staff.set_vetted": ORGANIZER,
    "staff.reports": ORGANIZER,
    "staff.report": ORGANIZER,
    "staff.change_status": ORGANIZER,
    "staff.correct": ORGANIZER,
    "staff.link_duplicate": ORGANIZER,
    "staff.assign": ORGANIZER,
    "staff.unassign": ORGANIZER,
    "staff.record_grant": ORGANIZER,
    "staff.approve_key": ORGANIZER,
    "staff.audit_log": ORGANIZER,
    # Keys: volunteers register their own; both roles see and retire keys.
    "staff.keys": frozenset({"organizer", "volunteer"}),
    "staff.upload_key": VOLUNTEER,
    "staff.retire_key": frozenset({"organizer", "volunteer"}),
    # Volunteers: their assigned cases.
    "staff.cases": VOLUNTEER,
    # Exports: organizers and NGOs.
    "exports.index": frozenset({"organizer", "ngo"}),
    "exports.request_export": NGO,
    "exports.download_export": NGO,
    "exports.approve_export": ORGANIZER,
    "exports.refuse_export": ORGANIZER,
    "exports.publish_timeline": ORGANIZER,
    "exports.unpublish_timeline": ORGANIZER,
    "exports.public_timeline": PUBLIC,
}
"""Who may use each endpoint: ``PUBLIC`` or the set of staff roles allowed."""

# Requesters in the order they are tried: those who must be refused first, so that no allowed
# POST (which changes things) runs before a refused one is checked for "nothing changed".
REQUESTERS = ("anonymous", "disabled", "ngo", "volunteer", "organizer")
STAFF_ROLES = ("organizer", "volunteer", "ngo")
LOGIN_PATH = "/staff/login"


def staff_rules(app: Flask) -> list[Rule]:
    """Every staff and exports rule of the running application, logout last."""
    rules = [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(("staff.", "exports."))
    ]
    # Logging out ends the requester's session, so it must come after every other request.
    return sorted(rules, key=lambda rule: (rule.endpoint == "staff.logout", rule.rule))


def methods_of(rule: Rule) -> list[str]:
    """The methods a rule really serves (HEAD and OPTIONS are added by Werkzeug)."""
    return sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """Real rows for the URLs that need them, and values that must never leak."""

    accounts: dict[str, StaffAccount]
    target: StaffAccount
    spare_volunteer: StaffAccount
    report_id: uuid.UUID
    original_id: uuid.UUID
    pending_key_id: str
    grant: bytes
    invitation_token: str
    export_request_id: uuid.UUID
    organizer_key: crypto.PublicKey
    volunteer_key: crypto.PublicKey
    api_token_id: uuid.UUID
    desk_keys: dict[str, crypto.PrivateKey]
    """The private key each desk user's desk holds, by requester."""
    never_shown_when_refused: list[str] = field(default_factory=list)
    file_proofs: dict[str, str] = field(default_factory=dict)
    """By requester: the answer to the challenge of the last bundle file they downloaded."""

    def remember_bundle(self, requester: str, response: TestResponse) -> None:
        """After a bundle download: what the requester's desk would answer in its outputs."""
        key = self.desk_keys.get(requester)
        if key is not None and response.status_code == 200:
            self.file_proofs[requester] = answer_bundle_challenge(response.get_data(), key)

    def url_values(self) -> dict[str, object]:
        """Values for every URL variable of the staff routes."""
        return {
            "report_id": self.report_id,
            "key_id": self.pending_key_id,
            "user_id": self.target.id,
            "token": self.invitation_token,
            "request_id": self.export_request_id,
            "token_id": self.api_token_id,
        }


def build_world(app: Flask, organizer_keys: KeyFiles) -> World:
    """Given: accounts of every role, a report assigned to the volunteer, keys and a grant."""
    staff = {role: make_user(app, role=role, username=f"matrix-{role}") for role in STAFF_ROLES}
    staff["disabled"] = make_user(app, role="volunteer", username="matrix-disabled")
    target = make_user(app, role="ngo", username="matrix-target")
    spare = make_user(app, role="volunteer", username="matrix-spare")
    report_id = make_report(app, occurred_on=date(2024, 11, 20))
    original_id = make_report(app, occurred_on=date(2024, 11, 21))
    approved_private = crypto.PrivateKey.generate()
    approved = approved_private.public_key()
    spare_key = crypto.PrivateKey.generate().public_key()
    pending = crypto.PrivateKey.generate().public_key()
    with app.app_context():
        organizer = db.session.get(User, staff["organizer"].id)
        volunteer = db.session.get(User, staff["volunteer"].id)
        spare_row = db.session.get(User, spare.id)
        assert organizer is not None
        assert volunteer is not None
        assert spare_row is not None
        recipients.register_key(volunteer, approved.to_armor().encode(), keyring=None)
        recipients.approve_key(approved.key_id_hex, organizer=organizer)
        recipients.register_key(spare_row, spare_key.to_armor().encode(), keyring=None)
        recipients.approve_key(spare_key.key_id_hex, organizer=organizer)
        recipients.register_key(volunteer, pending.to_armor().encode(), keyring=None)
        cases.assign_report(report_id, volunteer_id=volunteer.id, organizer=organizer)
        invitation = accounts.create_invitation(role="ngo", organizer=organizer)
        db.session.commit()
        api_token = api_tokens.issue_token(volunteer, label="matrix")
        ngo = db.session.get(User, staff["ngo"].id)
        assert ngo is not None
        export_request = export_requests.request_export(
            ngo,
            product="P1",
            first="2024Q1",
            last="2024Q4",
            by_country=False,
            language="en",
            today=date(2026, 1, 1),
        )
        export_request_id = export_request.id
    grant = grant_for(app, report_id, organizer_key=organizer_keys.private_key, recipient=approved)
    return World(
        accounts=staff,
        target=target,
        spare_volunteer=spare,
        report_id=report_id,
        original_id=original_id,
        pending_key_id=pending.key_id_hex,
        grant=grant,
        invitation_token=invitation.token,
        export_request_id=export_request_id,
        organizer_key=organizer_keys.public_key,
        volunteer_key=approved,
        api_token_id=api_token.id,
        desk_keys={"organizer": organizer_keys.private_key, "volunteer": approved_private},
        never_shown_when_refused=[
            str(report_id),
            str(original_id),
            approved.key_id_hex,
            approved.fingerprint,
            pending.key_id_hex,
            pending.fingerprint,
            "2024-W47",  # the report's shell period
            staff["volunteer"].username,  # shown as the assignee on the report page
        ],
    )


def form_data(world: World, endpoint: str, requester: str) -> dict[str, Any]:
    """Form fields that would change something if the request were let through."""
    new_password = "another long password 9"
    secret = pyotp.random_base32(32)
    data: dict[str, dict[str, Any]] = {
        # Only a username: the form fails validation, the per-account rate limit is kept.
        "staff.login": {"username": f"matrix-probe-{requester}"},
        "staff.change_password": {
            "current": "a long staff password",
            "password": new_password,
            "password_again": new_password,
        },
        "staff.enroll_totp": {"secret": secret, "code": pyotp.TOTP(secret).now()},
        "staff.invite": {"role": "volunteer"},
        "staff.set_active": {"active": "0"},
        "staff.set_vetted": {"vetted": "1"},
        "staff.change_status": {"status": "in_progress", "reason": "matrix"},
        "staff.correct": {"category": "surveillance", "occurred_period": "2024-W48"},
        "staff.link_duplicate": {"original_id": str(world.original_id)},
        "staff.assign": {"volunteer_id": str(world.spare_volunteer.id)},
        "staff.unassign": {"volunteer_id": str(world.accounts["volunteer"].id)},
        "staff.record_grant": {"grant_file": (io.BytesIO(world.grant), "grant.bin")},
        "exports.request_export": {
            "product": "P1",
            "first_quarter": "2024Q1",
            "last_quarter": "2024Q2",
        },
        "exports.refuse_export": {"reason": "matrix"},
        "staff.token_create": {"label": f"matrix {requester}", "current_password": STAFF_PASSWORD},
        "staff.outputs_upload": {
            "outputs_file": (io.BytesIO(note_file(world, requester)), "o.json")
        },
        "staff.upload_key": {
            "key_file": (
                io.BytesIO(crypto.PrivateKey.generate().public_key().to_armor().encode()),
                "my.pub",
            )
        },
    }
    return data.get(endpoint, {})


def note_file(world: World, requester: str) -> bytes:
    """An outputs file with a new note on the report, for the key the requester's desk holds,
    proven with the requester's last bundle file (when they downloaded one)."""
    key = world.organizer_key if requester == "organizer" else world.volunteer_key
    note = sealed_note(world.report_id, text="matrix note", recipients=[world.organizer_key])
    return outputs_file(key.key_id_hex, notes=[note], proof=world.file_proofs.get(requester))


def database_state(app: Flask) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table, as text (session "last seen" times excepted)."""
    state: dict[str, list[tuple[str, ...]]] = {}
    with app.app_context():
        for table in Base.metadata.sorted_tables:
            columns = [column for column in table.columns if column.name != "last_seen_at"]
            rows = db.session.execute(sa.select(*columns).order_by(*table.primary_key.columns))
            state[table.name] = [tuple(str(value) for value in row) for row in rows]
        db.session.remove()
    return state


def client_for(app: Flask, world: World, requester: str) -> FlaskClient:
    """A browser in the given requester's state."""
    client = app.test_client()
    if requester == "anonymous":
        return client
    assert login(client, world.accounts[requester]).status_code == 302
    if requester == "disabled":
        with app.app_context():
            # Flip the flag without the service (which would also delete the session rows), so
            # that the session row still exists and only the account check can stop it.
            account_id = world.accounts["disabled"].id
            db.session.execute(sa.update(User).where(User.id == account_id).values(is_active=False))
            db.session.commit()
    return client


def is_login_redirect(response: TestResponse) -> bool:
    """True for a redirect to the staff login page."""
    location = response.headers.get("Location", "")
    return response.status_code == 302 and urlsplit(location).path == LOGIN_PATH


@dataclass
class Matrix:
    """Collects every mismatch, so that one run shows the whole table of problems."""

    problems: list[str] = field(default_factory=list)
    requests: int = 0


def check_requester(app: Flask, world: World, requester: str, matrix: Matrix) -> None:
    """Request every staff route as ``requester`` and compare with ``EXPECTED``."""
    client = client_for(app, world, requester)
    has_account = requester in STAFF_ROLES
    csrf = page_csrf_token(client, "/staff/account" if has_account else LOGIN_PATH)
    values = world.url_values()
    state = None  # the database before the next POST, when known (refused ones keep it)
    for rule in staff_rules(app):
        access = EXPECTED[rule.endpoint]
        with app.test_request_context():
            url = url_for(rule.endpoint, **{name: values[name] for name in rule.arguments})
        for method in methods_of(rule):
            refused = access != PUBLIC and not (has_account and requester in access)
            before = None
            if method == "POST":
                before = state if state is not None and refused else database_state(app)
            if method == "GET":
                response = client.get(url)
            else:
                data = {"csrf_token": csrf, **form_data(world, rule.endpoint, requester)}
                response = client.post(url, data=data)
                if rule.endpoint == "staff.bundle_download":
                    world.remember_bundle(requester, response)
            matrix.requests += 1
            status = response.status_code
            problems: list[str] = []
            if access == PUBLIC:
                if status not in (200, 302, 400, 404):
                    problems.append("public route must answer")
            elif not isinstance(access, frozenset):
                problems.append(f"unknown access rule {access!r}")
            elif has_account and requester in access:
                if status not in (200, 302, 400):
                    problems.append("allowed role must be served")
                if is_login_redirect(response):
                    problems.append("allowed role sent to the login page")
            else:
                # The requested address itself is echoed (language links, ?next=): not a leak.
                body = response.get_data(as_text=True)
                body = body.replace(url, "").replace(quote(url, safe=""), "")
                leaked = [value for value in world.never_shown_when_refused if value in body]
                if leaked:
                    problems.append(f"refused response shows report data {leaked}")
                if has_account and status != 403:
                    problems.append("forbidden role must get 403")
                if not has_account and not is_login_redirect(response):
                    problems.append("must be sent to the login page")
                if before is not None:
                    state = database_state(app)
                    if state != before:
                        problems.append("a refused POST changed the database")
            if method == "POST" and not refused:
                state = None  # an allowed POST may have changed anything
            matrix.problems.extend(
                f"{requester:>9} {method:<4} {rule.endpoint}: {problem} (got {status})"
                for problem in problems
            )


# --------------------------------------------------------------------------- tests


@pytest.fixture(autouse=True)
def _fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords are incidental here; tests/staff/test_auth.py covers the real cost."""
    use_fast_password_hashing(monkeypatch)


def test_every_staff_route_has_an_expected_access_rule(app: Flask) -> None:
    rules = staff_rules(app)
    routed = {rule.endpoint for rule in rules}
    assert routed - EXPECTED.keys() == set(), "new staff route(s) missing from EXPECTED"
    assert EXPECTED.keys() - routed == set(), "EXPECTED names route(s) that no longer exist"
    # Sanity of the enumeration: both kinds of route are there, and logout comes last.
    pairs = [(rule.endpoint, method) for rule in rules for method in methods_of(rule)]
    assert {("staff.reports", "GET"), ("staff.change_status", "POST")} <= set(pairs)
    assert pairs[-1] == ("staff.logout", "POST")


def test_each_role_reaches_exactly_its_routes(app: Flask, organizer: KeyFiles) -> None:
    # Given: accounts of every role, a report assigned to the volunteer, keys and a grant
    world = build_world(app, organizer)
    matrix = Matrix()
    # When: every requester requests every staff route with every method it serves
    for requester in REQUESTERS:
        check_requester(app, world, requester, matrix)
    # Then: each got exactly what the table says
    assert matrix.problems == [], "access matrix mismatches:\n" + "\n".join(matrix.problems)
    routes = sum(len(methods_of(rule)) for rule in staff_rules(app))
    assert matrix.requests == routes * len(REQUESTERS)


def test_allowed_posts_of_the_matrix_really_act(app: Flask, organizer: KeyFiles) -> None:
    # Guards the matrix: the form data it sends changes things when the role is allowed, so
    # "nothing changed" after a refused POST means the refusal stopped it.
    world = build_world(app, organizer)
    client = client_for(app, world, "organizer")
    csrf = page_csrf_token(client, "/staff/account")
    before = database_state(app)
    endpoints = (
        "staff.change_status",
        "staff.set_active",
        "staff.invite",
        "staff.token_create",
        "staff.bundle_download",  # on record in the audit log
        "staff.outputs_upload",
    )
    for endpoint in endpoints:
        with app.test_request_context():
            url = url_for(endpoint, report_id=world.report_id, user_id=world.target.id)
        data = {"csrf_token": csrf, **form_data(world, endpoint, "organizer")}
        response = client.post(url, data=data)
        assert response.status_code in (200, 302)
        if endpoint == "staff.bundle_download":
            world.remember_bundle("organizer", response)
        after = database_state(app)
        assert after != before, f"{endpoint} changed nothing"
        before = after


def test_disabled_account_keeps_its_session_row_but_is_refused(
    app: Flask, organizer: KeyFiles
) -> None:
    # The "disabled" requester of the matrix must be a real stale session, not a missing one.
    world = build_world(app, organizer)
    client = client_for(app, world, "disabled")
    with app.app_context():
        query = sa.select(sa.func.count()).select_from(StaffSession)
        count = db.session.scalar(
            query.where(StaffSession.user_id == world.accounts["disabled"].id)
        )
    assert count == 1
    assert is_login_redirect(client.get("/staff/account"))


def test_refused_responses_are_checked_against_real_values(app: Flask, organizer: KeyFiles) -> None:
    # Guards the leak check: the values it looks for do appear on the organizer's report page.
    world = build_world(app, organizer)
    client = client_for(app, world, "organizer")
    page = client.get(f"/staff/reports/{world.report_id}").get_data(as_text=True)
    for value in (str(world.report_id), "2024-W47", world.accounts["volunteer"].username):
        assert value in page
