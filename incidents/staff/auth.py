"""Staff authentication glue: Flask-Login backed by server-side sessions, role checks.

The session cookie (signed by Flask) carries only the random session token; the user behind it
is loaded from ``staff_sessions`` on every request, so logout, idle expiry and disabling an
account take effect at once. Flask-Login's "session protection" is off because it fingerprints
the client's address and User-Agent, which the register never keeps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import abort, session
from flask_babel import gettext
from flask_login import current_user, login_user, logout_user

from incidents.extensions import login_manager
from incidents.i18n import SESSION_KEY as LANGUAGE_KEY
from incidents.models import User
from incidents.services import sessions
from incidents.vocabulary import N_

P = ParamSpec("P")
R = TypeVar("R")


class StaffIdentity:
    """The logged-in staff member for one request (what ``current_user`` is)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, active: sessions.ActiveSession) -> None:
        """Wrap a loaded session."""
        self.token = active.token
        self.user = active.user

    @property
    def is_active(self) -> bool:
        """Disabled accounts have no sessions, so a loaded identity is active."""
        return bool(self.user.is_active)

    @property
    def role(self) -> str:
        """The staff role: organizer, volunteer or ngo."""
        return self.user.role

    @property
    def username(self) -> str:
        """The account's username."""
        return self.user.username

    def get_id(self) -> str:
        """Flask-Login stores this in the cookie: the session token, not the user id."""
        return self.token


def configure_login(login_view: str) -> None:
    """Wire Flask-Login to the server-side sessions."""
    login_manager.login_view = login_view
    login_manager.login_message = N_("Please log in to see this page.")
    login_manager.session_protection = None
    login_manager.localize_callback = gettext
    login_manager.user_loader(load_identity)


def load_identity(token: str) -> StaffIdentity | None:
    """Flask-Login's loader: the identity of a valid, fresh session token, else None."""
    active = sessions.load_session(token)
    return StaffIdentity(active) if active else None


def begin_session(user: User) -> None:
    """Log ``user`` in with a brand-new session token (the old cookie content is discarded)."""
    previous = current_identity()
    if previous is not None:
        sessions.end_session(previous.token)  # logging in again never leaves a session behind
    clear_session_keeping_language()
    token = sessions.start_session(user)
    login_user(StaffIdentity(sessions.ActiveSession(token=token, user=user)))
    session.pop("_id", None)  # Flask-Login's client fingerprint (address + User-Agent hash)


def end_current_session() -> None:
    """Log out: delete the server-side session and clear the cookie."""
    identity = current_identity()
    if identity is not None:
        sessions.end_session(identity.token)
    logout_user()
    clear_session_keeping_language()


def clear_session_keeping_language() -> None:
    """Empty the cookie session; an explicit language choice is all that survives."""
    language = session.get(LANGUAGE_KEY)
    session.clear()
    if language is not None:
        session[LANGUAGE_KEY] = language


def current_identity() -> StaffIdentity | None:
    """The logged-in identity, or None for anonymous requests."""
    if not current_user.is_authenticated:
        return None
    identity: StaffIdentity = current_user._get_current_object()
    return identity


def current_staff() -> User:
    """The logged-in user (only call behind ``role_required``)."""
    identity = current_identity()
    if identity is None:
        abort(401)
    return identity.user


def role_required(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Allow only logged-in staff with one of ``roles``: anonymous → login page, others → 403."""

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        """Guard ``view`` with the login and role check."""

        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            """Run the view for staff with the role; others go to the login page or get a 403."""
            identity = current_identity()
            if identity is None:
                return login_manager.unauthorized()  # type: ignore[no-any-return]
            if identity.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapper

    return decorator
