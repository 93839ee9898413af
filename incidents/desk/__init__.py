"""The desk: the same package, started on a staff member's own machine, holding their key.

``create_desk_app`` builds a small Flask app that serves only 127.0.0.1. It asks for the key
file's passphrase in the browser, keeps the unlocked key in memory only, locks again after 15
minutes without use or on "Lock", and binds the unlocked key to the browser that unlocked it (a
random cookie) so that other local users or web pages cannot use it. Requests naming another
host are refused (no DNS rebinding). The desk's cache holds ciphertext only (``cache.py``).
"""

from __future__ import annotations

import ipaddress
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from incidents import crypto
from incidents.config import PROJECT_ROOT
from incidents.desk.client import ServerClient, Transport, UrllibTransport
from incidents.desk.session import DeskSession

IDLE_SECONDS = 15 * 60
LOOPBACK_NAMES = frozenset({"localhost"})


class DeskStartError(Exception):
    """Raised when the desk cannot start (bad key file, non-local address, bad server URL)."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class DeskSettings:
    """How a desk was started."""

    key_path: Path
    server_url: str | None
    cache_dir: Path
    host: str = "127.0.0.1"
    port: int = 5001
    idle_seconds: int = IDLE_SECONDS
    transport_factory: Callable[[str], Transport] = field(default=UrllibTransport)
    kdf_check: bool = True

    def client(
        self, *, token: str, key_id: str, private_key: crypto.PrivateKey | None = None
    ) -> ServerClient | None:
        """A client for the server (None when the desk works from bundle files only)."""
        if not self.server_url:
            return None
        return ServerClient(
            self.transport_factory(self.server_url),
            token=token,
            key_id=key_id,
            private_key=private_key,
        )


def is_acceptable_server(url: str) -> bool:
    """HTTPS anywhere; plain HTTP only to this computer (the token must not cross a network
    in clear)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https" and parsed.hostname:
        return True
    return parsed.scheme == "http" and is_loopback(parsed.hostname or "")


def read_key_file(path: Path) -> tuple[str, crypto.KeyFileInfo]:
    """Read and check a private key file without decrypting it; DeskStartError if it is not one."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise DeskStartError(f"the key file {path} does not exist") from None
    except (OSError, UnicodeDecodeError):
        raise DeskStartError(f"{path} is not a private key file of the incident register") from None
    try:
        info = crypto.inspect_private_key_file(text)
    except crypto.CryptoError:
        raise DeskStartError(f"{path} is not a private key file of the incident register") from None
    return text, info


def mount_under_secret_path(desk: Flask) -> tuple[str, Any]:
    """Serve the desk under a random path printed only in its terminal.

    Browsers send cookies of 127.0.0.1 to every port of it, so a page served by another program
    on this computer could otherwise collect the desk's unlock cookie. Cookies set with the
    secret path are sent only to addresses under it. Returns the path and the WSGI app.
    """
    prefix = "/" + secrets.token_urlsafe(16)
    desk.config.update(SESSION_COOKIE_PATH=prefix + "/", APPLICATION_ROOT=prefix)
    return prefix, DispatcherMiddleware(NotFound(), {prefix: desk.wsgi_app})


def create_desk_app(settings: DeskSettings) -> Flask:
    """Build the desk for ``settings``; raise DeskStartError if it must not start."""
    if not is_loopback(settings.host):
        raise DeskStartError(
            f"the desk only listens on this computer (127.0.0.1); refusing {settings.host}"
        )
    if settings.server_url is not None and not is_acceptable_server(settings.server_url):
        raise DeskStartError(
            "the server address must start with https:// (http:// only for this computer)"
        )
    key_text, info = read_key_file(settings.key_path)
    crypto.ensure_platform_support()

    from incidents.desk import key_rotation_views  # noqa: F401 (registers its routes on bp)
    from incidents.desk.cache import DeskCache
    from incidents.desk.views import bp
    from incidents.extensions import babel, csrf
    from incidents.i18n import register_template_helpers, select_locale
    from incidents.security import register_security_headers

    app = Flask(
        "incidents.desk",
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # per run: nothing of a session outlives the desk
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="desk_session",
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=600 * 1024 * 1024,
        MAX_FORM_MEMORY_SIZE=2 * 1024 * 1024,
        BABEL_DEFAULT_LOCALE="en",
        LANGUAGE_FALLBACK_ENDPOINT="desk.index",
        BABEL_TRANSLATION_DIRECTORIES=str(Path(__file__).resolve().parent.parent / "translations"),
    )
    cache = DeskCache(settings.cache_dir, key_id=info.key_id.hex())
    app.extensions["incidents.desk"] = DeskSession(
        settings=settings, key_text=key_text, key_id=info.key_id.hex(), cache=cache
    )
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    register_template_helpers(app)
    register_security_headers(app, is_production=False)
    app.jinja_env.globals.update(demo_key=False, quick_exit_url="")
    app.register_blueprint(bp)
    return app
