"""Domain errors raised by services; ``incidents.errors`` turns them into HTTP responses."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a service raises on purpose."""


class KeyUnavailableError(DomainError):
    """Raised when the organizer public key is missing, malformed or not the pinned one."""


class ReportNotSavedError(DomainError):
    """Raised when a report could not be stored; nothing of it was kept."""


class ReportNotFoundError(DomainError):
    """Raised when no report has the given id."""


class NoWrapForKeyError(DomainError):
    """Raised when a report holds no wrap for the key trying to open it."""
