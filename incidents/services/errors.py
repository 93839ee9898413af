"""Domain errors raised by services; ``incidents.errors`` turns them into HTTP responses."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a service raises on purpose.

    The message is an English gettext msgid (marked with ``N_`` where it is raised) with
    ``%(name)s`` placeholders filled from ``params``; ``str()`` gives the English text for logs
    and the CLI, and the web layer translates it (``incidents.i18n.translated``).
    """

    def __init__(self, message: str, **params: object) -> None:
        """Keep the msgid and its parameters; the English text is the exception's argument."""
        self.message = message
        self.params = params
        super().__init__(message % params if params else message)


class KeyUnavailableError(DomainError):
    """Raised when the organizer public key is missing, malformed or not the pinned one."""


class ReportNotSavedError(DomainError):
    """Raised when a report could not be stored; nothing of it was kept."""


class ReportNotFoundError(DomainError):
    """Raised when no report has the given id."""


class NoWrapForKeyError(DomainError):
    """Raised when a report holds no wrap for the key trying to open it."""
