"""Organizer key rotation on the server: prove, re-wrap, then move the pin.

1. **Start**: the desk proves it holds both the current organizer private key and the new one
   (each answers a possession challenge sealed to it). The new public key is registered as
   *incoming*: from then on every new report and addition is also wrapped to it (notes and
   replies sealed on desks meanwhile reach it through the re-wrap step).
2. **Re-wrap**: the desk pulls wraps addressed to the old key that have no counterpart for the
   new key yet, unwraps them and uploads wraps to the new key, batch by batch (each batch is one
   transaction; re-sending a batch replaces the same wraps). Interrupted runs simply continue.
3. **Finish**: in one transaction, when nothing is left to re-wrap, the pin moves to the new key
   id (stored in the database), the old key is retired and every wrap to it is deleted.

The configured pin (``INCIDENTS_ORGANIZER_KEY_ID``) stays the root of trust. The moved pin, the
incoming key and the pending challenge are stored with an HMAC under the deployment's pin secret
(``INCIDENTS_PIN_SECRET``, kept outside the database), so writing to the database alone cannot
add a recipient or move the pin; a record whose HMAC does not verify closes the witness form
(fail closed). A moved pin is honoured while the configured pin is the key it moved from or the
key it moved to (see docs/desk.md and docs/threat-model.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import and_, delete, func, select, union_all
from sqlalchemy.exc import SQLAlchemyError

from incidents import audit, crypto
from incidents.bundle import b64, unb64
from incidents.clock import now
from incidents.db import db, forget_deleted_rows
from incidents.keyring import Keyring, KeyringCache
from incidents.models import Addition, EnvelopeWrap, RecipientKey, SiteSetting, User, Wrap
from incidents.services.cases import put_wrap
from incidents.services.desk_proofs import answer_hash
from incidents.services.errors import DomainError, KeyUnavailableError
from incidents.services.reports import register_recipient
from incidents.vocabulary import N_

MOVED_PIN = "organizer_key.pin"
INCOMING = "organizer_key.incoming"
CHALLENGE = "organizer_key.challenge"
PAGE_SIZE = 200
CHALLENGE_FIELDS = ("public_key", "current", "new", "by")


class RotationError(DomainError):
    """Raised when a rotation step is refused; nothing was changed."""


def _setting(key: str) -> str | None:
    """A site setting's value, or None."""
    row = db.session.get(SiteSetting, key)
    return row.value if row is not None else None


def _set(key: str, value: str | None) -> None:
    """Set or clear a site setting within the current transaction."""
    row = db.session.get(SiteSetting, key)
    if value is None:
        if row is not None:
            db.session.delete(row)
    elif row is None:
        db.session.add(SiteSetting(key=key, value=value))
    else:
        row.value = value


def _record_mac(pin_secret: bytes, kind: str, *values: str) -> str:
    """HMAC-SHA256 under the pin secret over a rotation record."""
    message = crypto.length_prefixed(kind.encode(), *(value.encode() for value in values))
    return hmac.new(pin_secret, message, hashlib.sha256).hexdigest()


def _verified(raw: str, *, kind: str, fields: tuple[str, ...], pin_secret: bytes) -> dict[str, str]:
    """A stored rotation record whose HMAC verifies; KeyUnavailableError otherwise."""
    try:
        record = json.loads(raw)
        values = tuple(str(record[name]) for name in fields)
        mac = str(record["mac"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyUnavailableError(f"the stored {kind} record is malformed") from exc
    if not hmac.compare_digest(mac, _record_mac(pin_secret, kind, *values)):
        raise KeyUnavailableError(
            f"the stored {kind} record does not verify with INCIDENTS_PIN_SECRET "
            "(altered in the database, or the secret changed)"
        )
    return dict(zip(fields, values, strict=True))


def _normalized_pin(pin: str | None) -> str | None:
    """The configured pin as lowercase hex, or None if it is unset or malformed."""
    if not pin:
        return None
    try:
        return crypto.parse_key_id(pin).hex()
    except crypto.FormatError:
        return None


def _registered_key(key_id: str) -> crypto.PublicKey:
    """A registered organizer public key by id; KeyUnavailableError if it is not one."""
    row = db.session.get(RecipientKey, key_id)
    if row is None or row.role != "organizer":
        raise KeyUnavailableError(f"organizer key {key_id} is not registered")
    try:
        public_key = crypto.PublicKey.from_bytes(row.public_key)
    except crypto.CryptoError as exc:
        raise KeyUnavailableError(f"organizer key {key_id} is stored damaged") from exc
    # The record's HMAC covers the key id; the key id is a hash of the public key, so checking
    # it here also authenticates the key bytes read from the database.
    if public_key.key_id_hex != key_id:
        raise KeyUnavailableError(f"the stored public key of {key_id} does not match its id")
    return public_key


def effective_keyring(
    cache: KeyringCache, *, configured_pin: str | None, pin_secret: bytes
) -> Keyring:
    """The keyring in force: the configured one, or the one a completed rotation moved to, plus
    the incoming key while a rotation runs. Raises KeyUnavailableError (fail closed).

    If the database cannot be read, the configured keyring is returned: nothing can be stored
    then anyway, and the witness form must still render its "not saved" page.
    """
    try:
        rows = dict(
            db.session.execute(
                select(SiteSetting.key, SiteSetting.value).where(
                    SiteSetting.key.in_((MOVED_PIN, INCOMING))
                )
            ).all()
        )  # one query on every witness request, not two
        moved, incoming = rows.get(MOVED_PIN), rows.get(INCOMING)
    except SQLAlchemyError:
        db.session.rollback()
        return cache.get()
    if moved is None:
        base = cache.get()
    else:
        record = _verified(moved, kind="pin", fields=("from", "to"), pin_secret=pin_secret)
        if _normalized_pin(configured_pin) not in (record["from"], record["to"]):
            raise KeyUnavailableError(
                "the organizer key pin was moved by a rotation that did not start from the "
                "configured pin"
            )
        base = Keyring(organizer=_registered_key(record["to"]))
    if incoming is None:
        return base
    record = _verified(incoming, kind="incoming", fields=("key_id",), pin_secret=pin_secret)
    return Keyring(organizer=base.organizer, incoming=_registered_key(record["key_id"]))


@dataclass(frozen=True)
class Challenge:
    """Possession challenges for the current and the new organizer key."""

    current: bytes
    new: bytes


def issue_challenge(
    new_key: crypto.PublicKey, *, keyring: Keyring, actor: User, pin_secret: bytes
) -> Challenge:
    """Challenge the desk to prove it holds both keys (committed; replaces any earlier one)."""
    _require_organizer(actor)
    if new_key.key_id == keyring.organizer.key_id:
        raise RotationError(N_("The new key is the current organizer key."))
    incoming = keyring.incoming
    if incoming is not None and incoming.key_id != new_key.key_id:
        raise RotationError(N_("Another key rotation is already under way; finish it first."))
    if db.session.get(RecipientKey, new_key.key_id_hex) is not None and incoming is None:
        raise RotationError(N_("The new key is already registered on the server."))
    current_blob, current_answer = crypto.new_possession_challenge(keyring.organizer)
    new_blob, new_answer = crypto.new_possession_challenge(new_key)
    record = {
        "public_key": b64(new_key.to_bytes()),
        "current": answer_hash(current_answer),
        "new": answer_hash(new_answer),
        "by": str(actor.id),
    }
    record["mac"] = _record_mac(
        pin_secret, "challenge", *(record[name] for name in CHALLENGE_FIELDS)
    )
    _set(CHALLENGE, json.dumps(record))
    db.session.commit()
    return Challenge(current=current_blob, new=new_blob)


def start_rotation(
    answers: Mapping[str, str], *, keyring: Keyring, actor: User, pin_secret: bytes
) -> str:
    """Check the answers and register the new key as incoming (committed); return its id."""
    _require_organizer(actor)
    raw = _setting(CHALLENGE)
    if raw is None:
        raise RotationError(N_("Ask for a new challenge first."))
    _set(CHALLENGE, None)  # one attempt per challenge
    try:
        challenge = _verified(raw, kind="challenge", fields=CHALLENGE_FIELDS, pin_secret=pin_secret)
    except KeyUnavailableError:
        db.session.commit()
        raise RotationError(N_("The desk could not prove it holds both keys.")) from None
    if challenge["by"] != str(actor.id) or (
        not hmac.compare_digest(answer_hash(answers.get("current", "")), challenge["current"])
        or not hmac.compare_digest(answer_hash(answers.get("new", "")), challenge["new"])
    ):
        db.session.commit()
        raise RotationError(N_("The desk could not prove it holds both keys."))
    new_key = crypto.PublicKey.from_bytes(unb64(challenge["public_key"]))
    register_recipient(new_key, role="organizer", today=now().date())
    if _setting(INCOMING) is None:
        key_id = new_key.key_id_hex
        _set(
            INCOMING,
            json.dumps({"key_id": key_id, "mac": _record_mac(pin_secret, "incoming", key_id)}),
        )
        audit.record(
            actor=actor.username,
            action="organizer_key.rotation_start",
            target=new_key.key_id_hex,
            details={"from": keyring.organizer.key_id_hex},
        )
    db.session.commit()
    return new_key.key_id_hex


def _incoming(keyring: Keyring) -> crypto.PublicKey:
    """The key being rotated to; RotationError if no rotation is under way."""
    if keyring.incoming is None:
        raise RotationError(N_("No key rotation is under way."))
    return keyring.incoming


def pending_wraps(keyring: Keyring, *, limit: int = PAGE_SIZE) -> tuple[list[dict[str, Any]], int]:
    """Wraps to the old key without a counterpart for the new key: a page, and how many remain."""
    old, new = keyring.organizer.key_id_hex, _incoming(keyring).key_id_hex
    new_wrap = Wrap.__table__.alias("new_wrap")
    reports = (
        select(Wrap.report_id, Wrap.report_id.label("envelope_id"), Wrap.blob)
        .outerjoin(new_wrap, and_(new_wrap.c.report_id == Wrap.report_id, new_wrap.c.key_id == new))
        .where(Wrap.key_id == old, new_wrap.c.report_id.is_(None))
    )
    new_envelope = EnvelopeWrap.__table__.alias("new_envelope")
    envelopes = (
        select(EnvelopeWrap.report_id, EnvelopeWrap.envelope_id, EnvelopeWrap.blob)
        .outerjoin(
            new_envelope,
            and_(
                new_envelope.c.envelope_id == EnvelopeWrap.envelope_id,
                new_envelope.c.key_id == new,
            ),
        )
        .where(EnvelopeWrap.key_id == old, new_envelope.c.envelope_id.is_(None))
    )
    both = union_all(reports, envelopes).subquery()
    remaining = int(db.session.scalar(select(func.count()).select_from(both)) or 0)
    rows = db.session.execute(
        select(both).order_by(both.c.report_id, both.c.envelope_id).limit(limit)
    ).all()
    page = [
        {"report_id": str(report_id), "envelope_id": str(envelope_id), "wrap": b64(blob)}
        for report_id, envelope_id, blob in rows
    ]
    return page, remaining


def store_wraps(items: Sequence[Mapping[str, Any]], *, keyring: Keyring, actor: User) -> int:
    """Store a batch of wraps to the new key (one transaction); return how many were stored."""
    _require_organizer(actor)
    new = _incoming(keyring).key_id_hex
    old = keyring.organizer.key_id_hex
    for item in items:
        report_id = uuid.UUID(str(item["report_id"]))
        envelope_id = uuid.UUID(str(item["envelope_id"]))
        blob = unb64(item["wrap"])
        if crypto.wrap_key_id(blob).hex() != new:
            db.session.rollback()
            raise RotationError(N_("A wrap is not addressed to the new organizer key."))
        model: type[Wrap] | type[EnvelopeWrap] = Wrap if envelope_id == report_id else EnvelopeWrap
        key = (report_id, old) if model is Wrap else (envelope_id, old)
        original = cast("Wrap | EnvelopeWrap | None", db.session.get(model, key))
        if original is None or original.report_id != report_id:
            db.session.rollback()
            raise RotationError(N_("A wrap names something the old key does not open."))
        put_wrap(report_id=report_id, envelope_id=envelope_id, key_id=new, blob=blob)
    db.session.commit()
    return len(items)


def discard_unreadable(items: Sequence[Mapping[str, Any]], *, keyring: Keyring, actor: User) -> int:
    """Delete the old key's wraps of notes or replies that the old key cannot open (sealed
    wrongly by whoever wrote them), so that they do not hold the rotation back forever.

    Only envelope wraps: a report's own wrap that does not open is never discarded here.
    """
    _require_organizer(actor)
    _incoming(keyring)
    old = keyring.organizer.key_id_hex
    discarded = 0
    for item in items:
        envelope_id = uuid.UUID(str(item["envelope_id"]))
        row = db.session.get(EnvelopeWrap, (envelope_id, old))
        if row is None or str(row.report_id) != str(item["report_id"]):
            db.session.rollback()
            raise RotationError(N_("A wrap names something the old key does not open."))
        if db.session.get(Addition, envelope_id) is not None:
            db.session.rollback()
            raise RotationError(N_("A witness's addition cannot be discarded."))
        db.session.delete(row)
        discarded += 1
    audit.record(
        actor=actor.username,
        action="organizer_key.discard_unreadable",
        target=old,
        details={"wraps": discarded},
    )
    db.session.commit()
    return discarded


def finish_rotation(
    *, keyring: Keyring, actor: User, configured_pin: str | None, pin_secret: bytes
) -> str:
    """Move the pin to the new key, retire the old one and delete its wraps (one transaction)."""
    _require_organizer(actor)
    new = _incoming(keyring)
    old = keyring.organizer
    _, remaining = pending_wraps(keyring, limit=0)
    if remaining:
        raise RotationError(
            N_("%(count)s wraps still need the new key; run the rotation again."), count=remaining
        )
    origin = _normalized_pin(configured_pin) or old.key_id_hex
    to = new.key_id_hex
    _set(
        MOVED_PIN,
        json.dumps({"from": origin, "to": to, "mac": _record_mac(pin_secret, "pin", origin, to)}),
    )
    _set(INCOMING, None)
    old_row = db.session.get(RecipientKey, old.key_id_hex)
    if old_row is not None:
        old_row.is_retired = True
    deleted, deleted_envelopes = _delete_old_wraps(old.key_id_hex, new.key_id_hex)
    _, left = pending_wraps(keyring, limit=0)
    if left:  # something was stored to the old key after the check above: keep everything
        db.session.rollback()
        raise RotationError(
            N_("%(count)s wraps still need the new key; run the rotation again."), count=left
        )
    audit.record(
        actor=actor.username,
        action="organizer_key.rotation_finish",
        target=new.key_id_hex,
        details={
            "from": old.key_id_hex,
            "wraps_deleted": deleted,
            "envelope_wraps_deleted": deleted_envelopes,
        },
    )
    db.session.commit()
    forget_deleted_rows()
    return new.key_id_hex


def _delete_old_wraps(old: str, new: str) -> tuple[int, int]:
    """Delete the old key's wraps that have a counterpart for the new key (only those: a wrap
    stored to the old key after the pending check stays, and the caller then refuses)."""
    new_wrap = Wrap.__table__.alias("new_wrap")
    with_report_copy = select(new_wrap.c.report_id).where(new_wrap.c.key_id == new)
    reports = db.session.execute(
        delete(Wrap).where(Wrap.key_id == old, Wrap.report_id.in_(with_report_copy))
    )
    new_envelope = EnvelopeWrap.__table__.alias("new_envelope")
    with_envelope_copy = select(new_envelope.c.envelope_id).where(new_envelope.c.key_id == new)
    envelopes = db.session.execute(
        delete(EnvelopeWrap).where(
            EnvelopeWrap.key_id == old, EnvelopeWrap.envelope_id.in_(with_envelope_copy)
        )
    )
    return reports.rowcount, envelopes.rowcount  # type: ignore[attr-defined]


def _require_organizer(user: User) -> None:
    """Only organizers rotate the organizer key."""
    if user.role != "organizer":
        raise RotationError(N_("Only organizers can rotate the organizer key."))
