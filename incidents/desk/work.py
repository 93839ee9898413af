"""What a desk does with a case bundle and its private key: seal notes and replies, grant the
case to a volunteer, rotate the case's keys, and open attachments, all in memory.

Every function returns a desk output (JSON-ready, ciphertext only) for the outbox; nothing here
touches the disk or the network.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from incidents import crypto
from incidents.bundle import BundleError, b64, sealed_digest, unb64
from incidents.services.attachments import (
    META_FLOOR,
    AttachmentError,
    AttachmentMeta,
    decrypt_sealed_to,
    meta_field_name,
)
from incidents.services.casefile import (
    ENVELOPE_FIELDS,
    ENVELOPE_KINDS,
    bundle_data_keys,
    unreadable_envelopes,
)
from incidents.services.followup import NOTE_FIELD, REPLY_FIELD

Trust = Callable[[Mapping[str, str]], bool]
"""Decides whether the desk may seal to a recipient the server listed (see views.trusted)."""


def _trust_all(_entry: Mapping[str, str]) -> bool:
    """Accept every listed recipient (for tests and tools that check recipients themselves)."""
    return True


def recipients_of(
    bundle: Mapping[str, Any], *, trusted: Trust = _trust_all
) -> list[crypto.PublicKey]:
    """The keys a note on this case is sealed to: the organizer and the assigned volunteers,
    as listed by the server and accepted by ``trusted``."""
    entries = [entry for entry in bundle["recipients"] if trusted(entry)]
    if not any(entry["role"] == "organizer" for entry in entries):
        raise BundleError("the case bundle names no trusted organizer key")
    keys = [crypto.PublicKey.from_bytes(unb64(entry["public_key"])) for entry in entries]
    for entry, key in zip(entries, keys, strict=True):
        if key.key_id_hex != entry["key_id"]:
            raise BundleError("a recipient key does not match its key id")
    return keys


def witness_key_of(bundle: Mapping[str, Any]) -> crypto.PublicKey:
    """The witness's public key (derived from their receipt at intake)."""
    return crypto.PublicKey.from_bytes(unb64(bundle["witness_public_key"]))


def _wraps(
    data_key: bytes, envelope_id: uuid.UUID, keys: Iterable[crypto.PublicKey]
) -> dict[str, str]:
    """Wraps of ``data_key`` to each key, by key id (base64)."""
    return {
        key.key_id_hex: b64(crypto.wrap_data_key(data_key, report_id=envelope_id, recipient=key))
        for key in keys
    }


def _sealed_envelope(
    bundle: Mapping[str, Any], text: str, *, field: str, keys: list[crypto.PublicKey]
) -> dict[str, Any]:
    """A new envelope (own id and data key) holding ``text``, wrapped to ``keys``."""
    envelope_id = uuid.uuid4()
    data_key = crypto.new_data_key()
    return {
        "id": str(envelope_id),
        "report_id": bundle["report_id"],
        "sealed": b64(
            crypto.seal_field(text, data_key=data_key, report_id=envelope_id, name=field)
        ),
        "wraps": _wraps(data_key, envelope_id, keys),
    }


def seal_note(
    bundle: Mapping[str, Any], text: str, *, trusted: Trust = _trust_all
) -> dict[str, Any]:
    """A note sealed to the organizer and the assigned volunteers."""
    keys = recipients_of(bundle, trusted=trusted)
    return _sealed_envelope(bundle, text, field=NOTE_FIELD, keys=keys)


def seal_reply(
    bundle: Mapping[str, Any], text: str, *, trusted: Trust = _trust_all
) -> dict[str, Any]:
    """A reply sealed to the witness's key, the organizer and the assigned volunteers."""
    keys = [*recipients_of(bundle, trusted=trusted), witness_key_of(bundle)]
    return _sealed_envelope(bundle, text, field=REPLY_FIELD, keys=keys)


def status_change(
    bundle: Mapping[str, Any], new_status: str, *, reason: str = ""
) -> dict[str, Any]:
    """A status change for the server (clear: statuses are part of the shell)."""
    return {
        "report_id": bundle["report_id"],
        "from": bundle["shell"]["status"],
        "to": new_status,
        "reason": reason,
    }


def grant_case(
    bundle: Mapping[str, Any], volunteer: crypto.PublicKey, *, private_key: crypto.PrivateKey
) -> dict[str, Any]:
    """Wrap the case's data keys (report and every envelope this key opens) to ``volunteer``.

    Content is not re-encrypted: the volunteer receives the same data keys.
    """
    keys = bundle_data_keys(bundle, private_key=private_key)
    report_id = uuid.UUID(bundle["report_id"])
    return {
        "report_id": str(report_id),
        "wrap": b64(
            crypto.wrap_data_key(keys[report_id], report_id=report_id, recipient=volunteer)
        ),
        "envelopes": {
            str(envelope_id): b64(
                crypto.wrap_data_key(key, report_id=envelope_id, recipient=volunteer)
            )
            for envelope_id, key in keys.items()
            if envelope_id != report_id
        },
    }


def decrypt_attachment(
    entry: Mapping[str, Any], ciphertext: bytes, *, data_key: bytes
) -> tuple[AttachmentMeta, bytes]:
    """Open an attachment in memory and check its SHA-256 against the sealed metadata."""
    sink = io.BytesIO()
    try:
        meta = decrypt_sealed_to(
            unb64(entry["meta"]),
            attachment_id=uuid.UUID(entry["id"]),
            envelope_id=uuid.UUID(entry["envelope_id"]),
            data_key=data_key,
            source=io.BytesIO(ciphertext),
            sink=sink,
        )
    except AttachmentError as exc:
        raise crypto.DecryptionError(str(exc)) from exc
    return meta, sink.getvalue()


def open_attachment(
    bundle: Mapping[str, Any],
    attachment_id: str,
    ciphertext: bytes,
    *,
    private_key: crypto.PrivateKey,
) -> tuple[AttachmentMeta, bytes]:
    """Decrypt one attachment of the case (in memory)."""
    keys = bundle_data_keys(bundle, private_key=private_key)
    for entry in bundle["attachments"]:
        if entry["id"] == attachment_id:
            envelope_id = uuid.UUID(entry["envelope_id"])
            if envelope_id not in keys:
                raise crypto.DecryptionError("this attachment is not wrapped to this key")
            return decrypt_attachment(entry, ciphertext, data_key=keys[envelope_id])
    raise BundleError("no such attachment in the case")


def rotate_case(
    bundle: Mapping[str, Any],
    *,
    private_key: crypto.PrivateKey,
    fetch_attachment: Callable[[str], bytes],
    trusted: Trust = _trust_all,
) -> dict[str, Any]:
    """Re-seal the whole case under fresh data keys, wrapped to the bundle's recipients.

    The bundle must be fresh (fetched after any revocation, so its recipients are the ones who
    keep access). Every field, addition, reply, note and attachment gets a new key; attachments
    also get new ids. A key that held the old data keys opens nothing of the stored case after.
    """
    report_id = uuid.UUID(bundle["report_id"])
    old_keys = bundle_data_keys(bundle, private_key=private_key)
    keys = recipients_of(bundle, trusted=trusted)
    new_keys: dict[uuid.UUID, bytes] = {report_id: crypto.new_data_key()}
    sealed = {
        name: b64(
            crypto.seal_field(
                crypto.open_field(
                    unb64(blob), data_key=old_keys[report_id], report_id=report_id, name=name
                ),
                data_key=new_keys[report_id],
                report_id=report_id,
                name=name,
            )
        )
        for name, blob in bundle["sealed"].items()
    }
    unreadable = {envelope_id for _kind, envelope_id in unreadable_envelopes(bundle, old_keys)}
    envelopes = []
    dropped = []
    for kind in ENVELOPE_KINDS:
        for entry in bundle[kind]:
            envelope_id = uuid.UUID(entry["id"])
            if envelope_id in unreadable or envelope_id not in old_keys:
                if kind == "additions":
                    raise crypto.DecryptionError("a witness's addition does not open")
                dropped.append(str(envelope_id))  # sealed wrongly: the rotation removes it
                continue
            field = ENVELOPE_FIELDS[kind]
            text = crypto.open_field(
                unb64(entry["sealed"]), data_key=old_keys[envelope_id], report_id=envelope_id,
                name=field,
            )  # fmt: skip
            new_keys[envelope_id] = crypto.new_data_key()
            targets = [*keys, witness_key_of(bundle)] if kind == "replies" else keys
            envelopes.append(
                {
                    "id": str(envelope_id),
                    "sealed": b64(
                        crypto.seal_field(
                            text, data_key=new_keys[envelope_id], report_id=envelope_id, name=field
                        )
                    ),
                    "wraps": _wraps(new_keys[envelope_id], envelope_id, targets),
                }
            )
    attachments = [
        _rotate_attachment(entry, fetch_attachment, old_keys=old_keys, new_keys=new_keys)
        for entry in bundle["attachments"]
    ]
    return {
        "report_id": str(report_id),
        "base": sealed_digest(bundle["sealed"]),
        "sealed": sealed,
        "wraps": _wraps(new_keys[report_id], report_id, keys),
        "envelopes": envelopes,
        "drop": dropped,
        "attachments": attachments,
    }


def _rotate_attachment(
    entry: Mapping[str, Any],
    fetch_attachment: Callable[[str], bytes],
    *,
    old_keys: Mapping[uuid.UUID, bytes],
    new_keys: Mapping[uuid.UUID, bytes],
) -> dict[str, str]:
    """One attachment decrypted in memory and sealed again under a new id and key."""
    envelope_id = uuid.UUID(entry["envelope_id"])
    if envelope_id not in old_keys or envelope_id not in new_keys:
        raise crypto.DecryptionError("an attachment is not wrapped to this key")
    meta, data = decrypt_attachment(
        entry, fetch_attachment(entry["id"]), data_key=old_keys[envelope_id]
    )
    new_id = uuid.uuid4()
    new_key = new_keys[envelope_id]
    sink = io.BytesIO()
    sealer = crypto.StreamSealer(crypto.attachment_key(new_key, attachment_id=new_id), sink=sink)
    sealer.write(data)
    sealer.finish()
    meta_json = json.dumps(
        {"name": meta.name, "type": meta.type, "size": meta.size, "sha256": meta.sha256},
        ensure_ascii=False,
    ).encode("utf-8")
    return {
        "replaces": entry["id"],
        "id": str(new_id),
        "meta": b64(
            crypto.seal_bytes(
                meta_json,
                data_key=new_key,
                report_id=envelope_id,
                name=meta_field_name(new_id),
                floor=META_FLOOR,
            )
        ),
        "data": b64(sink.getvalue()),
    }
