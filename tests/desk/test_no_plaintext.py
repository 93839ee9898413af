"""The desk writes no plaintext to disk: its cache and temporary files hold ciphertext only.

A case is read, a note and a reply are written and sent, another note waits in the outbox,
and the desk syncs; unique phrases from each must then appear in the desk's pages, and in no
file under the desk's cache directory nor in any file the test created or changed under
the system's temporary directory (with SQLite, the test server's database is one of them).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from werkzeug.test import TestResponse

from tests.conftest import KeyFiles
from tests.desk.conftest import Desk, issue_token
from tests.factories import make_filed_report, make_user

Listing = dict[str, tuple[int, int]]


def listing(root: Path) -> Listing:
    """Every regular file under ``root`` with its modification time and size."""
    found: Listing = {}
    for directory, _dirs, names in os.walk(root, onerror=lambda _error: None):
        for name in names:
            path = os.path.join(directory, name)
            try:
                stat = os.stat(path, follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile (another process's temporary file) or unreadable
            if os.path.isfile(path) and not os.path.islink(path):
                found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def files_to_search(cache_dir: Path, before: Listing) -> list[str]:
    """The desk's cache files, and the temporary files created or changed since ``before``."""
    temporary = listing(Path(tempfile.gettempdir()))
    changed = [path for path, stamp in temporary.items() if before.get(path) != stamp]
    return sorted(set(changed) | set(listing(cache_dir)))


def files_containing(paths: list[str], phrases: list[str]) -> list[tuple[str, str]]:
    """(path, phrase) for every file that holds one of the phrases as UTF-8 bytes."""
    needles = [(phrase, phrase.encode("utf-8")) for phrase in phrases]
    hits = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        hits.extend((path, phrase) for phrase, needle in needles if needle in data)
    return hits


def page(response: object) -> str:
    """The HTML of a desk response, after checking that it may not be cached."""
    assert isinstance(response, TestResponse)
    assert "no-store" in response.headers.get("Cache-Control", ""), response.request.path
    return response.get_data(as_text=True)


def test_desk_keeps_no_plaintext_on_disk(
    app: Flask, organizer: KeyFiles, make_desk: Callable[..., Desk]
) -> None:
    # Given unique phrases for the report, a note sent at once, a reply and a note left pending
    tag = secrets.token_hex(6)
    narrative, note, reply, pending = (
        f"narrative-quince-{tag}",
        f"note-sorrel-{tag}",
        f"reply-juniper-{tag}",
        f"pending-nutmeg-{tag}",
    )
    before = listing(Path(tempfile.gettempdir()))
    boss = make_user(app, role="organizer")
    filed = make_filed_report(app, narrative=f"What happened: {narrative}.")
    desk = make_desk(organizer)
    case_url = f"/cases/{filed.report_id}"

    # When the organizer unlocks, syncs, reads the case, writes a note and a reply
    assert "no-store" in desk.browser.get("/unlock").headers["Cache-Control"]
    desk.unlock(token=issue_token(app, boss.id).secret)
    desk.post("/sync")
    page(desk.browser.get("/"))
    assert narrative in page(desk.browser.get(case_url))
    desk.post(f"{case_url}/notes", {"text": f"Note: {note}"})
    desk.post(f"{case_url}/replies", {"text": f"Reply: {reply}"})
    # and one more note while the server cannot be reached (it waits in the outbox)
    desk.transport.fail_after = 0
    desk.post(f"{case_url}/notes", {"text": f"Note: {pending}"})
    desk.transport.fail_after = None
    assert desk.state.cache.pending_count() == 1
    shown = page(desk.browser.get(case_url))
    assert note in shown
    assert reply in shown
    outputs = desk.browser.get("/outputs")
    assert "no-store" in outputs.headers["Cache-Control"]

    # Then no phrase is in the cache or in a new temporary file while the note waits
    searched = files_to_search(desk.cache_dir, before)
    assert str(desk.state.cache.path) in searched
    assert files_containing(searched, [narrative, note, reply, pending]) == []
    assert pending.encode() not in outputs.data

    # When the desk syncs, and the pending note comes back from the server
    desk.post("/sync")
    assert desk.state.cache.pending_count() == 0
    shown = page(desk.browser.get(case_url))
    for phrase in (narrative, note, reply, pending):
        assert phrase in shown, phrase

    # Then still no phrase is on disk
    searched = files_to_search(desk.cache_dir, before)
    assert str(desk.state.cache.path) in searched
    assert files_containing(searched, [narrative, note, reply, pending]) == []
