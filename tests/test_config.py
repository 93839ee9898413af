"""Settings from the environment: production refuses to start without secrets and a pin,
development makes local secrets and a demo key, and ``demo prepare`` creates that key once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from incidents import cli, config, create_app, crypto
from incidents.config import ConfigError, Settings
from tests.conftest import TEST_KDF, KeyFiles

SECRET_NAMES = (
    "INCIDENTS_SECRET_KEY",
    "INCIDENTS_CSRF_SECRET",
    "INCIDENTS_RECEIPT_SECRET",
    "INCIDENTS_PIN_SECRET",
)
ALL_VARIABLES = (
    *SECRET_NAMES,
    "INCIDENTS_ORGANIZER_KEY_ID",
    "INCIDENTS_ORGANIZER_PUBLIC_KEY",
    "INCIDENTS_DATABASE_URL",
    "INCIDENTS_INSTANCE_PATH",
    "INCIDENTS_ENV",
)


@pytest.fixture(autouse=True)
def no_repository_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretend the repository has no keys/organizer.pub, whatever the working tree holds."""
    monkeypatch.setattr(config, "DEFAULT_PUBLIC_KEY", tmp_path / "repo" / "keys" / "organizer.pub")


def production_env(tmp_path: Path, organizer: KeyFiles, **changes: str | None) -> dict[str, str]:
    """A complete production environment; ``None`` in ``changes`` removes a variable."""
    environ = {
        "INCIDENTS_ENV": "production",
        "INCIDENTS_INSTANCE_PATH": str(tmp_path / "instance"),
        "INCIDENTS_SECRET_KEY": "s" * 64,
        "INCIDENTS_CSRF_SECRET": "c" * 64,
        "INCIDENTS_RECEIPT_SECRET": "r" * 64,
        "INCIDENTS_PIN_SECRET": "p" * 64,
        "INCIDENTS_ORGANIZER_PUBLIC_KEY": str(organizer.public_path),
        "INCIDENTS_ORGANIZER_KEY_ID": organizer.public_key.key_id_hex,
    }
    environ.update(changes)  # type: ignore[arg-type]
    return {name: value for name, value in environ.items() if value is not None}


def named_variables(message: str) -> set[str]:
    """The INCIDENTS_* variables a message names."""
    return set(re.findall(r"INCIDENTS_[A-Z_]+", message))


# --------------------------------------------------------------------------- production


def test_a_complete_production_environment_is_accepted(tmp_path: Path, organizer: KeyFiles) -> None:
    settings = Settings.from_env(environ=production_env(tmp_path, organizer))

    assert settings.is_production
    assert settings.organizer_key_id == organizer.public_key.key_id_hex
    assert settings.organizer_public_key_path == organizer.public_path
    assert not settings.is_demo_key
    assert not settings.has_local_secrets
    assert (settings.secret_key, settings.csrf_secret, settings.receipt_secret) == (
        "s" * 64,
        "c" * 64,
        "r" * 64,
    )
    assert not (tmp_path / "instance" / config.LOCAL_SECRETS_FILE).exists()


@pytest.mark.parametrize(
    "missing",
    [
        (SECRET_NAMES[0],),
        (SECRET_NAMES[1],),
        (SECRET_NAMES[2],),
        (SECRET_NAMES[0], SECRET_NAMES[2]),
        SECRET_NAMES,
    ],
)
def test_production_without_a_secret_names_exactly_the_missing_ones(
    tmp_path: Path, organizer: KeyFiles, missing: tuple[str, ...]
) -> None:
    environ = production_env(tmp_path, organizer, **dict.fromkeys(missing))

    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ=environ)

    assert named_variables(str(raised.value)) == set(missing)
    assert not (tmp_path / "instance" / config.LOCAL_SECRETS_FILE).exists()


def test_production_with_an_empty_secret_treats_it_as_missing(
    tmp_path: Path, organizer: KeyFiles
) -> None:
    environ = production_env(tmp_path, organizer, INCIDENTS_CSRF_SECRET="")

    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ=environ)

    assert named_variables(str(raised.value)) == {"INCIDENTS_CSRF_SECRET"}


@pytest.mark.parametrize("length", [1, 16, 31])
def test_production_refuses_secrets_shorter_than_32_characters(
    tmp_path: Path, organizer: KeyFiles, length: int
) -> None:
    secret = ("qz9" * length)[:length]
    environ = production_env(tmp_path, organizer, INCIDENTS_RECEIPT_SECRET=secret)

    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ=environ)

    assert named_variables(str(raised.value)) == {"INCIDENTS_RECEIPT_SECRET"}
    assert "32" in str(raised.value)
    if length > 8:
        assert secret not in str(raised.value), "the message must not quote the secret"


def test_production_accepts_a_secret_of_exactly_32_characters(
    tmp_path: Path, organizer: KeyFiles
) -> None:
    environ = production_env(tmp_path, organizer, INCIDENTS_SECRET_KEY="k" * 32)

    assert Settings.from_env(environ=environ).secret_key == "k" * 32


def test_production_without_the_key_pin_names_it(tmp_path: Path, organizer: KeyFiles) -> None:
    environ = production_env(tmp_path, organizer, INCIDENTS_ORGANIZER_KEY_ID=None)

    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ=environ)

    assert named_variables(str(raised.value)) == {"INCIDENTS_ORGANIZER_KEY_ID"}
    assert "keys show" in str(raised.value), "the message says how to find the key id"


def test_production_without_anything_names_every_variable_to_set(tmp_path: Path) -> None:
    """Given a production environment with neither secrets nor pin,
    when the settings are read,
    then one message names all four variables, so the deployer fixes them in one go.
    """
    environ = {"INCIDENTS_ENV": "production", "INCIDENTS_INSTANCE_PATH": str(tmp_path)}

    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ=environ)

    assert named_variables(str(raised.value)) >= {*SECRET_NAMES, "INCIDENTS_ORGANIZER_KEY_ID"}


def test_production_never_falls_back_to_a_demo_key(tmp_path: Path, organizer: KeyFiles) -> None:
    environ = production_env(tmp_path, organizer, INCIDENTS_ORGANIZER_PUBLIC_KEY=None)

    settings = Settings.from_env(environ=environ)

    assert not settings.is_demo_key
    assert settings.organizer_public_key_path == config.DEFAULT_PUBLIC_KEY


@pytest.mark.parametrize("value", ["prod", "Production", "staging", ""])
def test_an_unknown_environment_name_is_refused(value: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            environ={"INCIDENTS_ENV": value, "INCIDENTS_INSTANCE_PATH": str(tmp_path)}
        )

    assert "INCIDENTS_ENV" in str(raised.value)


def test_a_non_numeric_size_limit_is_refused(tmp_path: Path, organizer: KeyFiles) -> None:
    environ = production_env(tmp_path, organizer, INCIDENTS_MAX_FORM_KB="lots")

    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ=environ)

    assert named_variables(str(raised.value)) == {"INCIDENTS_MAX_FORM_KB"}


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any INCIDENTS_* variable."""
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_create_app_stops_with_a_message_when_production_lacks_a_secret(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path, organizer: KeyFiles
) -> None:
    environ = production_env(tmp_path, organizer, INCIDENTS_RECEIPT_SECRET=None)
    for name, value in environ.items():
        clean_environment.setenv(name, value)

    with pytest.raises(SystemExit) as raised:
        create_app()

    message = str(raised.value.code)
    assert "configuration error" in message
    assert named_variables(message) == {"INCIDENTS_RECEIPT_SECRET"}


def test_create_app_stops_with_a_message_when_production_lacks_the_pin(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path, organizer: KeyFiles
) -> None:
    environ = production_env(tmp_path, organizer, INCIDENTS_ORGANIZER_KEY_ID=None)
    for name, value in environ.items():
        clean_environment.setenv(name, value)

    with pytest.raises(SystemExit) as raised:
        create_app()

    assert named_variables(str(raised.value.code)) == {"INCIDENTS_ORGANIZER_KEY_ID"}


def test_create_app_starts_in_production_with_secure_cookies(
    clean_environment: pytest.MonkeyPatch, tmp_path: Path, organizer: KeyFiles
) -> None:
    environ = production_env(tmp_path, organizer)
    environ["INCIDENTS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'prod.sqlite3'}"
    for name, value in environ.items():
        clean_environment.setenv(name, value)

    app = create_app()

    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Strict"
    assert app.config["SECRET_KEY"] == "s" * 64
    assert app.config["WTF_CSRF_SECRET_KEY"] == b"c" * 64
    assert app.jinja_env.globals["demo_key"] is False


# --------------------------------------------------------------------------- development


def test_development_creates_local_secrets_once_with_mode_0600(tmp_path: Path) -> None:
    """Given a development environment without secrets,
    when the settings are read twice,
    then the first read writes instance/local-secrets.json (0600, marked local-only) and the
    second read reuses the same secrets: one per purpose, each at least 32 characters.
    """
    environ = {"INCIDENTS_INSTANCE_PATH": str(tmp_path / "instance")}

    first = Settings.from_env(environ=environ)
    secrets_file = tmp_path / "instance" / config.LOCAL_SECRETS_FILE
    written = secrets_file.read_bytes()
    second = Settings.from_env(environ=environ)

    assert first.env == "development"
    assert first.has_local_secrets
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert "LOCAL DEVELOPMENT ONLY" in json.loads(written)["warning"]
    assert secrets_file.read_bytes() == written
    trio = (first.secret_key, first.csrf_secret, first.receipt_secret)
    assert (second.secret_key, second.csrf_secret, second.receipt_secret) == trio
    assert len(set(trio)) == 3
    assert all(len(secret) >= config.MIN_SECRET_LENGTH for secret in trio)


def test_development_prefers_secrets_from_the_environment(tmp_path: Path) -> None:
    environ = {"INCIDENTS_INSTANCE_PATH": str(tmp_path), "INCIDENTS_CSRF_SECRET": "e" * 40}

    settings = Settings.from_env(environ=environ)

    assert settings.csrf_secret == "e" * 40
    assert settings.secret_key != settings.receipt_secret
    assert settings.has_local_secrets


def test_development_with_every_secret_set_writes_no_local_file(tmp_path: Path) -> None:
    environ = {
        "INCIDENTS_INSTANCE_PATH": str(tmp_path),
        **{name: name.lower() * 2 for name in SECRET_NAMES},
    }

    settings = Settings.from_env(environ=environ)

    assert not settings.has_local_secrets
    assert not (tmp_path / config.LOCAL_SECRETS_FILE).exists()


def test_development_repairs_an_incomplete_local_secrets_file(tmp_path: Path) -> None:
    (tmp_path / config.LOCAL_SECRETS_FILE).write_text(json.dumps({"secret_key": ""}))

    settings = Settings.from_env(environ={"INCIDENTS_INSTANCE_PATH": str(tmp_path)})

    assert len(settings.secret_key) >= config.MIN_SECRET_LENGTH
    stored = json.loads((tmp_path / config.LOCAL_SECRETS_FILE).read_text())
    assert stored["receipt_secret"] == settings.receipt_secret


def test_development_without_a_configured_key_uses_the_demo_key(tmp_path: Path) -> None:
    settings = Settings.from_env(environ={"INCIDENTS_INSTANCE_PATH": str(tmp_path)})

    assert settings.is_demo_key
    assert settings.organizer_public_key_path == tmp_path / "demo" / "organizer.pub"
    assert settings.organizer_key_id is None, "no demo key has been prepared yet"


def test_development_with_the_repository_key_does_not_use_the_demo_key(
    tmp_path: Path, organizer: KeyFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "DEFAULT_PUBLIC_KEY", organizer.public_path)

    settings = Settings.from_env(environ={"INCIDENTS_INSTANCE_PATH": str(tmp_path)})

    assert not settings.is_demo_key
    assert settings.organizer_public_key_path == organizer.public_path


def test_development_with_a_configured_key_does_not_use_the_demo_key(
    tmp_path: Path, organizer: KeyFiles
) -> None:
    environ = {
        "INCIDENTS_INSTANCE_PATH": str(tmp_path),
        "INCIDENTS_ORGANIZER_PUBLIC_KEY": str(organizer.public_path),
        "INCIDENTS_ORGANIZER_KEY_ID": organizer.public_key.key_id_hex,
    }

    settings = Settings.from_env(environ=environ)

    assert not settings.is_demo_key
    assert settings.organizer_key_id == organizer.public_key.key_id_hex


# --------------------------------------------------------------------------- demo banner


def test_the_demo_banner_is_shown_on_every_page_with_a_demo_key(
    settings: Settings, make_app: Callable[[Settings], Flask]
) -> None:
    app = make_app(dataclasses.replace(settings, is_demo_key=True))
    client = app.test_client()

    for url in ("/report", "/report?lang=ru", "/no-such-page"):
        html = client.get(url).get_data(as_text=True)
        assert 'class="banner banner-demo"' in html, url


def test_no_demo_banner_without_a_demo_key(
    settings: Settings, make_app: Callable[[Settings], Flask]
) -> None:
    app = make_app(settings)
    client = app.test_client()

    for url in ("/report", "/no-such-page"):
        html = client.get(url).get_data(as_text=True)
        assert "banner-demo" not in html, url
        assert "Demo key" not in html, url


# --------------------------------------------------------------------------- demo prepare


@pytest.fixture
def demo_settings(settings: Settings) -> Settings:
    """Development settings that use the (not yet created) demo key, as from_env gives them."""
    return dataclasses.replace(
        settings,
        env="development",
        is_demo_key=True,
        organizer_public_key_path=settings.demo_directory() / config.DEMO_PUBLIC_KEY,
        organizer_key_id=None,
    )


def test_demo_prepare_creates_the_demo_key_once_and_the_form_then_works(
    demo_settings: Settings,
    make_app: Callable[[Settings], Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given a fresh instance folder and no organizer key (what `make run` starts from),
    when `demo prepare` runs, then a demo key pair and its pin are written, the passphrase
    is printed once and opens the key; a second run reuses the key and prints no passphrase;
    and the next start (settings from the environment) accepts reports with the demo banner.
    """
    monkeypatch.setattr(cli, "write_key_pair", functools.partial(cli.write_key_pair, kdf=TEST_KDF))
    runner = make_app(demo_settings).test_cli_runner()
    demo = demo_settings.demo_directory()

    first = runner.invoke(args=["demo", "prepare"])

    assert first.exit_code == 0, first.output
    passphrases = re.findall(r"passphrase:\s+(\S+)", first.output)
    assert len(passphrases) == 1
    private_key = crypto.decrypt_private_key(
        (demo / config.DEMO_PRIVATE_KEY).read_text(), passphrase=passphrases[0]
    )
    public_key = crypto.PublicKey.from_armor((demo / config.DEMO_PUBLIC_KEY).read_text())
    assert private_key.public_key() == public_key
    assert (demo / config.DEMO_KEY_ID).read_text().strip() == public_key.key_id_hex
    assert public_key.key_id_hex in first.output
    assert stat.S_IMODE((demo / config.DEMO_PRIVATE_KEY).stat().st_mode) == 0o600
    files_before = {p.name: p.read_bytes() for p in demo.iterdir()}

    second = runner.invoke(args=["demo", "prepare"])

    assert second.exit_code == 0, second.output
    assert "passphrase" not in second.output.lower()
    assert {p.name: p.read_bytes() for p in demo.iterdir()} == files_before

    restarted = Settings.from_env(
        environ={
            "INCIDENTS_INSTANCE_PATH": str(demo_settings.instance_path),
            "INCIDENTS_DATABASE_URL": demo_settings.database_url,
        }
    )
    assert restarted.is_demo_key
    assert restarted.organizer_key_id == public_key.key_id_hex
    page = make_app(restarted).test_client().get("/report")
    assert page.status_code == 200
    assert 'class="banner banner-demo"' in page.get_data(as_text=True)


def test_demo_prepare_with_a_configured_key_creates_no_demo_key(
    settings: Settings, make_app: Callable[[Settings], Flask]
) -> None:
    runner = make_app(settings).test_cli_runner()

    result = runner.invoke(args=["demo", "prepare"])

    assert result.exit_code == 0, result.output
    assert "passphrase" not in result.output.lower()
    assert not settings.demo_directory().exists()
