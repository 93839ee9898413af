"""The staff journey in the system Chromium, with JavaScript disabled, as new users walk it.

The first organizer is created on the command line, logs in with a TOTP code, invites a
legal-aid volunteer, who opens the link in another browser, enrolls an authenticator and
registers the public key file of their desk. The organizer compares the fingerprint, approves
the key and assigns the one witness report; the volunteer then sees exactly that case, awaiting
its key grant. Screenshots of the main staff pages go to ``tests/browser/artifacts``, and every
page is watched for console errors, CSP violations and failed loads, also with JavaScript on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pyotp
import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page

from incidents import crypto
from incidents.services.reports import list_report_shells
from tests.browser.conftest import DESKTOP, PHONE, Offline
from tests.browser.test_witness_journey import (
    CSP_LISTENER,
    PageWatch,
    backend_name,
    fill_report,
    minimal_answers,
    send_report,
)

pytestmark = pytest.mark.browser

ORGANIZER = "olga"
VOLUNTEER = "viktor"
ORGANIZER_PASSWORD = "organizer passphrase of some length"
VOLUNTEER_PASSWORD = "volunteer passphrase of some length"
OTPAUTH = re.compile(r"otpauth://totp/\S+")
FINGERPRINT = re.compile(r"^(?:[0-9A-F]{4} ){9}[0-9A-F]{4}$")


def create_first_organizer(app: Flask) -> pyotp.TOTP:
    """Run ``flask users create-organizer`` and enroll the printed URI in an "authenticator"."""
    result = app.test_cli_runner().invoke(
        args=["users", "create-organizer", ORGANIZER],
        env={"INCIDENTS_USER_PASSWORD": ORGANIZER_PASSWORD},
    )
    assert result.exit_code == 0, result.output
    match = OTPAUTH.search(result.output)
    assert match, result.output
    totp = pyotp.parse_uri(match.group(0))
    assert isinstance(totp, pyotp.TOTP)
    return totp


def click_nav(page: Page, name: str) -> None:
    """Follow a link of the staff navigation bar."""
    page.locator("nav.staff-nav").get_by_role("link", name=name, exact=True).click()
    page.wait_for_load_state()


def flash_texts(page: Page) -> list[str]:
    """The messages shown at the top of the page."""
    return [text.strip() for text in page.locator("main .alert").all_inner_texts()]


def unlabelled_controls(page: Page, name: str) -> list[str]:
    """Form controls on the current page that a screen reader would announce without a name."""
    controls = page.evaluate(
        """Array.from(document.querySelectorAll("input, select, textarea, button"))
             .filter((el) => el.type !== "hidden")
             .filter((el) => el.tagName === "BUTTON" ? !el.textContent.trim()
                             : el.labels.length === 0 && !el.getAttribute("aria-label"))
             .map((el) => el.name || el.outerHTML)"""
    )
    return [f"{name}: control {control!r} has no label" for control in controls]


def overflow(page: Page, name: str) -> list[str]:
    """How far the page, or its main column, is wider than the space it has (pixels)."""
    page_px, main_px = page.evaluate(
        """[document.documentElement.scrollWidth - document.documentElement.clientWidth,
            (() => { const m = document.querySelector("main");
                     return m.scrollWidth - m.clientWidth; })()]"""
    )
    found = []
    if page_px > 0:
        found.append(f"{name}: the page is {page_px} px wider than the screen")
    if main_px > 0:
        found.append(f"{name}: content is {main_px} px wider than the main column")
    return found


def test_organizer_invites_volunteer_approves_key_and_assigns_a_report_without_javascript(
    app: Flask,
    live_server: str,
    new_context: Callable[..., BrowserContext],
    browser: Browser,
    offline: Offline,
    tmp_path: Path,
    artifacts: Path,
) -> None:
    backend = backend_name(app)

    # Given: the first organizer, created on the server's command line
    organizer_totp = create_first_organizer(app)
    organizer = new_context(javascript=False, viewport=DESKTOP).new_page()
    organizer_watch = PageWatch(organizer)
    labels: list[str] = []
    desktop_overflow: list[str] = []
    phone_overflow: list[str] = []

    def look(page: Page, name: str) -> None:
        """Screenshot the page and note missing labels and overflow."""
        page.screenshot(path=artifacts / f"staff-{name}-{backend}.png", full_page=True)
        labels.extend(unlabelled_controls(page, name))
        is_phone = page.viewport_size == PHONE
        (phone_overflow if is_phone else desktop_overflow).extend(overflow(page, name))

    # When: they log in with password and TOTP code on the login page
    organizer.goto(f"{live_server}/staff/login")
    look(organizer, "login")
    organizer.get_by_label("Username").fill(ORGANIZER)
    organizer.get_by_label("Password").fill(ORGANIZER_PASSWORD)
    organizer.get_by_label("Code from the authenticator app").fill(organizer_totp.now())
    organizer.get_by_role("button", name="Log in").click()

    # Then: they land on the (empty) list of reports
    organizer.wait_for_url(f"{live_server}/staff/reports")
    assert organizer.locator("h1").inner_text() == "Reports"
    assert organizer.locator(".whoami").inner_text() == ORGANIZER

    # When: they create an invitation for a legal-aid volunteer under "Accounts"
    click_nav(organizer, "Accounts")
    organizer.get_by_label("Role").select_option("volunteer")
    organizer.get_by_role("button", name="Create an invitation link").click()
    link = organizer.locator(".receipt-code code").inner_text().strip()
    assert link.startswith(f"{live_server}/staff/invite/")

    # And: the volunteer opens the link in their own browser and enrolls an authenticator
    volunteer = new_context(javascript=False, viewport=PHONE).new_page()
    volunteer_watch = PageWatch(volunteer)
    volunteer.goto(link)
    assert "Legal-aid volunteer" in volunteer.locator("main").inner_text()
    assert volunteer.locator(".qr-box svg").count() == 1, "the QR code is inline SVG"
    secret = volunteer.locator("code.secret").inner_text().strip()
    look(volunteer, "invitation")
    volunteer.get_by_label("Username").fill(VOLUNTEER)
    volunteer.get_by_label("Password", exact=True).fill(VOLUNTEER_PASSWORD)
    volunteer.get_by_label("Password again").fill(VOLUNTEER_PASSWORD)
    volunteer.get_by_label("Code from the authenticator app").fill(pyotp.TOTP(secret).now())
    volunteer.get_by_role("button", name="Create the account").click()

    # Then: their account exists and they are logged in, on "My cases"
    volunteer.wait_for_url(f"{live_server}/staff/cases")
    assert "Welcome. Your account is ready." in flash_texts(volunteer)
    assert volunteer.locator(".whoami").inner_text() == VOLUNTEER

    # When: they upload the public key file their desk made, on "My key"
    volunteer_key = crypto.PrivateKey.generate()
    key_file = tmp_path / "my.pub"
    key_file.write_text(volunteer_key.public_key().to_armor())
    click_nav(volunteer, "My key")
    volunteer.get_by_label("Public key file (.pub)").set_input_files(key_file)
    volunteer.get_by_role("button", name="Register the key").click()
    volunteer.wait_for_load_state()

    # Then: the page shows the key's fingerprint, awaiting approval
    shown_to_volunteer = volunteer.locator("code.fingerprint").inner_text().strip()
    assert FINGERPRINT.fullmatch(shown_to_volunteer)
    assert shown_to_volunteer == volunteer_key.public_key().fingerprint
    assert any(shown_to_volunteer in text for text in flash_texts(volunteer))
    assert "awaiting approval" in volunteer.locator("table.data tbody").inner_text()
    look(volunteer, "my-key")

    # When: the organizer opens "Volunteer keys"
    click_nav(organizer, "Volunteer keys")
    row = organizer.locator("table.data tbody tr", has_text=VOLUNTEER)
    shown_to_organizer = row.locator("code.fingerprint").inner_text().strip()
    look(organizer, "keys")

    # Then: the fingerprint matches the one the volunteer reads out, and they approve it
    assert shown_to_organizer == shown_to_volunteer
    assert "awaiting approval" in row.inner_text()
    row.get_by_role("button", name="Fingerprint confirmed: approve").click()
    organizer.wait_for_load_state()
    assert "Saved." in flash_texts(organizer)
    approved_row = organizer.locator("table.data tbody tr", has_text=VOLUNTEER)
    assert "approved" in approved_row.inner_text()
    assert approved_row.get_by_role("button", name="Fingerprint confirmed: approve").count() == 0

    # Given: a witness files a report through the public form (also without JavaScript)
    witness = new_context(javascript=False).new_page()
    witness.goto(f"{live_server}/report")
    fill_report(witness, minimal_answers())
    assert send_report(witness).status == 200
    with app.app_context():
        (shell,) = list_report_shells()

    # When: the organizer opens it from the list of reports and assigns it to the volunteer
    click_nav(organizer, "Reports")
    rows = organizer.locator("table.data tbody tr")
    assert rows.count() == 1
    look(organizer, "reports")
    rows.get_by_role("link", name=shell.received_on).click()
    organizer.wait_for_url(f"{live_server}/staff/reports/{shell.id}")
    assert "awaiting key grant" not in organizer.locator("main").inner_text()
    organizer.get_by_label("Legal-aid volunteer").select_option(label=VOLUNTEER)
    organizer.get_by_role("button", name="Assign", exact=True).click()
    organizer.wait_for_load_state()

    # Then: the report is assigned and waits for the organizer's desk to grant the key
    assert "Saved." in flash_texts(organizer)
    assigned = organizer.locator("table.data tbody tr", has_text=VOLUNTEER)
    assert "awaiting key grant" in assigned.inner_text()
    assert shown_to_volunteer in assigned.inner_text()
    assert "Assigned" in organizer.locator("dl.shell").inner_text()
    look(organizer, "report")

    # And: the volunteer's "My cases" shows exactly that report, awaiting the key grant
    click_nav(volunteer, "My cases")
    cases = volunteer.locator("table.data tbody tr")
    assert cases.count() == 1
    case = cases.first
    assert case.locator("code").get_attribute("title") == shell.id
    assert case.locator("code").inner_text() == shell.received_on
    assert "awaiting key grant" in case.inner_text()
    assert "Threat" in case.inner_text()
    assert volunteer.locator("main .alert").count() == 0, "no 'no approved key' notice"
    look(volunteer, "cases")

    # And: the audit log has every step on record, in an intact chain
    click_nav(organizer, "Audit log")
    audit_text = organizer.locator("main").inner_text()
    assert "is intact" in audit_text
    for action in ("login.success", "invitation.create", "invitation.accept", "key.register"):
        assert action in audit_text
    for action in ("key.approve", "case.assign", "report.status"):
        assert action in audit_text
    look(organizer, "audit")

    # Then: no page logged an error, broke the CSP or failed to load; nothing left the machine
    assert organizer_watch.problems == []
    assert volunteer_watch.problems == []
    assert offline.requests == []

    # And: with JavaScript on, the same sessions' pages break no CSP rule either
    problems: list[str] = []
    for source, urls in (
        (
            organizer.context,
            [
                "/staff/reports",
                f"/staff/reports/{shell.id}",
                "/staff/keys",
                "/staff/users",
                "/staff/audit",
                "/staff/account",
                "/exports",
            ],
        ),
        (volunteer.context, ["/staff/cases", "/staff/keys", "/staff/account"]),
    ):
        context = browser.new_context(
            java_script_enabled=True,
            viewport=DESKTOP,
            locale="en-US",
            service_workers="block",
            storage_state=source.storage_state(),
        )
        context.route(offline.is_external, offline.answer)
        context.add_init_script(CSP_LISTENER)
        page = context.new_page()
        watch = PageWatch(page)
        for url in urls:
            response = page.goto(f"{live_server}{url}")
            page.wait_for_load_state("load")
            if response is None or response.status != 200:
                problems.append(f"{url}: status {response and response.status}")
        problems += watch.problems
        context.close()
    assert problems == []
    assert offline.requests == []

    # And: every control on the pages looked at has a label, and no desktop page is wider than
    # the screen. Overflow on a phone and inside the main column is written down for people to
    # look at (known: wide tables overflow on phones), not asserted.
    assert labels == []
    assert [problem for problem in desktop_overflow if "wider than the screen" in problem] == []
    notes = [*desktop_overflow, *phone_overflow]
    (artifacts / f"staff-layout-{backend}.txt").write_text("\n".join(notes) + "\n")
