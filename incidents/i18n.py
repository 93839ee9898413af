"""Language selection and template helpers for ru, sr (Latin) and en.

The language is chosen explicitly: a ``lang`` query parameter (the language links, which work
without JavaScript) is remembered in the session cookie; otherwise the browser's
Accept-Language header decides; English is the fallback. Nothing is tracked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, request, session, url_for
from flask_babel import get_locale, gettext

from incidents.services.errors import DomainError
from incidents.vocabulary import N_


@dataclass(frozen=True)
class Language:
    """A shipped language: URL code, Babel locale, HTML lang attribute and its own name."""

    code: str
    locale: str
    html_lang: str
    name: str


LANGUAGES: tuple[Language, ...] = (
    Language("ru", "ru", "ru", "Русский"),
    Language("sr", "sr_Latn", "sr-Latn", "Srpski"),
    Language("en", "en", "en", "English"),
)
_BY_CODE = {language.code: language for language in LANGUAGES}
_BY_LOCALE = {language.locale: language for language in LANGUAGES}
SESSION_KEY = "lang"
N_("Language")


def translated(error: DomainError) -> str:
    """A domain error's message in the request's language."""
    return str(gettext(error.message, **error.params))


def select_locale() -> str:
    """Return the Babel locale for this request (query parameter, session, header, English)."""
    requested = request.args.get("lang", "")
    if requested in _BY_CODE:
        session[SESSION_KEY] = requested
        return _BY_CODE[requested].locale
    remembered = session.get(SESSION_KEY)
    if isinstance(remembered, str) and remembered in _BY_CODE:
        return _BY_CODE[remembered].locale
    best = request.accept_languages.best_match([language.code for language in LANGUAGES])
    return _BY_CODE[best].locale if best else "en"


def current_language() -> Language:
    """The language of the current request."""
    locale = str(get_locale() or "en")
    return _BY_LOCALE.get(locale, _BY_CODE["en"])


def language_url(code: str) -> str:
    """URL of the current page (GET) in another language."""
    args = {key: value for key, value in request.args.items() if key != "lang"}
    endpoint = request.endpoint if request.method == "GET" and request.endpoint else None
    if endpoint is None:
        endpoint = current_app.config.get("LANGUAGE_FALLBACK_ENDPOINT", "intake.report")
        args = {}
    values: dict[str, Any] = dict(request.view_args or {}) if endpoint == request.endpoint else {}
    values.update(args, lang=code)
    return url_for(endpoint, **values)


def register_template_helpers(app: Flask) -> None:
    """Expose languages and the current language to templates."""

    @app.context_processor
    def inject_languages() -> dict[str, object]:
        """Give templates the languages, the current one and the URL builder."""
        return {
            "languages": LANGUAGES,
            "current_language": current_language(),
            "language_url": language_url,
        }
