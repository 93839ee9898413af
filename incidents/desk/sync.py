"""Moving ciphertext between the desk's cache and the server, online or by file.

Online sync sends the outbox first, then pulls every bundle and replaces the cache in one
transaction; a broken connection leaves both the cache and the outbox as they were, and running
sync again finishes the job (the server skips outputs it already stored). Cases the server no
longer sends (revoked, deleted) disappear from the cache.

Offline, the same bundles arrive as a bundle file (downloaded from the server) and the outbox
leaves as an outputs file (uploaded through the server's Desk page).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from incidents.bundle import BUNDLE_FORMAT, OUTPUTS_FORMAT, dump_file, load_file
from incidents.desk.cache import DeskCache
from incidents.desk.client import ServerClient

VOLUNTEERS_META = "volunteers"
ROLE_META = "role"
SYNCED_META = "synced_on"


@dataclass(frozen=True)
class SyncResult:
    """What a sync did."""

    sent: int
    cases: int


def push(cache: DeskCache, client: ServerClient) -> int:
    """Send the outbox as one batch; clear it once the server has stored it. Returns the count."""
    output_ids, body = cache.outputs()
    if not output_ids:
        return 0
    client.send_outputs(body)
    cache.clear_outputs(output_ids)
    return len(output_ids)


def pull(cache: DeskCache, client: ServerClient) -> int:
    """Fetch every bundle, then replace the cached cases at once. Returns the case count."""
    session = client.session()
    bundles = list(client.cases())
    volunteers = client.volunteers() if session["role"] == "organizer" else []
    store_snapshot(
        cache,
        bundles,
        volunteers=volunteers,
        role=str(session["role"]),
        issued_on=None,
    )
    return len(bundles)


def sync(cache: DeskCache, client: ServerClient) -> SyncResult:
    """Push the outbox, then pull every case (see module docstring)."""
    sent = push(cache, client)
    cases = pull(cache, client)
    return SyncResult(sent=sent, cases=cases)


def store_snapshot(
    cache: DeskCache,
    bundles: list[dict[str, Any]],
    *,
    volunteers: list[dict[str, str]],
    role: str,
    issued_on: str | None,
) -> None:
    """Replace the cache's cases and the organizer's volunteer list."""
    cache.replace_cases(bundles)
    cache.set_meta(VOLUNTEERS_META, json.dumps(volunteers))
    cache.set_meta(ROLE_META, role)
    cache.set_meta(SYNCED_META, issued_on or "")


def import_bundle_file(cache: DeskCache, data: bytes) -> int:
    """Load a bundle file for this desk's key into the cache; BundleError if it is not one."""
    body = load_file(data, kind=BUNDLE_FORMAT, key_id=cache.key_id)
    store_snapshot(
        cache,
        list(body["cases"]),
        volunteers=list(body.get("volunteers", [])),
        role=str(body.get("role", "")),
        issued_on=str(body.get("issued_on", "")),
    )
    return len(body["cases"])


def export_outputs(cache: DeskCache) -> bytes:
    """The outbox as an outputs file for the server's Desk page."""
    _ids, body = cache.outputs()
    return dump_file(OUTPUTS_FORMAT, body)


def volunteers(cache: DeskCache) -> list[dict[str, str]]:
    """The organizer's list of approved volunteer keys (from the last sync or import)."""
    raw = cache.get_meta(VOLUNTEERS_META)
    return list(json.loads(raw)) if raw else []
