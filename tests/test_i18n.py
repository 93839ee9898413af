"""Language selection and translation of domain errors."""

from flask import Flask

from incidents.i18n import translated
from incidents.services.errors import DomainError
from incidents.vocabulary import N_


def test_a_domain_error_is_shown_in_the_request_language(app: Flask) -> None:
    error = DomainError(N_("The password must have at least %(min)d characters."), min=12)
    assert str(error) == "The password must have at least 12 characters."
    with app.test_request_context("/staff/login?lang=ru"):
        assert translated(error) == "Пароль должен содержать не менее 12 символов."
    with app.test_request_context("/staff/login?lang=sr"):
        assert translated(error) == "Lozinka mora imati najmanje 12 znakova."


def test_the_chosen_language_survives_login(app: Flask) -> None:
    from tests.factories import login, make_user

    client = app.test_client()
    client.get("/staff/login?lang=sr")
    organizer = make_user(app, role="organizer")
    assert login(client, organizer).status_code == 302
    page = client.get("/staff/reports").get_data(as_text=True)
    assert '<html lang="sr-Latn">' in page
