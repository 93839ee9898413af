"""Server-side staff sessions: the cookie carries a random token, the database its hash.

A new token is issued at every login (so a session id never survives a login), logout deletes
it, idle sessions expire after ``IDLE_TIMEOUT`` and every session ends after ``MAX_AGE``, and
disabling an account or changing its password deletes its other sessions at once. Nothing about
the client (address, browser) is stored.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete

from incidents.clock import as_utc, now
from incidents.db import db
from incidents.models import StaffSession, User
from incidents.services.accounts import hash_token

IDLE_TIMEOUT = timedelta(minutes=30)
MAX_AGE = timedelta(hours=12)
_TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class ActiveSession:
    """A valid session and its user, as loaded for one request."""

    token: str
    user: User


def start_session(user: User) -> str:
    """Create a session for ``user`` and return its token (committed)."""
    token = secrets.token_urlsafe(32)
    moment = now()
    db.session.add(
        StaffSession(
            token_hash=hash_token(token), user_id=user.id, created_at=moment, last_seen_at=moment
        )
    )
    _delete_expired(moment)
    db.session.commit()
    return token


def load_session(token: str) -> ActiveSession | None:
    """Return the session for a token if it exists, is fresh and its user is active."""
    row = db.session.get(StaffSession, hash_token(token))
    if row is None:
        return None
    moment = now()
    if (
        as_utc(row.last_seen_at) + IDLE_TIMEOUT <= moment
        or as_utc(row.created_at) + MAX_AGE <= moment
    ):
        db.session.delete(row)
        db.session.commit()
        return None
    user = db.session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    if moment - as_utc(row.last_seen_at) >= _TOUCH_INTERVAL:
        row.last_seen_at = moment
        db.session.commit()
    return ActiveSession(token=token, user=user)


def end_session(token: str) -> None:
    """Delete one session (logout)."""
    db.session.execute(delete(StaffSession).where(StaffSession.token_hash == hash_token(token)))
    db.session.commit()


def end_other_sessions(user: User, *, keep_token: str | None) -> None:
    """Delete every session of ``user`` except ``keep_token`` (within the caller's transaction)."""
    query = delete(StaffSession).where(StaffSession.user_id == user.id)
    if keep_token is not None:
        query = query.where(StaffSession.token_hash != hash_token(keep_token))
    db.session.execute(query)


def _delete_expired(moment: datetime) -> None:
    """Delete the sessions that were idle longer than IDLE_TIMEOUT at ``moment``."""
    db.session.execute(
        delete(StaffSession).where(StaffSession.last_seen_at <= moment - IDLE_TIMEOUT)
    )
