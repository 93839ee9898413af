"""ORM rows of the incident register.

Clear columns hold only the coarse "shell" of a report; every sensitive value lives in a column
ending in ``_sealed`` (format v1 ciphertext, see ``docs/format.md``). Report ids are random
UUIDs, and on SQLite the report and wrap tables are stored WITHOUT ROWID so that their physical
order follows the random id rather than the order in which reports arrived.
"""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import Boolean, Date, ForeignKey, Integer, LargeBinary, String, Uuid
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


class Report(Base):
    """One witness report: clear shell fields for triage and exports, sealed body, witness key."""

    __tablename__ = "reports"
    __table_args__ = ({"sqlite_with_rowid": False},)

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
        """Return the sealed blobs by field name."""
        return {name: getattr(self, f"{name}_sealed") for name in SEALED_FIELDS}


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
