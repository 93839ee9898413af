"""The desk journey in the system Chromium with JavaScript disabled, over real HTTP, end to end.

A witness files a report through the live server's form and keeps the receipt. An organizer and
a legal-aid volunteer each run their own desk (the local decrypting app, ``incidents.desk``) on
127.0.0.1, talking to the live server with the desk's real HTTP transport. In the browser the
organizer unlocks their desk, syncs, reads the report, compares the volunteer's fingerprint and
grants the case; the volunteer unlocks, syncs, reads it and writes a note and a reply; the witness
reads the reply with the receipt; the organizer reads the note, then revokes the volunteer and
rotates the case's keys, after which the volunteer's desk no longer has the case. Screenshots go
to ``tests/browser/artifacts``; every page is watched for console errors, CSP violations and
failed loads, and the desk pages are opened once more with JavaScript on to catch CSP breaks.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Response, expect

from incidents import crypto
from incidents.db import db
from incidents.desk import DeskSettings, create_desk_app
from incidents.models import User
from incidents.services import api_tokens, cases
from incidents.services.reports import list_report_shells
from tests.browser.conftest import DESKTOP, Offline, free_port, serving
from tests.browser.test_staff_journey import overflow, unlabelled_controls
from tests.browser.test_witness_journey import (
    CSP_LISTENER,
    RECEIPT,
    Answers,
    PageWatch,
    backend_name,
    fill_report,
    receipt_on,
    send_report,
)
from tests.conftest import TEST_KDF, KeyFiles
from tests.factories import make_user, make_volunteer_key, use_fast_password_hashing

pytestmark = pytest.mark.browser

VOLUNTEER_PASSPHRASE = "volunteer desk passphrase of some length"
SYNCED = re.compile(r"^Synced\. (\d+) changes? sent\. (\d+) cases? on this desk\.$")
SENT = "Sent to the server."
ROTATED = "Done. The case is sealed under new keys that only its remaining readers hold."


def unique_phrase(prefix: str) -> str:
    """A phrase that appears nowhere unless this test wrote it."""
    return f"{prefix}-{secrets.token_hex(5)}"


# --- accounts and desks, set up directly -------------------------------------------------------


def issue_token(app: Flask, user_id: int) -> str:
    """A fresh API token for the user, as their account page shows it once."""
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        return api_tokens.issue_token(user, label="desk").secret


def assign(app: Flask, report_id: uuid.UUID, *, volunteer_id: int, organizer_id: int) -> None:
    """Assign the report to the volunteer, as the organizer does on the server's report page."""
    with app.app_context():
        organizer = db.session.get(User, organizer_id)
        assert organizer is not None
        cases.assign_report(report_id, volunteer_id=volunteer_id, organizer=organizer)


def write_key_file(directory: Path, private_key: crypto.PrivateKey, passphrase: str) -> Path:
    """The private key file a volunteer's desk made, protected by ``passphrase``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "volunteer.key"
    path.write_text(crypto.encrypt_private_key(private_key, passphrase=passphrase, kdf=TEST_KDF))
    return path


@pytest.fixture
def start_desk(live_server: str, tmp_path: Path) -> Iterator[Callable[[Path, str], str]]:
    """Start desks on 127.0.0.1 (free ports, real HTTP to the live server); stop them after."""
    with ExitStack() as running:

        def start(key_path: Path, name: str) -> str:
            """Build a desk for ``key_path`` with its own cache; return its base URL."""
            port = free_port()
            desk = create_desk_app(
                DeskSettings(
                    key_path=key_path,
                    server_url=live_server,
                    cache_dir=tmp_path / f"{name}-desk-cache",
                    port=port,
                )
            )
            return running.enter_context(serving(desk, port=port))

        yield start


# --- working a desk in the browser -------------------------------------------------------------


@dataclass
class DeskVisit:
    """One person's browser on one desk: the page, its watch, and what was noticed."""

    name: str
    url: str
    page: Page
    watch: PageWatch
    artifacts: Path
    backend: str
    labels: list[str]
    wide: list[str]

    def look(self, view: str) -> None:
        """Screenshot the page; note controls without a label and content wider than the screen."""
        path = self.artifacts / f"desk-{self.name}-{view}-{self.backend}.png"
        self.page.screenshot(path=path, full_page=True)
        self.labels.extend(unlabelled_controls(self.page, f"{self.name} {view}"))
        self.wide.extend(overflow(self.page, f"{self.name} {view}"))

    def press(self, button: Locator) -> Response:
        """Click a form's button and wait for the page the desk answers with (after redirects)."""
        with self.page.expect_navigation() as navigation:
            button.click()
        response = navigation.value
        assert response is not None
        return response

    def flashes(self) -> list[str]:
        """The messages shown at the top of the page."""
        return [text.strip() for text in self.page.locator("main .alert").all_inner_texts()]

    def unlock(self, *, passphrase: str, token: str) -> None:
        """Open the desk, which sends a locked browser to the unlock page, and unlock it."""
        self.page.goto(f"{self.url}/")
        expect(self.page).to_have_url(f"{self.url}/unlock")
        expect(self.page.locator("h1")).to_have_text("Unlock the desk")
        self.look("unlock")
        self.page.get_by_label("Passphrase of your key file").fill(passphrase)
        self.page.get_by_label("API token from your account page").fill(token)
        response = self.press(self.page.get_by_role("button", name="Unlock"))
        assert response.status == 200
        expect(self.page).to_have_url(f"{self.url}/")
        expect(self.page.locator("h1")).to_have_text("Cases on this desk")
        assert self.flashes() == [], "the server accepted the token and knows the key"

    def sync(self) -> tuple[int, int]:
        """Press "Sync with the server" on the case list; return (changes sent, cases here)."""
        if self.page.url != f"{self.url}/":
            self.page.goto(f"{self.url}/")
        response = self.press(self.page.get_by_role("button", name="Sync with the server"))
        assert response.status == 200
        expect(self.page).to_have_url(f"{self.url}/")
        (message,) = self.flashes()
        match = SYNCED.fullmatch(message)
        assert match, message
        return int(match.group(1)), int(match.group(2))

    def open_case(self, received_on: str, report_id: uuid.UUID) -> None:
        """Follow the case's link in the list of cases."""
        rows = self.page.locator("table.data tbody tr")
        expect(rows).to_have_count(1)
        rows.get_by_role("link", name=received_on).click()
        expect(self.page).to_have_url(f"{self.url}/cases/{report_id}")
        expect(self.page.locator("h1")).to_have_text(f"Case received on {received_on}")

    def write(self, label: str, button: str, text: str) -> None:
        """Fill a text area of the case page and press its button; the desk sends it at once."""
        case_url = self.page.url
        self.page.get_by_label(label).fill(text)
        response = self.press(self.page.get_by_role("button", name=button))
        assert response.status == 200
        expect(self.page).to_have_url(case_url)
        assert self.flashes() == [SENT]


def section_entries(page: Page, heading: str) -> list[str]:
    """The texts of the entries (notes or replies) listed under a case page's heading."""
    return page.locator(
        f"xpath=//h2[normalize-space()='{heading}']/following-sibling::article[@class='entry']"
        f"[preceding-sibling::h2[1][normalize-space()='{heading}']]/p[@class='text']"
    ).all_inner_texts()


# --- the journey -------------------------------------------------------------------------------


def test_organizer_grants_volunteer_replies_witness_reads_and_access_is_revoked_without_js(
    app: Flask,
    live_server: str,
    start_desk: Callable[[Path, str], str],
    new_context: Callable[..., BrowserContext],
    browser: Browser,
    offline: Offline,
    organizer: KeyFiles,
    tmp_path: Path,
    artifacts: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = backend_name(app)
    labels: list[str] = []
    wide: list[str] = []
    narrative_phrase = unique_phrase("PANGOLIN")
    note_phrase = unique_phrase("WOMBAT")
    reply_phrase = unique_phrase("NUMBAT")

    # Given: a witness files a report through the public form, without JavaScript
    witness = new_context(javascript=False).new_page()
    witness_watch = PageWatch(witness)
    witness.goto(f"{live_server}/report")
    fill_report(
        witness,
        Answers(
            category="threat",
            occurred_on="2025-03-14",
            country="RS",
            city="belgrade",
            narrative=f"Two men waited at the door of {narrative_phrase} and took photos.",
            consent_contact=True,
        ),
    )
    assert send_report(witness).status == 200
    receipt = receipt_on(witness)
    assert RECEIPT.fullmatch(receipt), receipt
    with app.app_context():
        (shell,) = list_report_shells()
    report_id = uuid.UUID(shell.id)

    # And: an organizer and a volunteer whose key is approved and who is assigned the report
    use_fast_password_hashing(monkeypatch)
    boss = make_user(app, role="organizer")
    helper = make_user(app, role="volunteer")
    volunteer_key = make_volunteer_key(app, helper, approved_by=boss)
    assign(app, report_id, volunteer_id=helper.id, organizer_id=boss.id)
    volunteer_key_path = write_key_file(tmp_path / "volunteer", volunteer_key, VOLUNTEER_PASSPHRASE)

    # And: each runs their own desk on this computer, each in their own browser
    def visit(name: str, key_path: Path) -> DeskVisit:
        page = new_context(javascript=False, viewport=DESKTOP).new_page()
        return DeskVisit(
            name,
            start_desk(key_path, name),
            page,
            PageWatch(page),
            artifacts,
            backend,
            labels,
            wide,
        )

    boss_desk = visit("organizer", organizer.private_path)
    helper_desk = visit("volunteer", volunteer_key_path)

    # When: the organizer unlocks their desk with passphrase and API token and syncs
    boss_desk.unlock(passphrase=organizer.passphrase, token=issue_token(app, boss.id))
    expect(boss_desk.page.locator("main")).to_contain_text("No cases here yet.")
    assert boss_desk.sync() == (0, 1)
    row = boss_desk.page.locator("table.data tbody tr")
    expect(row).to_contain_text("can open")
    boss_desk.look("cases")

    # Then: the case opens on the desk with what the witness wrote
    boss_desk.open_case(shell.received_on, report_id)
    expect(boss_desk.page.locator("dl.sealed")).to_contain_text(narrative_phrase)
    readers = boss_desk.page.locator("table.data tbody tr", has_text=helper.username)
    expect(readers).to_have_count(1)
    fingerprint = readers.locator("code").inner_text().strip()
    assert fingerprint == volunteer_key.public_key().fingerprint
    boss_desk.look("case")

    # When: the organizer presses "Grant access" without ticking the fingerprint box
    case_url = boss_desk.page.url
    boss_desk.press(readers.get_by_role("button", name="Grant access"))

    # Then: nothing is granted and the desk says why
    expect(boss_desk.page).to_have_url(case_url)
    assert boss_desk.flashes() == [
        "Compare the key's fingerprint with the volunteer first, then tick the box."
    ]

    # When: they tick "I compared this fingerprint" and grant
    readers.get_by_label("I compared this fingerprint with the volunteer").check()
    boss_desk.press(readers.get_by_role("button", name="Grant access"))

    # Then: the grant is sent, and the box is not asked for again for this key
    expect(boss_desk.page).to_have_url(case_url)
    assert boss_desk.flashes() == [SENT]
    expect(readers.get_by_role("checkbox")).to_have_count(0)
    boss_desk.look("granted")

    # When: the volunteer unlocks their desk and syncs
    helper_desk.unlock(passphrase=VOLUNTEER_PASSPHRASE, token=issue_token(app, helper.id))
    assert helper_desk.sync() == (0, 1)
    expect(helper_desk.page.locator("table.data tbody tr")).to_contain_text("can open")
    helper_desk.look("cases")

    # Then: the case opens on their desk too
    helper_desk.open_case(shell.received_on, report_id)
    expect(helper_desk.page.locator("dl.sealed")).to_contain_text(narrative_phrase)
    assert helper_desk.page.get_by_text("Who can read this case").count() == 0

    # When: they write a note and a reply to the witness
    note = f"Call the lawyer about {note_phrase} tomorrow."
    reply = f"We read your report. A lawyer will call you, {reply_phrase}."
    helper_desk.write(
        "Note for the organizers and the case's volunteers", "Seal and save the note", note
    )
    helper_desk.write(
        "Reply to the witness (they read it with their receipt)", "Seal and send the reply", reply
    )

    # Then: both are on the case page
    assert section_entries(helper_desk.page, "Notes") == [note]
    assert section_entries(helper_desk.page, "Replies to the witness") == [reply]
    helper_desk.look("case")

    # When: the witness comes back with the receipt
    witness.goto(f"{live_server}/followup")
    witness.fill("input[name=receipt]", receipt)
    witness.click("form.narrow-form button[type=submit]")

    # Then: they read the reply, and nothing of the staff's note
    expect(witness.locator("h1")).to_have_text("Your report")
    expect(witness.locator(".reply-body")).to_have_text([reply])
    assert note_phrase not in witness.locator("body").inner_text()
    witness.screenshot(path=artifacts / f"desk-witness-reply-{backend}.png", full_page=True)

    # When: the organizer syncs and opens the case again
    assert boss_desk.sync() == (0, 1)
    boss_desk.open_case(shell.received_on, report_id)

    # Then: they read the volunteer's note and reply
    assert section_entries(boss_desk.page, "Notes") == [note]
    assert section_entries(boss_desk.page, "Replies to the witness") == [reply]

    # When: they revoke the volunteer's access and rotate the case's keys
    readers = boss_desk.page.locator("table.data tbody tr", has_text=helper.username)
    boss_desk.press(readers.get_by_role("button", name="Revoke and rotate"))

    # Then: the volunteer is no longer a reader, and the organizer still reads everything
    expect(boss_desk.page).to_have_url(case_url)
    assert boss_desk.flashes() == [ROTATED]
    expect(boss_desk.page.locator("main")).to_contain_text("No volunteer is assigned.")
    expect(boss_desk.page.locator("dl.sealed")).to_contain_text(narrative_phrase)
    assert section_entries(boss_desk.page, "Notes") == [note]
    assert section_entries(boss_desk.page, "Replies to the witness") == [reply]
    boss_desk.look("revoked")

    # When: the volunteer syncs
    assert helper_desk.sync() == (0, 0)

    # Then: the case is gone from their desk, and its address finds nothing
    expect(helper_desk.page.locator("table.data")).to_have_count(0)
    expect(helper_desk.page.locator("main")).to_contain_text("No cases here yet.")
    helper_desk.look("cases-after-revoke")
    helper_desk.watch.expected_document_status = 404
    gone = helper_desk.page.goto(f"{helper_desk.url}/cases/{report_id}")
    assert gone is not None
    assert gone.status == 404
    assert narrative_phrase not in helper_desk.page.content()
    helper_desk.page.screenshot(
        path=artifacts / f"desk-volunteer-case-gone-{backend}.png", full_page=True
    )
    helper_desk.watch.expected_document_status = 200

    # And: the organizer's bulk grant page works without JavaScript too
    boss_desk.page.goto(f"{boss_desk.url}/grants")
    expect(boss_desk.page.locator("h1")).to_have_text("Grant cases to a volunteer")
    boss_desk.look("grants")

    # Then: no page logged an error, broke the CSP or failed to load; nothing left the machine
    assert witness_watch.problems == []
    assert boss_desk.watch.problems == []
    assert helper_desk.watch.problems == []
    assert offline.requests == []

    # And: every control has a label, and no desk page is wider than the screen
    assert labels == []
    assert wide == []

    # And: with JavaScript on, the same desks' pages break no CSP rule either
    problems: list[str] = []
    for desk, paths in (
        (boss_desk, ["/", f"/cases/{report_id}", "/grants", "/unlock"]),
        (helper_desk, ["/", "/unlock"]),
    ):
        context = browser.new_context(
            java_script_enabled=True,
            viewport=DESKTOP,
            locale="en-US",
            service_workers="block",
            storage_state=desk.page.context.storage_state(),
        )
        context.route(offline.is_external, offline.answer)
        context.add_init_script(CSP_LISTENER)
        page = context.new_page()
        watch = PageWatch(page)
        for path in paths:
            response = page.goto(f"{desk.url}{path}")
            page.wait_for_load_state("load")
            if response is None or response.status != 200 or page.url != f"{desk.url}{path}":
                problems.append(f"{desk.name} {path}: status {response and response.status}")
        problems += [f"{desk.name}: {problem}" for problem in watch.problems]
        context.close()
    assert problems == []
    assert offline.requests == []
