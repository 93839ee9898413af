"""Controlled vocabulary: categories and their export groups, precisions, perpetrator types, places.

Data, not code paths. Labels are English source strings marked with ``N_`` for extraction; they
are translated where they are shown (``_(label)`` in templates), so this module needs no Flask.
Mappings to HURIDOCS act types and ACLED event types are documented in ``docs/vocabulary.md``.
"""

from __future__ import annotations

from dataclasses import dataclass


def N_(text: str) -> str:
    """Mark a string for translation without translating it here."""
    return text


@dataclass(frozen=True)
class Term:
    """One vocabulary entry: a stable code stored in the database and an English label."""

    code: str
    label: str


@dataclass(frozen=True)
class Category(Term):
    """A primary incident category and the export group it belongs to."""

    group: str


GROUPS: tuple[Term, ...] = (
    Term("mobility", N_("Mobility")),
    Term("liberty", N_("Liberty")),
    Term("privacy", N_("Privacy")),
    Term("intimidation", N_("Intimidation")),
    Term("physical", N_("Physical")),
)

CATEGORIES: tuple[Category, ...] = (
    Category("deportation", N_("Deportation or extradition"), "mobility"),
    Category("entry_denial", N_("Entry denial"), "mobility"),
    Category("document_denial", N_("Document denial"), "mobility"),
    Category("detention", N_("Detention"), "liberty"),
    Category("abduction", N_("Abduction or rendition"), "liberty"),
    Category("interrogation", N_("Interrogation or summons"), "liberty"),
    Category("legal_harassment", N_("Legal harassment"), "liberty"),
    Category("surveillance", N_("Surveillance"), "privacy"),
    Category("digital_intrusion", N_("Digital intrusion"), "privacy"),
    Category("doxxing", N_("Doxxing"), "privacy"),
    Category("threat", N_("Threat"), "intimidation"),
    Category("pressure_relatives", N_("Pressure on relatives"), "intimidation"),
    Category("pressure_employer", N_("Pressure on employer or landlord"), "intimidation"),
    Category("recruitment", N_("Recruitment attempt"), "intimidation"),
    Category("smear", N_("Smear or online harassment"), "intimidation"),
    Category("property_economic", N_("Property or economic pressure"), "intimidation"),
    Category("other", N_("Other"), "intimidation"),
    Category("assault", N_("Assault"), "physical"),
    Category("rally_disruption", N_("Rally disruption or provocation"), "physical"),
)

DATE_PRECISIONS: tuple[Term, ...] = (
    Term("day", N_("I know the exact day")),
    Term("week", N_("I know the week")),
    Term("month", N_("I know the month")),
    Term("estimate", N_("It is an estimate")),
)

DATE_PRECISIONS_SHORT: tuple[Term, ...] = (
    Term("day", N_("exact day")),
    Term("week", N_("week")),
    Term("month", N_("month")),
    Term("estimate", N_("estimate")),
)
"""The same precisions as staff read them (the witness labels speak in the first person)."""

PERPETRATOR_TYPES: tuple[Term, ...] = (
    Term("home_state", N_("Agent of the home state")),
    Term("host_state", N_("Authority of the host country")),
    Term("pro_regime", N_("Pro-regime non-state actor")),
    Term("unknown", N_("Unknown")),
)

STATUSES: tuple[Term, ...] = (
    Term("new", N_("New")),
    Term("triaged", N_("Triaged")),
    Term("assigned", N_("Assigned")),
    Term("in_progress", N_("In progress")),
    Term("closed", N_("Closed")),
    Term("duplicate", N_("Duplicate")),
    Term("rejected", N_("Rejected")),
)
"""Case statuses: new → triaged → assigned → in progress → closed, plus duplicate and rejected."""

STATUS_CODES = frozenset(term.code for term in STATUSES)

OTHER = "other"
"""Code of the "other" country and the "other" city of any country."""


@dataclass(frozen=True)
class Country(Term):
    """A country where incidents are recorded, with the cities listed for it."""

    cities: tuple[Term, ...]


COUNTRIES: tuple[Country, ...] = (
    Country(
        "RS",
        N_("Serbia"),
        (
            Term("belgrade", N_("Belgrade")),
            Term("novi_sad", N_("Novi Sad")),
            Term("nis", N_("Niš")),
        ),
    ),
    Country(
        "ME",
        N_("Montenegro"),
        (
            Term("podgorica", N_("Podgorica")),
            Term("budva", N_("Budva")),
            Term("bar", N_("Bar")),
            Term("herceg_novi", N_("Herceg Novi")),
        ),
    ),
    Country("GE", N_("Georgia"), (Term("tbilisi", N_("Tbilisi")), Term("batumi", N_("Batumi")))),
    Country("AM", N_("Armenia"), (Term("yerevan", N_("Yerevan")), Term("gyumri", N_("Gyumri")))),
    Country("KZ", N_("Kazakhstan"), (Term("almaty", N_("Almaty")), Term("astana", N_("Astana")))),
    Country("KG", N_("Kyrgyzstan"), (Term("bishkek", N_("Bishkek")),)),
    Country("UZ", N_("Uzbekistan"), (Term("tashkent", N_("Tashkent")),)),
    Country(
        "TR",
        N_("Turkey"),
        (Term("istanbul", N_("Istanbul")), Term("antalya", N_("Antalya"))),
    ),
    Country("CY", N_("Cyprus"), (Term("limassol", N_("Limassol")), Term("nicosia", N_("Nicosia")))),
    Country("IL", N_("Israel"), (Term("tel_aviv", N_("Tel Aviv")), Term("haifa", N_("Haifa")))),
    Country("AE", N_("United Arab Emirates"), (Term("dubai", N_("Dubai")),)),
    Country("TH", N_("Thailand"), (Term("bangkok", N_("Bangkok")), Term("phuket", N_("Phuket")))),
    Country("ID", N_("Indonesia"), (Term("bali", N_("Bali")),)),
    Country("DE", N_("Germany"), (Term("berlin", N_("Berlin")), Term("munich", N_("Munich")))),
    Country("PL", N_("Poland"), (Term("warsaw", N_("Warsaw")),)),
    Country("CZ", N_("Czechia"), (Term("prague", N_("Prague")),)),
    Country("LV", N_("Latvia"), (Term("riga", N_("Riga")),)),
    Country("LT", N_("Lithuania"), (Term("vilnius", N_("Vilnius")),)),
    Country("EE", N_("Estonia"), (Term("tallinn", N_("Tallinn")),)),
    Country("FI", N_("Finland"), (Term("helsinki", N_("Helsinki")),)),
    Country("FR", N_("France"), (Term("paris", N_("Paris")),)),
    Country("GB", N_("United Kingdom"), (Term("london", N_("London")),)),
    Country("NL", N_("Netherlands"), (Term("amsterdam", N_("Amsterdam")),)),
    Country(
        "RU",
        N_("Russia"),
        (Term("moscow", N_("Moscow")), Term("st_petersburg", N_("Saint Petersburg"))),
    ),
    Country("BY", N_("Belarus"), (Term("minsk", N_("Minsk")),)),
    Country(OTHER, N_("Another country"), ()),
)

OTHER_CITY = Term(OTHER, N_("Another place or I prefer not to say"))
OTHER_CITY_SHORT = Term(OTHER, N_("other or not given"))
"""The "other" city as staff read it."""

EXPORT_COUNTRIES = ("RS", "ME", "GE", "AM", "KZ", "TR", "DE", "RU")
"""Countries that exports may break out on their own (a public, fixed choice: where the diaspora
is large enough); every other country is counted under ``OTHER``."""

CATEGORY_BY_CODE = {category.code: category for category in CATEGORIES}
COUNTRY_BY_CODE = {country.code: country for country in COUNTRIES}
PERPETRATOR_CODES = frozenset(term.code for term in PERPETRATOR_TYPES)


def cities_of(country_code: str) -> tuple[Term, ...]:
    """Return the listed cities of a country followed by the "other" city."""
    country = COUNTRY_BY_CODE.get(country_code)
    listed = country.cities if country else ()
    return (*listed, OTHER_CITY)


def is_known_city(country_code: str, city_code: str) -> bool:
    """True if ``city_code`` is a listed city of ``country_code`` or the "other" city."""
    return any(city.code == city_code for city in cities_of(country_code))


def geo_precision(country_code: str, city_code: str) -> str:
    """Return "city", "country" or "none": how precisely the shell locates an incident."""
    if country_code == OTHER:
        return "none"
    return "country" if city_code == OTHER else "city"
