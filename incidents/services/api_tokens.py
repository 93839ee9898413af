"""Personal API tokens for the desk: issue (shown once), authenticate, revoke.

A token is 32 random bytes, shown to its owner once; the server keeps only its SHA-256 hash, the
day it was made, the day it expires and the day it was last used (a day, never a time, and never
a client address). A token acts only as its owner, and only while the owner's account is active.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select

from incidents import audit
from incidents.clock import now
from incidents.db import db
from incidents.models import ApiToken, User
from incidents.services.accounts import hash_token
from incidents.services.errors import DomainError
from incidents.vocabulary import N_

TOKEN_PREFIX = "irt_"  # noqa: S105 (a visible prefix, not a secret)
TOKEN_LIFETIME = timedelta(days=90)
MAX_LABEL_LENGTH = 60
DESK_ROLES = frozenset({"organizer", "volunteer"})


class ApiTokenError(DomainError):
    """Raised when a token is unknown, expired, revoked, or its account cannot use the API."""


@dataclass(frozen=True)
class NewToken:
    """A freshly issued token: ``secret`` is shown once and never stored."""

    id: uuid.UUID
    secret: str
    expires_on: date


def _today() -> date:
    """Today's date in UTC."""
    return now().date()


def issue_token(user: User, *, label: str) -> NewToken:
    """Create a token for ``user`` (committed); the secret is returned once."""
    if user.role not in DESK_ROLES:
        raise ApiTokenError(N_("Only organizers and legal-aid volunteers use the desk."))
    label = label.strip()[:MAX_LABEL_LENGTH] or "desk"
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    today = _today()
    row = ApiToken(
        id=uuid.uuid4(),
        token_hash=hash_token(secret),
        user_id=user.id,
        label=label,
        created_on=today,
        expires_on=today + TOKEN_LIFETIME,
    )
    db.session.add(row)
    audit.record(
        actor=user.username, action="api_token.issue", target=str(row.id), details={"label": label}
    )
    db.session.commit()
    return NewToken(id=row.id, secret=secret, expires_on=row.expires_on)


def tokens_of(user: User) -> Sequence[ApiToken]:
    """The user's tokens, newest first (revoked and expired ones included, for the record)."""
    query = select(ApiToken).where(ApiToken.user_id == user.id)
    return db.session.scalars(query.order_by(ApiToken.created_on.desc(), ApiToken.label)).all()


def revoke_token(token_id: uuid.UUID, *, user: User) -> None:
    """Revoke one of ``user``'s own tokens (committed); unknown or foreign ids are refused."""
    row = db.session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise ApiTokenError(N_("No such token."))
    if row.revoked_on is None:
        row.revoked_on = _today()
        audit.record(actor=user.username, action="api_token.revoke", target=str(row.id))
        db.session.commit()


def revoke_all_tokens(user: User) -> int:
    """Revoke every live token of ``user`` without committing; returns how many."""
    count = 0
    for row in tokens_of(user):
        if row.revoked_on is None:
            row.revoked_on = _today()
            count += 1
    return count


def authenticate_token(secret: str) -> User:
    """The active user a presented token belongs to; raise ApiTokenError otherwise."""
    return authenticate(secret)[1]


def authenticate(secret: str) -> tuple[ApiToken, User]:
    """The token row and its active user; raise ApiTokenError otherwise.

    Marks the token as used today (one write a day at most).
    """
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        raise ApiTokenError(N_("The API token is not valid."))
    row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    if row is None:
        raise ApiTokenError(N_("The API token is not valid."))
    if row.revoked_on is not None:
        raise ApiTokenError(N_("The API token was revoked. Make a new one on your account page."))
    today = _today()
    if row.expires_on < today:
        raise ApiTokenError(N_("The API token has expired. Make a new one on your account page."))
    user = db.session.get(User, row.user_id)
    if user is None or not user.is_active or user.role not in DESK_ROLES:
        raise ApiTokenError(N_("The API token is not valid."))
    if row.last_used_on != today:
        row.last_used_on = today
        db.session.commit()
    return row, user
