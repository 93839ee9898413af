"""Witness views: the report form, its submission and the one-time receipt page.

Every response here carries ``Cache-Control: no-store`` (``incidents.security``), a neutral
title and a quick-exit link, and works with JavaScript disabled. The form is closed (503) while
the organizer key is unusable, so a witness never fills in a form that cannot be sealed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, current_app, redirect, render_template, session, url_for
from flask.typing import ResponseReturnValue

from incidents.config import Settings
from incidents.intake.forms import ReportForm, form_options
from incidents.keyring import Keyring, KeyringCache
from incidents.services import reports
from incidents.services.errors import ReportNotSavedError

bp = Blueprint("intake", __name__)


def current_keyring() -> Keyring:
    """The keyring reports are sealed to; raises KeyUnavailableError (answered with 503)."""
    cache: KeyringCache = current_app.extensions["incidents.keyring"]
    return cache.get()


def current_settings() -> Settings:
    """The settings the application was created with."""
    settings: Settings = current_app.extensions["incidents.settings"]
    return settings


@bp.get("/")
def index() -> ResponseReturnValue:
    """Send visitors to the report form."""
    return redirect(url_for("intake.report"))


@bp.get("/report")
def report() -> ResponseReturnValue:
    """Show the empty report form (or the 503 page when reports cannot be sealed)."""
    current_keyring()
    return render_template("intake/report.html", form=ReportForm())


@bp.post("/report")
def submit() -> ResponseReturnValue:
    """Validate, seal and store a report; show the receipt once."""
    keyring = current_keyring()
    form = ReportForm()
    if not form.validate_on_submit():
        return render_template("intake/report.html", form=form), 400
    try:
        filed = reports.file_report(
            form.to_draft(),
            keyring=keyring,
            receipt_secret=current_settings().receipt_key,
            received_on=datetime.now(UTC).date(),
        )
    except ReportNotSavedError as exc:
        current_app.logger.error("a report could not be saved: %s", exc)
        return render_template("intake/report.html", form=form, not_saved=True), 503
    # A fresh CSRF token means a reload of this page cannot file the same report twice.
    session.pop("csrf_token", None)
    return render_template("intake/receipt.html", receipt=filed.receipt)


@bp.context_processor
def inject_vocabulary() -> dict[str, object]:
    """Make the grouped choices of the report form available to the witness templates."""
    return {"options": form_options()}
