"""Moving ciphertext between the desk's cache and the server, online or by file.

Online sync sends the outbox first, then pulls every bundle and replaces the cache in one
transaction. A broken connection never leaves anything half-done: outputs the server confirmed
leave the outbox, the others stay (even if the server stored them but its answer was lost), and
the cache is replaced only once every bundle has arrived; running sync again finishes the job
(the server skips outputs it already stored). Cases the server no
longer sends (revoked, deleted) disappear from the cache.

Offline, the same bundles arrive as a bundle file (downloaded from the server) and the outbox
leaves as an outputs file (uploaded through the server's Desk page).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from incidents import crypto
from incidents.bundle import (
    BUNDLE_FORMAT,
    OUTPUTS_FORMAT,
    BundleError,
    dump_file,
    load_file,
    unb64,
)
from incidents.desk.cache import DeskCache
from incidents.desk.client import ServerClient, ServerError

VOLUNTEERS_META = "volunteers"
ROLE_META = "role"
SYNCED_META = "synced_on"


@dataclass(frozen=True)
class SyncResult:
    """What a sync did: outputs stored, outputs the server refused (dropped), cases here."""

    sent: int
    cases: int
    refused: int = 0


@dataclass(frozen=True)
class PushResult:
    """What sending the outbox did."""

    sent: int
    refused: int
    reasons: tuple[str, ...] = ()


def push(cache: DeskCache, client: ServerClient) -> PushResult:
    """Send the outbox; clear what the server stored.

    The outbox goes as one batch (one transaction on the server). If the server refuses the
    batch, each output is sent alone, so that one change the server will never accept (the case
    changed meanwhile) does not hold back the others; refused outputs are dropped and their
    reasons returned. A broken connection raises NetworkError and leaves the outbox as it was.
    """
    output_ids, body = cache.outputs()
    if not output_ids:
        return PushResult(0, 0)
    try:
        client.send_outputs(body)
    except ServerError as exc:
        if exc.code not in ("refused", "malformed") and exc.status != 413:
            raise
        return _push_one_by_one(cache, client)
    cache.clear_outputs(output_ids)
    return PushResult(len(output_ids), 0)


def _push_one_by_one(cache: DeskCache, client: ServerClient) -> PushResult:
    """Send each output alone; drop the ones the server refuses."""
    sent, refused, reasons = 0, 0, []
    for output_id, kind, item in cache.output_items():
        try:
            client.send_outputs({"key_id": cache.key_id, kind: [item]})
        except ServerError as exc:
            if exc.code not in ("refused", "malformed") and exc.status != 413:
                raise
            refused += 1
            reasons.append(str(exc))
        else:
            sent += 1
        cache.clear_outputs([output_id])
    return PushResult(sent, refused, tuple(reasons))


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
        organizer_key_id=str(session["organizer_key_id"]),
    )
    return len(bundles)


def sync(cache: DeskCache, client: ServerClient) -> SyncResult:
    """Push the outbox, then pull every case (see module docstring)."""
    pushed = push(cache, client)
    cases = pull(cache, client)
    return SyncResult(sent=pushed.sent, cases=cases, refused=pushed.refused)


ORGANIZER_PIN_META = "organizer_pin"
PROOF_META = "proof_challenge"
ORGANIZER_SEEN_META = "organizer_seen"


def checked_keys(entries: list[dict[str, str]]) -> list[dict[str, str]]:
    """Key entries the server listed, kept only when the public key hashes to the key id, with
    the fingerprint worked out here from the key itself (never the server's text)."""
    checked = []
    for entry in entries:
        try:
            key = crypto.PublicKey.from_bytes(unb64(entry["public_key"]))
        except (crypto.CryptoError, BundleError, KeyError):
            continue
        if key.key_id_hex == entry.get("key_id"):
            checked.append({**entry, "fingerprint": key.fingerprint})
    return checked


def checked_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    """A bundle whose listed recipient keys were checked (see ``checked_keys``)."""
    return {**bundle, "recipients": checked_keys(list(bundle.get("recipients", [])))}


def store_case(cache: DeskCache, bundle: dict[str, Any]) -> None:
    """Store one freshly fetched bundle, its keys checked."""
    cache.put_case(checked_bundle(bundle))


def store_snapshot(
    cache: DeskCache,
    bundles: list[dict[str, Any]],
    *,
    volunteers: list[dict[str, str]],
    role: str,
    issued_on: str | None,
    organizer_key_id: str = "",
) -> None:
    """Replace the cache's cases and the organizer's volunteer list; pin the organizer key id
    the first time one is seen (later changes are only noted, see ``accept_organizer_key``)."""
    cache.replace_cases([checked_bundle(bundle) for bundle in bundles])
    if organizer_key_id:
        cache.set_meta(ORGANIZER_SEEN_META, organizer_key_id)
        if cache.get_meta(ORGANIZER_PIN_META) is None:
            cache.set_meta(ORGANIZER_PIN_META, organizer_key_id)
    cache.set_meta(VOLUNTEERS_META, json.dumps(checked_keys(volunteers)))
    cache.set_meta(ROLE_META, role)
    cache.set_meta(SYNCED_META, issued_on or "")


def import_bundle_file(cache: DeskCache, data: bytes) -> int:
    """Load a bundle file for this desk's key into the cache; BundleError if it is not one."""
    body = load_file(data, kind=BUNDLE_FORMAT, key_id=cache.key_id)
    cache.set_meta(PROOF_META, str(body.get("proof_challenge") or "") or None)
    store_snapshot(
        cache,
        list(body["cases"]),
        volunteers=list(body.get("volunteers", [])),
        role=str(body.get("role", "")),
        issued_on=str(body.get("issued_on", "")),
        organizer_key_id=str(body.get("organizer_key_id", "")),
    )
    return len(body["cases"])


EXPORTED_META = "exported_outputs"


def export_outputs(cache: DeskCache, *, private_key: crypto.PrivateKey) -> bytes:
    """The outbox as an outputs file for the server's Desk page; remembers what it contained,
    so that "empty the list" removes only those outputs.

    The file carries the answer to the possession challenge of the last bundle file loaded,
    so that the server knows it was made by a desk holding the key, not just by someone
    logged in.
    """
    ids, body = cache.outputs()
    challenge = cache.get_meta(PROOF_META)
    if challenge:
        # A challenge for another key: leave the proof out; the server asks for a fresh bundle.
        with contextlib.suppress(crypto.CryptoError):
            body["proof"] = crypto.answer_possession_challenge(
                unb64(challenge), private_key=private_key
            )
    cache.set_meta(EXPORTED_META, json.dumps(ids))
    return dump_file(OUTPUTS_FORMAT, body)


def clear_exported(cache: DeskCache) -> int:
    """Remove the outputs of the last downloaded outputs file; returns how many."""
    raw = cache.get_meta(EXPORTED_META)
    ids = list(json.loads(raw)) if raw else []
    cache.clear_outputs(ids)
    cache.set_meta(EXPORTED_META, None)
    return len(ids)


def volunteers(cache: DeskCache) -> list[dict[str, str]]:
    """The organizer's list of approved volunteer keys (from the last sync or import)."""
    raw = cache.get_meta(VOLUNTEERS_META)
    return list(json.loads(raw)) if raw else []


def organizer_key_change(cache: DeskCache) -> tuple[str, str] | None:
    """(pinned, now listed) organizer key ids when they differ, else None."""
    pinned, seen = cache.get_meta(ORGANIZER_PIN_META), cache.get_meta(ORGANIZER_SEEN_META)
    if pinned and seen and pinned != seen:
        return pinned, seen
    return None


def accept_organizer_key(cache: DeskCache) -> None:
    """Pin the organizer key id the server lists now (after comparing its fingerprint)."""
    seen = cache.get_meta(ORGANIZER_SEEN_META)
    if seen:
        cache.set_meta(ORGANIZER_PIN_META, seen)
