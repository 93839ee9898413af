"""Flask extension objects, created unbound and initialised in ``create_app``."""

from __future__ import annotations

from flask_babel import Babel
from flask_limiter import Limiter
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect


def _no_default_key() -> str:
    """Limits are keyed explicitly per route; nothing is keyed by client address."""
    return "global"


babel = Babel()
csrf = CSRFProtect()
migrate = Migrate()
login_manager = LoginManager()
limiter = Limiter(key_func=_no_default_key, default_limits=[], headers_enabled=False)
