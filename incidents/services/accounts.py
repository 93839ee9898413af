"""Staff accounts: passwords (Argon2id), TOTP second factor, invitations, disabling.

Passwords are hashed with argon2-cffi's Argon2id defaults (RFC 9106 low-memory profile) and
rehashed on login when the parameters change. TOTP follows RFC 6238 (30 s, 6 digits, one step of
clock drift allowed); a code is accepted at most once, because the last accepted time step is
stored and every code at or before it is refused. Invitation tokens are random (256 bits), shown
once as a link, stored only as SHA-256 hashes, valid for 72 hours and usable once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update

from incidents import audit
from incidents.clock import as_utc, now
from incidents.db import db
from incidents.models import ROLES, Invitation, StaffSession, User
from incidents.services.errors import DomainError
from incidents.vocabulary import N_

INVITATION_LIFETIME = timedelta(hours=72)
RESERVED_USERNAMES = frozenset(
    {"anonymous", "witness", "cli", "desk", "invitation", "system", "admin", "root"}
)
"""Names the audit log uses for non-staff actors; no account may pose as them."""
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
TOTP_ISSUER = "Incident register"
TOTP_STEP_SECONDS = 30
TOTP_DRIFT_STEPS = 1
_hasher = PasswordHasher()
# Verifying against this hash when the username is unknown costs the same time as a real check.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AccountError(DomainError):
    """Raised when an account operation is refused; the message is safe to show."""


class LoginFailedError(DomainError):
    """Raised for any failed login; deliberately says nothing about which part was wrong."""


def hash_token(token: str) -> bytes:
    """SHA-256 of a random token, as stored in the database."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def check_password_rules(password: str) -> None:
    """Raise AccountError unless the password is long enough (and not absurdly long)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            N_("The password must have at least %(min)d characters."), min=MIN_PASSWORD_LENGTH
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(N_("The password is too long."))


def normalize_username(username: str) -> str:
    """Usernames are case-insensitive and trimmed; raise AccountError if unusable."""
    cleaned = username.strip().lower()
    if cleaned in RESERVED_USERNAMES:
        raise AccountError(N_("This username is taken."))
    if not (3 <= len(cleaned) <= 64) or not all(ch.isalnum() or ch in "._-" for ch in cleaned):
        raise AccountError(
            N_("A username has 3 to 64 letters, digits, dots, dashes or underscores.")
        )
    return cleaned


def find_user(username: str) -> User | None:
    """The account with this username, if any (case-insensitive)."""
    try:
        cleaned = normalize_username(username)
    except AccountError:
        return None
    return db.session.scalars(select(User).where(User.username == cleaned)).first()


def create_user(*, username: str, password: str, role: str, actor: str) -> User:
    """Create an account (without committing); TOTP is enrolled separately."""
    if role not in ROLES:
        raise AccountError(N_("Unknown role."))
    cleaned = normalize_username(username)
    check_password_rules(password)
    if find_user(cleaned) is not None:
        raise AccountError(N_("This username is taken."))
    user = User(
        username=cleaned,
        role=role,
        password_hash=_hasher.hash(password),
        is_active=True,
        is_vetted_partner=False,
        created_at=now(),
    )
    db.session.add(user)
    db.session.flush()
    audit.record(actor=actor, action="account.create", target=cleaned, details={"role": role})
    return user


def count_organizers() -> int:
    """Number of active organizer accounts."""
    query = select(func.count()).select_from(User).where(User.role == "organizer")
    return int(db.session.scalar(query.where(User.is_active.is_(True))) or 0)


# --------------------------------------------------------------------------- TOTP


def new_totp_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32(32)


def totp_uri(*, secret: str, username: str) -> str:
    """The otpauth:// URI an authenticator app scans."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def accepted_totp_step(secret: str, code: str, *, after_step: int | None, at: datetime) -> int:
    """Return the time step a code belongs to, or raise LoginFailedError.

    Codes of the current step and one step either side are accepted, but never a step at or
    before ``after_step`` (the last one used), so a seen code cannot be replayed.
    """
    cleaned = "".join(ch for ch in code if ch.isdigit())
    if len(cleaned) != 6:
        raise LoginFailedError("not a code")
    totp = pyotp.TOTP(secret)
    current = int(at.timestamp()) // TOTP_STEP_SECONDS
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if after_step is not None and step <= after_step:
            continue
        if secrets.compare_digest(totp.at(step * TOTP_STEP_SECONDS), cleaned):
            return step
    raise LoginFailedError("wrong or reused code")


def reenroll_totp(user: User, *, current_password: str, secret: str, code: str) -> None:
    """Replace the user's TOTP secret after checking the password and one code of the new one."""
    if not _verify_password(user, current_password):
        raise AccountError(N_("The current password is not correct."))
    try:
        enroll_totp(user, secret=secret, code=code, actor=user.username)
    except LoginFailedError as exc:
        raise AccountError(N_("The code did not match the new authenticator.")) from exc


def enroll_totp(user: User, *, secret: str, code: str, actor: str) -> None:
    """Switch the user to a new TOTP secret once they prove it works with one code."""
    step = accepted_totp_step(secret, code, after_step=None, at=now())
    user.totp_secret = secret
    user.totp_last_counter = step
    audit.record(actor=actor, action="account.totp_enroll", target=user.username)


# --------------------------------------------------------------------------- login


def authenticate(*, username: str, password: str, code: str) -> User:
    """Check password and (where required) TOTP; record the outcome; raise LoginFailedError.

    Every failure looks the same to the caller and costs one Argon2id verification, whether the
    username exists or not.
    """
    user = find_user(username)
    password_ok = _verify_password(user, password)
    if user is None or not password_ok or not user.is_active:
        _record_failure(username)
        raise LoginFailedError("login failed")
    if user.needs_totp:
        if not user.totp_secret:
            _record_failure(username)
            raise LoginFailedError("login failed")
        try:
            step = accepted_totp_step(
                user.totp_secret, code, after_step=user.totp_last_counter, at=now()
            )
        except LoginFailedError:
            _record_failure(username)
            raise
        if not _claim_totp_step(user, step):
            _record_failure(username)  # the same code won a race in another request
            raise LoginFailedError("login failed")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    audit.record(actor=user.username, action="login.success", target=user.username)
    db.session.commit()
    return user


def _claim_totp_step(user: User, step: int) -> bool:
    """Record ``step`` as used only if no other request used it or a later one (atomic)."""
    previous = user.totp_last_counter
    condition = (
        User.totp_last_counter.is_(None)
        if previous is None
        else (User.totp_last_counter == previous)
    )
    result = db.session.execute(
        update(User)
        .where(User.id == user.id, condition)
        .values(totp_last_counter=step)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    user.totp_last_counter = step
    return True


def _verify_password(user: User | None, password: str) -> bool:
    """Check a password; unknown users are checked against a dummy hash to cost the same."""
    stored = user.password_hash if user is not None else _DUMMY_HASH
    try:
        return bool(_hasher.verify(stored, password[:MAX_PASSWORD_LENGTH]))
    except (VerificationError, InvalidHashError):
        return False


def _record_failure(username: str) -> None:
    """Audit a failed login in its own commit, discarding the attempt's changes."""
    db.session.rollback()
    known = find_user(username)
    target = known.username if known is not None else "(unknown account)"
    audit.record(actor="anonymous", action="login.failure", target=target)
    db.session.commit()


def confirm_password(user: User, password: str) -> None:
    """Raise AccountError unless ``password`` is the user's current password (for actions that
    must not follow from a stolen session alone, such as making an API token)."""
    if not _verify_password(user, password):
        raise AccountError(N_("The current password is not correct."))


def change_password(user: User, *, current: str, new: str) -> None:
    """Change a password after checking the current one; end the user's other sessions and
    revoke their API tokens."""
    from incidents.services.api_tokens import revoke_all_tokens

    confirm_password(user, current)
    check_password_rules(new)
    user.password_hash = _hasher.hash(new)
    revoke_all_tokens(user)
    audit.record(actor=user.username, action="account.password_change", target=user.username)


# --------------------------------------------------------------------------- invitations


@dataclass(frozen=True)
class NewInvitation:
    """An invitation just created: the token goes into the link and is never shown again."""

    token: str
    role: str
    expires_at: datetime


def create_invitation(*, role: str, organizer: User) -> NewInvitation:
    """Create a single-use invitation for ``role`` (committed by the caller)."""
    if role not in ROLES:
        raise AccountError(N_("Unknown role."))
    token = secrets.token_urlsafe(32)
    created = now()
    invitation = Invitation(
        token_hash=hash_token(token),
        role=role,
        created_by_id=organizer.id,
        created_at=created,
        expires_at=created + INVITATION_LIFETIME,
    )
    db.session.add(invitation)
    audit.record(actor=organizer.username, action="invitation.create", details={"role": role})
    return NewInvitation(token=token, role=role, expires_at=invitation.expires_at)


def open_invitation(token: str) -> Invitation:
    """Return the usable invitation for a token; raise AccountError if unknown, used or expired."""
    invitation = db.session.get(Invitation, hash_token(token))
    creator = db.session.get(User, invitation.created_by_id) if invitation else None
    if invitation is None or invitation.used_at is not None or not (creator and creator.is_active):
        raise AccountError(N_("This invitation link is not valid (or was already used)."))
    if as_utc(invitation.expires_at) <= now():
        raise AccountError(N_("This invitation link has expired; ask for a new one."))
    return invitation


def accept_invitation(
    token: str, *, username: str, password: str, totp_secret: str | None, code: str
) -> User:
    """Create the invited account (with TOTP for organizers and volunteers) and spend the token."""
    invitation = open_invitation(token)
    user = create_user(
        username=username, password=password, role=invitation.role, actor="invitation"
    )
    if user.needs_totp:
        if not totp_secret:
            raise AccountError(N_("A second factor is required for this role."))
        try:
            enroll_totp(user, secret=totp_secret, code=code, actor=user.username)
        except LoginFailedError as exc:
            raise AccountError(N_("The code from the authenticator app is not correct.")) from exc
    invitation.used_at = now()
    invitation.used_by_id = user.id
    audit.record(actor=user.username, action="invitation.accept", target=user.username)
    return user


# --------------------------------------------------------------------------- disabling


def set_vetted(user: User, *, vetted: bool, organizer: User) -> None:
    """Mark an NGO as a vetted partner (exact, suppressed counts) or take that back."""
    if user.role != "ngo":
        raise AccountError(N_("Only NGO accounts can be vetted partners."))
    user.is_vetted_partner = vetted
    action = "account.vetted" if vetted else "account.unvetted"
    audit.record(actor=organizer.username, action=action, target=user.username)


def set_active(user: User, *, active: bool, organizer: User) -> None:
    """Disable or re-enable an account; disabling ends its sessions at once."""
    if user.id == organizer.id and not active:
        raise AccountError(N_("You cannot disable your own account."))
    if not active and user.role == "organizer" and user.is_active and count_organizers() <= 1:
        raise AccountError(N_("The last active organizer cannot be disabled."))
    user.is_active = active
    if not active:
        from incidents.services.api_tokens import revoke_all_tokens

        db.session.execute(delete(StaffSession).where(StaffSession.user_id == user.id))
        revoke_all_tokens(user)
    action = "account.enable" if active else "account.disable"
    audit.record(actor=organizer.username, action=action, target=user.username)
