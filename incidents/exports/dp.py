"""P1: differentially private counts over a complete public grid, with OpenDP.

The grid is declared from public choices only (the quarters asked for, the five category groups,
optionally the fixed list of export countries plus "other"), never from the data. Each report
in range becomes one record naming its cell; OpenDP counts records per cell and adds discrete
Laplace noise whose scale is searched so that the measurement is ε-DP for a change of up to
``contributions`` records (one person filing that many reports). Negative noisy counts are
clamped to zero afterwards, which is post-processing and costs no privacy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from incidents import vocabulary
from incidents.exports.periods import Quarter

ALPHA = 0.05
"""The error bound published with each export holds with probability 1 - ALPHA (95 %)."""


@dataclass(frozen=True)
class Cell:
    """One cell of the grid."""

    quarter: str
    group: str
    country: str | None = None

    @property
    def key(self) -> str:
        """The record value OpenDP counts for this cell."""
        return "|".join(part for part in (self.quarter, self.group, self.country) if part)


def country_bucket(country: str) -> str:
    """The country as exports show it: one of the fixed export countries, else "other"."""
    return country if country in vocabulary.EXPORT_COUNTRIES else vocabulary.OTHER


def build_grid(quarters: Sequence[Quarter], *, by_country: bool) -> list[Cell]:
    """Every cell of the declared grid, in a fixed order (quarter, group, country)."""
    countries: list[str | None] = (
        [*vocabulary.EXPORT_COUNTRIES, vocabulary.OTHER] if by_country else [None]
    )
    return [
        Cell(str(quarter), group.code, country)
        for quarter in quarters
        for group in vocabulary.GROUPS
        for country in countries
    ]


@dataclass(frozen=True)
class NoisyCounts:
    """The published numbers and the parameters a reader needs to judge them."""

    counts: list[int]
    epsilon: float
    scale: float
    error_95: float
    contributions: int


def _measurement(grid_keys: list[str], scale: float) -> Any:
    """Count records per grid cell, then add discrete Laplace noise of ``scale``."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = (dp.vector_domain(dp.atom_domain(T=str)), dp.symmetric_distance())
    return (
        space
        >> dp.t.then_count_by_categories(categories=grid_keys, null_category=False)
        >> dp.m.then_laplace(scale)
    )


def noisy_counts(
    records: Sequence[str], *, grid: Sequence[Cell], epsilon: float, contributions: int
) -> NoisyCounts:
    """Noisy counts of ``records`` (cell keys) for every cell of ``grid``, ε-DP per person."""
    import opendp.prelude as dp

    if epsilon <= 0 or contributions < 1:
        raise ValueError("ε must be positive and contributions at least 1")
    keys = [cell.key for cell in grid]
    scale = float(
        dp.binary_search_param(lambda s: _measurement(keys, s), d_in=contributions, d_out=epsilon)
    )
    measurement = _measurement(keys, scale)
    spent = float(measurement.map(contributions))
    if spent > epsilon + 1e-9:
        raise RuntimeError("OpenDP reported a larger ε than was asked for")
    released = measurement(list(records))
    return NoisyCounts(
        counts=[max(0, int(value)) for value in released],
        epsilon=spent,
        scale=scale,
        error_95=float(dp.discrete_laplacian_scale_to_accuracy(scale, alpha=ALPHA)),
        contributions=contributions,
    )
