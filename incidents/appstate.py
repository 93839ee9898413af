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
    """The keyring reports are sealed to; raises KeyUnavailableError (answered with 503)."""
    cache: KeyringCache = current_app.extensions["incidents.keyring"]
    return cache.get()
