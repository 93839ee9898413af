"""Tamper-evident audit log: an append-only hash chain of sensitive staff actions (DESIGN S8).

Each event's hash is SHA-256 over the previous event's hash and a canonical JSON encoding of the
event (sequence number, time, actor, action, target, details). Editing any stored field, deleting
or inserting an event, or reordering events breaks the chain, and ``verify`` names the first
broken link. Removing the newest events leaves a shorter valid chain: compare the head printed by
``flask --app app audit verify`` with a copy kept elsewhere to detect that.

Events never contain IP addresses, User-Agents or sealed content: callers pass identifiers and
coarse values only. ``record`` adds the event to the caller's transaction, so the event and the
action it describes are committed (or rolled back) together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from incidents.chain import GENESIS_HASH, canonical_time, link_hash
from incidents.db import db
from incidents.models import AuditEvent

CHAIN_LABEL = "incidents/v1/audit"

DetailValue = str | int | bool | None


def event_hash(
    *,
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    details: str,
) -> str:
    """Hash of one event, chained to ``prev_hash`` (hex SHA-256)."""
    return link_hash(
        CHAIN_LABEL, prev_hash, seq, canonical_time(at), actor, action, target, details
    )


def record(
    *,
    actor: str,
    action: str,
    target: str = "",
    details: Mapping[str, DetailValue] | None = None,
    day_only: bool = False,
) -> AuditEvent:
    """Append an event to the chain inside the current transaction and return it.

    The sequence number is the primary key, so two writers racing for the same number make one
    transaction fail instead of forking the chain. ``day_only`` records midnight UTC instead of
    the second, for a witness's own actions (their exact time could point at the witness).
    """
    last = db.session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).first()
    seq = 1 if last is None else last.seq + 1
    prev_hash = GENESIS_HASH if last is None else last.hash
    at = datetime.now(UTC).replace(microsecond=0)
    if day_only:
        at = at.replace(hour=0, minute=0, second=0)
    encoded = json.dumps(dict(details or {}), ensure_ascii=False, sort_keys=True)
    event = AuditEvent(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        details=encoded,
        prev_hash=prev_hash,
        hash=event_hash(
            prev_hash=prev_hash,
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            target=target,
            details=encoded,
        ),
    )
    db.session.add(event)
    db.session.flush()
    return event


@dataclass(frozen=True)
class ChainReport:
    """Outcome of ``verify``: how many events were checked and the first broken link, if any."""

    checked: int
    head_hash: str
    broken_seq: int | None = None
    problem: str = ""

    @property
    def is_intact(self) -> bool:
        """True when every link checked out."""
        return self.broken_seq is None


def verify(events: Sequence[AuditEvent] | None = None) -> ChainReport:
    """Recompute the chain (all stored events by default) and report the first broken link."""
    if events is None:
        events = db.session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    prev_hash = GENESIS_HASH
    expected_seq = 1
    for event in events:
        problem = _link_problem(event, expected_seq=expected_seq, prev_hash=prev_hash)
        if problem:
            return ChainReport(
                checked=expected_seq - 1, head_hash=prev_hash, broken_seq=event.seq, problem=problem
            )
        prev_hash = event.hash
        expected_seq += 1
    return ChainReport(checked=expected_seq - 1, head_hash=prev_hash)


def _link_problem(event: AuditEvent, *, expected_seq: int, prev_hash: str) -> str:
    """Say why ``event`` does not link onto the chain so far, or return "" if it does."""
    if event.seq != expected_seq:
        return f"event {expected_seq} is missing (next stored event is {event.seq})"
    if event.prev_hash != prev_hash:
        return "its previous-hash does not match the event before it"
    recomputed = event_hash(
        prev_hash=event.prev_hash,
        seq=event.seq,
        at=event.at,
        actor=event.actor,
        action=event.action,
        target=event.target,
        details=event.details,
    )
    if recomputed != event.hash:
        return "its content was changed after it was recorded"
    return ""
