"""Staff forms: login, invitations, account changes, triage actions, keys, grants and the desk."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    BooleanField,
    HiddenField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # stubs lag 3.3
from wtforms.validators import DataRequired, EqualTo, Length, ValidationError

from incidents import vocabulary
from incidents.models import ROLES
from incidents.services.accounts import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from incidents.services.api_tokens import MAX_LABEL_LENGTH
from incidents.services.triage import MAX_REASON_LENGTH, is_valid_period

ROLE_LABELS = {
    "organizer": vocabulary.N_("Organizer"),
    "volunteer": vocabulary.N_("Legal-aid volunteer"),
    "ngo": vocabulary.N_("NGO"),
}


class PasswordLength:
    """Minimum and maximum password length, each with its own translated message."""

    def __call__(self, form: FlaskForm, field: PasswordField) -> None:
        """Refuse passwords that are too short or absurdly long."""
        length = len(field.data or "")
        if length < MIN_PASSWORD_LENGTH:
            raise ValidationError(
                _l("A password needs at least %(min)d characters.") % {"min": MIN_PASSWORD_LENGTH}
            )
        if length > MAX_PASSWORD_LENGTH:
            raise ValidationError(
                _l("A password can have at most %(max)d characters.") % {"max": MAX_PASSWORD_LENGTH}
            )


def _password_length() -> PasswordLength:
    """A password-length validator for one field."""
    return PasswordLength()


class LoginForm(FlaskForm):
    """Username, password and (for organizers and volunteers) the authenticator code."""

    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1024)])
    code = StringField(_l("Code from the authenticator app"), validators=[Length(max=16)])
    next = HiddenField()


class EnrollTotpForm(FlaskForm):
    """Confirms a new TOTP secret with one code; the secret travels in the form itself."""

    secret = HiddenField(validators=[DataRequired(), Length(min=16, max=64)])
    code = StringField(_l("Code from the authenticator app"), validators=[DataRequired()])


class ReenrollTotpForm(EnrollTotpForm):
    """Moving to a new authenticator also needs the current password (a stolen session is not
    enough to take over the second factor)."""

    current = PasswordField(_l("Current password"), validators=[DataRequired()])


class AcceptInvitationForm(EnrollTotpForm):
    """A new account from an invitation: username, password twice and, if needed, TOTP."""

    username = StringField(_l("Username"), validators=[DataRequired(), Length(min=3, max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), _password_length()])
    password_again = PasswordField(
        _l("Password again"),
        validators=[DataRequired(), EqualTo("password", message=_l("The passwords differ."))],
    )
    code = StringField(_l("Code from the authenticator app"))


class ChangePasswordForm(FlaskForm):
    """Change the password, proving the current one."""

    current = PasswordField(_l("Current password"), validators=[DataRequired()])
    password = PasswordField(_l("New password"), validators=[DataRequired(), _password_length()])
    password_again = PasswordField(
        _l("New password again"),
        validators=[DataRequired(), EqualTo("password", message=_l("The passwords differ."))],
    )


class InvitationForm(FlaskForm):
    """Organizer creates an invitation for a role."""

    role = SelectField(
        _l("Role"), choices=[SelectChoice(role, ROLE_LABELS[role]) for role in ROLES]
    )


class ConfirmForm(FlaskForm):
    """A form with only its CSRF token: buttons such as approve, disable, log out."""


class StatusForm(FlaskForm):
    """Change a report's status, with an optional reason."""

    status = SelectField(
        _l("New status"), choices=[SelectChoice(t.code, t.label) for t in vocabulary.STATUSES]
    )
    reason = TextAreaField(_l("Reason (optional)"), validators=[Length(max=MAX_REASON_LENGTH)])


class CorrectShellForm(FlaskForm):
    """Correct the shell category and period of a report."""

    category = SelectField(
        _l("Category"), choices=[SelectChoice(c.code, c.label) for c in vocabulary.CATEGORIES]
    )
    occurred_period = StringField(_l("Period (2025-W07 or 2025-03)"), validators=[DataRequired()])

    def validate_occurred_period(self, field: StringField) -> None:
        """Periods are ISO weeks or months."""
        if not is_valid_period((field.data or "").strip()):
            raise ValidationError(_l("Write a period as 2025-W07 (ISO week) or 2025-03 (month)."))


class DuplicateForm(FlaskForm):
    """Link a report to the original it duplicates."""

    original_id = HiddenField(validators=[DataRequired()])


class AssignForm(FlaskForm):
    """Assign a report to a volunteer (choices filled per request)."""

    volunteer_id = SelectField(_l("Legal-aid volunteer"), coerce=int, choices=[])


class UnassignForm(FlaskForm):
    """Remove a volunteer from a report (deletes their key grant)."""

    volunteer_id = HiddenField(validators=[DataRequired()])


class UploadKeyForm(FlaskForm):
    """A volunteer uploads the public key file made by their desk."""

    key_file = FileField(_l("Public key file (.pub)"), validators=[FileRequired()])


class GrantForm(FlaskForm):
    """The organizer's desk output: a key grant (wrap) file for this report."""

    grant_file = FileField(_l("Key grant file"), validators=[FileRequired()])


class TokenForm(FlaskForm):
    """Make a personal API token for the desk, named so that it can be told apart later."""

    label = StringField(
        _l("Name of the token (for example: office laptop)"),
        validators=[DataRequired(), Length(max=MAX_LABEL_LENGTH)],
    )
    current_password = PasswordField(_l("Your current password"), validators=[DataRequired()])


class OutputsUploadForm(FlaskForm):
    """An air-gapped desk's outputs file (key grants, sealed notes and replies, statuses)."""

    outputs_file = FileField(_l("Desk outputs file (.json)"), validators=[FileRequired()])


class ExportRequestForm(FlaskForm):
    """An NGO asks for an export of closed quarters."""

    product = SelectField(
        _l("Product"),
        choices=[
            SelectChoice("P1", vocabulary.N_("Counts with differential privacy (P1)")),
            SelectChoice("P2", vocabulary.N_("Generalized timeline of incidents (P2)")),
            SelectChoice("P3", vocabulary.N_("Exact counts with small numbers hidden (P3)")),
        ],
    )
    first_quarter = StringField(
        _l("From quarter"), validators=[DataRequired(), Length(max=6)], default="2025Q1"
    )
    last_quarter = StringField(
        _l("To quarter"), validators=[DataRequired(), Length(max=6)], default="2025Q4"
    )
    by_country = BooleanField(_l("Also by country (larger countries only)"))


class RefuseExportForm(FlaskForm):
    """An organizer refuses a request, with a reason the NGO will read."""

    reason = TextAreaField(_l("Reason"), validators=[DataRequired(), Length(max=500)])
