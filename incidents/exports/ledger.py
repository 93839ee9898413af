"""The privacy budget ledger: an append-only hash chain of ε charged by exports.

A charge is checked against the yearly cap and committed before the export computes anything,
so an export that fails afterwards has still been paid for (conservative: its noisy numbers may
have existed). A "complete" entry then records the SHA-256 of the package. Editing, deleting,
inserting or reordering entries breaks the chain (``verify``); amounts are kept as decimal text
so the chain does not depend on float formatting.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from incidents.chain import GENESIS_HASH, canonical_time, link_hash
from incidents.clock import now
from incidents.db import db
from incidents.models import LedgerEntry
from incidents.services.errors import DomainError
from incidents.vocabulary import N_

CHAIN_LABEL = "incidents/v1/export-ledger"


class BudgetExceededError(DomainError):
    """Raised when an export would take the year's spending past the cap; nothing is charged."""


def entry_hash(entry: LedgerEntry, *, prev_hash: str) -> str:
    """The chained hash of one ledger entry."""
    return link_hash(
        CHAIN_LABEL,
        prev_hash,
        entry.seq,
        canonical_time(entry.at),
        entry.year,
        entry.kind,
        entry.export_id,
        entry.actor,
        entry.product,
        entry.scope,
        entry.epsilon,
        entry.output_sha256,
    )


def spent_in(year: int) -> Decimal:
    """ε charged in ``year`` so far."""
    rows = db.session.scalars(
        select(LedgerEntry.epsilon).where(LedgerEntry.year == year, LedgerEntry.kind == "charge")
    ).all()
    return sum((Decimal(value) for value in rows), Decimal(0))


def _append(**values: object) -> LedgerEntry:
    """Add the next entry of the chain (within the caller's transaction)."""
    last = db.session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq.desc()).limit(1)).first()
    moment = now().replace(microsecond=0)
    entry = LedgerEntry(
        seq=1 if last is None else last.seq + 1,
        at=moment,
        year=moment.year,
        prev_hash=GENESIS_HASH if last is None else last.hash,
        **values,
    )
    entry.hash = entry_hash(entry, prev_hash=entry.prev_hash)
    db.session.add(entry)
    db.session.flush()
    return entry


def charge(*, actor: str, product: str, scope: str, epsilon: Decimal, yearly_cap: Decimal) -> str:
    """Charge ε for a new export and commit; return its export id.

    Raises BudgetExceededError, with nothing charged, if the year's total would pass the cap.
    """
    # NaN cannot even be compared. Products without differential privacy (P2, P3) are recorded
    # with ε 0: they spend nothing of the cap, but every release is on the chain.
    if epsilon.is_nan() or epsilon < 0 or (epsilon == 0 and product == "P1"):
        raise BudgetExceededError(N_("ε must be positive."))
    year = now().year
    already = spent_in(year)
    if epsilon > 0 and already + epsilon > yearly_cap:
        raise BudgetExceededError(
            N_(
                "This export needs ε = %(asked)s but only %(left)s of this year's %(cap)s is "
                "left. Nothing was computed or charged."
            ),
            asked=str(epsilon),
            left=str(max(Decimal(0), yearly_cap - already)),
            cap=str(yearly_cap),
        )
    export_id = str(uuid.uuid4())
    _append(
        kind="charge",
        export_id=export_id,
        actor=actor,
        product=product,
        scope=scope,
        epsilon=str(epsilon),
        output_sha256="",
    )
    db.session.commit()
    return export_id


def complete(export_id: str, *, actor: str, output_sha256: str) -> None:
    """Record that an export's package exists, with its SHA-256 (committed)."""
    charged = db.session.scalars(
        select(LedgerEntry).where(LedgerEntry.export_id == export_id, LedgerEntry.kind == "charge")
    ).first()
    if charged is None:
        raise DomainError(N_("No such export."))
    _append(
        kind="complete",
        export_id=export_id,
        actor=actor,
        product=charged.product,
        scope=charged.scope,
        epsilon="0",
        output_sha256=output_sha256,
    )
    db.session.commit()


@dataclass(frozen=True)
class LedgerReport:
    """Outcome of ``verify``."""

    checked: int
    head_hash: str
    broken_seq: int | None = None

    @property
    def is_intact(self) -> bool:
        """True when every link checked out."""
        return self.broken_seq is None


def verify(entries: Sequence[LedgerEntry] | None = None) -> LedgerReport:
    """Recompute the chain and report the first broken link, if any."""
    if entries is None:
        entries = db.session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)).all()
    prev_hash = GENESIS_HASH
    for expected, entry in enumerate(entries, start=1):
        if (
            entry.seq != expected
            or entry.prev_hash != prev_hash
            or entry_hash(entry, prev_hash=prev_hash) != entry.hash
        ):
            return LedgerReport(checked=expected - 1, head_hash=prev_hash, broken_seq=entry.seq)
        prev_hash = entry.hash
    return LedgerReport(checked=len(entries), head_hash=prev_hash)
