"""P2: the generalized timeline, one row per incident, k-anonymous and l-diverse.

The input is one :class:`IncidentRow` per countable report whose witness consented to statistics
(the caller filters). Each row is reduced to three quasi-identifiers and one sensitive attribute,
and the quasi-identifiers are generalized along fixed public ladders, finest first:

* period: quarter ("2025Q1") → half-year ("2025H1") → year ("2025");
* area: country (one of ``vocabulary.EXPORT_COUNTRIES``, every other country is ``"other"``) →
  region (:data:`REGION_OF_COUNTRY`, below) → ``"all"``;
* category: category group (never the individual category) → ``"all"``;
* sensitive attribute, published as is: the perpetrator type.

Guarantees of :func:`anonymize_timeline`:

* Every published row holds exactly ``period``, ``area``, ``category_group`` and
  ``perpetrator_type``, each a code from the controlled vocabulary of this module; there are no
  ids, exact dates, timestamps, cities or free text.
* Every equivalence class (rows sharing period, area and category group) has at least ``k`` rows
  and at least ``l`` distinct perpetrator types (distinct l-diversity). Rows of classes that fall
  short are suppressed whole, and at most ``max_suppression`` of the rows are suppressed; if no
  generalization achieves that, nothing is published and the result says why.
* The whole table uses one generalization, the first of a fixed public search order (least
  total generalization first, see :func:`search_order`) that satisfies the above.
* Rows are sorted lexicographically, so their order says nothing about when a report arrived.

What it does not guarantee: k-anonymity does not hide *that* an incident was reported from
someone who knows the incident (the perpetrator does). That is why P2 goes to vetted partners
only and P1 (differential privacy) is the default product. The chosen generalization depends on
the data, as in every k-anonymization; two P2 exports of overlapping data at different levels can
be differenced, so the service should not release overlapping periods at different levels.

Nothing here imports from the web layer or touches the database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from incidents import vocabulary
from incidents.exports.periods import QUARTER_PATTERN

ALL = "all"
"""The top of the area and category ladders: the quasi-identifier is not published."""

PERIOD_LEVELS = ("quarter", "half_year", "year")
AREA_LEVELS = ("country", "region", ALL)
CATEGORY_LEVELS = ("group", ALL)

COLUMNS = ("period", "area", "category_group", "perpetrator_type")
"""The published columns, in order: three quasi-identifiers and the sensitive attribute."""

QUASI_IDENTIFIERS = COLUMNS[:3]
SENSITIVE_ATTRIBUTE = COLUMNS[3]

REGIONS: tuple[vocabulary.Term, ...] = (
    vocabulary.Term("balkans", vocabulary.N_("Balkans")),
    vocabulary.Term("caucasus", vocabulary.N_("Caucasus")),
    vocabulary.Term("central_asia", vocabulary.N_("Central Asia")),
    vocabulary.Term("eu", vocabulary.N_("European Union")),
    vocabulary.Term("middle_east", vocabulary.N_("Middle East")),
    vocabulary.Term("russia_belarus", vocabulary.N_("Russia and Belarus")),
    vocabulary.Term(vocabulary.OTHER, vocabulary.N_("Elsewhere")),
)
"""Regions published at the middle rung of the area ladder (a fixed, public choice)."""

REGION_OF_COUNTRY: dict[str, str] = {
    "RS": "balkans",
    "ME": "balkans",
    "GE": "caucasus",
    "AM": "caucasus",
    "KZ": "central_asia",
    "KG": "central_asia",
    "UZ": "central_asia",
    "DE": "eu",
    "PL": "eu",
    "CZ": "eu",
    "LV": "eu",
    "LT": "eu",
    "EE": "eu",
    "FI": "eu",
    "FR": "eu",
    "NL": "eu",
    "TR": "middle_east",
    "CY": "middle_east",
    "IL": "middle_east",
    "AE": "middle_east",
    "RU": "russia_belarus",
    "BY": "russia_belarus",
    "GB": vocabulary.OTHER,
    "TH": vocabulary.OTHER,
    "ID": vocabulary.OTHER,
    vocabulary.OTHER: vocabulary.OTHER,
}
"""The region of every country of ``vocabulary.COUNTRIES``, taken from the stored country (not
from its export bucket): a country such as Cyprus that exports show as "other" at country level
is shown in its region one rung up. Each export uses one rung for all rows, so k and l hold."""

DEFAULT_K = 10
DEFAULT_L = 2
DEFAULT_MAX_SUPPRESSION = 0.2

_Key = tuple[str, str, str]
_Base = tuple[str, str, str, str]


class TimelineInputError(ValueError):
    """Raised when an input row or a parameter is outside the controlled vocabulary or range."""


@dataclass(frozen=True, slots=True)
class IncidentRow:
    """One countable, consenting report as P2 reads it from the shell."""

    quarter: str
    country: str
    category: str
    perpetrator_type: str


@dataclass(frozen=True, order=True, slots=True)
class TimelineRow:
    """One published row: the generalized quasi-identifiers and the perpetrator type."""

    period: str
    area: str
    category_group: str
    perpetrator_type: str

    def as_record(self) -> dict[str, str]:
        """The row as a mapping from column name to value, in :data:`COLUMNS` order."""
        return dict(zip(COLUMNS, self.as_tuple(), strict=True))

    def as_tuple(self) -> tuple[str, str, str, str]:
        """The row's values in :data:`COLUMNS` order."""
        return (self.period, self.area, self.category_group, self.perpetrator_type)


@dataclass(frozen=True, slots=True)
class Generalization:
    """One node of the lattice: the rung used on each ladder, as an index into its levels."""

    period: int
    area: int
    category: int

    @property
    def height(self) -> int:
        """Total number of rungs climbed: the search prefers lower heights."""
        return self.period + self.area + self.category

    @property
    def names(self) -> dict[str, str]:
        """The rung names, e.g. {"period": "quarter", "area": "region", "category": "group"}."""
        return {
            "period": PERIOD_LEVELS[self.period],
            "area": AREA_LEVELS[self.area],
            "category": CATEGORY_LEVELS[self.category],
        }

    def __str__(self) -> str:
        """A compact label such as "quarter × region × group"."""
        return " × ".join(self.names.values())


@dataclass(frozen=True)
class Timeline:
    """The P2 table and what a reader needs to judge it."""

    rows: tuple[TimelineRow, ...]
    generalization: Generalization | None
    """The rungs used, or None when nothing is published."""
    k: int
    l: int  # noqa: E741 -- "l" is the name the method (l-diversity) gives this parameter
    max_suppression: float
    total: int
    """Input rows considered."""
    suppressed: int
    """Input rows not published (all of them when the table is empty)."""
    smallest_class: int | None
    """The smallest equivalence class actually published (≥ k), None when empty."""
    fewest_perpetrator_types: int | None
    """The fewest distinct perpetrator types in a published class (≥ l), None when empty."""
    reason: str | None = None
    """Why the table is empty; None when rows are published."""

    @property
    def is_empty(self) -> bool:
        """True when nothing is published."""
        return not self.rows


def half_year_of(quarter: str) -> str:
    """The half-year of a quarter: "2025Q2" → "2025H1", "2025Q3" → "2025H2"."""
    year, number = _parse_quarter(quarter)
    return f"{year}H{1 if number <= 2 else 2}"


def year_of(quarter: str) -> str:
    """The year of a quarter: "2025Q3" → "2025"."""
    return str(_parse_quarter(quarter)[0])


def generalize_period(quarter: str, level: int) -> str:
    """The quarter at rung ``level`` of the period ladder (quarter, half-year, year)."""
    _check_level(level, PERIOD_LEVELS)
    if level == 0:
        year, number = _parse_quarter(quarter)
        return f"{year}Q{number}"
    return half_year_of(quarter) if level == 1 else year_of(quarter)


def region_of(country: str) -> str:
    """The region code of a country code; raise TimelineInputError for an unknown country."""
    try:
        return REGION_OF_COUNTRY[country]
    except KeyError:
        raise TimelineInputError(f"unknown country {country!r}") from None


def generalize_area(country: str, level: int) -> str:
    """The country at rung ``level`` of the area ladder (export country or "other", region, all)."""
    _check_level(level, AREA_LEVELS)
    region = region_of(country)  # also validates the country
    if level == 0:
        return country if country in vocabulary.EXPORT_COUNTRIES else vocabulary.OTHER
    return region if level == 1 else ALL


def generalize_category(category: str, level: int) -> str:
    """The category at rung ``level`` of the category ladder (its group, all)."""
    _check_level(level, CATEGORY_LEVELS)
    kind = vocabulary.CATEGORY_BY_CODE.get(category)
    if kind is None:
        raise TimelineInputError(f"unknown category {category!r}")
    return kind.group if level == 0 else ALL


def search_order() -> tuple[Generalization, ...]:
    """Every generalization, in the fixed order the search tries them.

    Lower total height first. Among equal heights the category group is kept longest, then the
    period, and the area is given up first: a timeline exists to show what kind of incident
    happens when, and place is what an adversary narrows down best.
    """
    nodes = [
        Generalization(period, area, category)
        for period in range(len(PERIOD_LEVELS))
        for area in range(len(AREA_LEVELS))
        for category in range(len(CATEGORY_LEVELS))
    ]
    return tuple(
        sorted(nodes, key=lambda node: (node.height, node.category, node.period, node.area))
    )


def anonymize_timeline(
    incidents: Iterable[IncidentRow],
    *,
    k: int = DEFAULT_K,
    l: int = DEFAULT_L,  # noqa: E741 -- the method's own name for the parameter
    max_suppression: float = DEFAULT_MAX_SUPPRESSION,
) -> Timeline:
    """Generalize and suppress ``incidents`` into a k-anonymous, l-diverse sorted table.

    Tries each generalization of :func:`search_order`; in each, rows of classes with fewer than
    ``k`` rows or fewer than ``l`` distinct perpetrator types are suppressed, and the first
    generalization that suppresses at most ``max_suppression`` of the rows is published. If none
    does, the table is empty and ``reason`` says why. Raises TimelineInputError for a row or
    parameter outside the vocabulary or range.
    """
    _check_parameters(k=k, l=l, max_suppression=max_suppression)
    base = _count_base_keys(incidents)
    total = sum(base.values())
    if total == 0:
        return _empty(k, l, max_suppression, total, "there are no incidents to publish")
    allowed = int(max_suppression * total)  # floor: never more than the fraction
    for node in search_order():
        kept, suppressed = _kept_classes(base, node, k=k, l=l)
        if suppressed <= allowed:
            return _publish(base, node, kept, k, l, max_suppression, total, suppressed)
    reason = (
        f"too few incidents to publish row by row: even at the coarsest generalization "
        f"(year × all areas × all categories) more than {max_suppression:.0%} of the {total} "
        f"incidents fall in groups of fewer than {k} or with fewer than {l} perpetrator types; "
        f"use counts with differential privacy (P1) instead"
    )
    return _empty(k, l, max_suppression, total, reason)


def vocabulary_of_column(column: str) -> frozenset[str] | None:
    """The published values a column may take (period values are patterns, so None for it)."""
    if column == "area":
        return frozenset(
            {*vocabulary.EXPORT_COUNTRIES, vocabulary.OTHER, *(r.code for r in REGIONS), ALL}
        )
    if column == "category_group":
        return frozenset({*(group.code for group in vocabulary.GROUPS), ALL})
    if column == SENSITIVE_ATTRIBUTE:
        return vocabulary.PERPETRATOR_CODES
    if column == "period":
        return None
    raise KeyError(column)


# --------------------------------------------------------------------------- internals


def _parse_quarter(quarter: str) -> tuple[int, int]:
    """Year and number of a "2025Q1" quarter; raise TimelineInputError otherwise."""
    match = QUARTER_PATTERN.fullmatch(quarter) if isinstance(quarter, str) else None
    if match is None or int(match.group(1)) < 1:
        raise TimelineInputError(f"{quarter!r} is not a quarter like 2025Q1")
    return int(match.group(1)), int(match.group(2))


def _check_level(level: int, levels: tuple[str, ...]) -> None:
    """Raise TimelineInputError unless ``level`` indexes ``levels``."""
    if not 0 <= level < len(levels):
        raise TimelineInputError(f"level {level} is not one of 0..{len(levels) - 1}")


def _check_parameters(*, k: int, l: int, max_suppression: float) -> None:  # noqa: E741
    """Raise TimelineInputError for parameters that make no sense."""
    if k < 1 or l < 1:
        raise TimelineInputError("k and l must be at least 1")
    if not 0 <= max_suppression < 1:
        raise TimelineInputError("max_suppression must be at least 0 and below 1")


def _count_base_keys(incidents: Iterable[IncidentRow]) -> Counter[_Base]:
    """Count rows by (quarter, country, group, perpetrator type), validating every value.

    The search works on these counts rather than on rows, so its cost depends on the number of
    distinct combinations (bounded by the vocabulary), not on the number of incidents.
    """
    base: Counter[_Base] = Counter()
    for row in incidents:
        if row.perpetrator_type not in vocabulary.PERPETRATOR_CODES:
            raise TimelineInputError(f"unknown perpetrator type {row.perpetrator_type!r}")
        region_of(row.country)
        base[
            (
                generalize_period(row.quarter, 0),
                row.country,
                generalize_category(row.category, 0),
                row.perpetrator_type,
            )
        ] += 1
    return base


def _generalize(key: _Base, node: Generalization) -> _Key:
    """The quasi-identifiers of a base key at the rungs of ``node``."""
    quarter, country, group, _ = key
    return (
        generalize_period(quarter, node.period),
        generalize_area(country, node.area),
        group if node.category == 0 else ALL,
    )


def _kept_classes(
    base: Counter[_Base],
    node: Generalization,
    *,
    k: int,
    l: int,  # noqa: E741
) -> tuple[dict[_Key, tuple[int, int]], int]:
    """Classes at ``node`` that satisfy k and l (with their size and diversity), rows suppressed."""
    sizes: Counter[_Key] = Counter()
    perpetrators: dict[_Key, set[str]] = {}
    for key, count in base.items():
        qi = _generalize(key, node)
        sizes[qi] += count
        perpetrators.setdefault(qi, set()).add(key[3])
    kept: dict[_Key, tuple[int, int]] = {}
    suppressed = 0
    for qi, size in sizes.items():
        diversity = len(perpetrators[qi])
        if size >= k and diversity >= l:
            kept[qi] = (size, diversity)
        else:
            suppressed += size
    return kept, suppressed


def _publish(
    base: Counter[_Base],
    node: Generalization,
    kept: dict[_Key, tuple[int, int]],
    k: int,
    l: int,  # noqa: E741
    max_suppression: float,
    total: int,
    suppressed: int,
) -> Timeline:
    """Expand the kept classes back into one sorted row per incident."""
    rows: list[TimelineRow] = []
    for key, count in base.items():
        qi = _generalize(key, node)
        if qi in kept:
            rows.extend([TimelineRow(*qi, key[3])] * count)
    rows.sort()
    return Timeline(
        rows=tuple(rows),
        generalization=node,
        k=k,
        l=l,
        max_suppression=max_suppression,
        total=total,
        suppressed=suppressed,
        smallest_class=min((size for size, _ in kept.values()), default=None),
        fewest_perpetrator_types=min((div for _, div in kept.values()), default=None),
    )


def _empty(k: int, l: int, max_suppression: float, total: int, reason: str) -> Timeline:  # noqa: E741
    """A result that publishes nothing, with the reason."""
    return Timeline(
        rows=(),
        generalization=None,
        k=k,
        l=l,
        max_suppression=max_suppression,
        total=total,
        suppressed=total,
        smallest_class=None,
        fewest_perpetrator_types=None,
        reason=reason,
    )
