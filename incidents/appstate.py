"""The application's own state for the current request or command: settings and keyring.

``create_app`` stores both in ``app.extensions``; views and commands read them through these two
functions instead of reaching into the extension dictionary themselves.
"""

from __future__ import annotations

from flask import current_app

from incidents.config import Settings
from incidents.keyring import Keyring, KeyringCache


def current_settings() -> Settings:
    """The settings the application was created with."""
    settings: Settings = current_app.extensions["incidents.settings"]
    return settings


def current_keyring() -> Keyring:
    """The keyring reports are sealed to; raises KeyUnavailableError (answered with 503).

    Includes the effect of an organizer key rotation recorded in the database.
    """
    from incidents.services.organizer_keys import effective_keyring

    cache: KeyringCache = current_app.extensions["incidents.keyring"]
    settings = current_settings()
    return effective_keyring(
        cache, configured_pin=settings.organizer_key_id, pin_secret=settings.pin_key
    )
