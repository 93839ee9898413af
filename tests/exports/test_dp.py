"""P1 noisy counts (``incidents.exports.dp``): the public grid and OpenDP's discrete Laplace noise.

Statistical checks use bounds derived from the declared noise scale, wide enough (about six
standard errors) that a correct implementation fails them with negligible probability, and
narrow enough that missing, doubled or biased noise fails them. Where an exact count is needed
the tests ask for ε = 100, whose noise is non-zero with probability about 10⁻⁴³ per cell.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from incidents import vocabulary
from incidents.exports.dp import Cell, build_grid, country_bucket, noisy_counts
from incidents.exports.periods import Quarter

GROUP_CODES = ["mobility", "liberty", "privacy", "intimidation", "physical"]
YEAR_2025 = [Quarter(2025, number) for number in (1, 2, 3, 4)]
EXACT = {"epsilon": 100.0, "contributions": 1}
"""Parameters whose noise is, for any practical purpose, always zero."""


def quarters(count: int) -> list[Quarter]:
    """``count`` consecutive quarters from 2015Q1."""
    result = [Quarter(2015, 1)]
    while len(result) < count:
        result.append(result[-1].next())
    return result


def discrete_laplace_sd(scale: float) -> float:
    """Standard deviation of the discrete Laplace distribution with this scale."""
    decay = math.exp(-1 / scale)
    return math.sqrt(2 * decay) / (1 - decay)


# --------------------------------------------------------------------------- the grid


def test_grid_is_every_quarter_times_every_group_in_fixed_order() -> None:
    grid = build_grid(YEAR_2025, by_country=False)
    assert [(cell.quarter, cell.group, cell.country) for cell in grid] == [
        (str(quarter), group, None) for quarter in YEAR_2025 for group in GROUP_CODES
    ]


def test_grid_by_country_adds_the_eight_listed_countries_and_other() -> None:
    countries = [*vocabulary.EXPORT_COUNTRIES, "other"]
    assert len(countries) == 9
    grid = build_grid(YEAR_2025, by_country=True)
    assert len(grid) == 4 * 5 * 9
    assert [(cell.quarter, cell.group, cell.country) for cell in grid] == [
        (str(quarter), group, country)
        for quarter in YEAR_2025
        for group in GROUP_CODES
        for country in countries
    ]


def test_grid_cells_have_distinct_keys() -> None:
    grid = build_grid(quarters(40), by_country=True)
    assert len({cell.key for cell in grid}) == len(grid) == 40 * 5 * 9


def test_grid_depends_only_on_the_declared_choices() -> None:
    first = build_grid(YEAR_2025, by_country=True)
    noisy_counts(["2025Q1|mobility|RS"] * 50, grid=first, epsilon=1, contributions=3)
    assert build_grid(YEAR_2025, by_country=True) == first


def test_cell_key_joins_quarter_group_and_country() -> None:
    assert Cell("2025Q1", "privacy").key == "2025Q1|privacy"
    assert Cell("2025Q1", "privacy", "other").key == "2025Q1|privacy|other"


@pytest.mark.parametrize(
    ("country", "bucket"),
    [
        ("RS", "RS"),
        ("RU", "RU"),
        ("DE", "DE"),
        ("FI", "other"),
        ("BY", "other"),
        ("other", "other"),
    ],
)
def test_countries_outside_the_export_list_are_counted_as_other(country: str, bucket: str) -> None:
    assert country_bucket(country) == bucket


# --------------------------------------------------------------------------- noisy_counts


def test_noisy_counts_gives_one_non_negative_int_per_cell() -> None:
    grid = build_grid(YEAR_2025, by_country=True)
    result = noisy_counts(["2025Q2|liberty|GE"] * 5, grid=grid, epsilon=1, contributions=3)
    assert len(result.counts) == len(grid)
    assert all(type(count) is int and count >= 0 for count in result.counts)


def test_counts_land_in_their_own_cells() -> None:
    grid = build_grid(YEAR_2025, by_country=False)
    records = ["2025Q1|mobility"] * 7 + ["2025Q4|physical"] * 3 + ["2025Q2|privacy"]
    result = noisy_counts(records, grid=grid, **EXACT)
    expected = Counter(records)
    assert result.counts == [expected[cell.key] for cell in grid]


def test_records_outside_the_grid_are_not_counted() -> None:
    grid = build_grid(YEAR_2025, by_country=False)
    outside = (
        ["2024Q4|mobility"] * 1000  # another quarter
        + ["2025Q1|unknown"] * 1000  # not a group
        + ["2025Q1|mobility|RS"] * 1000  # a country breakdown that was not declared
        + ["", "2025Q1", "mobility"] * 1000
    )
    result = noisy_counts([*outside, "2025Q3|privacy"], grid=grid, **EXACT)
    assert result.counts == [1 if cell.key == "2025Q3|privacy" else 0 for cell in grid]


@pytest.mark.parametrize(
    ("epsilon", "contributions", "scale", "error_95"),
    [(1, 3, 3.0, 9.4), (1, 1, 1.0, 3.4), (2, 1, 0.5, 1.8)],
)
def test_scale_and_error_match_the_published_figures(
    epsilon: float, contributions: int, scale: float, error_95: float
) -> None:
    grid = build_grid(YEAR_2025, by_country=False)
    result = noisy_counts([], grid=grid, epsilon=epsilon, contributions=contributions)
    assert result.scale == pytest.approx(scale, rel=1e-6)
    assert result.error_95 == pytest.approx(error_95, abs=0.05)
    assert result.contributions == contributions


@pytest.mark.parametrize(("epsilon", "contributions"), [(1, 3), (0.5, 3), (1, 1), (2, 1), (0.1, 2)])
def test_epsilon_reported_spent_is_at_most_the_epsilon_asked(
    epsilon: float, contributions: int
) -> None:
    grid = build_grid(YEAR_2025, by_country=False)
    result = noisy_counts(
        ["2025Q1|mobility"], grid=grid, epsilon=epsilon, contributions=contributions
    )
    assert 0 < result.epsilon <= epsilon
    assert result.epsilon == pytest.approx(epsilon, rel=0.01)


def test_more_contributions_per_person_means_proportionally_more_noise() -> None:
    grid = build_grid(YEAR_2025, by_country=False)
    one = noisy_counts([], grid=grid, epsilon=1, contributions=1)
    three = noisy_counts([], grid=grid, epsilon=1, contributions=3)
    assert three.scale == pytest.approx(3 * one.scale, rel=1e-6)
    assert three.error_95 > one.error_95


@pytest.mark.parametrize(("epsilon", "contributions"), [(0, 3), (-1, 3), (1, 0), (1, -2)])
def test_non_positive_epsilon_or_contributions_are_refused(
    epsilon: float, contributions: int
) -> None:
    grid = build_grid(YEAR_2025, by_country=False)
    with pytest.raises(ValueError, match="positive"):
        noisy_counts([], grid=grid, epsilon=epsilon, contributions=contributions)


def test_the_same_records_twice_draw_fresh_noise() -> None:
    grid = build_grid(YEAR_2025, by_country=False)  # 20 cells
    records = [cell.key for cell in grid for _ in range(100)]  # far from the clamp at 0
    first = noisy_counts(records, grid=grid, epsilon=1, contributions=3).counts
    second = noisy_counts(records, grid=grid, epsilon=1, contributions=3).counts
    # With scale 3 two draws of one cell agree with probability about 0.08; all 20 about 1e-22.
    assert first != second


def test_noise_is_unbiased_and_of_the_declared_spread() -> None:
    grid = build_grid(quarters(40), by_country=False)  # 200 cells
    true_count = 1000  # so far from 0 that clamping never happens
    records = [cell.key for cell in grid for _ in range(true_count)]
    result = noisy_counts(records, grid=grid, epsilon=1, contributions=3)
    errors = [count - true_count for count in result.counts]
    sd = discrete_laplace_sd(result.scale)
    mean = sum(errors) / len(errors)
    assert abs(mean) < 6 * sd / math.sqrt(len(errors))
    # The sample variance of 200 Laplace draws has a relative standard error of about 16 %:
    # a factor of four either way is more than six standard errors, yet catches noise that is
    # missing or drawn at the wrong scale.
    variance = sum((error - mean) ** 2 for error in errors) / (len(errors) - 1)
    assert sd**2 / 4 < variance < sd**2 * 4


def test_with_no_records_every_count_is_clamped_at_zero_or_above() -> None:
    grid = build_grid(quarters(40), by_country=False)
    result = noisy_counts([], grid=grid, epsilon=1, contributions=3)
    assert min(result.counts) == 0
    # Noise around 0 is negative about 42 % of the time: clamping makes those cells 0.
    assert result.counts.count(0) >= len(grid) // 5
