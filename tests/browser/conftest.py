"""Fixtures for browser tests: a live server, the system Chromium and offline browser contexts.

``live_server`` serves the ``app`` fixture (so every browser test runs on SQLite and on
PostgreSQL) with werkzeug on 127.0.0.1 and a free port. The browser is Debian's Chromium driven
by Playwright; no browser is ever downloaded. Contexts never reach the network: every request
that does not go to 127.0.0.1 is answered by a tiny local page and recorded, so a test can
follow the quick-exit link without leaving the machine.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    Route,
    ViewportSize,
    sync_playwright,
)
from werkzeug.serving import make_server

from tests.conftest import require_service

CHROMIUM = Path(os.environ.get("INCIDENTS_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
LOCAL_ORIGIN = "http://127.0.0.1:"
ELSEWHERE_PAGE = "<!doctype html><title>Elsewhere</title><p>Somewhere else</p>"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@contextmanager
def serving(app: Flask, *, port: int = 0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 in a background thread; yield its base URL.

    ``port`` 0 picks a free port; pass one from ``free_port()`` when the app must know it.
    """
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        assert not thread.is_alive(), "the live server did not stop"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for an app that must know its port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """Base URL of the test app served over real HTTP (on SQLite and on PostgreSQL)."""
    with serving(app) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """The Playwright driver (sync API) for the session."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless, with every background network feature off."""
    if not CHROMIUM.exists():
        require_service(f"Chromium is not installed at {CHROMIUM}")
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@dataclass
class Offline:
    """Answers every request that would leave 127.0.0.1 locally, and remembers its URL."""

    requests: list[str] = field(default_factory=list)

    def is_external(self, url: str) -> bool:
        """True for any URL that is not on the local test server."""
        return not url.startswith(LOCAL_ORIGIN)

    def answer(self, route: Route) -> None:
        """Fulfil an external request with a tiny local page instead of the network."""
        self.requests.append(route.request.url)
        route.fulfill(status=200, content_type="text/html; charset=utf-8", body=ELSEWHERE_PAGE)


@pytest.fixture
def offline() -> Offline:
    """The record of requests that tried to leave the machine during one test."""
    return Offline()


@pytest.fixture
def new_context(browser: Browser, offline: Offline) -> Iterator[Callable[..., BrowserContext]]:
    """Make offline browser contexts: ``new_context(javascript=False, viewport=PHONE)``."""
    contexts: list[BrowserContext] = []

    def make(*, javascript: bool, viewport: ViewportSize | None = None) -> BrowserContext:
        context = browser.new_context(
            java_script_enabled=javascript,
            viewport=viewport or PHONE,
            locale="en-US",
            service_workers="block",
        )
        context.route(offline.is_external, offline.answer)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def no_js_page(new_context: Callable[..., BrowserContext]) -> Page:
    """A phone-sized page with JavaScript disabled, as a cautious witness (Tor Browser) has."""
    return new_context(javascript=False).new_page()


@pytest.fixture
def js_page(new_context: Callable[..., BrowserContext]) -> Page:
    """A phone-sized page with JavaScript enabled."""
    return new_context(javascript=True).new_page()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Folder for screenshots (git-ignored); kept after the run for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
