"""Rotate the organizer key from the desk side: prove both keys, re-wrap, finish.

Resumable: each step asks the server where things stand. A run interrupted at any point (even
after the server moved the pin but before the answer arrived) is finished by running it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from incidents import crypto
from incidents.bundle import b64, unb64
from incidents.desk.client import ServerClient, ServerError


class RotationRefusedError(Exception):
    """Raised when the rotation cannot go on (another rotation, wrong keys)."""


@dataclass(frozen=True)
class RotationResult:
    """How a run ended."""

    rewrapped: int
    organizer_key_id: str
    already_done: bool = False


def rewrap(
    item: dict[str, str], *, old: crypto.PrivateKey, new: crypto.PublicKey
) -> dict[str, str]:
    """One wrap to the old key turned into the same data key wrapped to the new key."""
    envelope_id = uuid.UUID(item["envelope_id"])
    data_key = crypto.unwrap_data_key(unb64(item["wrap"]), report_id=envelope_id, private_key=old)
    return {
        "report_id": item["report_id"],
        "envelope_id": item["envelope_id"],
        "wrap": b64(crypto.wrap_data_key(data_key, report_id=envelope_id, recipient=new)),
    }


def rotate_organizer_key(
    make_client: Callable[[str], ServerClient],
    *,
    old: crypto.PrivateKey,
    new: crypto.PrivateKey,
    progress: Callable[[int, int], None] = lambda done, total: None,
    batch: int = 200,
) -> RotationResult:
    """Move every wrap from ``old`` to ``new`` and the server's pin with them.

    ``make_client(key_id)`` returns a client presenting that key id.
    """
    client = make_client(old.key_id.hex())
    try:
        session = client.session()
    except ServerError as exc:
        if exc.code != "key":
            raise
        session = make_client(new.key_id.hex()).session()
        if session["organizer_key_id"] == new.key_id.hex():
            return RotationResult(0, new.key_id.hex(), already_done=True)
        raise
    if session["role"] != "organizer":
        raise RotationRefusedError("only organizers rotate the organizer key")
    if session["organizer_key_id"] != old.key_id.hex():
        raise RotationRefusedError("the old key file is not the server's organizer key")
    incoming = session.get("incoming_key_id")
    if incoming not in (None, new.key_id.hex()):
        raise RotationRefusedError("another key rotation is under way on the server")
    if incoming is None:
        current_blob, new_blob = client.rotation_challenge(new.public_key().to_bytes())
        client.rotation_start(
            current=crypto.answer_possession_challenge(current_blob, private_key=old),
            new=crypto.answer_possession_challenge(new_blob, private_key=new),
        )
    new_public = new.public_key()
    done = 0
    page, remaining = client.rotation_pending(limit=batch)
    total = remaining
    while page:
        moved, unreadable = [], []
        for item in page:
            try:
                moved.append(rewrap(item, old=old, new=new_public))
            except crypto.CryptoError:
                if item["envelope_id"] == item["report_id"]:
                    raise  # a report's own wrap that does not open: stop and say so
                unreadable.append(item)  # a note or reply sealed wrongly by its writer
        if moved:
            client.rotation_store(moved)
        if unreadable:
            client.rotation_discard(
                [{"report_id": i["report_id"], "envelope_id": i["envelope_id"]} for i in unreadable]
            )
        done += len(page)
        progress(done, total)
        page, remaining = client.rotation_pending(limit=batch)
    key_id = client.rotation_finish()
    return RotationResult(done, key_id)
