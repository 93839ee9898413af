"""Shared fixtures: a keyring made once per session, settings, the app on SQLite and PostgreSQL.

Every test that uses ``app`` runs twice: on a fresh SQLite file and on a PostgreSQL database
created for the session (named by ``INCIDENTS_TEST_POSTGRES_URL``, an administrative URL). When
that variable is missing the PostgreSQL half is skipped locally but fails under ``CI=true``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from flask_migrate import upgrade

from incidents import create_app, crypto
from incidents.config import Settings
from incidents.db import Base, db
from incidents.extensions import limiter

POSTGRES_ENV = "INCIDENTS_TEST_POSTGRES_URL"
TEST_KDF = crypto.KdfParams(iterations=1, memory_kib=8192, lanes=1)
TEST_PASSPHRASE = "correct horse battery staple"


def running_in_ci() -> bool:
    """True when the suite runs under CI, where nothing may be skipped for lack of a service."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(reason: str) -> None:
    """Skip locally, fail in CI, when a service the test needs is missing."""
    if running_in_ci():
        pytest.fail(f"{reason} (required when CI=true)")
    pytest.skip(reason)


@dataclass(frozen=True)
class KeyFiles:
    """An organizer key pair as files, as an organizer would hold them."""

    private_key: crypto.PrivateKey
    public_key: crypto.PublicKey
    private_path: Path
    public_path: Path
    passphrase: str


@pytest.fixture(scope="session")
def organizer(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    """The organizer key of the test session (generated, never committed)."""
    directory = tmp_path_factory.mktemp("organizer-key")
    private_key = crypto.PrivateKey.generate()
    public_key = private_key.public_key()
    private_path = directory / "organizer.key"
    public_path = directory / "organizer.pub"
    private_path.write_text(
        crypto.encrypt_private_key(private_key, passphrase=TEST_PASSPHRASE, kdf=TEST_KDF)
    )
    public_path.write_text(public_key.to_armor())
    return KeyFiles(private_key, public_key, private_path, public_path, TEST_PASSPHRASE)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session; dropped at the end."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        require_service(f"{POSTGRES_ENV} is not set")
    assert admin_url is not None
    name = f"incidents_test_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        require_service(f"PostgreSQL at {POSTGRES_ENV} is unreachable: {exc.orig}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory, organizer: KeyFiles) -> Path:
    """A SQLite database migrated once per session; each SQLite test starts from a copy.

    Running every migration for every test costs more than the tests themselves.
    """
    directory = tmp_path_factory.mktemp("sqlite-template")
    path = directory / "register.sqlite3"
    template = Settings.for_testing(
        directory,
        organizer_public_key_path=organizer.public_path,
        organizer_key_id=organizer.public_key.key_id_hex,
        database_url=f"sqlite:///{path}",
    )
    application = create_app(template)
    with application.app_context():
        upgrade()
        db.engine.dispose()  # closing the last connection folds the WAL into the file
    assert not Path(f"{path}-wal").exists()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Database URL for one test: a new SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "register.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def settings(tmp_path: Path, organizer: KeyFiles, database_url: str) -> Settings:
    """Test settings pinned to the session's organizer key."""
    return Settings.for_testing(
        tmp_path,
        organizer_public_key_path=organizer.public_path,
        organizer_key_id=organizer.public_key.key_id_hex,
        database_url=database_url,
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The application with its schema migrated to the newest revision; emptied afterwards."""
    application = create_app(settings)
    limiter.reset()  # rate-limit counters live in memory, shared by every app of the session
    with application.app_context():
        upgrade()
    yield application
    empty_database(application)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client with cookies, as a browser would have."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A runner for the app's ``flask`` commands."""
    return app.test_cli_runner()


def empty_database(application: Flask) -> None:
    """Drop the test's rows (PostgreSQL is shared by the session) and close connections."""
    with application.app_context():
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            # DELETE, children first: on a handful of rows it is ~20x faster than TRUNCATE,
            # which creates and syncs new files for every table.
            with db.engine.begin() as connection:
                for table in reversed(Base.metadata.sorted_tables):
                    connection.execute(table.delete())
        db.engine.dispose()


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[[Settings], Flask]]:
    """Build applications from other settings (another key, a demo key) on this test's database.

    Pass settings made with ``dataclasses.replace(settings, ...)`` so that they keep the
    test's database URL; each application is migrated, and emptied after the test.
    """
    built: list[Flask] = []

    def build(custom: Settings) -> Flask:
        application = create_app(custom)
        limiter.reset()
        with application.app_context():
            upgrade()
        built.append(application)
        return application

    yield build
    for application in built:
        empty_database(application)
