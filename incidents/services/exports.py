"""Export use-cases: P1 differentially private counts (the other products come later).

Order matters: the request is validated, the budget is charged and committed, and only then are
the consenting reports read and counted; the package is written atomically and recorded as
complete in the ledger with its SHA-256.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from importlib import metadata
from pathlib import Path

from sqlalchemy import select

from incidents import vocabulary
from incidents.db import db
from incidents.exports import acled, dp, formats, ledger, suppression, timeline
from incidents.exports.periods import (
    PeriodError,
    Quarter,
    parse_quarter,
    quarter_of_period,
    quarter_range,
)
from incidents.models import Report
from incidents.services.errors import DomainError
from incidents.vocabulary import N_

Translate = Callable[[str], str]
"""Turns an English explanation (a gettext msgid) into the requesting NGO's language."""


def untranslated(text: str) -> str:
    """Keep the English text (the CLI's default)."""
    return text


COUNTED_STATUSES = frozenset({"new", "triaged", "assigned", "in_progress", "closed"})
"""Duplicates and rejected reports are never counted."""
SOFTWARE_VERSION = "incident register 0.1"
MIN_EPSILON = Decimal("0.01")
MAX_EPSILON = Decimal("10")
"""ε outside this range is refused before anything is charged (tiny values make the noise
calibration fail; large ones protect nobody)."""

P1_EXPLANATION = N_(
    "These are counts of incidents reported to the register, by quarter and type of incident. "
    "Only reports whose witnesses agreed to be counted are included. Every number has random "
    "noise added on purpose (differential privacy, ε = %(epsilon)s), so that nobody can tell "
    "from the table whether any particular incident was reported, even someone who knows the "
    "incident because they caused it. The price is accuracy: each number is within ±%(error)s "
    "of the true count 95 times out of 100, and small numbers, including zeros, may be noise. "
    "Compare totals over several quarters or groups rather than single cells. Negative noisy "
    "values were replaced by 0."
)
P1_EXPLANATION_BY_COUNTRY = N_(
    "These are counts of incidents reported to the register, by quarter, type of incident and "
    "country. Only reports whose witnesses agreed to be counted are included. Every number has "
    "random noise added on purpose (differential privacy, ε = %(epsilon)s), so that nobody can "
    "tell from the table whether any particular incident was reported, even someone who knows "
    "the incident because they caused it. The price is accuracy: each number is within "
    "±%(error)s of the true count 95 times out of 100, and small numbers, including zeros, may "
    "be noise. Compare totals over several quarters or groups rather than single cells. "
    "Negative noisy values were replaced by 0."
)


class ExportRequestError(DomainError):
    """Raised when an export request is malformed or not allowed; nothing was charged."""


@dataclass(frozen=True)
class ExportResult:
    """A finished export."""

    export_id: str
    archive: Path
    sha256: str
    counts: dp.NoisyCounts
    grid: list[dp.Cell]


def _quarters(first: str, last: str, *, today: date) -> list[Quarter]:
    """Parse and check the quarter range; turn problems into ExportRequestError."""
    try:
        return quarter_range(parse_quarter(first), parse_quarter(last), today=today)
    except PeriodError as exc:
        raise ExportRequestError(str(exc)) from exc


def consenting_records(
    quarters: list[Quarter], *, by_country: bool, progress: Callable[[int], None] | None = None
) -> list[str]:
    """The cell key of every countable report in the quarters (one record per report)."""
    wanted = {str(quarter) for quarter in quarters}
    rows: Iterable[tuple[str, str, str]] = db.session.execute(
        select(Report.occurred_period, Report.category, Report.country).where(
            Report.consent_statistics.is_(True), Report.status.in_(COUNTED_STATUSES)
        )
    )
    records = []
    for index, (period, category, country) in enumerate(rows, start=1):
        quarter = quarter_of_period(period)
        kind = vocabulary.CATEGORY_BY_CODE.get(category)
        if quarter is not None and kind is not None and str(quarter) in wanted:
            cell = dp.Cell(
                str(quarter), kind.group, dp.country_bucket(country) if by_country else None
            )
            records.append(cell.key)
        if progress is not None and index % 1000 == 0:
            progress(1000)
    return records


def export_counts(
    *,
    first: str,
    last: str,
    by_country: bool,
    actor: str,
    destination: Path,
    epsilon: Decimal,
    yearly_cap: Decimal,
    contributions: int,
    today: date,
    progress: Callable[[int], None] | None = None,
    translate: Translate = untranslated,
) -> ExportResult:
    """Produce a P1 package: charge the ledger first, then count, add noise and write files."""
    if not (epsilon.is_finite() and MIN_EPSILON <= epsilon <= MAX_EPSILON):
        raise ExportRequestError(
            f"ε must be between {MIN_EPSILON} and {MAX_EPSILON}; nothing was charged"
        )
    quarters = _quarters(first, last, today=today)
    grid = dp.build_grid(quarters, by_country=by_country)
    scope = f"{quarters[0]}-{quarters[-1]}" + (" by country" if by_country else "")
    export_id = ledger.charge(
        actor=actor, product="P1", scope=scope, epsilon=epsilon, yearly_cap=yearly_cap
    )
    records = consenting_records(quarters, by_country=by_country, progress=progress)
    counts = dp.noisy_counts(
        records, grid=grid, epsilon=float(epsilon), contributions=contributions
    )
    rows = [
        {
            "period": cell.quarter,
            "category_group": cell.group,
            **({"country": cell.country} if by_country else {}),
            "count": count,
        }
        for cell, count in zip(grid, counts.counts, strict=True)
    ]
    archive, digest = formats.write_package(
        destination,
        name=f"incidents-p1-{quarters[0]}-{quarters[-1]}-{export_id[:8]}",
        columns=p1_columns(by_country=by_country),
        rows=rows,
        meta=p1_meta(
            quarters, by_country=by_country, counts=counts, today=today, translate=translate
        ),
        title="Reported incidents of transnational repression: differentially private counts",
    )
    ledger.complete(export_id, actor=actor, output_sha256=digest)
    return ExportResult(export_id, archive, digest, counts, grid)


def p1_columns(*, by_country: bool) -> list[formats.Column]:
    """Columns of a P1 table."""
    columns = [
        formats.Column("period", "Quarter", "string", "Calendar quarter, e.g. 2025Q1."),
        formats.Column(
            "category_group",
            "Category group",
            "string",
            "One of: " + ", ".join(group.code for group in vocabulary.GROUPS) + ".",
        ),
    ]
    if by_country:
        columns.append(
            formats.Column(
                "country",
                "Country",
                "string",
                "ISO 3166-1 alpha-2 code of a listed country, or 'other' for all the rest.",
            )
        )
    columns.append(
        formats.Column(
            "count",
            "Noisy count",
            "nonNegativeInteger",
            "Number of reports plus discrete Laplace noise, negatives clamped to 0.",
        )
    )
    return columns


def p1_meta(
    quarters: list[Quarter],
    *,
    by_country: bool,
    counts: dp.NoisyCounts,
    today: date,
    translate: Translate = untranslated,
) -> dict[str, object]:
    """meta.json of a P1 export: method, parameters, error bound and a plain explanation."""
    error = round(counts.error_95, 1)
    return {
        "product": "P1",
        "method": "differential privacy: discrete Laplace noise on counts (OpenDP)",
        "privacy_unit": (
            f"one person, who may have filed up to {counts.contributions} reports "
            "(symmetric distance bound)"
        ),
        "epsilon": counts.epsilon,
        "noise_scale": counts.scale,
        "error_95": counts.error_95,
        "periods": [str(quarter) for quarter in quarters],
        "breakdown": ["period", "category_group", *(["country"] if by_country else [])],
        "grid": "complete: every declared cell is present, zeros included",
        "included": "reports with consent to statistics; duplicates and rejected reports excluded",
        "post_processing": "negative values clamped to 0",
        "generated_on": today.isoformat(),
        "software": SOFTWARE_VERSION,
        "opendp_version": metadata.version("opendp"),
        "explanation": translate(P1_EXPLANATION_BY_COUNTRY if by_country else P1_EXPLANATION)
        % {"epsilon": counts.epsilon, "error": error},
    }


P3_EXPLANATION = N_(
    "These are exact counts of incidents reported to the register, by quarter and type of "
    "incident (and country, if asked for), with totals. Only reports whose witnesses agreed to "
    "be counted are included. Any number from 1 to 9 is hidden, because small numbers can point "
    "at the people involved, and further numbers are hidden where a total would otherwise "
    "reveal a hidden one. Hidden numbers are empty in the table (suppressed = true). This table "
    "is for vetted partners only: do not publish it."
)


@dataclass(frozen=True)
class SuppressedResult:
    """A finished P3 export."""

    export_id: str
    archive: Path
    sha256: str
    table: suppression.SuppressedTable


def export_suppressed(
    *,
    first: str,
    last: str,
    by_country: bool,
    actor: str,
    destination: Path,
    today: date,
    translate: Translate = untranslated,
) -> SuppressedResult:
    """Produce a P3 package (exact counts, suppressed); recorded on the ledger with ε 0."""
    quarters = _quarters(first, last, today=today)
    grid = dp.build_grid(quarters, by_country=by_country)
    scope = f"{quarters[0]}-{quarters[-1]}" + (" by country" if by_country else "")
    export_id = ledger.charge(
        actor=actor, product="P3", scope=scope, epsilon=Decimal(0), yearly_cap=Decimal(0)
    )
    tally: dict[str, int] = {}
    for key in consenting_records(quarters, by_country=by_country):
        tally[key] = tally.get(key, 0) + 1
    row_keys = [str(quarter) for quarter in quarters]
    column_keys = list(dict.fromkeys(_column_key(cell) for cell in grid))
    counts = {(cell.quarter, _column_key(cell)): tally.get(cell.key, 0) for cell in grid}
    table = suppression.suppress(row_keys, column_keys, counts)
    archive, digest = formats.write_package(
        destination,
        name=f"incidents-p3-{quarters[0]}-{quarters[-1]}-{export_id[:8]}",
        columns=p3_columns(by_country=by_country),
        rows=p3_rows(table, by_country=by_country),
        meta={
            "product": "P3",
            "method": "exact counts; primary suppression of 1-9, secondary suppression on margins",
            "suppressed_primary": table.primary,
            "suppressed_secondary": table.secondary,
            "periods": [str(quarter) for quarter in quarters],
            "included": "reports with consent to statistics; duplicates and rejected excluded",
            "audience": "vetted partners only; not for publication",
            "generated_on": today.isoformat(),
            "software": SOFTWARE_VERSION,
            "explanation": translate(P3_EXPLANATION),
        },
        title="Reported incidents of transnational repression: suppressed exact counts",
    )
    ledger.complete(export_id, actor=actor, output_sha256=digest)
    return SuppressedResult(export_id, archive, digest, table)


def _column_key(cell: dp.Cell) -> str:
    """A P3 column: the category group, or group and country."""
    return cell.group if cell.country is None else f"{cell.group}|{cell.country}"


def p3_rows(table: suppression.SuppressedTable, *, by_country: bool) -> list[dict[str, object]]:
    """The table as rows in grid order, totals last; hidden counts empty."""
    rows: list[dict[str, object]] = []
    for period in [*table.rows, suppression.TOTAL]:
        for column in [*table.columns, suppression.TOTAL]:
            value = table.values[(period, column)]
            group, _, country = column.partition("|")
            rows.append(
                {
                    "period": period,
                    "category_group": group,
                    **({"country": country or suppression.TOTAL} if by_country else {}),
                    "count": "" if value is None else value,
                    "suppressed": value is None,
                }
            )
    return rows


def p3_columns(*, by_country: bool) -> list[formats.Column]:
    """Columns of a P3 table."""
    columns = p1_columns(by_country=by_country)[:-1]
    columns[0] = formats.Column(
        "period", "Quarter", "string", "Calendar quarter, e.g. 2025Q1, or 'total'."
    )
    return [
        *columns,
        formats.Column("count", "Count", "nonNegativeInteger", "Exact count; empty if hidden."),
        formats.Column("suppressed", "Hidden", "boolean", "True when the count is hidden."),
    ]


P2_EXPLANATION = N_(
    "One row per reported incident, with only coarse values: the period, the area and the type "
    "group, each made coarser where needed (%(levels)s) until every combination of them occurs "
    "at least %(k)s times with at least %(l)s different kinds of perpetrator. %(suppressed)s "
    "incidents that could not be grouped this way are left out. There are no dates, places, "
    "names, ids or words from the reports, and the rows are sorted, so their order says "
    "nothing. For vetted partners only: do not publish it."
)


@dataclass(frozen=True)
class TimelineResult:
    """A finished P2 export."""

    export_id: str
    archive: Path
    sha256: str
    timeline: timeline.Timeline


def timeline_incidents(quarters: list[Quarter]) -> list[timeline.IncidentRow]:
    """Every countable, consenting report in the quarters, as P2 reads it."""
    wanted = {str(quarter) for quarter in quarters}
    rows = db.session.execute(
        select(
            Report.occurred_period, Report.country, Report.category, Report.perpetrator_type
        ).where(Report.consent_statistics.is_(True), Report.status.in_(COUNTED_STATUSES))
    )
    incidents = []
    for period, country, category, perpetrator in rows:
        quarter = quarter_of_period(period)
        if quarter is not None and str(quarter) in wanted:
            incidents.append(timeline.IncidentRow(str(quarter), country, category, perpetrator))
    return incidents


def export_timeline(
    *,
    first: str,
    last: str,
    actor: str,
    destination: Path,
    today: date,
    translate: Translate = untranslated,
) -> TimelineResult:
    """Produce a P2 package (generalized rows, k >= 10, l >= 2); recorded with ε 0."""
    quarters = _quarters(first, last, today=today)
    scope = f"{quarters[0]}-{quarters[-1]}"
    anonymized = timeline.anonymize_timeline(timeline_incidents(quarters))
    if anonymized.is_empty or anonymized.generalization is None:
        raise ExportRequestError(
            f"no timeline can be published for {scope}: {anonymized.reason}; nothing was charged"
        )
    export_id = ledger.charge(
        actor=actor, product="P2", scope=scope, epsilon=Decimal(0), yearly_cap=Decimal(0)
    )
    levels = anonymized.generalization
    rows = [row.as_record() for row in anonymized.rows]
    acled_bytes = formats.csv_bytes(
        acled.acled_columns(), acled.acled_rows(anonymized.rows, levels)
    )
    archive, digest = formats.write_package(
        destination,
        name=f"incidents-p2-{quarters[0]}-{quarters[-1]}-{export_id[:8]}",
        columns=p2_columns(),
        rows=rows,
        meta={
            "product": "P2",
            "method": "generalization up fixed ladders with suppression (k-anonymity, l-diversity)",
            "k": anonymized.k,
            "l": anonymized.l,
            "levels": levels.names,
            "smallest_class": anonymized.smallest_class,
            "fewest_perpetrator_types": anonymized.fewest_perpetrator_types,
            "rows_considered": anonymized.total,
            "rows_suppressed": anonymized.suppressed,
            "max_suppression": anonymized.max_suppression,
            "periods": [str(quarter) for quarter in quarters],
            "included": "reports with consent to statistics; duplicates and rejected excluded",
            "audience": "vetted partners only; not for publication",
            "acled": "acled.csv: ACLED column set; extension codes in docs/exports.md",
            "generated_on": today.isoformat(),
            "software": SOFTWARE_VERSION,
            "explanation": translate(P2_EXPLANATION)
            % {
                "levels": str(levels),
                "k": anonymized.k,
                "l": anonymized.l,
                "suppressed": anonymized.suppressed,
            },
        },
        title="Reported incidents of transnational repression: generalized timeline",
        extra_files={"acled.csv": acled_bytes},
    )
    ledger.complete(export_id, actor=actor, output_sha256=digest)
    return TimelineResult(export_id, archive, digest, anonymized)


def p2_columns() -> list[formats.Column]:
    """Columns of a P2 table."""
    return [
        formats.Column(
            "period", "Period", "string", "Quarter (2025Q1), half-year (2025H1) or year."
        ),
        formats.Column("area", "Area", "string", "Country code, region, or 'all'."),
        formats.Column("category_group", "Category group", "string", "Group code, or 'all'."),
        formats.Column(
            "perpetrator_type",
            "Perpetrator type",
            "string",
            "home_state, host_state, pro_regime or unknown.",
        ),
    ]
