"""Turn domain errors and HTTP errors into translated pages, in one place.

Error pages never show request data, tracebacks or exception messages; the log records what
went wrong with the service, never what a witness wrote.
"""

from __future__ import annotations

import traceback

from flask import Flask, current_app, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from incidents.services.errors import KeyUnavailableError, ReportNotSavedError

PAGES_BY_CODE = {400, 403, 404, 405, 413, 429, 500}
API_PREFIX = "/api/"


def register_error_handlers(app: Flask) -> None:
    """Register the handlers for domain errors, CSRF failures and HTTP errors."""
    app.register_error_handler(KeyUnavailableError, _key_unavailable)
    app.register_error_handler(ReportNotSavedError, _not_saved)
    app.register_error_handler(CSRFError, _csrf_failed)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


def _key_unavailable(error: KeyUnavailableError) -> ResponseReturnValue:
    """Close the witness form with a 503 page while the organizer key is unusable."""
    current_app.logger.error("witness form closed (503): %s", error)
    return render_template("errors/not_accepting.html"), 503


def _not_saved(error: ReportNotSavedError) -> ResponseReturnValue:
    """Show a 503 page when a report could not be stored."""
    current_app.logger.error("a report could not be saved: %s", error)
    return render_template("errors/not_saved.html"), 503


def _csrf_failed(error: CSRFError) -> ResponseReturnValue:
    """Show the form-expired page (400) when a CSRF check fails."""
    current_app.logger.info("form rejected: CSRF check failed (%s)", error.description)
    return render_template("errors/csrf.html"), 400


def _http_error(error: HTTPException) -> ResponseReturnValue:
    """Render the translated page for an HTTP error (a generic one for rare codes); under the
    desk API the answer is JSON, like every other API answer."""
    code = error.code or 500
    if request.path.startswith(API_PREFIX):
        response = jsonify({"error": "http", "message": error.name})
        response.status_code = code
        response.headers["Cache-Control"] = "no-store"
        return response
    template = f"errors/{code}.html" if code in PAGES_BY_CODE else "errors/generic.html"
    return render_template(template, code=code), code


def _unexpected(error: Exception) -> ResponseReturnValue:
    """Log an unhandled exception without its message and show the 500 page."""
    # The exception message may quote input, so only its type and the stack are logged.
    stack = "".join(traceback.format_tb(error.__traceback__))
    current_app.logger.error("unexpected %s at:\n%s", type(error).__name__, stack)
    return _http_error(InternalServerError())
