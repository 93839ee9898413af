"""Witness views: the report form, the one-time receipt page, and the return visit.

Every response here carries ``Cache-Control: no-store`` (``incidents.security``), a neutral
title and a quick-exit link, and works with JavaScript disabled. The form is closed (503) while
the organizer key is unusable, so a witness never fills in a form that cannot be sealed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext

from incidents.appstate import current_keyring, current_settings
from incidents.extensions import limiter
from incidents.intake.forms import (
    AddInformationForm,
    ConsentForm,
    DeleteForm,
    ReceiptForm,
    ReportForm,
    form_options,
    upload_errors,
)
from incidents.services import followup, reports
from incidents.services.errors import ReportNotSavedError
from incidents.uploads import current_batch

bp = Blueprint("intake", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    """Send visitors to the report form."""
    return redirect(url_for("intake.report"))


@bp.get("/report")
def report() -> ResponseReturnValue:
    """Show the empty report form (or the 503 page when reports cannot be sealed)."""
    current_keyring()
    return render_template("intake/report.html", form=ReportForm())


def _upload_errors() -> list[str]:
    """Messages for the files of this request that were refused."""
    settings = current_settings()
    return upload_errors(
        current_batch(),
        max_files=settings.max_attachments,
        max_bytes=settings.max_attachment_bytes,
    )


def _today() -> date:
    """Today's date in UTC, recorded as the day a report was received."""
    return datetime.now(UTC).date()


@bp.post("/report")
def submit() -> ResponseReturnValue:
    """Validate, seal and store a report with its files; show the receipt once."""
    keyring = current_keyring()
    form = ReportForm()
    is_valid = form.validate_on_submit()
    file_errors = _upload_errors()
    if not is_valid or file_errors:
        form.attachments.errors = file_errors
        return render_template("intake/report.html", form=form, file_errors=file_errors), 400
    try:
        filed = reports.file_report(
            form.to_draft(),
            keyring=keyring,
            receipt_secret=current_settings().receipt_key,
            received_on=_today(),
            uploads=current_batch(),
            instance_path=current_settings().instance_path,
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


# --------------------------------------------------------------------------- return visit

FOLLOWUP_FAILURE_LIMIT = "300 per minute"
NOT_FOUND_STATUS = 404


def _followup_failure_key() -> str:
    """One shared counter of failed receipts: nobody's address or identity is kept."""
    return "followup-failures"


def _is_failure(response: object) -> bool:
    """Whether a follow-up response counts against the shared failure limit."""
    return getattr(response, "status_code", 200) == NOT_FOUND_STATUS


# One budget for every follow-up form: a route-specific limit would give each of the four forms
# its own counter, and a guesser four times the attempts.
followup_failures = limiter.shared_limit(
    FOLLOWUP_FAILURE_LIMIT,
    scope="followup-failures",
    key_func=_followup_failure_key,
    deduct_when=_is_failure,
)


def _case_page(
    case: followup.WitnessCase, *, status: int = 200, **forms: object
) -> ResponseReturnValue:
    """Render a witness's case page; ``forms`` replaces the empty default forms."""
    receipt = followup_receipt()
    defaults: dict[str, object] = {
        "add_form": AddInformationForm(receipt=receipt, formdata=None),
        "consent_form": ConsentForm(receipt=receipt, formdata=None),
        "delete_form": DeleteForm(receipt=receipt, formdata=None),
    }
    defaults.update(forms)
    return (
        render_template(
            "intake/case.html",
            case=case,
            plain_status=followup.plain_status(case.report),
            replies=followup.replies_for(case),
            **defaults,
        ),
        status,
    )


def followup_receipt() -> str:
    """The receipt sent with this request's form (never stored)."""
    return request.form.get("receipt", "")


def _find_case_or_404() -> followup.WitnessCase | ResponseReturnValue:
    """The case for this request's receipt, or the not-found page with a 404."""
    try:
        return followup.find_case(followup_receipt(), receipt_secret=current_settings().receipt_key)
    except followup.CaseNotFoundError:
        form = ReceiptForm(formdata=None)
        return render_template("intake/followup.html", form=form, not_found=True), NOT_FOUND_STATUS


@bp.get("/followup")
def followup_start() -> ResponseReturnValue:
    """Ask for the receipt code."""
    return render_template("intake/followup.html", form=ReceiptForm())


@bp.post("/followup")
@followup_failures
def followup_open() -> ResponseReturnValue:
    """Show status, replies and consents for a receipt; the same answer for any wrong code."""
    form = ReceiptForm()
    if not form.validate_on_submit():
        return render_template("intake/followup.html", form=form), 400
    found = _find_case_or_404()
    if not isinstance(found, followup.WitnessCase):
        return found
    return _case_page(found)


@bp.post("/followup/add")
@followup_failures
def followup_add() -> ResponseReturnValue:
    """Seal and store more information (text and/or files) for the report."""
    keyring = current_keyring()
    form = AddInformationForm()
    found = _find_case_or_404()
    if not isinstance(found, followup.WitnessCase):
        return found
    is_valid = form.validate_on_submit()
    file_errors = _upload_errors()
    batch = current_batch()
    has_content = bool((form.text.data or "").strip()) or bool(batch and batch.accepted())
    if is_valid and not file_errors and not has_content:
        form.text.errors = [gettext("Write something or choose a file to add.")]
        is_valid = False
    if not is_valid or file_errors:
        form.attachments.errors = file_errors
        return _case_page(found, status=400, add_form=form)
    try:
        followup.add_information(
            found,
            text=(form.text.data or "").strip(),
            uploads=batch,
            keyring=keyring,
            received_on=_today(),
            instance_path=current_settings().instance_path,
        )
    except ReportNotSavedError as exc:
        current_app.logger.error("an addition could not be saved: %s", exc)
        return _case_page(found, status=503, add_form=form, not_saved=True)
    return _case_page(found, added=True)


@bp.post("/followup/consent")
@followup_failures
def followup_consent() -> ResponseReturnValue:
    """Withdraw consent to statistics and/or contact."""
    form = ConsentForm()
    found = _find_case_or_404()
    if not isinstance(found, followup.WitnessCase):
        return found
    if form.validate_on_submit():
        followup.withdraw_consent(
            found,
            statistics=bool(form.withdraw_statistics.data),
            contact=bool(form.withdraw_contact.data),
        )
    return _case_page(found, consent_saved=True)


@bp.post("/followup/delete")
@followup_failures
def followup_delete() -> ResponseReturnValue:
    """Delete the report for good (crypto-shredding), after an explicit confirmation."""
    form = DeleteForm()
    found = _find_case_or_404()
    if not isinstance(found, followup.WitnessCase):
        return found
    if not form.validate_on_submit():
        return _case_page(found, status=400, delete_form=form)
    followup.delete_report(found, instance_path=current_settings().instance_path)
    return render_template("intake/deleted.html")
