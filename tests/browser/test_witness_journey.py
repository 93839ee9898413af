"""Witness journeys in the system Chromium: filing without JavaScript, errors, every page, Esc.

The main journey files a report through the real form with JavaScript disabled, in Russian,
with a unique phrase in every sealed field and an unusual exact date, then looks for those
values in every byte the server could have written: the database (SQLite file, WAL and shared
memory, or a ``pg_dump``), the instance folder, temporary directories and the logs. They must
not be there, and the organizer key must still open the report.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Response, ViewportSize

from incidents import create_app
from incidents.config import Settings
from incidents.db import db
from incidents.models import RecipientKey, Report, Wrap
from incidents.services.casefile import open_case
from incidents.services.reports import list_report_shells
from tests.browser.conftest import DESKTOP, PHONE, Offline, serving
from tests.conftest import KeyFiles, require_service

pytestmark = pytest.mark.browser

CROCKFORD_GROUP = "[0-9A-HJKMNP-TV-Z]{4}"
RECEIPT = re.compile(rf"^{CROCKFORD_GROUP}(?:-{CROCKFORD_GROUP}){{6}}$")
UNUSUAL_DATE = "2004-02-29"
UNUSUAL_DATE_PERIOD = "2004-W09"
SEALED_TEXT_FIELDS = (
    "place_detail",
    "narrative",
    "targeted_person",
    "perpetrator_description",
    "contact",
)
ENGLISH_HEADING = "Tell us what happened"
# Words a page title must not contain: a title shows in tabs, history and window lists.
REVEALING_TITLE_WORDS = tuple(
    " ".join(
        (
            "incident report regist witness repress persecut activist regime police security",
            "complain exile deport threat",
            "инцидент сообщ заяв свидетел преслед репресс активист жалоб реестр полиц угроз",
            "prijav svedo svjedo progon represij aktivist registar policij pretnj",
        )
    ).split()
)
RETYPED_FIELDS = (
    "category",
    "occurred_on",
    "country",
    "city",
    "place_detail",
    "targeted_person",
    "perpetrator_description",
    "contact",
)
PG_DUMP_CANDIDATES = ("/usr/lib/postgresql/15/bin/pg_dump", "pg_dump")


def unique_phrase() -> str:
    """A phrase that appears nowhere unless this test wrote it."""
    return f"KESTREL-{secrets.token_hex(6)}"


# --- filling the form through the real UI -----------------------------------------------------


@dataclass(frozen=True)
class Answers:
    """What the witness enters; ``None`` leaves a field as the form shows it."""

    category: str = "surveillance"
    occurred_on: str | None = UNUSUAL_DATE
    date_precision: str = "day"
    country: str = "RS"
    city: str = "novi_sad"
    place_detail: str = ""
    narrative: str = ""
    targeted_person: str = ""
    perpetrator_type: str = "home_state"
    perpetrator_description: str = ""
    contact: str = ""
    consent_contact: bool = False
    consent_statistics: bool = False


def fill_report(page: Page, answers: Answers) -> None:
    """Fill the report form the way a witness does: selects, date, radios, boxes, text."""
    page.select_option("select[name=category]", answers.category)
    if answers.occurred_on is not None:
        page.fill("input[name=occurred_on]", answers.occurred_on)
    page.check(f"input[name=date_precision][value={answers.date_precision}]")
    page.select_option("select[name=country]", answers.country)
    page.select_option("select[name=city]", answers.city)
    page.fill("input[name=place_detail]", answers.place_detail)
    page.fill("textarea[name=narrative]", answers.narrative)
    page.fill("input[name=targeted_person]", answers.targeted_person)
    page.check(f"input[name=perpetrator_type][value={answers.perpetrator_type}]")
    page.fill("textarea[name=perpetrator_description]", answers.perpetrator_description)
    page.set_checked("input[name=consent_contact]", answers.consent_contact)
    page.fill("input[name=contact]", answers.contact)
    page.set_checked("input[name=consent_statistics]", answers.consent_statistics)


def send_report(page: Page) -> Response:
    """Press the form's submit button and return the response to the POST."""
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("form.report-form button[type=submit]")
    page.wait_for_load_state()
    return posted.value


def receipt_on(page: Page) -> str:
    """The receipt code shown on the receipt page."""
    return page.locator(".receipt-code code").inner_text().strip()


def minimal_answers() -> Answers:
    """The least a witness must enter for a report to be accepted."""
    return Answers(
        category="threat",
        occurred_on="2025-03-14",
        country="GE",
        city="other",
        narrative="Someone threatened me outside the café.",
    )


def assert_language(page: Page, *, html_lang: str, name: str) -> None:
    """The page is rendered in the language the witness chose, with that choice marked."""
    assert page.get_attribute("html", "lang") == html_lang
    assert page.locator(".languages [aria-current=true]").inner_text() == name
    heading = page.locator("h1").inner_text()
    assert heading != ENGLISH_HEADING, f"the form heading is not translated to {name}"


# --- looking for plaintext on disk -------------------------------------------------------------


def encodings_of(text: str) -> dict[bytes, str]:
    """Byte patterns under which ``text`` could be stored: UTF-8, UTF-16 and hex (bytea dumps)."""
    raw = text.encode("utf-8")
    return {
        raw: f"{text!r} (UTF-8)",
        text.encode("utf-16-le"): f"{text!r} (UTF-16LE)",
        text.encode("utf-16-be"): f"{text!r} (UTF-16BE)",
        raw.hex().encode("ascii"): f"{text!r} (hex)",
        raw.hex().upper().encode("ascii"): f"{text!r} (HEX)",
    }


def leaks_in(data: bytes, secrets_: Iterable[str], where: str) -> list[str]:
    """Name every secret that occurs in ``data`` in any of its encodings."""
    found = []
    for text in secrets_:
        for pattern, label in encodings_of(text).items():
            if pattern in data:
                found.append(f"{label} in {where}")
    return found


def files_under(root: Path) -> Iterator[Path]:
    """Every regular file under ``root`` (or ``root`` itself), without following links."""
    if root.is_file():
        yield root
        return
    for directory, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink():
                yield path


def snapshot(root: Path) -> dict[Path, tuple[int, int, int]]:
    """Modification time, change time and size of every file under ``root``."""
    stamps = {}
    for path in files_under(root):
        try:
            stat = path.stat()
        except OSError:
            continue
        stamps[path] = (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
    return stamps


def changed_since(root: Path, before: dict[Path, tuple[int, int, int]]) -> Iterator[Path]:
    """Files under ``root`` that are new or changed since ``before`` was taken."""
    for path, stamp in snapshot(root).items():
        if before.get(path) != stamp:
            yield path


def leaks_in_files(paths: Iterable[Path], secrets_: list[str]) -> list[str]:
    """Read each file (if it still exists) and name the secrets found in it."""
    found = []
    for path in paths:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            continue
        found += leaks_in(data, secrets_, str(path))
    return found


def pg_dump(database_url: str) -> bytes:
    """A plain-SQL dump of the test database, as someone seizing the server would take it."""
    programs = [found for name in PG_DUMP_CANDIDATES if (found := shutil.which(name))]
    if not programs:
        require_service("pg_dump is not installed")
    libpq_url = sa.make_url(database_url).set(drivername="postgresql")
    command = [programs[0], "--no-password", "--format=plain", "--dbname"]
    command.append(libpq_url.render_as_string(hide_password=False))
    completed = subprocess.run(command, capture_output=True, check=False, timeout=60)
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return completed.stdout


def is_postgresql(app: Flask) -> bool:
    """True when the app under test stores its data in PostgreSQL."""
    settings: Settings = app.extensions["incidents.settings"]
    return settings.database_url.startswith("postgresql")


def backend_name(app: Flask) -> str:
    """Short database name for artifact file names."""
    return "postgresql" if is_postgresql(app) else "sqlite"


def count_rows(app: Flask, *models: type) -> dict[str, int]:
    """Number of rows of each model's table."""
    with app.app_context():
        return {
            model.__name__: db.session.scalar(sa.select(sa.func.count()).select_from(model)) or 0
            for model in models
        }


# --- the journeys -------------------------------------------------------------------------------


def test_witness_files_a_report_in_russian_without_javascript_and_nothing_leaks(
    app: Flask,
    live_server: str,
    no_js_page: Page,
    organizer: KeyFiles,
    tmp_path: Path,
    artifacts: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Given: a witness with JavaScript disabled, and every log line kept for inspection
    caplog.set_level(logging.DEBUG)
    temp_before = snapshot(Path(tempfile.gettempdir()))
    page = no_js_page
    phrases = {name: unique_phrase() for name in SEALED_TEXT_FIELDS}
    answers = Answers(
        category="surveillance",
        occurred_on=UNUSUAL_DATE,
        date_precision="day",
        country="RS",
        city="novi_sad",
        place_detail=f"Двор дома у {phrases['place_detail']}",
        narrative=(
            f"Меня снимали на телефон у {phrases['narrative']}.\nПотом они ждали у подъезда."
        ),
        targeted_person=f"мой брат {phrases['targeted_person']}",
        perpetrator_type="home_state",
        perpetrator_description=f"серая куртка, {phrases['perpetrator_description']}",
        contact=f"signal: {phrases['contact']}",
        consent_contact=True,
        consent_statistics=True,
    )

    # When: they open the form, switch language with the plain links, fill and send it
    page.goto(f"{live_server}/report")
    page.get_by_role("link", name="Srpski").click()
    assert_language(page, html_lang="sr-Latn", name="Srpski")
    page.get_by_role("link", name="Русский").click()
    assert_language(page, html_lang="ru", name="Русский")
    fill_report(page, answers)
    page.screenshot(path=artifacts / f"form-filled-ru-{backend_name(app)}.png", full_page=True)
    response = send_report(page)

    # Then: they see a receipt of 7 groups of 4 characters, still in Russian
    assert response.status == 200
    assert page.get_attribute("html", "lang") == "ru"
    assert RECEIPT.fullmatch(receipt_on(page)), receipt_on(page)
    page.screenshot(path=artifacts / f"receipt-ru-{backend_name(app)}.png", full_page=True)

    # And: no sealed value is in any byte the server wrote
    sealed_values = [*phrases.values(), UNUSUAL_DATE]
    settings: Settings = app.extensions["incidents.settings"]
    with app.app_context():
        (shell,) = list_report_shells()
    if is_postgresql(app):
        dump = pg_dump(settings.database_url)
        assert shell.id.encode() in dump, "the dump does not hold the report: wrong database?"
        leaks = leaks_in(dump, sealed_values, "pg_dump")
        database_files = []
    else:
        database = Path(sa.make_url(settings.database_url).database or "")
        database_files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        stored = b"".join(path.read_bytes() for path in database_files if path.exists())
        assert uuid.UUID(shell.id).hex.encode() in stored, "the scan misses the report's row"
        leaks = []
    server_places = [*database_files, settings.instance_path, tmp_path]
    leaks += leaks_in_files(
        (path for place in server_places if place.exists() for path in files_under(place)),
        sealed_values,
    )
    leaks += leaks_in_files(changed_since(Path(tempfile.gettempdir()), temp_before), sealed_values)
    captured = capfd.readouterr()
    logs = [caplog.text, *(r.getMessage() for r in caplog.records), captured.out, captured.err]
    leaks += leaks_in("\n".join(logs).encode("utf-8"), sealed_values, "the logs")
    assert leaks == []

    # And: the organizer key opens the report and gives back every value
    with app.app_context():
        opened = open_case(uuid.UUID(shell.id), private_key=organizer.private_key)
    sealed = {name: value.replace("\r\n", "\n") for name, value in opened.sealed.items()}
    assert sealed == {
        "occurred_on": UNUSUAL_DATE,
        **{name: getattr(answers, name) for name in SEALED_TEXT_FIELDS},
    }
    assert shell.category == "surveillance"
    assert shell.occurred_period == UNUSUAL_DATE_PERIOD
    assert shell.date_precision == "day"
    assert (shell.country, shell.city, shell.perpetrator_type) == ("RS", "novi_sad", "home_state")
    assert shell.consent_contact
    assert shell.consent_statistics


def test_missing_narrative_and_future_date_are_marked_and_other_input_is_kept(
    app: Flask, live_server: str, no_js_page: Page
) -> None:
    # Given: a witness without JavaScript who forgot the narrative and mistyped the year
    page = no_js_page
    future = (date.today() + timedelta(days=40)).isoformat()
    answers = Answers(
        category="detention",
        occurred_on=future,
        date_precision="week",
        country="ME",
        city="budva",
        place_detail=f"port {unique_phrase()}",
        narrative="",
        targeted_person=f"colleague {unique_phrase()}",
        perpetrator_type="host_state",
        perpetrator_description=f"uniform {unique_phrase()}",
        contact=f"signal: {unique_phrase()}",
        consent_contact=True,
        consent_statistics=False,
    )
    page.goto(f"{live_server}/report")
    fill_report(page, answers)

    # When: they send the form
    response = send_report(page)

    # Then: the two fields are marked with their messages and nothing is stored
    assert response.status == 400
    assert page.locator(".alert-error").is_visible()
    assert page.locator("#narrative-errors").inner_text().strip()
    assert page.locator("#occurred_on-errors").inner_text().strip()
    marked = page.eval_on_selector_all(".field-errors", "lists => lists.map((ul) => ul.id)")
    assert sorted(marked) == ["narrative-errors", "occurred_on-errors"]
    assert count_rows(app, Report, Wrap, RecipientKey) == {
        "Report": 0,
        "Wrap": 0,
        "RecipientKey": 0,
    }

    # And: everything else they typed is still in the form
    kept = {name: page.input_value(f"[name={name}]") for name in RETYPED_FIELDS}
    assert kept == {name: getattr(answers, name) for name in kept}
    assert page.is_checked("input[name=date_precision][value=week]")
    assert page.is_checked("input[name=perpetrator_type][value=host_state]")
    assert page.is_checked("input[name=consent_contact]")
    assert not page.is_checked("input[name=consent_statistics]")
    assert page.input_value("textarea[name=narrative]") == ""


# --- every witness page -----------------------------------------------------------------------


CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", function (event) {
  console.error("CSP violation: " + event.violatedDirective + " blocked " + event.blockedURI);
});
"""


@dataclass
class PageWatch:
    """Console errors, script errors, CSP violations and failed loads seen by one page."""

    page: Page
    problems: list[str] = field(default_factory=list)
    expected_document_status: int = 200

    def __post_init__(self) -> None:
        """Start listening to the page."""
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed load: {r.url}"))
        self.page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        is_document = message.location.get("url") == self.page.url
        expected = f"status of {self.expected_document_status} "
        if is_document and self.expected_document_status >= 400 and expected in message.text:
            return  # the browser notes the error status of the document itself
        self.problems.append(f"console {message.type}: {message.text}")

    def _response(self, response: Response) -> None:
        if response.request.resource_type != "document" and response.status >= 400:
            self.problems.append(f"{response.status} for {response.url}")


@dataclass(frozen=True)
class WitnessPage:
    """A witness page and how to reach it."""

    name: str
    status: int
    open: Callable[[Page], Response | None]


def check_witness_page(page: Page, watch: PageWatch, spec: WitnessPage, exit_url: str) -> None:
    """Open a page and record everything a witness page must not do or lack."""
    watch.expected_document_status = spec.status
    before = len(watch.problems)
    response = spec.open(page)
    page.wait_for_load_state("load")
    problems = watch.problems
    if response is None or response.status != spec.status:
        problems.append(f"status {response and response.status}, not {spec.status}")
    quick_exit = page.locator("a#quick-exit")
    if not quick_exit.is_visible():
        problems.append("no visible quick-exit link")
    elif quick_exit.get_attribute("href") != exit_url:
        problems.append(f"quick exit goes to {quick_exit.get_attribute('href')}")
    else:
        box = quick_exit.bounding_box()
        viewport = page.viewport_size
        if box is None or viewport is None or box["y"] + box["height"] > viewport["height"]:
            problems.append("quick exit is not on the first screen")
    title = page.title().strip()
    if not title or any(word in title.casefold() for word in REVEALING_TITLE_WORDS):
        problems.append(f"title {title!r} is not neutral")
    problems[before:] = [f"{spec.name}: {problem}" for problem in problems[before:]]


@pytest.fixture
def closed_server(tmp_path: Path, organizer: KeyFiles) -> Iterator[str]:
    """A second app whose organizer key file is missing: its form must answer 503."""
    settings = Settings.for_testing(
        tmp_path / "closed",
        organizer_public_key_path=tmp_path / "closed" / "missing-organizer.pub",
        organizer_key_id=organizer.public_key.key_id_hex,
    )
    with serving(create_app(settings)) as base_url:
        yield base_url


@pytest.mark.parametrize("javascript", [False, True], ids=["no-js", "js"])
def test_every_witness_page_is_clean_neutral_and_has_a_quick_exit(
    app: Flask,
    live_server: str,
    closed_server: str,
    new_context: Callable[..., BrowserContext],
    javascript: bool,
    offline: Offline,
) -> None:
    # Given: a browser that reports console errors and CSP violations
    exit_url = app.extensions["incidents.settings"].quick_exit_url
    context = new_context(javascript=javascript)
    context.add_init_script(CSP_LISTENER)
    page = context.new_page()
    watch = PageWatch(page)

    def receipt(page: Page) -> Response:
        page.goto(f"{live_server}/report")
        fill_report(page, minimal_answers())
        return send_report(page)

    def expired_form(page: Page) -> Response:
        page.goto(f"{live_server}/report")
        fill_report(page, minimal_answers())
        context.clear_cookies()
        return send_report(page)

    pages = [
        WitnessPage("form", 200, lambda p: p.goto(f"{live_server}/report")),
        WitnessPage("form (ru)", 200, lambda p: p.goto(f"{live_server}/report?lang=ru")),
        WitnessPage("form (sr)", 200, lambda p: p.goto(f"{live_server}/report?lang=sr")),
        WitnessPage("receipt", 200, receipt),
        WitnessPage("not found", 404, lambda p: p.goto(f"{live_server}/nonexistent")),
        WitnessPage("expired form", 400, expired_form),
        WitnessPage("closed form", 503, lambda p: p.goto(f"{closed_server}/report")),
    ]

    # When: the witness opens each page
    for spec in pages:
        check_witness_page(page, watch, spec, exit_url)

    # Then: no page had a problem, and nothing tried to leave the machine
    assert watch.problems == []
    assert offline.requests == []


def test_quick_exit_link_works_without_javascript(
    app: Flask, live_server: str, no_js_page: Page, offline: Offline
) -> None:
    # Given: the form, with JavaScript disabled
    exit_url = app.extensions["incidents.settings"].quick_exit_url
    no_js_page.goto(f"{live_server}/report")

    # When: the witness clicks the quick-exit link
    no_js_page.click("a#quick-exit")

    # Then: the browser goes to the quick-exit site (answered locally)
    no_js_page.wait_for_url(exit_url)
    assert offline.requests == [exit_url]


def test_escape_leaves_with_javascript_and_the_form_still_works(
    app: Flask, live_server: str, js_page: Page, offline: Offline
) -> None:
    # Given: the form, with JavaScript enabled
    exit_url = app.extensions["incidents.settings"].quick_exit_url
    page = js_page
    page.goto(f"{live_server}/report")
    page.fill("textarea[name=narrative]", "half-written")

    # When: the witness presses Escape
    page.keyboard.press("Escape")

    # Then: the quick-exit site replaces the form, also in the history
    page.wait_for_url(exit_url)
    assert offline.requests == [exit_url]
    page.go_back()
    assert not page.url.startswith(live_server), "Back returns to the form"

    # And when: they come back and file a report with JavaScript on
    page.goto(f"{live_server}/report")
    fill_report(page, minimal_answers())
    response = send_report(page)

    # Then: they get a receipt
    assert response.status == 200
    assert RECEIPT.fullmatch(receipt_on(page))
    assert count_rows(app, Report) == {"Report": 1}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_russian_form_fits_the_screen_and_labels_every_field(
    live_server: str,
    new_context: Callable[..., BrowserContext],
    viewport: ViewportSize,
    artifacts: Path,
) -> None:
    # Given: the Russian form without JavaScript, as it first shows and after sending it empty
    page = new_context(javascript=False, viewport=viewport).new_page()
    page.goto(f"{live_server}/report?lang=ru")
    name = "phone" if viewport == PHONE else "desktop"
    for state in ("empty", "errors"):
        if state == "errors":
            send_report(page)
        page.screenshot(path=artifacts / f"form-ru-{state}-{name}.png", full_page=True)

        # Then: nothing is wider than the screen
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the {state} form is {overflow} px wider than the screen"

        # And: every control has a label a screen reader announces
        unlabelled = page.evaluate(
            """Array.from(document.querySelectorAll("input, select, textarea, button"))
                 .filter((el) => el.type !== "hidden")
                 .filter((el) => el.tagName === "BUTTON" ? !el.textContent.trim()
                                                         : el.labels.length === 0)
                 .map((el) => el.name || el.outerHTML)"""
        )
        assert unlabelled == []
