"""ORM rows of the incident register.

Clear columns hold only the coarse "shell" of a report; every sensitive value lives in a column
ending in ``_sealed`` (format v1 ciphertext, see ``docs/format.md``). Report ids are random
UUIDs, and on SQLite the report and wrap tables are stored WITHOUT ROWID so that their physical
order follows the random id rather than the order in which reports arrived.

Staff rows (users, sessions, invitations, assignments, status changes, audit events) never hold
an IP address or a User-Agent; tokens are stored only as SHA-256 hashes.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from incidents.db import Base

SEALED_FIELDS = (
    "occurred_on",
    "place_detail",
    "narrative",
    "targeted_person",
    "perpetrator_description",
    "contact",
)
"""Names of the sealed fields of a report, as bound into each field's AAD."""

ERASED = b""
"""A sealed column holding no bytes: the value was crypto-shredded. Only ``ERASABLE_FIELDS`` may
be erased (the contact details, when the witness withdraws consent to be contacted); they open
as empty text. An empty blob in any other field is damage and fails to open."""

ERASABLE_FIELDS = frozenset({"contact"})


class Report(Base):
    """One witness report: clear shell fields for triage and exports, sealed body, witness key."""

    __tablename__ = "reports"
    __table_args__ = (
        # Exports read only these shell columns: a covering index lets the database answer them
        # without touching the wide rows that hold the sealed fields.
        Index(
            "ix_reports_export_shell",
            "consent_statistics",
            "status",
            "occurred_period",
            "category",
            "country",
            "perpetrator_type",
        ),
        {"sqlite_with_rowid": False},
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    received_on: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20), default="new", index=True)
    format_version: Mapped[int] = mapped_column(Integer)

    category: Mapped[str] = mapped_column(String(40), index=True)
    occurred_period: Mapped[str] = mapped_column(String(8), index=True)
    date_precision: Mapped[str] = mapped_column(String(10))
    country: Mapped[str] = mapped_column(String(8), index=True)
    city: Mapped[str] = mapped_column(String(40))
    geo_precision: Mapped[str] = mapped_column(String(10))
    perpetrator_type: Mapped[str] = mapped_column(String(30))
    consent_contact: Mapped[bool] = mapped_column(Boolean)
    consent_statistics: Mapped[bool] = mapped_column(Boolean)
    duplicate_of: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("reports.id", ondelete="SET NULL"), default=None
    )

    witness_lookup_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    witness_public_key: Mapped[bytes] = mapped_column(LargeBinary)

    occurred_on_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    place_detail_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    narrative_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    targeted_person_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    perpetrator_description_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    contact_sealed: Mapped[bytes] = mapped_column(LargeBinary)

    wraps: Mapped[list[Wrap]] = relationship(
        back_populates="report", cascade="all, delete-orphan", passive_deletes=True
    )

    def sealed_fields(self) -> dict[str, bytes]:
        """Return the sealed blobs by field name, leaving out erased ones (see ``ERASED``)."""
        blobs = {name: getattr(self, f"{name}_sealed") for name in SEALED_FIELDS}
        return {
            name: blob
            for name, blob in blobs.items()
            if not (blob == ERASED and name in ERASABLE_FIELDS)
        }


class Wrap(Base):
    """The report's data key sealed (HPKE) to one recipient key."""

    __tablename__ = "wraps"
    __table_args__ = ({"sqlite_with_rowid": False},)

    report_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("recipient_keys.key_id"), primary_key=True
    )
    blob: Mapped[bytes] = mapped_column(LargeBinary)

    report: Mapped[Report] = relationship(back_populates="wraps")


class RecipientKey(Base):
    """A public key that may receive wraps: the organizer key, later volunteers' keys."""

    __tablename__ = "recipient_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    suite: Mapped[int] = mapped_column(Integer)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    fingerprint: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(20))
    added_on: Mapped[date] = mapped_column(Date)
    is_retired: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True
    )
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    @property
    def is_approved(self) -> bool:
        """True once an organizer confirmed the fingerprint (the organizer key always is)."""
        return self.role == "organizer" or self.approved_at is not None


ROLES = ("organizer", "volunteer", "ngo")
"""Staff roles; witnesses have no account."""
ROLES_WITH_TOTP = frozenset({"organizer", "volunteer"})


class User(Base):
    """A staff account: organizer, legal-aid volunteer or NGO."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(255))
    totp_secret: Mapped[str | None] = mapped_column(String(64), default=None)
    totp_last_counter: Mapped[int | None] = mapped_column(Integer, default=None)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_vetted_partner: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    bundle_proof: Mapped[str | None] = mapped_column(Text, default=None)
    """The expected answer (hashed) to the possession challenge in the user's last bundle file,
    with its key id and expiry: an outputs file must carry the answer."""

    @property
    def needs_totp(self) -> bool:
        """Organizers and volunteers must use a second factor."""
        return self.role in ROLES_WITH_TOTP


class StaffSession(Base):
    """A server-side login session; the cookie holds only the random token."""

    __tablename__ = "staff_sessions"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Invitation(Base):
    """A single-use invitation link for a new staff account, valid for 72 hours."""

    __tablename__ = "invitations"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    used_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)


class Assignment(Base):
    """A report given to a legal-aid volunteer by an organizer."""

    __tablename__ = "assignments"

    report_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("reports.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    assigned_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StatusChange(Base):
    """One step in a report's status history (staff actions only; never the witness's)."""

    __tablename__ = "status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("reports.id", ondelete="CASCADE"), index=True
    )
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    old_status: Mapped[str] = mapped_column(String(20))
    new_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(500), default="")


class AuditEvent(Base):
    """One link of the tamper-evident audit log: its hash covers the previous event's hash."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(40), index=True)
    target: Mapped[str] = mapped_column(String(100))
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class Addition(Base):
    """Information a witness added later: its own data key, wrapped like the report's."""

    __tablename__ = "additions"
    __table_args__ = ({"sqlite_with_rowid": False},)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    report_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("reports.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    received_on: Mapped[date] = mapped_column(Date)
    text_sealed: Mapped[bytes] = mapped_column(LargeBinary)


class Message(Base):
    """A reply to the witness, sealed on a desk to the witness key and the organizer key."""

    __tablename__ = "messages"
    __table_args__ = ({"sqlite_with_rowid": False},)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    report_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("reports.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    created_on: Mapped[date] = mapped_column(Date)
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    body_sealed: Mapped[bytes] = mapped_column(LargeBinary)


class EnvelopeWrap(Base):
    """The data key of an addition or message, sealed (HPKE) to one recipient key.

    Recipients may include a witness key (derived from a receipt), which is not a registered
    recipient key, so ``key_id`` has no foreign key; rows are deleted with their envelope.
    """

    __tablename__ = "envelope_wraps"
    __table_args__ = ({"sqlite_with_rowid": False},)

    envelope_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    report_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("reports.id", ondelete="CASCADE"), index=True
    )
    blob: Mapped[bytes] = mapped_column(LargeBinary)


class Attachment(Base):
    """An evidence file: ciphertext on disk (STREAM), metadata sealed in the database.

    ``envelope_id`` is the report or addition whose data key the attachment key derives from.
    Only the padded size is in clear; name, type, original size and SHA-256 are sealed.
    """

    __tablename__ = "attachments"
    __table_args__ = ({"sqlite_with_rowid": False},)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    report_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("reports.id", ondelete="CASCADE"), index=True
    )
    envelope_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    seq: Mapped[int] = mapped_column(Integer)
    padded_size: Mapped[int] = mapped_column(Integer)
    meta_sealed: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerEntry(Base):
    """One link of the hash-chained privacy budget ledger of exports.

    ``kind`` is "charge" (ε spent, written and committed *before* anything is computed) or
    "complete" (the export's files exist; ε 0, with the SHA-256 of the package). A charge
    without a completion is an export that failed after the budget was spent: it still counts.
    """

    __tablename__ = "export_ledger"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    year: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(10))
    export_id: Mapped[str] = mapped_column(String(36), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    product: Mapped[str] = mapped_column(String(10))
    scope: Mapped[str] = mapped_column(String(200))
    epsilon: Mapped[str] = mapped_column(String(20))
    output_sha256: Mapped[str] = mapped_column(String(64), default="")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ExportRequest(Base):
    """An NGO's request for an export, decided by an organizer; the package is kept 14 days."""

    __tablename__ = "export_requests"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    product: Mapped[str] = mapped_column(String(10))
    first_quarter: Mapped[str] = mapped_column(String(6))
    last_quarter: Mapped[str] = mapped_column(String(6))
    by_country: Mapped[bool] = mapped_column(Boolean, default=False)
    language: Mapped[str] = mapped_column(String(10), default="en")
    status: Mapped[str] = mapped_column(String(12), default="pending", index=True)
    reason: Mapped[str] = mapped_column(String(500), default="")
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    export_id: Mapped[str | None] = mapped_column(String(36), default=None)
    archive_name: Mapped[str | None] = mapped_column(String(200), default=None)
    archive_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class SiteSetting(Base):
    """A small switch set by organizers (e.g. which P1 export the public timeline shows)."""

    __tablename__ = "site_settings"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ApiToken(Base):
    """A staff member's personal token for the desk's JSON API (stored only as a SHA-256 hash)."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(60))
    created_on: Mapped[date] = mapped_column(Date)
    expires_on: Mapped[date] = mapped_column(Date)
    last_used_on: Mapped[date | None] = mapped_column(Date, default=None)
    revoked_on: Mapped[date | None] = mapped_column(Date, default=None)
    proof_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    proven_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    """Until when this token's desk has proven it holds its private key (changes need it)."""
    proven_key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    """The key the desk proved it holds (changes presenting another key need a new proof)."""


class Note(Base):
    """A staff note on a case, sealed on a desk to the organizer and the assigned volunteers.

    Like additions and replies, each note is its own envelope: its data key is wrapped in
    ``envelope_wraps`` (envelope id = note id).
    """

    __tablename__ = "notes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    report_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("reports.id", ondelete="CASCADE"), index=True
    )
    seq: Mapped[int] = mapped_column(Integer)
    created_on: Mapped[date] = mapped_column(Date)
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    body_sealed: Mapped[bytes] = mapped_column(LargeBinary)
