"""Recipient keys of legal-aid volunteers: registration, fingerprint approval, retirement.

A volunteer uploads the public key file their desk created (``keys init``). It can receive a
case only after an organizer has compared its fingerprint with the one the volunteer reads out
from their own machine and approved it. Approving a new key retires the volunteer's older keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from incidents import audit, crypto
from incidents.clock import now
from incidents.db import db, forget_deleted_rows
from incidents.keyring import Keyring
from incidents.models import EnvelopeWrap, RecipientKey, User, Wrap
from incidents.services.errors import DomainError
from incidents.vocabulary import N_

MAX_KEY_FILE_BYTES = 16 * 1024


class KeyRegistrationError(DomainError):
    """Raised when an uploaded key cannot be registered or approved; safe to show."""


def parse_volunteer_key(data: bytes, *, keyring: Keyring | None) -> crypto.PublicKey:
    """Parse an uploaded public key file and check that it can serve as a volunteer key."""
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyRegistrationError(N_("This file is far too large to be a public key file."))
    try:
        public_key = crypto.PublicKey.from_armor(data.decode("ascii"))
    except (UnicodeDecodeError, crypto.FormatError) as exc:
        raise KeyRegistrationError(
            N_(
                "This is not a public key file of the register "
                "(use the .pub file from 'keys init')."
            )
        ) from exc
    if public_key.suite != crypto.SUITE_XWING:
        raise KeyRegistrationError(
            N_("This key uses another suite; volunteer keys must be X-Wing (ML-KEM-768 + X25519).")
        )
    if keyring is not None and public_key.key_id == keyring.organizer.key_id:
        raise KeyRegistrationError(N_("This is the organizers' key, not a personal volunteer key."))
    existing = db.session.get(RecipientKey, public_key.key_id_hex)
    if existing is not None:
        raise KeyRegistrationError(N_("This key is already registered."))
    return public_key


def register_key(user: User, data: bytes, *, keyring: Keyring | None) -> RecipientKey:
    """Store a volunteer's public key as awaiting approval (committed)."""
    if user.role != "volunteer":
        raise KeyRegistrationError(N_("Only legal-aid volunteers register personal keys."))
    public_key = parse_volunteer_key(data, keyring=keyring)
    row = RecipientKey(
        key_id=public_key.key_id_hex,
        suite=public_key.suite,
        public_key=public_key.to_bytes(),
        fingerprint=public_key.fingerprint,
        role="volunteer",
        added_on=now().date(),
        is_retired=False,
        owner_id=user.id,
    )
    db.session.add(row)
    audit.record(actor=user.username, action="key.register", target=row.key_id)
    db.session.commit()
    return row


def approve_key(key_id: str, *, organizer: User) -> RecipientKey:
    """Approve a volunteer key after the fingerprint check; retire the owner's other keys."""
    row = db.session.get(RecipientKey, key_id)
    if row is None or row.role != "volunteer" or row.owner_id is None:
        raise KeyRegistrationError(N_("No such volunteer key."))
    if row.is_retired:
        raise KeyRegistrationError(N_("This key was retired."))
    if row.approved_at is not None:
        raise KeyRegistrationError(N_("This key is already approved."))
    row.approved_at = now()
    row.approved_by_id = organizer.id
    for other in keys_of_owner(row.owner_id):
        if other.key_id != row.key_id and not other.is_retired:
            _retire(other, actor=organizer)
    audit.record(actor=organizer.username, action="key.approve", target=row.key_id)
    db.session.commit()
    forget_deleted_rows()
    return row


def retire_key(key_id: str, *, actor: User) -> None:
    """Retire a volunteer key (lost laptop, left the team): it can receive no more cases, and
    every wrap addressed to it is deleted (the server no longer hands it any case key)."""
    row = db.session.get(RecipientKey, key_id)
    if row is None or row.role != "volunteer":
        raise KeyRegistrationError(N_("No such volunteer key."))
    if actor.role != "organizer" and actor.id != row.owner_id:
        raise KeyRegistrationError(N_("No such volunteer key."))
    _retire(row, actor=actor)
    db.session.commit()
    forget_deleted_rows()


def _retire(row: RecipientKey, *, actor: User) -> None:
    """Mark a key retired and delete every wrap addressed to it (within the transaction)."""
    row.is_retired = True
    wraps = db.session.execute(delete(Wrap).where(Wrap.key_id == row.key_id))
    envelopes = db.session.execute(delete(EnvelopeWrap).where(EnvelopeWrap.key_id == row.key_id))
    audit.record(
        actor=actor.username,
        action="key.retire",
        target=row.key_id,
        details={
            "wraps_deleted": wraps.rowcount,  # type: ignore[attr-defined]
            "envelope_wraps_deleted": envelopes.rowcount,  # type: ignore[attr-defined]
        },
    )


def keys_of_owner(owner_id: int) -> Sequence[RecipientKey]:
    """Keys registered by one volunteer, newest first."""
    query = select(RecipientKey).where(RecipientKey.owner_id == owner_id)
    return db.session.scalars(query.order_by(RecipientKey.added_on.desc())).all()


def volunteer_keys() -> Sequence[RecipientKey]:
    """Every volunteer key, awaiting approval first."""
    query = select(RecipientKey).where(RecipientKey.role == "volunteer")
    rows = db.session.scalars(query.order_by(RecipientKey.added_on.desc())).all()
    return sorted(rows, key=lambda row: (row.is_retired, row.approved_at is not None))


def active_key_of(user: User) -> RecipientKey | None:
    """The volunteer's approved, not retired key, if any."""
    for row in keys_of_owner(user.id):
        if row.is_approved and not row.is_retired:
            return row
    return None
