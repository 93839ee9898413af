"""P2 generalized timeline (``incidents.exports.timeline``): ladders, search and guarantees.

The property tests recompute equivalence classes from the published rows alone, so they check
what a partner receiving the table could check, not the module's own bookkeeping.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from incidents import vocabulary
from incidents.exports.timeline import (
    COLUMNS,
    REGION_OF_COUNTRY,
    REGIONS,
    Generalization,
    IncidentRow,
    Timeline,
    TimelineInputError,
    TimelineRow,
    anonymize_timeline,
    generalize_area,
    generalize_category,
    generalize_period,
    half_year_of,
    region_of,
    search_order,
    vocabulary_of_column,
    year_of,
)

GROUP_CODES = {"mobility", "liberty", "privacy", "intimidation", "physical"}
REGION_CODES = {
    "balkans",
    "caucasus",
    "central_asia",
    "eu",
    "middle_east",
    "russia_belarus",
    "other",
}
PERPETRATORS = ("home_state", "host_state", "pro_regime", "unknown")
FINEST = Generalization(0, 0, 0)
COARSEST = Generalization(2, 2, 1)

PERIOD_PATTERNS = (
    re.compile(r"\d{4}Q[1-4]"),
    re.compile(r"\d{4}H[12]"),
    re.compile(r"\d{4}"),
)
AREA_VALUES = (
    {*vocabulary.EXPORT_COUNTRIES, "other"},
    REGION_CODES,
    {"all"},
)
CATEGORY_VALUES = (GROUP_CODES, {"all"})


def make_rows(
    count: int,
    *,
    quarter: str = "2025Q1",
    country: str = "RS",
    category: str = "deportation",
    perpetrators: Sequence[str] = ("home_state", "host_state"),
) -> list[IncidentRow]:
    """``count`` incidents alike but for the perpetrator type, which cycles through the list."""
    return [
        IncidentRow(quarter, country, category, perpetrators[index % len(perpetrators)])
        for index in range(count)
    ]


def generalized_classes(
    incidents: Iterable[IncidentRow], node: Generalization
) -> dict[tuple[str, str, str], list[str]]:
    """Perpetrator types of the incidents, grouped by their quasi-identifiers at ``node``."""
    classes: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for row in incidents:
        qi = (
            generalize_period(row.quarter, node.period),
            generalize_area(row.country, node.area),
            generalize_category(row.category, node.category),
        )
        classes[qi].append(row.perpetrator_type)
    return classes


def suppressed_at(incidents: Sequence[IncidentRow], node: Generalization, k: int, l: int) -> int:  # noqa: E741
    """How many incidents fall in classes below k rows or l perpetrator types at ``node``."""
    return sum(
        len(types)
        for types in generalized_classes(incidents, node).values()
        if len(types) < k or len(set(types)) < l
    )


def published_classes(rows: Sequence[TimelineRow]) -> dict[tuple[str, str, str], list[str]]:
    """Equivalence classes of a published table, recomputed from its rows alone."""
    classes: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for row in rows:
        classes[(row.period, row.area, row.category_group)].append(row.perpetrator_type)
    return classes


def assert_guarantees(result: Timeline, incidents: Sequence[IncidentRow]) -> None:
    """Everything P2 promises about a result, checked from the outside."""
    assert result.total == len(incidents)
    if result.is_empty:
        assert result.reason
        assert result.generalization is None
        assert result.suppressed == result.total
        assert result.total == 0 or all(
            suppressed_at(incidents, node, result.k, result.l)
            > result.max_suppression * len(incidents)
            for node in search_order()
        )
        return
    node = result.generalization
    assert node is not None
    assert result.reason is None
    classes = published_classes(result.rows)
    assert all(len(types) >= result.k for types in classes.values())
    assert all(len(set(types)) >= result.l for types in classes.values())
    assert result.smallest_class == min(len(types) for types in classes.values())
    assert result.fewest_perpetrator_types == min(len(set(t)) for t in classes.values())
    assert result.suppressed <= result.max_suppression * result.total
    assert len(result.rows) + result.suppressed == result.total
    assert list(result.rows) == sorted(result.rows)
    for row in result.rows:
        assert PERIOD_PATTERNS[node.period].fullmatch(row.period)
        assert row.area in AREA_VALUES[node.area]
        assert row.category_group in CATEGORY_VALUES[node.category]
        assert row.perpetrator_type in PERPETRATORS


# --------------------------------------------------------------------------- the ladders


@pytest.mark.parametrize(
    ("quarter", "half_year", "year"),
    [
        ("2025Q1", "2025H1", "2025"),
        ("2025Q2", "2025H1", "2025"),
        ("2025Q3", "2025H2", "2025"),
        ("2024Q4", "2024H2", "2024"),
    ],
)
def test_period_ladder_climbs_quarter_half_year_year(
    quarter: str, half_year: str, year: str
) -> None:
    assert half_year_of(quarter) == half_year
    assert year_of(quarter) == year
    assert [generalize_period(quarter, level) for level in (0, 1, 2)] == [quarter, half_year, year]


@pytest.mark.parametrize(
    "bad", ["2025-03", "2025-W11", "2025Q5", "2025q1", "2025Q1\n", "0000Q1", ""]
)
def test_period_ladder_rejects_anything_but_a_quarter(bad: str) -> None:
    with pytest.raises(TimelineInputError):
        generalize_period(bad, 0)


@pytest.mark.parametrize(
    ("country", "ladder"),
    [
        ("RS", ["RS", "balkans", "all"]),
        ("ME", ["ME", "balkans", "all"]),
        ("KZ", ["KZ", "central_asia", "all"]),
        ("KG", ["other", "central_asia", "all"]),
        ("CY", ["other", "middle_east", "all"]),
        ("FR", ["other", "eu", "all"]),
        ("BY", ["other", "russia_belarus", "all"]),
        ("GB", ["other", "other", "all"]),
        ("other", ["other", "other", "all"]),
    ],
)
def test_area_ladder_climbs_country_region_all(country: str, ladder: list[str]) -> None:
    assert [generalize_area(country, level) for level in (0, 1, 2)] == ladder


def test_area_ladder_keeps_only_the_export_countries_at_country_level() -> None:
    shown = {generalize_area(country.code, 0) for country in vocabulary.COUNTRIES}
    assert shown == {*vocabulary.EXPORT_COUNTRIES, "other"}


def test_every_country_of_the_vocabulary_has_a_published_region() -> None:
    assert set(REGION_OF_COUNTRY) == {country.code for country in vocabulary.COUNTRIES}
    assert {term.code for term in REGIONS} == REGION_CODES
    assert {region_of(country.code) for country in vocabulary.COUNTRIES} == REGION_CODES


def test_area_ladder_rejects_an_unknown_country() -> None:
    with pytest.raises(TimelineInputError, match="unknown country"):
        generalize_area("XX", 1)


@pytest.mark.parametrize("category", vocabulary.CATEGORIES, ids=lambda c: c.code)
def test_category_ladder_publishes_the_group_never_the_category(
    category: vocabulary.Category,
) -> None:
    assert generalize_category(category.code, 0) == category.group
    assert generalize_category(category.code, 1) == "all"


def test_category_ladder_rejects_an_unknown_category() -> None:
    with pytest.raises(TimelineInputError, match="unknown category"):
        generalize_category("mobility", 0)  # a group is not a category


@pytest.mark.parametrize("level", [-1, 3])
def test_a_level_off_the_ladder_raises(level: int) -> None:
    with pytest.raises(TimelineInputError):
        generalize_period("2025Q1", level)


# --------------------------------------------------------------------------- search order


def test_search_order_visits_the_whole_lattice_once_by_increasing_height() -> None:
    order = search_order()
    assert len(order) == len(set(order)) == 3 * 3 * 2
    assert [node.height for node in order] == sorted(node.height for node in order)
    assert order[0] == FINEST
    assert order[-1] == COARSEST


def test_search_order_gives_up_area_before_period_before_category() -> None:
    assert [str(node) for node in search_order()[:4]] == [
        "quarter × country × group",
        "quarter × region × group",
        "half_year × country × group",
        "quarter × country × all",
    ]


# --------------------------------------------------------------------------- the search


def test_finest_level_is_kept_when_it_already_satisfies_k_and_l() -> None:
    incidents = [
        *make_rows(10, quarter="2025Q1", country="RS"),
        *make_rows(12, quarter="2025Q2", country="DE", category="surveillance"),
    ]
    result = anonymize_timeline(incidents)
    assert result.generalization == FINEST
    assert result.suppressed == 0
    assert result.smallest_class == 10
    assert result.fewest_perpetrator_types == 2
    assert Counter(row.area for row in result.rows) == {"RS": 10, "DE": 12}
    assert_guarantees(result, incidents)


def test_countries_too_small_alone_are_merged_into_their_region() -> None:
    incidents = [*make_rows(6, country="RS"), *make_rows(6, country="ME")]
    result = anonymize_timeline(incidents)
    assert result.generalization == Generalization(period=0, area=1, category=0)
    assert {row.as_tuple()[:3] for row in result.rows} == {("2025Q1", "balkans", "mobility")}
    assert result.smallest_class == 12
    assert_guarantees(result, incidents)


def test_quarters_too_small_alone_are_merged_into_half_years() -> None:
    incidents = [*make_rows(6, quarter="2025Q1"), *make_rows(6, quarter="2025Q2")]
    result = anonymize_timeline(incidents)  # RS alone in the Balkans: the region does not help
    assert result.generalization == Generalization(period=1, area=0, category=0)
    assert {row.period for row in result.rows} == {"2025H1"}


def test_a_small_class_is_suppressed_when_within_the_limit() -> None:
    incidents = [*make_rows(40, country="RS"), *make_rows(9, country="ME")]
    result = anonymize_timeline(incidents)  # 9 of 49 is 18 %
    assert result.generalization == FINEST
    assert result.suppressed == 9
    assert {row.area for row in result.rows} == {"RS"}
    assert_guarantees(result, incidents)


def test_a_class_with_one_perpetrator_type_is_not_published() -> None:
    incidents = [
        *make_rows(40, country="RS"),
        *make_rows(11, country="ME", perpetrators=["unknown"]),
    ]
    result = anonymize_timeline(incidents)  # 11 of 51 is over 20 %: merge ME into the Balkans
    assert result.generalization == Generalization(period=0, area=1, category=0)
    assert result.suppressed == 0
    assert_guarantees(result, incidents)


def test_suppression_beyond_the_limit_forces_generalization_not_a_larger_loss() -> None:
    incidents = [*make_rows(40, country="RS"), *make_rows(11, country="ME")]
    finer = anonymize_timeline(incidents, k=12)  # ME alone (11) is 21.6 %: too much to drop
    assert finer.generalization == Generalization(period=0, area=1, category=0)
    assert finer.suppressed == 0


def test_k_and_l_are_configurable() -> None:
    incidents = [*make_rows(6, country="RS"), *make_rows(6, country="ME")]
    assert anonymize_timeline(incidents, k=5).generalization == FINEST
    two_types = make_rows(30, perpetrators=PERPETRATORS[:2])
    assert anonymize_timeline(two_types, l=3).is_empty
    assert anonymize_timeline(two_types, l=2).generalization == FINEST


def test_max_suppression_is_configurable() -> None:
    incidents = [*make_rows(40, country="RS"), *make_rows(9, country="ME")]
    strict = anonymize_timeline(incidents, max_suppression=0.0)
    assert strict.generalization == Generalization(period=0, area=1, category=0)
    assert strict.suppressed == 0


def test_the_chosen_generalization_is_the_first_that_qualifies() -> None:
    rng = random.Random(6)  # noqa: S311 - synthetic data, not secrets
    countries = [country.code for country in vocabulary.COUNTRIES]
    for _ in range(20):
        incidents = [
            IncidentRow(
                f"{rng.choice((2024, 2025))}Q{rng.randint(1, 4)}",
                rng.choice(countries[: rng.randint(2, len(countries))]),
                rng.choice(vocabulary.CATEGORIES).code,
                rng.choice(PERPETRATORS),
            )
            for _ in range(rng.randint(50, 1500))
        ]
        result = anonymize_timeline(incidents)
        limit = 0.2 * len(incidents)
        qualifying = [
            node for node in search_order() if suppressed_at(incidents, node, 10, 2) <= limit
        ]
        assert result.generalization == (qualifying[0] if qualifying else None)
        if qualifying:
            assert result.suppressed == suppressed_at(incidents, qualifying[0], 10, 2)
        assert_guarantees(result, incidents)


def test_too_few_incidents_publish_nothing_and_say_why() -> None:
    incidents = make_rows(9)
    result = anonymize_timeline(incidents)
    assert result.is_empty
    assert result.rows == ()
    assert result.generalization is None
    assert result.suppressed == 9
    assert result.smallest_class is None
    assert result.reason is not None
    assert "too few incidents" in result.reason
    assert "P1" in result.reason


def test_no_incidents_publish_nothing_and_say_why() -> None:
    result = anonymize_timeline([])
    assert result.is_empty
    assert result.total == result.suppressed == 0
    assert result.reason == "there are no incidents to publish"


@pytest.mark.parametrize(
    "row",
    [
        IncidentRow("2025-03", "RS", "threat", "unknown"),
        IncidentRow("2025Q1", "XX", "threat", "unknown"),
        IncidentRow("2025Q1", "RS", "poetry", "unknown"),
        IncidentRow("2025Q1", "RS", "threat", "neighbour"),
    ],
)
def test_a_row_outside_the_vocabulary_raises(row: IncidentRow) -> None:
    with pytest.raises(TimelineInputError):
        anonymize_timeline([*make_rows(20), row])


@pytest.mark.parametrize(
    "parameters",
    [{"k": 0}, {"l": 0}, {"max_suppression": -0.1}, {"max_suppression": 1.0}],
)
def test_parameters_out_of_range_raise(parameters: dict[str, float]) -> None:
    with pytest.raises(TimelineInputError):
        anonymize_timeline(make_rows(20), **parameters)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- what is published


def test_published_rows_hold_only_the_quasi_identifiers_and_the_perpetrator_type() -> None:
    assert [field.name for field in dataclasses.fields(TimelineRow)] == list(COLUMNS)
    assert COLUMNS == ("period", "area", "category_group", "perpetrator_type")
    row = anonymize_timeline(make_rows(10)).rows[0]
    assert row.as_record() == {
        "period": "2025Q1",
        "area": "RS",
        "category_group": "mobility",
        "perpetrator_type": "home_state",
    }


def test_row_order_does_not_depend_on_input_order() -> None:
    rng = random.Random(2)  # noqa: S311 - synthetic data, not secrets
    incidents = [
        *make_rows(15, country="DE", perpetrators=PERPETRATORS),
        *make_rows(15, country="RS", category="threat", perpetrators=PERPETRATORS[1:]),
        *make_rows(15, quarter="2024Q4", perpetrators=PERPETRATORS[::-1]),
    ]
    expected = anonymize_timeline(incidents).rows
    for _ in range(5):
        rng.shuffle(incidents)
        assert anonymize_timeline(incidents).rows == expected
    assert list(expected) == sorted(expected)


def test_a_realistic_small_register_is_generalized_beyond_the_finest_level() -> None:
    # Given 400 incidents over 24 months in 8 cities (FACTS: at quarter level, k = 1)
    rng = random.Random(400)  # noqa: S311 - synthetic data, not secrets
    # Belgrade, Novi Sad, Podgorica, Tbilisi, Yerevan, Almaty, Istanbul, Berlin
    cities = ["RS", "RS", "ME", "GE", "AM", "KZ", "TR", "DE"]
    incidents = [
        IncidentRow(
            f"{2023 + month // 12}Q{month % 12 // 3 + 1}",
            rng.choice(cities),
            rng.choice(vocabulary.CATEGORIES).code,
            rng.choice(PERPETRATORS),
        )
        for month in (rng.randrange(24) for _ in range(400))
    ]
    finest = generalized_classes(incidents, FINEST)
    assert min(len(types) for types in finest.values()) < 3
    # When the timeline is computed
    result = anonymize_timeline(incidents)
    # Then it climbed at least one ladder and still keeps k and l
    assert result.generalization is not None
    assert result.generalization != FINEST
    assert result.generalization.height >= 1
    assert_guarantees(result, incidents)


# --------------------------------------------------------------------------- properties

QUARTERS = [f"{year}Q{number}" for year in (2023, 2024, 2025) for number in (1, 2, 3, 4)]
COUNTRY_CODES = [country.code for country in vocabulary.COUNTRIES]
CATEGORY_CODES = [category.code for category in vocabulary.CATEGORIES]


@st.composite
def registers(draw: st.DrawFn) -> list[IncidentRow]:
    """Random registers: sometimes spread thin over the vocabulary, sometimes concentrated."""
    quarters = draw(st.lists(st.sampled_from(QUARTERS), min_size=1, max_size=12, unique=True))
    countries = draw(st.lists(st.sampled_from(COUNTRY_CODES), min_size=1, unique=True))
    categories = draw(st.lists(st.sampled_from(CATEGORY_CODES), min_size=1, unique=True))
    perpetrators = draw(
        st.lists(st.sampled_from(PERPETRATORS), min_size=1, max_size=4, unique=True)
    )
    place_and_kind = st.tuples(
        st.sampled_from(quarters), st.sampled_from(countries), st.sampled_from(categories)
    )
    # Incidents come in runs sharing period, place and kind, so classes of k and more are common.
    runs = draw(
        st.lists(
            st.tuples(place_and_kind, st.lists(st.sampled_from(perpetrators), max_size=30)),
            max_size=40,
        )
    )
    return [IncidentRow(*run, perpetrator) for run, types in runs for perpetrator in types]


@settings(max_examples=150, deadline=None)
@given(incidents=registers())
def test_every_published_class_has_k_rows_and_l_perpetrator_types(
    incidents: list[IncidentRow],
) -> None:
    assert_guarantees(anonymize_timeline(incidents), incidents)


@settings(max_examples=60, deadline=None)
@given(
    incidents=registers(),
    k=st.integers(min_value=1, max_value=25),
    l=st.integers(min_value=1, max_value=4),
    max_suppression=st.sampled_from([0.0, 0.05, 0.2, 0.5]),
)
def test_guarantees_hold_for_any_parameters(
    incidents: list[IncidentRow],
    k: int,
    l: int,  # noqa: E741
    max_suppression: float,
) -> None:
    result = anonymize_timeline(incidents, k=k, l=l, max_suppression=max_suppression)
    assert (result.k, result.l, result.max_suppression) == (k, l, max_suppression)
    assert_guarantees(result, incidents)


@settings(max_examples=60, deadline=None)
@given(incidents=registers())
def test_published_rows_are_the_generalized_incidents_of_the_kept_classes(
    incidents: list[IncidentRow],
) -> None:
    result = anonymize_timeline(incidents)
    if result.generalization is None:
        return
    expected = [
        TimelineRow(*qi, perpetrator)
        for qi, types in generalized_classes(incidents, result.generalization).items()
        if len(types) >= 10 and len(set(types)) >= 2
        for perpetrator in types
    ]
    assert list(result.rows) == sorted(expected)


def test_the_published_vocabulary_of_each_column_is_declared() -> None:
    assert vocabulary_of_column("area") == set().union(*AREA_VALUES)
    assert vocabulary_of_column("category_group") == set().union(*CATEGORY_VALUES)
    assert vocabulary_of_column("perpetrator_type") == set(PERPETRATORS)
    assert vocabulary_of_column("period") is None  # a pattern per level, see PERIOD_PATTERNS
    with pytest.raises(KeyError):
        vocabulary_of_column("city")
