"""Settings of the incident register, read from ``INCIDENTS_*`` environment variables.

No Flask import here: the settings are a frozen dataclass that ``create_app`` turns into Flask
configuration. One secret per purpose (session cookie signing, CSRF tokens, receipt lookup, and the
authentication of an organizer key rotation recorded in the database).

* ``production``: every secret and the organizer key pin must be set, or startup stops with a
  message naming exactly what to set.
* ``development`` (the default, used by ``make run``): missing secrets are generated once into
  ``instance/local-secrets.json`` (visibly marked as local-only), and when no organizer key is
  configured a demo key under ``instance/demo/`` is used, with a banner on every page.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PUBLIC_KEY = PROJECT_ROOT / "keys" / "organizer.pub"
ENVIRONMENTS = ("development", "production", "testing")
SECRET_VARIABLES = {
    "secret_key": "INCIDENTS_SECRET_KEY",
    "csrf_secret": "INCIDENTS_CSRF_SECRET",
    "receipt_secret": "INCIDENTS_RECEIPT_SECRET",
    "pin_secret": "INCIDENTS_PIN_SECRET",
}
MIN_SECRET_LENGTH = 32
LOCAL_SECRETS_FILE = "local-secrets.json"
DEMO_DIRECTORY = "demo"
DEMO_PUBLIC_KEY = "organizer.pub"
DEMO_PRIVATE_KEY = "organizer.key"
DEMO_KEY_ID = "organizer.keyid"


class ConfigError(Exception):
    """Raised when the environment does not describe a usable deployment."""


@dataclass(frozen=True)
class Settings:
    """Everything the application needs to start; built by ``from_env`` or ``for_testing``."""

    env: str
    instance_path: Path
    database_url: str
    organizer_public_key_path: Path
    organizer_key_id: str | None
    secret_key: str
    csrf_secret: str
    receipt_secret: str
    pin_secret: str
    is_demo_key: bool = False
    has_local_secrets: bool = False
    max_form_bytes: int = 2 * 1024 * 1024
    max_attachments: int = 5
    max_attachment_bytes: int = 50 * 1024 * 1024
    quick_exit_url: str = "https://www.wikipedia.org/"
    log_level: str = "INFO"
    ratelimit_storage_uri: str = "memory://"
    export_epsilon: str = "1"
    export_yearly_cap: str = "4"
    export_contributions: int = 3
    ratelimit_enabled: bool = True

    @property
    def is_production(self) -> bool:
        """True when running as a deployed server (secure cookies, strict startup checks)."""
        return self.env == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``environ`` (default: the process); raise ConfigError if unusable."""
        env_vars = os.environ if environ is None else environ
        env = env_vars.get("INCIDENTS_ENV", "development")
        if env not in ENVIRONMENTS:
            raise ConfigError(f"INCIDENTS_ENV must be one of {', '.join(ENVIRONMENTS)}")
        instance = Path(env_vars.get("INCIDENTS_INSTANCE_PATH", PROJECT_ROOT / "instance"))
        database_url = env_vars.get(
            "INCIDENTS_DATABASE_URL", f"sqlite:///{instance / 'incidents.sqlite3'}"
        )
        key_path, key_id, is_demo = _organizer_key(env, env_vars, instance)
        pin_problem = None
        if env == "production" and not key_id:
            pin_problem = (
                "INCIDENTS_ORGANIZER_KEY_ID is not set: set it to the key id printed by "
                "'flask --app app keys show --public "
                f"{key_path}' after checking the fingerprint with the organizer"
            )
        elif env == "production" and key_id and not _is_key_id(key_id):
            pin_problem = (
                "INCIDENTS_ORGANIZER_KEY_ID is malformed: it must be the 32 hexadecimal digits "
                "printed by 'flask --app app keys show'"
            )
        try:
            secret_values, has_local = _secrets(env, env_vars, instance)
        except ConfigError as exc:
            # Name everything that is missing at once, not one variable per failed start.
            raise ConfigError(f"{exc} Also, {pin_problem}" if pin_problem else str(exc)) from None
        if pin_problem:
            raise ConfigError(pin_problem)
        return cls(
            env=env,
            instance_path=instance,
            database_url=database_url,
            organizer_public_key_path=key_path,
            organizer_key_id=key_id,
            is_demo_key=is_demo,
            has_local_secrets=has_local,
            max_form_bytes=_int(env_vars, "INCIDENTS_MAX_FORM_KB", 2048) * 1024,
            max_attachment_bytes=_int(env_vars, "INCIDENTS_MAX_ATTACHMENT_MB", 50) * 1024 * 1024,
            quick_exit_url=env_vars.get("INCIDENTS_QUICK_EXIT_URL", cls.quick_exit_url),
            log_level=env_vars.get("INCIDENTS_LOG_LEVEL", "INFO"),
            ratelimit_storage_uri=env_vars.get("INCIDENTS_RATELIMIT_STORAGE_URI", "memory://"),
            export_epsilon=env_vars.get("INCIDENTS_EXPORT_EPSILON", cls.export_epsilon),
            export_yearly_cap=env_vars.get("INCIDENTS_EXPORT_YEARLY_CAP", cls.export_yearly_cap),
            export_contributions=_int(env_vars, "INCIDENTS_EXPORT_CONTRIBUTIONS", 3),
            secret_key=secret_values["secret_key"],
            csrf_secret=secret_values["csrf_secret"],
            receipt_secret=secret_values["receipt_secret"],
            pin_secret=secret_values["pin_secret"],
        )

    @classmethod
    def for_testing(
        cls,
        tmp_path: Path,
        *,
        organizer_public_key_path: Path,
        organizer_key_id: str | None,
        database_url: str | None = None,
    ) -> Settings:
        """Settings for tests: fresh secrets, a database under ``tmp_path`` unless given."""
        return cls(
            env="testing",
            instance_path=tmp_path / "instance",
            database_url=database_url or f"sqlite:///{tmp_path / 'test.sqlite3'}",
            organizer_public_key_path=organizer_public_key_path,
            organizer_key_id=organizer_key_id,
            secret_key=secrets.token_hex(32),
            csrf_secret=secrets.token_hex(32),
            receipt_secret=secrets.token_hex(32),
            pin_secret=secrets.token_hex(32),
        )

    @property
    def receipt_key(self) -> bytes:
        """The receipt secret as HMAC key bytes: UTF-8 of the configured text, never changed."""
        return self.receipt_secret.encode("utf-8")

    @property
    def pin_key(self) -> bytes:
        """The pin secret as HMAC key bytes (authenticates an organizer key rotation recorded
        in the database, so that writing to the database alone cannot move the pin)."""
        return self.pin_secret.encode("utf-8")

    @property
    def max_content_length(self) -> int:
        """Largest request body: the form fields plus the most attachments allowed, with room
        for multipart headers."""
        return self.max_form_bytes + self.max_attachments * (self.max_attachment_bytes + 4096)

    def demo_directory(self) -> Path:
        """Where ``make run`` keeps the generated demo organizer key."""
        return self.instance_path / DEMO_DIRECTORY


def _is_key_id(text: str) -> bool:
    """True for 32 hex digits (spaces and colons allowed), the form of a key id."""
    cleaned = "".join(ch for ch in text if ch not in " :-")
    return len(cleaned) == 32 and all(ch in "0123456789abcdefABCDEF" for ch in cleaned)


def _int(env_vars: Mapping[str, str], name: str, default: int) -> int:
    """Read a whole-number variable, or ``default`` when it is not set."""
    raw = env_vars.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number") from exc


def _organizer_key(
    env: str, env_vars: Mapping[str, str], instance: Path
) -> tuple[Path, str | None, bool]:
    """Return (public key path, pinned key id, is demo key)."""
    configured = env_vars.get("INCIDENTS_ORGANIZER_PUBLIC_KEY")
    pin = env_vars.get("INCIDENTS_ORGANIZER_KEY_ID") or None
    if configured:
        return Path(configured), pin, False
    if env == "production" or DEFAULT_PUBLIC_KEY.exists():
        return DEFAULT_PUBLIC_KEY, pin, False
    demo = instance / DEMO_DIRECTORY
    demo_pin_file = demo / DEMO_KEY_ID
    demo_pin = demo_pin_file.read_text().strip() if demo_pin_file.exists() else None
    return demo / DEMO_PUBLIC_KEY, pin or demo_pin, True


def _secrets(env: str, env_vars: Mapping[str, str], instance: Path) -> tuple[dict[str, str], bool]:
    """Return one secret per purpose and whether any came from the local-only file."""
    values = {field: env_vars.get(var, "") for field, var in SECRET_VARIABLES.items()}
    missing = [SECRET_VARIABLES[field] for field, value in values.items() if not value]
    short = [
        SECRET_VARIABLES[field]
        for field, value in values.items()
        if value and len(value) < MIN_SECRET_LENGTH
    ]
    if env == "production" and (missing or short):
        problems = []
        if missing:
            problems.append("not set: " + ", ".join(missing))
        if short:
            problems.append(f"shorter than {MIN_SECRET_LENGTH} characters: " + ", ".join(short))
        raise ConfigError(
            "secrets are " + "; ".join(problems) + ". Generate each one separately with: "
            "python3 -c 'import secrets; print(secrets.token_hex(32))'"
        )
    if not missing:
        return values, False
    local = _load_local_secrets(instance)
    for field, value in values.items():
        if not value:
            values[field] = local[field]
    return values, True


def _load_local_secrets(instance: Path) -> dict[str, str]:
    """Read or create the development-only secrets file (mode 0600)."""
    path = instance / LOCAL_SECRETS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        stored = json.loads(path.read_text())
        if all(stored.get(field) for field in SECRET_VARIABLES):
            return stored
    instance.mkdir(parents=True, exist_ok=True)
    # Keep the secrets already there (changing the receipt secret would orphan every receipt);
    # add only the missing ones.
    stored = {
        "warning": "LOCAL DEVELOPMENT ONLY: generated by the incident register; "
        "never use in production",
        **{field: stored.get(field) or secrets.token_hex(32) for field in SECRET_VARIABLES},
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(stored, handle, indent=2)
    return stored
