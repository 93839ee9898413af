"""The witness report form: field names, choices, limits and validation messages.

Everything a witness typed is kept in the form when it is re-rendered with errors; nothing is
stored until every field is valid. Text that arrived as invalid UTF-8 (decoded by Werkzeug
into U+FFFD replacement characters) or with control characters is refused with a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from wtforms import (
    BooleanField,
    DateField,
    Field,
    HiddenField,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # stubs lag 3.3
from wtforms.validators import DataRequired, InputRequired, Length, ValidationError

from incidents import vocabulary
from incidents.services.reports import ReportDraft
from incidents.uploads import UploadBatch

EARLIEST_DATE = date(2000, 1, 1)
SHORT_TEXT_MAX = 500
LONG_TEXT_MAX = 4000
NARRATIVE_MAX = 20000
_ALLOWED_CONTROL = {"\n", "\r", "\t"}


def readable_text(_form: FlaskForm, field: Field) -> None:
    """Refuse text with undecodable bytes or control characters (other than newlines/tabs)."""
    value = field.data or ""
    if "\ufffd" in value:
        raise ValidationError(
            _l("Some characters could not be read. Please retype this text and send again.")
        )
    if any(ord(ch) < 32 and ch not in _ALLOWED_CONTROL for ch in value):
        raise ValidationError(
            _l(
                "This text contains invisible control characters. "
                "Please type it again instead of pasting it."
            )
        )


def plausible_date(_form: FlaskForm, field: Field) -> None:
    """Refuse dates before 2000 or after tomorrow (tomorrow allows for time zones)."""
    value = field.data
    if value is None:
        return
    if value < EARLIEST_DATE:
        raise ValidationError(_l("Please give a date in the year 2000 or later."))
    if value > date.today() + timedelta(days=1):
        raise ValidationError(_l("The date is in the future. Please check it."))


PLACEHOLDER = SelectChoice("", "")


def max_length(limit: int) -> Length:
    """A translated maximum-length validator."""
    return Length(max=limit, message=_l("Please keep this to at most %(max)d characters."))


@dataclass(frozen=True)
class FormOptions:
    """Choices as the template shows them: English labels, translated when rendered."""

    category_groups: list[tuple[str, list[tuple[str, str]]]]
    countries: list[tuple[str, str]]
    city_groups: list[tuple[str, list[tuple[str, str]]]]


def form_options() -> FormOptions:
    """Build the grouped choices of the report form from the vocabulary."""
    category_groups = [
        (group.label, [(c.code, c.label) for c in vocabulary.CATEGORIES if c.group == group.code])
        for group in vocabulary.GROUPS
    ]
    city_groups = [
        (country.label, _choices(country.cities))
        for country in vocabulary.COUNTRIES
        if country.cities
    ]
    city_groups.append(("", [(vocabulary.OTHER_CITY.code, vocabulary.OTHER_CITY.label)]))
    return FormOptions(
        category_groups=category_groups,
        countries=_choices(vocabulary.COUNTRIES),
        city_groups=city_groups,
    )


def _refuse_unlisted(field: SelectField) -> None:
    """Raise a translated error unless the field's value is one of its choices."""
    listed = {choice.value for choice in field.choices or [] if isinstance(choice, SelectChoice)}
    if field.data not in listed:
        raise ValidationError(_l("Please choose one of the listed answers."))


class ChoiceSelectField(SelectField):
    """A select whose "not a valid choice" message is translated by the project's catalog."""

    def pre_validate(self, form: FlaskForm) -> None:
        """Refuse values that are not among the choices."""
        _refuse_unlisted(self)


class ChoiceRadioField(RadioField):
    """Radio buttons with a translated "not a valid choice" message."""

    def pre_validate(self, form: FlaskForm) -> None:
        """Refuse values that are not among the choices."""
        _refuse_unlisted(self)


class LocalDateField(DateField):
    """A date field (YYYY-MM-DD) whose parse error is translated by the project's catalog."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        """Parse the date; keep the raw text for re-display when it is not a date."""
        try:
            super().process_formdata(valuelist)
        except ValueError as exc:
            message = _l("Please write the date as year-month-day, e.g. 2025-03-14.")
            raise ValueError(message) from exc


def _choices(terms: tuple[vocabulary.Term, ...]) -> list[tuple[str, str]]:
    """(code, label) pairs for a select field from vocabulary terms."""
    return [(term.code, term.label) for term in terms]


def _select_choices(pairs: list[tuple[str, str]]) -> list[SelectChoice]:
    """Turn (code, label) pairs into WTForms select choices."""
    return [SelectChoice(code, label) for code, label in pairs]


def category_choices() -> list[SelectChoice]:
    """Category codes, after an empty "please choose" value (labels are translated on render)."""
    return [PLACEHOLDER, *_select_choices(_choices(vocabulary.CATEGORIES))]


def country_choices() -> list[SelectChoice]:
    """Country codes, after an empty "please choose" value."""
    return [PLACEHOLDER, *_select_choices(_choices(vocabulary.COUNTRIES))]


def city_choices() -> list[SelectChoice]:
    """Every listed city of every country, and "another place"; consistency is checked later."""
    cities = {city.code: city.label for country in vocabulary.COUNTRIES for city in country.cities}
    cities[vocabulary.OTHER_CITY.code] = vocabulary.OTHER_CITY.label
    return _select_choices(list(cities.items()))


class ReportForm(FlaskForm):
    """The incident report a witness files; names match the sealed and shell fields."""

    category = ChoiceSelectField(
        _l("What happened?"),
        choices=category_choices(),
        validators=[DataRequired(_l("Please choose what happened."))],
    )
    occurred_on = LocalDateField(
        _l("When did it happen?"),
        validators=[
            InputRequired(_l("Please give a date, even an approximate one.")),
            plausible_date,
        ],
    )
    date_precision = ChoiceRadioField(
        _l("How sure are you of the date?"),
        choices=_select_choices(_choices(vocabulary.DATE_PRECISIONS)),
        default="day",
        validators=[InputRequired(_l("Please say how sure you are of the date."))],
    )
    country = ChoiceSelectField(
        _l("Country"),
        choices=country_choices(),
        validators=[DataRequired(_l("Please choose a country."))],
    )
    city = ChoiceSelectField(
        _l("City"),
        choices=city_choices(),
        default=vocabulary.OTHER,
        validators=[InputRequired(_l("Please choose a city."))],
    )
    place_detail = StringField(
        _l("Where exactly? (optional)"),
        validators=[max_length(SHORT_TEXT_MAX), readable_text],
    )
    narrative = TextAreaField(
        _l("Describe what happened"),
        validators=[
            DataRequired(_l("Please describe what happened.")),
            max_length(NARRATIVE_MAX),
            readable_text,
        ],
    )
    targeted_person = StringField(
        _l("Who was targeted? (optional)"),
        validators=[max_length(SHORT_TEXT_MAX), readable_text],
    )
    perpetrator_type = ChoiceRadioField(
        _l("Who do you think was behind it?"),
        choices=_select_choices(_choices(vocabulary.PERPETRATOR_TYPES)),
        default="unknown",
        validators=[InputRequired(_l("Please choose one answer."))],
    )
    perpetrator_description = TextAreaField(
        _l("Anything you know about them (optional)"),
        validators=[max_length(LONG_TEXT_MAX), readable_text],
    )
    contact = StringField(
        _l("How can a legal-aid volunteer contact you safely? (optional)"),
        validators=[max_length(SHORT_TEXT_MAX), readable_text],
    )
    attachments = MultipleFileField(_l("Photos, documents or recordings (optional)"))
    consent_contact = BooleanField(_l("A legal-aid volunteer may contact me."))
    consent_statistics = BooleanField(_l("My report may be counted in anonymous statistics."))

    def validate_city(self, field: Field) -> None:
        """The city must belong to the chosen country (or be "another place")."""
        if self.country.data and not vocabulary.is_known_city(self.country.data, field.data):
            raise ValidationError(_l("This city is not in the chosen country."))

    def validate_contact(self, field: Field) -> None:
        """Contact details are only useful (and only kept) with consent to be contacted."""
        if (field.data or "").strip() and not self.consent_contact.data:
            raise ValidationError(
                _l("Tick the box above if you want to be contacted, or leave this empty.")
            )

    def to_draft(self) -> ReportDraft:
        """Return the validated values as a draft for the report service."""
        data: dict[str, Any] = self.data
        return ReportDraft(
            category=data["category"],
            occurred_on=data["occurred_on"],
            date_precision=data["date_precision"],
            country=data["country"],
            city=data["city"],
            place_detail=_clean(data["place_detail"]),
            narrative=_clean(data["narrative"]),
            targeted_person=_clean(data["targeted_person"]),
            perpetrator_type=data["perpetrator_type"],
            perpetrator_description=_clean(data["perpetrator_description"]),
            contact=_clean(data["contact"]),
            consent_contact=bool(data["consent_contact"]),
            consent_statistics=bool(data["consent_statistics"]),
        )


def _clean(value: str | None) -> str:
    """Field data without surrounding whitespace; None becomes ""."""
    return (value or "").strip()


UPLOAD_MESSAGES = {
    "too_large": _l("%(name)s is larger than %(limit)d MB."),
    "too_many": _l("%(name)s was not accepted: at most %(count)d files can be sent at once."),
    "empty": _l("%(name)s is empty."),
    "unknown_type": _l(
        "%(name)s is not a kind of file we accept. Accepted: photos (JPEG, PNG, HEIC, WebP), "
        "PDF, video (MP4, MOV), audio (M4A, AAC, OGG, MP3) and plain text."
    ),
    "image_too_large": _l("%(name)s has too many pixels to be handled safely."),
    "unreadable_image": _l("%(name)s looks like an image but could not be read."),
}


def upload_errors(batch: UploadBatch | None, *, max_files: int, max_bytes: int) -> list[str]:
    """Translated messages for the files of this request that were refused."""
    if batch is None:
        return []
    messages = []
    for upload in batch.problems():
        template = UPLOAD_MESSAGES[upload.problem or "unknown_type"]
        messages.append(
            str(template)
            % {
                "name": upload.filename or gettext("A file"),
                "limit": max_bytes // (1024 * 1024),
                "count": max_files,
            }
        )
    return messages


class ReceiptForm(FlaskForm):
    """The receipt code a witness types to come back."""

    receipt = StringField(
        _l("Your receipt code"),
        validators=[DataRequired(_l("Please type your receipt code.")), Length(max=100)],
    )


class CaseActionForm(FlaskForm):
    """Every follow-up action re-sends the receipt; nothing is kept between requests."""

    receipt = HiddenField(validators=[DataRequired(), Length(max=100)])


class AddInformationForm(CaseActionForm):
    """More text and/or files for an existing report."""

    text = TextAreaField(
        _l("What would you like to add?"), validators=[max_length(NARRATIVE_MAX), readable_text]
    )
    attachments = MultipleFileField(_l("Photos, documents or recordings (optional)"))


class ConsentForm(CaseActionForm):
    """Withdraw consent to statistics and/or to being contacted."""

    withdraw_statistics = BooleanField(_l("Do not count my report in statistics any more."))
    withdraw_contact = BooleanField(_l("Do not contact me any more."))


class DeleteForm(CaseActionForm):
    """Ask for the report to be deleted for good."""

    confirm = BooleanField(
        _l("I understand that my report, my additions and all replies will be deleted for good."),
        validators=[DataRequired(_l("Tick the box to confirm."))],
    )
