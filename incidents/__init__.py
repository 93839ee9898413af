"""The incident register: application factory.

``create_app(settings=None)`` reads settings (from the environment unless given), checks that
the cryptography build supports ML-KEM, wires extensions, blueprints, error handlers, security
headers and logging, and checks the organizer key once at startup (the witness form stays
closed with a 503 while the key is unusable, DESIGN S7).
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from incidents import crypto
from incidents.config import PROJECT_ROOT, ConfigError, Settings
from incidents.db import db
from incidents.extensions import babel, csrf, limiter, login_manager, migrate
from incidents.keyring import KeyringCache
from incidents.requests import ReadableRequest
from incidents.services.errors import KeyUnavailableError
from incidents.uploads import discard_uncommitted

MIGRATIONS_DIRECTORY = Path(__file__).resolve().parent / "migrations"
TRANSLATIONS_DIRECTORY = Path(__file__).resolve().parent / "translations"


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask application for ``settings`` (default: ``Settings.from_env()``)."""
    if settings is None:
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            raise SystemExit(f"incident register: configuration error: {exc}") from None
    try:
        crypto.ensure_platform_support()
    except crypto.UnsupportedPlatformError as exc:
        raise SystemExit(f"incident register: {exc}") from None

    app = Flask(
        __name__,
        instance_path=str(settings.instance_path),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.request_class = ReadableRequest
    _configure(app, settings)
    _init_extensions(app)
    _register_blueprints(app)
    _register_template_globals(app, settings)
    _check_organizer_key(app)
    return app


def _configure(app: Flask, settings: Settings) -> None:
    """Copy the settings into Flask's config; keep the settings and keyring cache on ``app``."""
    from incidents.logs import configure_logging

    app.config.update(
        SECRET_KEY=settings.secret_key,
        WTF_CSRF_SECRET_KEY=settings.csrf_secret.encode("ascii"),
        WTF_CSRF_TIME_LIMIT=None,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS={"hide_parameters": True, "pool_pre_ping": True},
        MAX_CONTENT_LENGTH=settings.max_form_bytes,
        INCIDENTS_MAX_EVIDENCE_REQUEST=settings.max_content_length,
        MAX_FORM_MEMORY_SIZE=settings.max_form_bytes,
        SESSION_COOKIE_SECURE=settings.is_production,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="session",
        PREFERRED_URL_SCHEME="https" if settings.is_production else "http",
        BABEL_DEFAULT_LOCALE="en",
        BABEL_TRANSLATION_DIRECTORIES=str(TRANSLATIONS_DIRECTORY),
        TESTING=settings.env == "testing",
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_uri,
        RATELIMIT_ENABLED=settings.ratelimit_enabled,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.extensions["incidents.settings"] = settings
    app.extensions["incidents.keyring"] = KeyringCache(
        settings.organizer_public_key_path, pinned_key_id=settings.organizer_key_id
    )
    configure_logging(app, level=settings.log_level)


def _init_extensions(app: Flask) -> None:
    """Bind the database, migration, CSRF, Babel, login and rate-limit extensions."""
    from incidents.i18n import select_locale

    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIRECTORY))
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    login_manager.init_app(app)
    limiter.init_app(app)


def _register_blueprints(app: Flask) -> None:
    """Wire up blueprints, error handlers, upload teardown, headers, helpers and CLI."""
    from incidents import cli, errors, i18n, security
    from incidents.api.views import bp as api_bp
    from incidents.intake.views import bp as intake_bp
    from incidents.staff.auth import configure_login
    from incidents.staff.views import bp as staff_bp
    from incidents.staff.views import exports_bp

    app.register_blueprint(intake_bp)
    app.register_blueprint(staff_bp)
    app.register_blueprint(exports_bp)
    app.register_blueprint(api_bp)
    configure_login("staff.login")
    errors.register_error_handlers(app)
    app.teardown_request(discard_uncommitted)
    security.register_security_headers(app)
    i18n.register_template_helpers(app)
    cli.register_commands(app)


def _register_template_globals(app: Flask, settings: Settings) -> None:
    """Values every page needs: the demo-key banner flag and the quick-exit address."""
    app.jinja_env.globals.update(
        demo_key=settings.is_demo_key,
        quick_exit_url=settings.quick_exit_url,
        max_attachments=settings.max_attachments,
        max_attachment_mb=settings.max_attachment_bytes // (1024 * 1024),
    )


def _check_organizer_key(app: Flask) -> None:
    """Log at startup whether the witness form can accept reports (never stops the app)."""
    cache: KeyringCache = app.extensions["incidents.keyring"]
    settings: Settings = app.extensions["incidents.settings"]
    if settings.is_demo_key and not settings.organizer_public_key_path.exists():
        app.logger.info("no demo key yet: 'flask --app app demo prepare' (make run) creates one")
        return
    try:
        keyring = cache.get()
    except KeyUnavailableError as exc:
        app.logger.error("witness form closed (503) until the organizer key is fixed: %s", exc)
        return
    app.logger.info("accepting reports for organizer key %s", keyring.organizer.key_id_hex)
